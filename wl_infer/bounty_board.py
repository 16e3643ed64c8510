"""Bounties between the board and the chain: post with a bounty, name the board's claimer, submit with the
stake, dispute or confirm, and report where a bounty stands (ending one: wl_infer/bounty_settle.py).

The bounty lives in the item's description (the job JSON) under ``"bounty"``, written once by the poster at
post time; the board's rules are unchanged. Everything in that record is hostile input: it is validated,
and what counts is the chain — the contract's record under the id that binds the job to the address the
board registers for the item's poster. web3 loads inside the functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson

from board.api import (
    Board,
    BoardError,
    NotAllowed,
    UsageError,
    WrongStatus,
    known_addresses,
    refresh_if_online,
)
from wl_infer.anchoring import AnchorError, NoChain, chain_target

if TYPE_CHECKING:
    from wl_infer.bounty import OnChainBounty

_UNITS = {"eth": 10**18, "gwei": 10**9, "wei": 1}
_AMOUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(eth|gwei|wei)?\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_HEX32 = re.compile(r"^0x[0-9a-f]{64}\Z")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
_HANDLE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")


def parse_amount(text: str) -> int:
    """``0.01``, ``0.01eth``, ``5gwei`` or ``1000wei`` to wei (a bare number is ether)."""
    m = _AMOUNT_RE.match(text or "")
    if m is None:
        raise UsageError(f"amount {text!r}: expected a number with an optional unit eth, gwei or wei")
    try:
        wei = Decimal(m.group(1)) * _UNITS[(m.group(2) or "eth").lower()]
    except InvalidOperation:
        raise UsageError(f"amount {text!r} is not a number") from None
    if wei != wei.to_integral_value():
        raise UsageError(f"amount {text!r} is not a whole number of wei")
    return int(wei)


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``1h``, ``2d`` (or bare seconds) to seconds, at least 1."""
    m = _DURATION_RE.match(text or "")
    if m is None or int(m.group(1)) == 0:
        raise UsageError(f"duration {text!r}: expected a positive number with s, m, h or d")
    return int(m.group(1)) * _SECONDS[m.group(2).lower()]


def format_wei(wei: int) -> str:
    """Wei as ether, trailing zeros dropped: ``0.01 ETH``."""
    text = f"{Decimal(wei) / Decimal(10**18):f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + " ETH"


@dataclass(frozen=True)
class BountyRecord:
    """The bounty as the poster recorded it on the item (validated; the chain is the authority)."""

    chain_id: int
    contract: str
    bounty_id: str
    poster: str
    amount: int
    stake: int
    deadline: int
    window: int
    threshold: int
    verifiers: tuple[tuple[str, str], ...]  # (handle, address)
    tx: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id, "contract": self.contract, "bounty_id": self.bounty_id,
            "poster": self.poster, "amount": str(self.amount), "stake": str(self.stake), "deadline": self.deadline,
            "window": self.window, "threshold": self.threshold,
            "verifiers": [{"handle": h, "address": a} for h, a in self.verifiers], "tx": self.tx,
        }


class BadBounty(UsageError):
    """The item's bounty record is malformed (another participant's bad entry: reported, never a crash)."""


def bounty_of(item: Any) -> BountyRecord | None:
    """The item's validated bounty record, None when it has none; BadBounty when it is malformed."""
    try:
        data = orjson.loads(item.description)
    except orjson.JSONDecodeError:
        return None
    raw = data.get("bounty") if isinstance(data, dict) else None
    if raw is None:
        return None
    bad = BadBounty(f"wanted item {item.id} carries a malformed bounty record")
    if not isinstance(raw, dict):
        raise bad
    try:
        verifiers = tuple((str(v["handle"]), str(v["address"])) for v in raw.get("verifiers") or [])
        rec = BountyRecord(
            chain_id=int(raw["chain_id"]), contract=str(raw["contract"]), bounty_id=str(raw["bounty_id"]),
            poster=str(raw["poster"]), amount=int(str(raw["amount"])), stake=int(str(raw["stake"])),
            deadline=int(raw["deadline"]), window=int(raw["window"]), threshold=int(raw["threshold"]),
            verifiers=verifiers, tx=str(raw["tx"]) if raw.get("tx") else None,
        )
    except (KeyError, TypeError, ValueError):
        raise bad from None
    addresses = [rec.contract, rec.poster, *(a for _, a in verifiers)]
    if not _HEX32.match(rec.bounty_id) or not all(_ADDRESS.match(a) for a in addresses):
        raise bad
    if not all(_HANDLE.match(h) for h, _ in verifiers) or (rec.tx is not None and not _HEX32.match(rec.tx)):
        raise bad
    if min(rec.amount, rec.deadline, rec.window) <= 0 or rec.stake < 0 or not 0 <= rec.threshold <= len(verifiers):
        raise bad
    return rec


def _target(board: Board, rpc_url: str | None = None) -> tuple[str, str]:
    """(rpc_url, bounty contract) for this board: the bounty contract is recorded in chain.json."""
    target = chain_target(board, rpc_url=rpc_url)
    contract = (target.chain_json or {}).get("bounty_contract")
    if target.rpc_url is None:
        raise NoChain("RPC URL")
    if not isinstance(contract, str) or not _ADDRESS.match(contract):
        raise NoChain("bounty contract")
    return target.rpc_url, contract


def _key(board: Board) -> bytes:
    from board.api import load_private_key

    return load_private_key(board.home.path)


def _address_of(view: Any, handle: str) -> str:
    rig = view.rig(handle)
    if rig is None or not _ADDRESS.match(str(rig.address)):
        raise UsageError(f"{handle} is not a registered rig with an address on this board")
    return str(rig.address)


def _chain_call(iid: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from wl_infer.chain import ChainError

    try:
        return fn(*args, **kwargs)
    except (ChainError, ValueError) as e:
        raise AnchorError(iid, str(e)) from None


def _refuse_own_verifiers(board: Board, view: Any, named: list[tuple[str, str]]) -> None:
    """A poster may not name itself (its handle, or any address the board registers for it) as a verifier.
    A second rig under another handle cannot be told apart on chain: README lists that as a limit."""
    from wl_infer import bounty

    me = board.require_handle()
    rig = view.rig(me)
    own = set(known_addresses(rig)) if rig is not None else set()
    own.add(bounty.address_of_key(_key(board)).lower())
    for handle, address in named:
        if handle == me or address.lower() in own:
            raise UsageError(f"--verifiers: {handle} is the poster's own rig; a poster cannot verify its own bounty")


def make_bounty(
    board: Board, item_id: str, *, amount: int, window: int, deadline: int, stake: int,
    verifiers: list[str], threshold: int | None,
) -> dict[str, Any]:
    """Escrow the bounty for ``item_id`` (not yet posted) and return the record to store on the item."""
    from wl_infer import bounty

    rpc, contract = _target(board)
    view = board.view()
    named = [(h, _address_of(view, h)) for h in verifiers]
    if len({a.lower() for _, a in named}) != len(named):
        raise UsageError("--verifiers names the same rig twice")
    _refuse_own_verifiers(board, view, named)
    if threshold is None:
        threshold = 1 if named else 0
    if (threshold > 0) != bool(named) or threshold > len(named):
        raise UsageError(f"--threshold {threshold} does not fit {len(named)} verifier(s)")
    board_id = board.meta()["board_id"]
    now = _chain_call(item_id, bounty.chain_time, rpc)
    receipt = _chain_call(
        item_id, bounty.post, rpc, contract, _key(board), board_id, item_id, amount=amount, deadline=now + deadline,
        window=window, stake=stake, verifiers=[a for _, a in named], threshold=threshold,
    )
    rec = BountyRecord(receipt.chain_id, receipt.contract, receipt.bounty_id, bounty.address_of_key(_key(board)),
                       amount, stake, now + deadline, window, threshold, tuple(named), receipt.tx)
    return {**rec.to_dict(), "gas_used": receipt.gas_used, "block": receipt.block}


def _checked(board: Board, item_id: str, refresh: bool = True) -> tuple[Any, Any, BountyRecord, str, str, str]:
    """(view, item, record, rpc, contract, board_id) for an item whose bounty binds to its poster's address."""
    from wl_infer import bounty

    if refresh:
        refresh_if_online(board)
    view = board.view()
    iid = view.resolve(item_id)
    item = view.item(iid)
    assert item is not None
    rec = bounty_of(item)
    if rec is None:
        raise UsageError(f"wanted item {iid} has no bounty")
    rpc, contract = _target(board)
    board_id = view.meta()["board_id"]
    poster_rig = view.rig(item.posted_by)
    if poster_rig is None or rec.poster.lower() not in known_addresses(poster_rig):
        raise BadBounty(f"the bounty on {iid} names {rec.poster}, not an address registered for {item.posted_by}")
    if rec.contract.lower() != contract.lower():
        raise BadBounty(f"the bounty on {iid} is escrowed in {rec.contract}, not this board's {contract}")
    if "0x" + bounty.bounty_id(board_id, iid, rec.poster).hex() != rec.bounty_id:
        raise BadBounty(f"the bounty id on {iid} is not this job's id for {rec.poster}")
    return view, item, rec, rpc, contract, board_id


def assign_claimer(board: Board, item_id: str) -> dict[str, Any]:
    """The poster names, on chain, the address the board registers for the item's accepted claimer."""
    from wl_infer import bounty

    view, item, rec, rpc, contract, _ = _checked(board, item_id)
    me = board.require_handle()
    if item.posted_by != me:
        raise NotAllowed(item.id, me, "assign the bounty of", f"its poster ({item.posted_by})")
    comp = view.completion(item.id)
    claimer = item.claimed_by or (comp.completed_by if comp is not None and item.status == "in_review" else None)
    if claimer is None or item.status not in ("claimed", "in_review"):
        raise WrongStatus(item.id, item.status, ("claimed", "in_review"), "there is no accepted claim to pay")
    worker = _address_of(view, claimer)
    on_chain = _chain_call(item.id, bounty.read_bounty, rpc, contract, rec.bounty_id)
    if on_chain is not None and on_chain.worker is not None and on_chain.worker.lower() == worker.lower():
        return {"item_id": item.id, "worker": claimer, "address": worker, "tx": None, "already_assigned": True}
    receipt = _chain_call(item.id, bounty.assign, rpc, contract, _key(board), rec.bounty_id, worker)
    return {"item_id": item.id, "worker": claimer, "address": worker, "tx": receipt.tx, "block": receipt.block,
            "gas_used": receipt.gas_used, "already_assigned": False}


class NotAssigned(BoardError):
    """A bounty job this rig would run before its poster named it the worker on chain."""


def require_assigned(board: Board, item_id: str) -> None:
    """Before a run reveals its output: a bounty job must be assigned on chain to this rig (else refuse)."""
    from wl_infer import bounty

    item = None
    for attempt in range(2):  # the local copy first: a bounty is written at post time and never changes
        try:
            item = board.view().item(board.view().resolve(item_id))
            break
        except BoardError:
            if attempt == 0:
                refresh_if_online(board)
    if item is None or bounty_of(item) is None:
        return  # no such item (the run reports it) or no bounty: nothing to check
    iid = item.id
    _, item, rec, rpc, contract, _ = _checked(board, iid, refresh=False)  # the run fetches next anyway
    on_chain = _chain_call(iid, bounty.read_bounty, rpc, contract, rec.bounty_id)
    me = bounty.address_of_key(_key(board))
    if on_chain is not None and on_chain.state == "assigned" and (on_chain.worker or "").lower() == me.lower():
        return
    state = on_chain.state if on_chain is not None else "not escrowed"
    raise NotAssigned(
        f"the bounty on {iid} is {state}, not assigned to this rig: `wl claim {iid}`, ask the poster to run "
        f"`wl chain assign {iid}`, then `wl infer run {iid} --skip-claim --anchor` (or pass --unpaid)"
    )


def submit_if_bounty(board: Board, iid: str, output_hash: str, evidence_hash: str) -> dict[str, Any] | None:
    """Stake and submit this rig's result when the item has a bounty assigned to this rig; None otherwise."""
    from wl_infer import bounty

    view = board.view()
    item = view.item(iid)
    if item is None or bounty_of(item) is None:
        return None
    _, item, rec, rpc, contract, _ = _checked(board, iid, refresh=False)  # the caller has just fetched
    me = bounty.address_of_key(_key(board))
    on_chain: OnChainBounty | None = _chain_call(iid, bounty.read_bounty, rpc, contract, rec.bounty_id)
    if on_chain is None:
        raise BadBounty(f"the bounty on {iid} is not escrowed on chain ({rec.bounty_id})")
    if on_chain.state == "submitted" and on_chain.worker and on_chain.worker.lower() == me.lower():
        return {"submitted": True, "already_submitted": True, "tx": None, "stake": on_chain.stake}
    if on_chain.state != "assigned" or on_chain.worker is None or on_chain.worker.lower() != me.lower():
        return {"submitted": False, "state": on_chain.state,
                "reason": f"the bounty is {on_chain.state}, not assigned to this rig: the poster names the board's "
                          f"claimer with `wl chain assign {iid}`; then run `wl infer anchor {iid}`"}
    receipt = _chain_call(iid, bounty.submit, rpc, contract, _key(board), rec.bounty_id, output_hash, evidence_hash,
                          stake=on_chain.stake)
    return {"submitted": True, "already_submitted": False, "tx": receipt.tx, "block": receipt.block,
            "gas_used": receipt.gas_used, "stake": on_chain.stake}


def assigned_here(board: Board, item: Any) -> bool:
    """Whether the item's bounty is assigned on chain to this rig's address (a bad record or chain: raises)."""
    from wl_infer import bounty

    _, _, rec, rpc, contract, _ = _checked(board, item.id, refresh=False)
    on_chain = _chain_call(item.id, bounty.read_bounty, rpc, contract, rec.bounty_id)
    me = bounty.address_of_key(_key(board))
    return on_chain is not None and on_chain.state == "assigned" and (on_chain.worker or "").lower() == me.lower()


def commit_before_reveal(board: Board, iid: str, evidence: Any) -> dict[str, Any] | None:
    """Stake and submit a bounty job's hashes on chain before the board sees its output: the submission is the
    commitment, the board's `done` the reveal. None for an item without a bounty; NotAssigned (nothing is
    published) when the bounty is not assigned to this rig."""
    from wl_infer.signing import evidence_hash

    ehash = evidence_hash(evidence.unsigned_dict(), {"board_id": board.meta()["board_id"], "item_id": iid})
    sub = submit_if_bounty(board, iid, evidence.output_hash, ehash)
    if sub is not None and not sub["submitted"]:
        raise NotAssigned(f"{iid}: {sub['reason']}; nothing was published")
    return sub


def attest_bounty(board: Board, item_id: str) -> dict[str, Any] | None:
    """Send this rig's recorded verdict to the bounty (dispute or confirm) when it is a named verifier."""
    from wl_infer import bounty

    view = board.view()
    iid = view.resolve(item_id)
    item = view.item(iid)
    if item is None or bounty_of(item) is None:
        return None
    _, item, rec, rpc, contract, _ = _checked(board, iid)
    me = bounty.address_of_key(_key(board))
    if me.lower() not in {a.lower() for _, a in rec.verifiers}:
        return None
    att = view.attestations(iid).get(board.require_handle())
    if att is None:
        raise AnchorError(iid, "no attestation on this item to send (run wl infer verify first)")
    verdict, result_hash = att.get("verdict"), att.get("actual") or att.get("expected")
    if not isinstance(verdict, str) or not isinstance(result_hash, str):
        raise AnchorError(iid, "the attestation names no verdict or result hash")
    receipt = _chain_call(iid, bounty.attest, rpc, contract, _key(board), rec.bounty_id, verdict, result_hash)
    return {"verdict": verdict.upper(), "tx": receipt.tx, "block": receipt.block, "gas_used": receipt.gas_used}


def bounty_report(board: Board, item: Any) -> dict[str, Any] | None:
    """Where the item's bounty stands (for `wl infer status`); problems are values, not errors."""
    try:
        rec = bounty_of(item)
    except BadBounty as e:
        return {"problem": str(e)}
    if rec is None:
        return None
    report: dict[str, Any] = {**rec.to_dict(), "state": None, "window_left_s": None, "problem": None}
    try:
        from wl_infer import bounty
        from wl_infer.anchoring import _quick_retry

        _, _, rec, rpc, contract, _ = _checked(board, item.id, refresh=False)  # status reads the local copy
        on_chain = bounty.read_bounty(rpc, contract, rec.bounty_id, retry=_quick_retry())
        if on_chain is None:
            report["problem"] = "not escrowed on chain"
            return report
        now = bounty.chain_time(rpc, retry=_quick_retry())
        closes = on_chain.window_closes_at
        report.update(state=on_chain.state, worker=on_chain.worker, disputes=on_chain.disputes,
                      window_left_s=max(0, closes - now) if closes is not None else None,
                      deadline_left_s=max(0, on_chain.deadline - now))
    except Exception as e:  # noqa: BLE001 - status reports, it does not fail
        from wl_infer.text import error_line

        report["problem"] = error_line(e, 160)
    return report
