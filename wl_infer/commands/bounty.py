"""Bounty options for `wl infer post`, the bounty lines of `wl infer status`, and `wl chain assign`,
`wl chain withdraw`, `wl chain refund`, `wl chain release`. Importing this module is cheap: web3 loads inside the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from board.api import UsageError
from board.cli.main import ITEM_ID, Obj
from board.cli.output import emit, say

F = Callable[..., Any]


def bounty_options(f: F) -> F:
    """The bounty options of `wl infer post`."""
    for option in reversed([
        click.option("--bounty", "bounty_amount", metavar="AMOUNT",
                     help="Escrow this much (0.01, 0.01eth, 5gwei, 1000wei) for the job in the board's "
                          "InferenceBounty contract; the item records it."),
        click.option("--stake", "bounty_stake", metavar="AMOUNT",
                     help="Stake the worker must add when it submits (default: a tenth of the bounty)."),
        click.option("--challenge-window", "bounty_window", default="1h", show_default=True, metavar="DURATION",
                     help="How long the named verifiers may dispute a submitted result (90s, 30m, 1h, 2d)."),
        click.option("--deadline", "bounty_deadline", default="24h", show_default=True, metavar="DURATION",
                     help="No result on chain by then: the poster may take a refund."),
        click.option("--verifiers", "bounty_verifiers", metavar="HANDLES",
                     help="Comma-separated rigs whose MISMATCH/INVALID verdicts can refund the bounty."),
        click.option("--threshold", "bounty_threshold", type=click.IntRange(1, 16), default=None,
                     help="Disputing verdicts that refund the poster and slash the stake (default 1)."),
    ]):
        f = option(f)
    return f


class _Escrow:
    """Called by post_job with the new item id: escrows the bounty, returns the record for the item."""

    def __init__(self, board: Any, options: dict[str, Any]) -> None:
        from wl_infer.bounty_board import parse_amount, parse_duration

        self.board = board
        self.amount = parse_amount(options["bounty_amount"])
        if self.amount <= 0:
            raise UsageError("--bounty must be more than 0")
        stake = options.get("bounty_stake")
        self.stake = parse_amount(stake) if stake else self.amount // 10
        self.window = parse_duration(options["bounty_window"])
        self.deadline = parse_duration(options["bounty_deadline"])
        text = options.get("bounty_verifiers") or ""
        self.verifiers = [h.strip() for h in text.split(",") if h.strip()]
        self.threshold = options.get("bounty_threshold")
        self.record: dict[str, Any] = {}

    def __call__(self, item_id: str) -> dict[str, Any]:
        from wl_infer.bounty_board import make_bounty

        self.record = make_bounty(
            self.board, item_id, amount=self.amount, window=self.window, deadline=self.deadline, stake=self.stake,
            verifiers=self.verifiers, threshold=self.threshold,
        )
        stored = {k: v for k, v in self.record.items() if k not in ("gas_used", "block")}
        return {"bounty": stored}


def bounty_maker(board: Any, options: dict[str, Any]) -> _Escrow | None:
    """The escrow step for `wl infer post`, or None without --bounty (then the other options are refused)."""
    if options.get("bounty_amount") is None:
        if options.get("bounty_stake") or options.get("bounty_verifiers") or options.get("bounty_threshold"):
            raise UsageError("--stake, --verifiers and --threshold need --bounty")
        return None
    return _Escrow(board, options)


def _when(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def say_bounty(record: dict[str, Any]) -> None:
    from wl_infer.bounty_board import format_wei

    verifiers = ", ".join(v["handle"] for v in record.get("verifiers", [])) or "none"
    say(f"  Bounty:  {format_wei(int(record['amount']))} escrowed (stake {format_wei(int(record['stake']))}), "
        f"window {_when(record['window'])}, verifiers {verifiers} (threshold {record['threshold']})")
    say(f"           tx {record['tx']}" + (f" ({record['gas_used']:,} gas)" if "gas_used" in record else ""))


def say_submission(sub: dict[str, Any] | None) -> None:
    """What `wl infer run --anchor` / `wl infer anchor` did with the job's bounty."""
    from wl_infer.bounty_board import format_wei

    if sub is None:
        return
    if not sub["submitted"]:
        say(f"  ⚠ Bounty not submitted: {sub['reason']}", "yellow")
    elif sub.get("already_submitted"):
        say("  Bounty: already submitted (no new transaction)")
    else:
        say(f"  Bounty: submitted with stake {format_wei(int(sub['stake']))}: tx {sub['tx']}")


def say_bounty_status(report: dict[str, Any] | None) -> None:
    """The bounty lines of `wl infer status`."""
    from wl_infer.bounty_board import format_wei
    from wl_infer.text import one_line

    def sanitize_line(text: str) -> str:
        return one_line("".join(c if c.isprintable() else " " for c in text), 200)

    if report is None:
        return
    if "amount" not in report:
        say(f"  Bounty:  {sanitize_line(str(report['problem']))}", "red")
        return
    say(f"  Bounty:  {format_wei(int(report['amount']))}, stake {format_wei(int(report['stake']))}: "
        f"{report['state'] or 'unknown'}")
    if report.get("problem"):
        say(f"           {sanitize_line(str(report['problem']))}", "yellow")
    elif report["state"] == "submitted":
        say(f"           challenge window left {_when(report['window_left_s'])} "
            f"({report['disputes']} of {report['threshold']} disputes)")
    elif report["state"] in ("open", "assigned"):
        say(f"           deadline in {_when(report['deadline_left_s'])}")


@click.command()
@click.argument("item_id", type=ITEM_ID)
@click.pass_obj
def assign(obj: Obj, item_id: str) -> None:
    """As the poster, name ITEM_ID's accepted claimer (its registered address) as the bounty's worker."""
    from wl_infer.bounty_board import assign_claimer

    res = assign_claimer(obj.board(), item_id)
    emit({"ok": True, **res}, lambda: say(
        f"✓ {res['worker']} ({res['address']}) is the worker of {res['item_id']}'s bounty"
        + (" (already)" if res["already_assigned"] else f": tx {res['tx']}")))


def _settled(res: dict[str, Any]) -> None:
    from wl_infer.bounty_board import format_wei

    what = res["item_id"] or res["bounty_id"]
    done = {"refund": "Refunded", "cancel": "Cancelled (full refund)", "finalize": "Finalized"}.get(res["how"] or "")
    if res["resolved"] and done:
        say(f"✓ {done} the bounty of {what}: tx {res['resolved']}")
    if res["withdrawn"]:
        say(f"✓ Withdrew {format_wei(res['withdrawn'])}: tx {res['tx']}")
    else:
        say("Nothing is credited to this rig.")


@click.command()
@click.argument("target", metavar="[ID]", required=False, shell_complete=ITEM_ID.shell_complete)
@click.pass_obj
def withdraw(obj: Obj, target: str | None) -> None:
    """Withdraw what the bounty contract owes this rig (first settling ID's bounty once its window passed).

    ID is an item id or a raw bounty id (0x + 64 hex)."""
    from wl_infer.bounty_settle import settle

    res = settle(obj.board(), target, "withdraw")
    emit({"ok": True, **res}, lambda: _settled(res))


@click.command()
@click.argument("target", metavar="ID", shell_complete=ITEM_ID.shell_complete)
@click.pass_obj
def refund(obj: Obj, target: str) -> None:
    """Give ID's bounty back to its poster and withdraw this rig's credit: the poster may cancel while no
    worker is named; anyone may refund once the deadline passed with no result.

    ID is an item id or a raw bounty id (0x + 64 hex: a bounty whose item never reached the board)."""
    from wl_infer.bounty_settle import settle

    res = settle(obj.board(), target, "refund")
    emit({"ok": True, **res}, lambda: _settled(res))


@click.command()
@click.argument("target", metavar="ID")
@click.pass_obj
def release(obj: Obj, target: str) -> None:
    """As ID's named worker, give its bounty back (you will not deliver): the poster may assign another
    claimer or cancel. ID is an item id or a raw bounty id (0x + 64 hex)."""
    from wl_infer.bounty_settle import release as give_back

    res = give_back(obj.board(), target)
    emit({"ok": True, **res}, lambda: say(f"✓ Released the bounty of {res['item_id'] or res['bounty_id']}: "
                                          f"tx {res['tx']}"))


def say_chain_bounty(info: dict[str, Any]) -> None:
    """The bounty lines of `wl chain status ID` (everything from the contract)."""
    say(f"Bounty {info['bounty_id']}" + (f" ({info['item_id']})" if info["item_id"] else ""))
    say(f"  {info['amount_text']}, state {info['state']}; poster {info['poster']}, worker {info['worker'] or '-'}")
    if info["window_left_s"] is not None:
        say(f"  challenge window left {_when(info['window_left_s'])} ({info['disputes']} of {info['threshold']} "
            "disputes)")
    elif info["deadline_left_s"] is not None:
        say(f"  deadline in {_when(info['deadline_left_s'])}")
