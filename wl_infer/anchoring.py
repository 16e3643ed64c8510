"""Publishing a board result on the board's chain, and checking the chain against the board.

The worker anchors its own result (the contract binds msg.sender), then records the transaction inside its
evidence under ``anchor``, a key the signature and the evidence hash leave out by design. web3 and the chain
library load inside the functions, so ``wl infer verify`` on a board without a chain never pays for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from board.api import (
    AlreadyApplied,
    Board,
    BoardError,
    NotAllowed,
    UsageError,
    WrongStatus,
    known_addresses,
    refresh_if_online,
)
from wl_infer.codec import CodecError, Evidence
from wl_infer.errors import ChainUnavailable
from wl_infer.text import error_line

if TYPE_CHECKING:
    from wl_infer.chain import RetryPolicy
    from wl_infer.jobs import RunResult


_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\Z")


class AnchorError(BoardError):
    """Anchoring could not be done; carries the item and the reason (a chain error, a missing setting)."""

    def __init__(self, item_id: str | None, reason: str) -> None:
        self.item_id = item_id
        self.reason = reason
        where = f"anchoring {item_id}: " if item_id else ""
        super().__init__(where + reason)


class NoChain(UsageError):
    """This board anchors nowhere yet, and no flag, environment variable or config names a chain."""

    def __init__(self, missing: str) -> None:
        self.missing = missing
        super().__init__(
            f"no chain configured for this board ({missing} unknown): run `wl chain deploy --rpc-url URL`, "
            "or pass --rpc-url and --contract"
        )


@dataclass(frozen=True)
class ChainTarget:
    """Where to anchor, and where each part came from (flags > env > config > the board's chain.json)."""

    rpc_url: str | None
    contract: str | None
    chain_json: dict[str, Any] | None


def chain_target(board: Board, *, rpc_url: str | None = None, contract: str | None = None) -> ChainTarget:
    """The effective RPC URL and contract for this board (SPEC §9)."""
    from wl_infer.settings import chain_settings

    chain_json = board.view().chain()
    rpc, address = chain_settings(board.config, chain_json, rpc_url=rpc_url, contract=contract)
    return ChainTarget(rpc or None, address or None, chain_json)


def _require_web3() -> None:
    from wl_infer.chain import require_chain_libraries

    require_chain_libraries()


def anchor_item(
    board: Board,
    item_id: str,
    *,
    rpc_url: str | None = None,
    contract: str | None = None,
    push: bool = True,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Anchor this rig's result for ``item_id`` once, then record the transaction in its evidence.

    Returns ``{chain_id, contract, tx, block, already_anchored, ...}``. Running it again sends nothing and
    commits nothing: the chain reports the earlier anchor and the evidence already names it.
    """
    _require_web3()
    refresh_if_online(board)
    view = board.view()
    iid = view.resolve(item_id)
    item = view.item(iid)
    assert item is not None
    comp = view.completion(iid)
    if comp is None:
        raise WrongStatus(iid, item.status, ("in_review", "completed"), "there is no result to anchor")
    me = board.require_handle()
    if comp.completed_by != me:
        raise NotAllowed(iid, me, "anchor the result of", f"its worker ({comp.completed_by})")
    try:
        ev = Evidence.decode(comp.evidence)
    except CodecError as e:
        raise AnchorError(iid, str(e)) from None
    return anchor_evidence(board, iid, ev, comp.id, rpc_url=rpc_url, contract=contract, push=push, retry=retry)


TESTER_GONE = ("eth-tester:// is an in-process chain that ended with the process that deployed it; deploy on a "
               "node that outlives one command (a Hardhat node: `wl chain deploy --rpc-url http://127.0.0.1:8545 "
               "--replace`, see the README)")


def _anchor_hint(rpc_url: str, e: Exception, iid: str) -> str:
    """What to do next: retrying helps a node that did not answer, never a contract that is not there."""
    from wl_infer.chain import TESTER_URL

    missing = getattr(e, "data", {}).get("contract") is not None and "no InferenceAnchor contract" in str(e)
    if missing and rpc_url == TESTER_URL:
        return TESTER_GONE
    if missing:
        return "the node answers but holds no contract there: check `wl chain status --check` and the board's chain.json"
    return f"retry: wl infer anchor {iid}"


def anchor_result(board: Board, result: RunResult, *, push: bool = True, retry: RetryPolicy | None = None) -> dict[str, Any]:
    """Anchor the result a run has just submitted, from what the run holds (nothing fetched or decoded)."""
    _require_web3()
    return anchor_evidence(board, result.item_id, result.evidence, result.completion_id, push=push, retry=retry)


def anchor_evidence(
    board: Board,
    iid: str,
    ev: Evidence,
    completion_id: str,
    *,
    rpc_url: str | None = None,
    contract: str | None = None,
    push: bool = True,
    retry: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Anchor this rig's evidence for completion `completion_id` of `iid`, then record the transaction."""
    from board.api import load_private_key
    from wl_infer import chain
    from wl_infer.signing import evidence_hash

    target = chain_target(board, rpc_url=rpc_url, contract=contract)
    if target.rpc_url is None or target.contract is None:
        raise NoChain("RPC URL" if target.rpc_url is None else "contract address")
    board_id = board.meta()["board_id"]
    context = {"board_id": board_id, "item_id": iid}
    ehash = evidence_hash(ev.unsigned_dict(), context)
    try:
        receipt = chain.anchor(
            target.rpc_url, target.contract, load_private_key(board.home.path), board_id, iid, ev.output_hash,
            ehash, retry=retry or chain.DEFAULT_RETRY,
        )
    except chain.ChainError as e:
        raise AnchorError(iid, f"{e}; the board result is unchanged ({_anchor_hint(target.rpc_url, e, iid)})") from None
    previous = ev.extra.get("anchor")
    details: dict[str, Any] = {
        "chain_id": receipt.chain_id,
        "contract": receipt.contract,
        "tx": receipt.tx,
        "block": receipt.block,
    }
    if receipt.tx is None and isinstance(previous, dict) and previous.get("block") == receipt.block:
        details["tx"] = previous.get("tx")  # the node would not say; the board already knows
    out: dict[str, Any] = {
        **details,
        "item_id": iid,
        "output_hash": ev.output_hash,
        "evidence_hash": ehash,
        "already_anchored": receipt.already_anchored,
        "gas_used": receipt.gas_used,
        "recorded": False,
        "pushed": None,
        "local_reason": None,
    }
    from wl_infer.bounty_board import submit_if_bounty

    try:
        out["bounty"] = submit_if_bounty(board, iid, ev.output_hash, ehash)
    except BoardError as e:  # a bad or unreachable bounty never undoes the anchor: say why, carry on
        out["bounty"] = {"submitted": False, "reason": str(e)}
    if previous == details:
        return out
    op = board.new_op("anchor", iid, anchor=details, completion_id=completion_id)
    try:
        res = board.mutate(op, push=push)
    except AlreadyApplied:
        return out
    except BoardError as e:
        raise AnchorError(iid, f"anchored in tx {details['tx']} (block {details['block']}), but recording it on "
                               f"the board failed: {e}") from None
    out.update(recorded=True, pushed=res.pushed, local_reason=res.local_reason)
    return out


def chain_status(board: Board, item_id: str) -> str | None:
    """``matches``/``differs``/``not anchored``/``anchored only by others`` for the item's result; None when
    no chain is configured. Only the records of the claimer's registered addresses count (SPEC §9, issue 16).

    Never raises for a chain that cannot be read: verify reports ``unreachable (…)`` and carries on.
    """
    try:
        target = chain_target(board)
    except BoardError as e:
        return f"unknown ({e})"
    if target.rpc_url is None or target.contract is None:
        return None
    try:
        from wl_infer import chain
    except ChainUnavailable:
        return None

    view = board.view()
    iid = view.resolve(item_id)
    board_id = view.meta()["board_id"]
    comp = view.completion(iid)
    known = _addresses(view, comp.completed_by) if comp is not None else set()
    addresses = sorted(a for a in known if _ADDRESS.match(a))  # a malformed registration is simply no address
    try:
        records = [
            chain.read_anchor(target.rpc_url, target.contract, board_id, iid, a, retry=_quick_retry())
            for a in addresses
        ]
        found = [r for r in records if r is not None]
        if not found:
            others = chain.anchor_count(target.rpc_url, target.contract, board_id, iid, retry=_quick_retry())
            return "anchored only by others" if others else "not anchored"
    except Exception as e:  # noqa: BLE001 - a verifier must get its verdict even when the chain is down
        return f"unreachable ({error_line(e, 160)})"
    assert comp is not None
    try:
        ev = Evidence.decode(comp.evidence)
    except CodecError:
        return "differs"
    from wl_infer.signing import EncodingError, evidence_hash

    try:
        ehash = evidence_hash(ev.unsigned_dict(), {"board_id": board_id, "item_id": iid})
    except EncodingError:
        return "differs"
    if any(chain.compare_with_board(r, ev.output_hash, ehash) == "matches" for r in found):
        return "matches"
    return "differs"


def _addresses(view: Any, handle: str) -> set[str]:
    """Every address the worker has been registered with (a key rotation keeps earlier anchors valid)."""
    rig = view.rig(handle)
    return set() if rig is None else known_addresses(rig)


def _quick_retry() -> RetryPolicy:
    """Verify only reads the chain: a few quick tries, then say it is unreachable."""
    from wl_infer.chain import RetryPolicy

    return RetryPolicy(attempts=3, base_delay=0.1, max_delay=0.5, total_timeout=5.0, receipt_timeout=5.0)




def anchor_attestation(
    board: Board, item_id: str, *, rpc_url: str | None = None, contract: str | None = None
) -> dict[str, Any]:
    """Publish this rig's recorded attestation on ``item_id`` (verdict and result hash) with chain.attest."""
    _require_web3()
    from board.api import load_private_key
    from wl_infer import chain

    view = board.view()
    iid = view.resolve(item_id)
    me = board.require_handle()
    att = view.attestations(iid).get(me)
    if att is None:
        raise AnchorError(iid, f"{me} has no attestation on this item to publish (run wl infer verify first)")
    from wl_infer.attestations import check_attestation

    check = check_attestation(view, iid, me, att)
    if not check.valid:  # a file someone else wrote under our name is never published as our verdict
        raise AnchorError(iid, f"the attestation under {me} is not valid ({check.problem}); run wl infer verify again")
    result_hash = att.get("actual") or att.get("expected")
    verdict = att.get("verdict")
    if not isinstance(result_hash, str) or not isinstance(verdict, str):
        raise AnchorError(iid, "the attestation names no verdict or result hash")
    target = chain_target(board, rpc_url=rpc_url, contract=contract)
    if target.rpc_url is None or target.contract is None:
        raise NoChain("RPC URL" if target.rpc_url is None else "contract address")
    try:
        receipt = chain.attest(
            target.rpc_url, target.contract, load_private_key(board.home.path), view.meta()["board_id"], iid,
            verdict, result_hash,
        )
    except (chain.ChainError, ValueError) as e:
        raise AnchorError(iid, str(e)) from None
    return {"item_id": iid, "chain_id": receipt.chain_id, "contract": receipt.contract, "tx": receipt.tx,
            "block": receipt.block, "verdict": receipt.verdict, "result_hash": result_hash}
