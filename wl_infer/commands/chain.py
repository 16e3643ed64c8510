"""`wl chain` (deploy, status, attest) and `wl infer anchor`: the command-line face of wl_infer.anchoring.

Importing this module is cheap; web3 loads only inside a command that talks to a chain.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

from board.cli.main import ITEM_ID, Obj, WlError
from board.cli.output import emit, report_push, say
from wl_infer.commands.bounty import assign as bounty_assign
from wl_infer.commands.bounty import refund as bounty_refund
from wl_infer.commands.bounty import release as bounty_release
from wl_infer.commands.bounty import withdraw as bounty_withdraw
from wl_infer.text import error_line


def public_rpc_url(url: str) -> str:
    """The URL without user:password, which must never be committed to a shared board."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@click.group()
def chain() -> None:
    """Where this board anchors result hashes and attestations on an EVM chain."""


@chain.command()
@click.option("--rpc-url", help="JSON-RPC endpoint (http(s)://…, or eth-tester:// for the in-process chain). "
                                "Default: $WL_RPC_URL, then config rpc_url.")
@click.option("--replace", is_flag=True, help="Deploy a new contract even though the board already has one.")
@click.option("--no-rpc-url", "hide_rpc", is_flag=True,
              help="Do not publish the RPC URL in chain.json (say, it carries an API key); rigs set rpc_url.")
@click.option("--no-push", is_flag=True, help="Commit chain.json locally only; `wl sync` publishes it later.")
@click.pass_obj
def deploy(obj: Obj, rpc_url: str | None, replace: bool, hide_rpc: bool, no_push: bool) -> None:
    """Deploy InferenceAnchor and InferenceBounty with this rig's key and record both in chain.json."""
    from board.api import load_private_key, refresh_if_online
    from wl_infer import chain as chain_lib

    board = obj.board()
    me = board.require_handle()
    rpc = rpc_url or os.environ.get("WL_RPC_URL") or board.config.get("rpc_url")
    if not rpc:
        raise click.UsageError("--rpc-url is required (or set WL_RPC_URL, or `wl config set rpc_url URL`)")
    if not no_push:
        refresh_if_online(board)
    existing = board.view().chain()
    if existing is not None and not replace:
        raise WlError(
            f"this board already anchors on chain {existing.get('chain_id')} at {existing.get('contract')} "
            "(chain.json); pass --replace to deploy a new contract and point the board at it"
        )
    key = load_private_key(board.home.path)
    dep = chain_lib.deploy(rpc, key)
    escrow = chain_lib.deploy(rpc, key, name="InferenceBounty")
    record: dict[str, Any] = {
        "chain_id": dep.chain_id,
        "contract": dep.contract,
        "deployed_by": {"handle": me, "address": dep.deployed_by},
        "tx": dep.tx,
        "block": dep.block,
        "bounty_contract": escrow.contract,
        "bounty_tx": escrow.tx,
    }
    if not hide_rpc:
        record["rpc_url"] = public_rpc_url(rpc)
    res = board.mutate(board.new_op("chain", None, record=record, replace=replace), push=not no_push)

    def human() -> None:
        say(f"✓ Deployed InferenceAnchor at {dep.contract}")
        say(f"  Chain: {dep.chain_id}, tx {dep.tx} in block {dep.block} ({dep.gas_used:,} gas)")
        say(f"✓ Deployed InferenceBounty at {escrow.contract} (tx {escrow.tx}, {escrow.gas_used:,} gas)")
        say("  Recorded in chain.json: every rig finds it after `wl sync`")
        if rpc == chain_lib.TESTER_URL:
            say("  ⚠ eth-tester:// is an in-process chain: it ends with this command, so later commands cannot "
                "anchor on it (it is for one process: tests, `wl demo`); for a real try, run a Hardhat node "
                "(README: Anchoring on a chain)", "yellow")
        report_push(res)

    emit({"ok": True, **record, "gas_used": dep.gas_used, "bounty_gas_used": escrow.gas_used, "pushed": res.pushed, "local_reason": res.local_reason},
         human)


def _source(flag: str | None, env: str, key: str, config: dict[str, Any], chain_json: dict[str, Any] | None) -> str:
    if flag:
        return "flag"
    if os.environ.get(env):
        return f"${env}"
    if config.get(key):
        return f"config {key}"
    if chain_json and chain_json.get(key):
        return "chain.json"
    return "unset"


@chain.command()
@click.argument("bounty_of", metavar="[ID]", required=False)
@click.option("--check", is_flag=True,
              help="Also ask the node: its chain id, and whether the contract is there (exit 1 when not).")
@click.pass_obj
def status(obj: Obj, bounty_of: str | None, check: bool) -> None:
    """Where this board anchors (chain.json) and what this rig will use (flags > env > config > chain.json).

    With ID (an item id or a raw bounty id, 0x + 64 hex), also the bounty as the contract holds it."""
    from board.api import refresh_if_online
    from wl_infer.anchoring import chain_target

    board = obj.board()
    refresh_if_online(board)
    target = chain_target(board)
    held = None
    if bounty_of is not None:
        from wl_infer.bounty_settle import describe

        held = describe(board, bounty_of)
    data: dict[str, Any] = {
        "chain_json": target.chain_json,
        "rpc_url": target.rpc_url,
        "contract": target.contract,
        "rpc_url_from": _source(None, "WL_RPC_URL", "rpc_url", board.config, target.chain_json),
        "contract_from": _source(None, "WL_CONTRACT", "contract", board.config, target.chain_json),
        "check": None,
        "bounty": held,
    }
    if check:
        data["check"] = _check(target.rpc_url, target.contract, target.chain_json)

    def human() -> None:
        cj = target.chain_json
        if cj is None:
            say("This board has no chain.json (run `wl chain deploy --rpc-url URL`).")
        else:
            by = cj.get("deployed_by")
            who = f"{by.get('handle')} ({by.get('address')})" if isinstance(by, dict) else str(by)
            say(f"Board anchors on chain {cj.get('chain_id')} at {cj.get('contract')}")
            say(f"  Deployed by {who} in tx {cj.get('tx')}" + (f", block {cj['block']}" if "block" in cj else ""))
            if cj.get("bounty_contract"):
                say(f"  Bounties escrowed at {cj.get('bounty_contract')} (InferenceBounty)")
        say(f"  RPC URL:  {target.rpc_url or '(none)'} [{data['rpc_url_from']}]")
        say(f"  Contract: {target.contract or '(none)'} [{data['contract_from']}]")
        result = data["check"]
        if result is not None:
            if result["ok"]:
                say(f"  ✓ node answers (chain {result['chain_id']}); contract present", "green")
            else:
                say(f"  ✗ {result['problem']}", "red")
        if held is not None:
            from wl_infer.commands.bounty import say_chain_bounty

            say_chain_bounty(held)

    emit(data, human)
    if data["check"] is not None and not data["check"]["ok"]:  # scripts gate on the exit code, as with doctor
        raise WlError(f"chain check failed: {data['check']['problem']}")


def _check(rpc: str | None, contract: str | None, chain_json: dict[str, Any] | None) -> dict[str, Any]:
    """Ask the node for its chain id and the contract's code; problems are values, not errors."""
    if not rpc or not contract:
        return {"ok": False, "chain_id": None, "problem": "no RPC URL or contract to check"}
    from wl_infer import chain as chain_lib

    try:
        w3 = chain_lib.connect(rpc)
        policy = chain_lib.RetryPolicy(attempts=3, base_delay=0.1, max_delay=0.5, total_timeout=5.0)
        chain_id = int(chain_lib.with_retry("status", lambda: w3.eth.chain_id, policy))
        address = chain_lib.contract_address(contract, "status")
        code = chain_lib.with_retry("status", lambda: w3.eth.get_code(address), policy)  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 - status reports, it does not fail
        return {"ok": False, "chain_id": None, "problem": f"unreachable: {error_line(e)}"}
    expected = (chain_json or {}).get("chain_id")
    if expected is not None and expected != chain_id:
        return {"ok": False, "chain_id": chain_id, "problem": f"the node is chain {chain_id}, chain.json says {expected}"}
    if not code:
        problem = f"no contract code at {address} on chain {chain_id}"
        if rpc == chain_lib.TESTER_URL:
            from wl_infer.anchoring import TESTER_GONE

            problem += f" ({TESTER_GONE})"
        return {"ok": False, "chain_id": chain_id, "problem": problem}
    return {"ok": True, "chain_id": chain_id, "problem": None}


@chain.command()
@click.argument("item_id", type=ITEM_ID)
@click.option("--rpc-url", help="Override the RPC URL (default: env, config, then chain.json).")
@click.option("--contract", help="Override the contract address.")
@click.pass_obj
def attest(obj: Obj, item_id: str, rpc_url: str | None, contract: str | None) -> None:
    """Publish this rig's recorded verdict on ITEM_ID (from `wl infer verify`) on the chain; a named verifier
    of its bounty also confirms (VERIFIED) or disputes (MISMATCH, INVALID) it within the challenge window."""
    from wl_infer.anchoring import anchor_attestation
    from wl_infer.bounty_board import attest_bounty

    board = obj.board()
    res = anchor_attestation(board, item_id, rpc_url=rpc_url, contract=contract)
    res["bounty"] = attest_bounty(board, item_id)

    def human() -> None:
        say(f"✓ Attested {res['verdict']} for {res['item_id']}: tx {res['tx']} in block {res['block']}")
        sent = res["bounty"]
        if sent is not None:
            what = "Confirmed" if sent["verdict"] == "VERIFIED" else "Disputed"
            say(f"✓ {what} the bounty ({sent['verdict']}): tx {sent['tx']}")

    emit({"ok": True, **res}, human)


@click.command()
@click.argument("item_id", type=ITEM_ID)
@click.option("--rpc-url", help="Override the RPC URL (default: $WL_RPC_URL, config, then chain.json).")
@click.option("--contract", help="Override the contract address (default: $WL_CONTRACT, config, then chain.json).")
@click.option("--no-push", is_flag=True, help="Record the transaction in the evidence locally only.")
@click.pass_obj
def anchor(obj: Obj, item_id: str, rpc_url: str | None, contract: str | None, no_push: bool) -> None:
    """Anchor this rig's result hashes on the board's chain (once; retried with backoff)."""
    from wl_infer.anchoring import anchor_item

    res = anchor_item(obj.board(), item_id, rpc_url=rpc_url, contract=contract, push=not no_push)

    def human() -> None:
        if res["already_anchored"]:
            say(f"✓ {res['item_id']} is already anchored: tx {res['tx']} in block {res['block']} "
                "(no new transaction)")
        else:
            say(f"✓ Anchored {res['item_id']} on chain {res['chain_id']}: tx {res['tx']} in block {res['block']} "
                f"({res['gas_used']:,} gas)")
        say(f"  Contract: {res['contract']}")
        say(f"  Output:   {res['output_hash']}")
        say(f"  Evidence: {res['evidence_hash']}")
        if res["recorded"] and not res["pushed"]:
            say(f"  ⚠ recorded locally, not pushed: {res['local_reason']}. Run `wl sync` to publish.", "yellow")

    emit({"ok": True, **res}, human)


chain.add_command(bounty_assign)
chain.add_command(bounty_withdraw)
chain.add_command(bounty_refund)
chain.add_command(bounty_release)
