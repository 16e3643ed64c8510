"""`wl rig`: a rig's registration, and key rotation as its own recorded (and provable) operation.

A rotation is proven by the old key signing the new address (EIP-191 over ``rotation_message``), so anyone
reading ``rigs/<handle>.json`` can check that each key handed over to the next. The new key replaces the
old one in the home only once the board has published the rotation; until then it waits in ``key.next``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from board.cli.main import Obj, WlError
from board.cli.output import emit, say
from board.keys import rotation_message, rotation_signer, sign_rotation  # noqa: F401 - used below


def key_history(board_id: str, rig: Any) -> list[dict[str, Any]]:
    """Each earlier key, the key it handed over to, and whether its proof checks out."""
    previous = [p for p in rig.extra.get("previous_addresses", []) if isinstance(p, dict)]
    chain = [str(p.get("address", "")) for p in previous] + [rig.address]
    out = []
    for i, entry in enumerate(previous):
        old, new = chain[i], chain[i + 1]
        signer = rotation_signer(rotation_message(board_id, rig.handle, old, new), entry.get("proof"))
        out.append({"address": old, "until": entry.get("until"), "handed_to": new,
                    "proof_valid": signer is not None and signer.lower() == old.lower()})
    return out


def _fresh_board(obj: Obj, online: bool = True) -> Any:
    from board.errors import Unreachable

    board = obj.board()
    if online and board.remote is not None:
        with contextlib.suppress(Unreachable):
            board.refresh()
    return board


@click.group()
def rig() -> None:
    """This rig's registration and signing key."""


@rig.command()
@click.argument("handle", required=False)
@click.pass_obj
def show(obj: Obj, handle: str | None) -> None:
    """A rig's registration (default: this one): address, earlier keys and their rotation proofs."""
    from board.errors import NotRegistered
    from board.ids import check_handle
    from board.keys import address_of, next_key_path

    board = _fresh_board(obj)
    me = board.handle
    who = check_handle(handle) if handle else board.require_handle()
    view = board.view()
    record = view.rig(who)
    if record is None:
        raise NotRegistered(who)
    history = key_history(view.meta()["board_id"], record)
    data: dict[str, Any] = {"rig": record.to_dict(), "previous": history, "local_key": None, "key_matches": None,
                            "pending_rotation": None}
    if who == me:
        local = address_of(board.home.path)
        data["local_key"] = local
        data["key_matches"] = local.lower() == record.address.lower()
        if next_key_path(board.home.path).exists():
            from board.keys import new_key_for_rotation

            data["pending_rotation"] = new_key_for_rotation(board.home.path)[1]

    def human() -> None:
        from board.text import sanitize  # the record is the board's: any field may hold escape sequences

        say(f"{record.handle}  {sanitize(record.display_name)}", "bold")
        say(f"  Address:    {sanitize(record.address)}")
        say(f"  Registered: {record.registered_at}")
        for h in history:
            mark = "proof ok" if h["proof_valid"] else "PROOF INVALID"
            say(sanitize(f"  Earlier key {h['address']} until {h['until']} → {h['handed_to']} ({mark})"))
        pending = data["pending_rotation"]
        if data["key_matches"] is False and pending != record.address:
            say(f"  ⚠ this home's key is {data['local_key']}, not the registered one", "yellow")
        if pending:
            say(f"  ⚠ rotation to {pending} is pending (this home signs with {data['local_key']}): "
                "run `wl rig rotate-key` to finish it", "yellow")

    emit(data, human)


@rig.command("rotate-key")
@click.option("--no-push", is_flag=True, help="Commit the rotation locally; the old key stays in use until published.")
@click.pass_obj
def rotate_key(obj: Obj, no_push: bool) -> None:
    """Replace this rig's signing key: the board records the new address, proven by the old key."""
    from board.claims import before_rotation, claim_again
    from board.errors import NotRegistered
    from board.keys import commit_rotation, load_private_key, new_key_for_rotation

    board = _fresh_board(obj, online=not no_push)
    me = board.require_handle()
    home = board.home.path
    view = board.view()
    record = view.rig(me)
    if record is None:
        raise NotRegistered(me)
    old, new = new_key_for_rotation(home)
    data: dict[str, Any] = {"ok": True, "handle": me, "old_address": old, "new_address": new, "committed": False,
                            "pushed": None, "local_reason": None, "proof": None, "claimed_again": []}
    held = before_rotation(board)  # signed with the old key: they stop counting once the rotation lands
    if record.address.lower() == new.lower():
        _finish_pending(board, data, no_push)
    elif record.address.lower() != old.lower():
        raise WlError(
            f"the board registers {me} with {record.address}, but this home's key is {old}: "
            "this home cannot prove the rotation"
        )
    else:
        proof = sign_rotation(load_private_key(home), rotation_message(view.meta()["board_id"], me, old, new))
        res = board.mutate(board.new_op("rotate-key", None, old_address=old, new_address=new, proof=proof),
                           push=not no_push)
        data.update(proof=proof, pushed=res.pushed, local_reason=res.local_reason)
        if res.pushed or board.remote is None:
            commit_rotation(home)
            data["committed"] = True
    if data["committed"] and held:
        data["claimed_again"] = claim_again(board, held)

    def human() -> None:
        if data["committed"]:
            say(f"✓ Rotated {me}'s key: {old} → {new}")
            say("  New evidence and attestations are signed with the new key; earlier ones stay valid.")
            if held:
                again = data["claimed_again"]
                say(f"  Claimed again with the new key: {len(again)} of the {len(held)} item(s) this rig held on lanes"
                    + ("" if len(again) == len(held) else " (the others were taken or have ended)"),
                    None if len(again) == len(held) else "yellow")
        else:
            say(f"⚠ The rotation to {new} is not published yet ({data['local_reason']}).", "yellow")
            say(f"  This home keeps signing with {old} and keeps the new key in key.next; after `wl sync`, "
                "run `wl rig rotate-key` again to switch.", "yellow")

    emit(data, human)


def _finish_pending(board: Any, data: dict[str, Any], no_push: bool) -> None:
    """The board (at least locally) already names key.next: publish what is pending, then switch keys."""
    from board.errors import Unreachable
    from board.keys import commit_rotation

    published = board.remote is None or not board.pending()
    if not published and not no_push:
        try:
            report = board.sync()
        except Unreachable as e:
            data["local_reason"] = f"remote unreachable ({e.reason})"
        else:
            if report.conflicted:
                kept = report.conflicted[0]
                raise WlError(f"could not publish pending {kept.op.op}: {kept.reason} (kept in {kept.path})")
            rig = board.view().rig(data["handle"])
            published = rig is not None and rig.address.lower() == data["new_address"].lower()
    elif not published:
        data["local_reason"] = "--no-push"
    data["pushed"] = published
    if published:
        commit_rotation(board.home.path)
        data["committed"] = True

