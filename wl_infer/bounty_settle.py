"""Ending a bounty from the command line: refund (or cancel), finalize and withdraw, release, and read one —
each addressed by its wanted item or by the raw bounty id (``0x`` + 64 hex), so a bounty whose item never
reached the board (a post that failed after the escrow) can still be refunded.

A raw id is trusted no further than the chain: the contract decides who may do what, and everything shown
comes from the contract's record, never from the board. web3 loads inside the functions.
"""

from __future__ import annotations

import re
from typing import Any

from board.api import Board, UsageError
from wl_infer.anchoring import AnchorError
from wl_infer.bounty_board import _chain_call, _checked, _key, _target, format_wei

_RAW_ID = re.compile(r"^0x[0-9a-fA-F]{64}\Z")


def is_bounty_id(target: str) -> bool:
    """A raw bounty id rather than an item id (item ids are ``w-`` + hex, so the two never collide)."""
    return bool(_RAW_ID.match(target or ""))


def locate(board: Board, target: str) -> tuple[str | None, str, str, str]:
    """(item id or None, bounty id, rpc url, contract) for ``target``: an item id (prefix) or a raw bounty id."""
    if is_bounty_id(target):
        rpc, contract = _target(board)
        return None, target.lower(), rpc, contract
    if target.startswith("0x"):
        raise UsageError(f"bounty id {target!r}: expected 0x + 64 hex digits")
    _, item, rec, rpc, contract, _ = _checked(board, target)
    return item.id, rec.bounty_id, rpc, contract


def _read(where: str, rpc: str, contract: str, bid: str) -> Any:
    from wl_infer import bounty

    on_chain = _chain_call(where, bounty.read_bounty, rpc, contract, bid)
    if on_chain is None:
        raise AnchorError(None, f"no bounty {bid} in the contract at {contract}")
    return on_chain


def _left(seconds: int) -> str:
    h, rest = divmod(max(0, seconds), 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def settle(board: Board, target: str | None, how: str) -> dict[str, Any]:
    """``withdraw``: finalize the bounty if its window has passed, then withdraw this rig's credit.
    ``refund``: give the bounty back to its poster — at once while no worker is named (the poster cancels),
    after the deadline otherwise (anyone may call) — then withdraw this rig's credit."""
    from wl_infer import bounty

    out: dict[str, Any] = {"item_id": None, "bounty_id": None, "resolved": None, "how": None, "withdrawn": 0,
                           "tx": None}
    if target is not None:
        iid, bid, rpc, contract = locate(board, target)
        where = iid or bid
        out.update(item_id=iid, bounty_id=bid)
        on_chain = _read(where, rpc, contract, bid)
        me = bounty.address_of_key(_key(board))
        now = _chain_call(where, bounty.chain_time, rpc)
        state = on_chain.state
        if how == "refund" and state in ("open", "assigned") and now >= on_chain.deadline:
            out.update(how="refund", resolved=_chain_call(where, bounty.refund, rpc, contract, _key(board), bid).tx)
        elif how == "refund" and state == "open":
            if on_chain.poster.lower() != me.lower():
                raise AnchorError(where, f"the bounty is open until its deadline (in {_left(on_chain.deadline - now)}); "
                                         f"only its poster ({on_chain.poster}) may cancel it before then")
            out.update(how="cancel", resolved=_chain_call(where, bounty.cancel, rpc, contract, _key(board), bid).tx)
        elif how == "refund" and state == "assigned":
            raise AnchorError(where, f"the bounty is assigned to {on_chain.worker}: refundable after its deadline "
                                     f"(in {_left(on_chain.deadline - now)}), or once the worker gives it back "
                                     "(`wl chain release`)")
        elif how == "withdraw" and state == "submitted":
            out.update(how="finalize", resolved=_chain_call(where, bounty.finalize, rpc, contract, _key(board), bid).tx)
        elif state not in ("paid", "refunded"):
            raise AnchorError(where, f"the bounty is {state}: nothing to {how} yet")
    else:
        rpc, contract = _target(board)
    me = bounty.address_of_key(_key(board))
    owed = _chain_call(out["item_id"] or out["bounty_id"] or "", bounty.credit_of, rpc, contract, me)
    if owed:
        receipt, owed = _chain_call(out["item_id"] or "", bounty.withdraw, rpc, contract, _key(board))
        out.update(withdrawn=owed, tx=receipt.tx)
    return out


def release(board: Board, target: str) -> dict[str, Any]:
    """As the named worker, give the bounty back (it will not deliver): Open again, the poster may re-assign
    or cancel it."""
    from wl_infer import bounty

    iid, bid, rpc, contract = locate(board, target)
    where = iid or bid
    on_chain = _read(where, rpc, contract, bid)
    me = bounty.address_of_key(_key(board))
    if on_chain.state != "assigned" or (on_chain.worker or "").lower() != me.lower():
        who = f" to {on_chain.worker}" if on_chain.worker else ""
        raise AnchorError(where, f"the bounty is {on_chain.state}{who}, not assigned to this rig: nothing to release")
    receipt = _chain_call(where, bounty.release, rpc, contract, _key(board), bid)
    return {"item_id": iid, "bounty_id": bid, "tx": receipt.tx, "block": receipt.block, "gas_used": receipt.gas_used}


def describe(board: Board, target: str) -> dict[str, Any]:
    """The bounty as the contract stores it, with the time left (for `wl chain status ID`)."""
    from wl_infer import bounty

    iid, bid, rpc, contract = locate(board, target)
    where = iid or bid
    on_chain = _read(where, rpc, contract, bid)
    now = _chain_call(where, bounty.chain_time, rpc)
    closes = on_chain.window_closes_at
    return {
        "item_id": iid, "bounty_id": bid, "contract": contract, "state": on_chain.state, "poster": on_chain.poster,
        "worker": on_chain.worker, "amount": str(on_chain.amount), "stake": str(on_chain.stake),
        "amount_text": format_wei(on_chain.amount), "deadline": on_chain.deadline,
        "deadline_left_s": max(0, on_chain.deadline - now) if on_chain.state in ("open", "assigned") else None,
        "window_left_s": max(0, closes - now) if closes is not None else None,
        "disputes": on_chain.disputes, "threshold": on_chain.threshold, "verifiers": list(on_chain.verifiers),
    }


def undo_escrow(board: Board, record: dict[str, Any]) -> str:
    """After a post that failed once the bounty was escrowed: cancel it and withdraw the refund. Returns what
    happened, in words; never raises (the caller is already reporting the post's own error)."""
    bid = str(record.get("bounty_id"))
    try:
        res = settle(board, bid, "refund")
    except Exception:  # noqa: BLE001 - the post's error is the one to report; say how to get the money back
        return f"the bounty {bid} is still escrowed: run `wl chain refund {bid}` to take it back"
    if res["withdrawn"]:
        return f"the escrowed bounty was cancelled and {format_wei(res['withdrawn'])} withdrawn (tx {res['tx']})"
    return f"the escrowed bounty was cancelled (tx {res['resolved']}); `wl chain withdraw` sends the refund"
