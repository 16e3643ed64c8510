"""Anchoring board results on the in-process EVM (eth-tester), end to end through `wl`.

The chain is py-evm, real contract bytecode; the board is a bare git commons with three homes and their own
keys. Jobs run on the ollama backend against tests/fake_servers.py's Ollama on 127.0.0.1, which is enough
here: anchoring is about hashes and signatures, not about the engine.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("eth_tester", reason="web3[tester] is not installed")

from fake_servers import FakeOllama, free_port  # noqa: E402
from infer_helpers import Rigs, make_rigs, post  # noqa: E402
from remotes import commit_file_to_remote  # noqa: E402

from board import layout  # noqa: E402
from board.keys import address_of, load_private_key  # noqa: E402
from board.records import Completion  # noqa: E402
from wl_infer import chain  # noqa: E402
from wl_infer.codec import Evidence, output_hash  # noqa: E402
from wl_infer.signing import evidence_hash, sign_record, verify_signature  # noqa: E402

pytestmark = pytest.mark.chain

MODEL = "llama3.2:1b"
TESTER = chain.TESTER_URL
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}}) as server:
        yield server


@pytest.fixture
def rigs(tmp_path: Path, ollama: FakeOllama) -> Rigs:
    return make_rigs(tmp_path, env={"OLLAMA_HOST": ollama.url})


@pytest.fixture
def deployed(rigs: Rigs) -> dict[str, Any]:
    """alice deploys a fresh contract for this board; everyone syncs."""
    code, data = rigs.wl_json("alice", "chain", "deploy", "--rpc-url", TESTER)
    assert code == 0, data
    for h in ("bob", "carol"):
        assert rigs.wl(h, "sync").exit_code == 0
    return dict(data)


def _completion(rigs: Rigs, item_id: str) -> Completion:
    with rigs.board("carol") as b:
        b.refresh()
        comp = b.view().completion(item_id)
        assert comp is not None
        return comp


def _board_id(rigs: Rigs) -> str:
    with rigs.board("alice") as b:
        return str(b.meta()["board_id"])


def _nonce(address: str) -> int:
    return int(chain.connect(TESTER).eth.get_transaction_count(address))  # type: ignore[arg-type]


def _ran(rigs: Rigs, *args: str) -> str:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    res = rigs.wl("bob", "infer", "run", iid, *args)
    assert res.exit_code == 0, res.output
    return iid


def test_deploy_commits_chain_json_that_every_rig_finds(rigs: Rigs, deployed: dict[str, Any]) -> None:
    assert deployed["contract"].startswith("0x") and deployed["rpc_url"] == TESTER
    alice = address_of(rigs.home("alice"))
    assert deployed["deployed_by"] == {"handle": "alice", "address": alice}
    with rigs.board("carol") as b:
        on_board = b.view().chain()
    keys = ("chain_id", "contract", "deployed_by", "tx", "block", "rpc_url", "bounty_contract", "bounty_tx")
    assert on_board == {k: deployed[k] for k in keys}
    assert deployed["bounty_contract"] != deployed["contract"]
    code, status = rigs.wl_json("carol", "chain", "status", "--check")
    assert code == 0
    assert (status["contract"], status["contract_from"], status["rpc_url_from"]) == (
        deployed["contract"], "chain.json", "chain.json")
    assert status["check"] == {"ok": True, "chain_id": deployed["chain_id"], "problem": None}
    res = rigs.wl("carol", "chain", "status")
    assert f"Board anchors on chain {deployed['chain_id']} at {deployed['contract']}" in res.stdout
    assert "Deployed by alice" in res.stdout
    assert f"Bounties escrowed at {deployed['bounty_contract']}" in res.stdout


def test_chain_status_check_exits_1_with_the_reason_when_the_check_fails(rigs: Rigs, deployed: dict[str, Any]) -> None:
    nobody = "0x" + "5a" * 20  # a well-formed address with no code on this chain
    res = rigs.wl("carol", "chain", "status", "--check", env={"WL_CONTRACT": nobody})
    assert res.exit_code == 1, res.output
    assert "✗ no contract code at" in res.stdout
    assert res.stderr.startswith("wl: error: chain check failed: no contract code at ")
    assert len(res.stderr.strip().splitlines()) == 1
    code, data = rigs.wl_json("carol", "chain", "status", "--check", env={"WL_RPC_URL": f"http://127.0.0.1:{free_port()}"})
    assert code == 1 and data["check"]["ok"] is False and data["check"]["problem"].startswith("unreachable: ")
    res = rigs.wl("carol", "--json", "chain", "status", "--check", env={"WL_RPC_URL": f"http://127.0.0.1:{free_port()}"})
    err = orjson.loads(res.stderr)
    assert err["exit_code"] == 1 and err["error"].startswith("chain check failed: unreachable: ")
    assert rigs.wl("carol", "chain", "status").exit_code == 0  # without --check nothing is asked, nothing fails


@pytest.mark.timeout(180)
def test_an_eth_tester_chain_deployed_by_another_process_gets_a_hint_that_can_help(rigs: Rigs) -> None:
    """The in-process chain dies with the `wl chain deploy` process: retrying `wl infer anchor` cannot help."""
    import os

    from remotes import WL

    iid = _ran(rigs)
    env = {**os.environ, **rigs.env}

    def wl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WL, "--home", str(rigs.home("bob")), *args], capture_output=True, text=True,
                              timeout=120, env=env)  # fmt: skip

    deployed = wl("chain", "deploy", "--rpc-url", TESTER)
    assert deployed.returncode == 0, deployed.stderr
    assert "⚠ eth-tester:// is an in-process chain: it ends with this command" in deployed.stdout
    res = wl("infer", "anchor", iid)
    assert res.returncode == 1
    [line] = res.stderr.strip().splitlines()
    assert "no InferenceAnchor contract" in line and "eth-tester:// is an in-process chain that ended" in line
    assert "retry:" not in line and "--rpc-url http://127.0.0.1:8545 --replace" in line
    res = wl("chain", "status", "--check")
    assert res.returncode == 1 and "eth-tester:// is an in-process chain that ended" in res.stderr


def test_a_second_deploy_is_refused_unless_replace(rigs: Rigs, deployed: dict[str, Any]) -> None:
    res = rigs.wl("bob", "chain", "deploy", "--rpc-url", TESTER)
    assert res.exit_code == 1
    assert res.stderr.startswith("wl: error: this board already anchors on chain") and "--replace" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    code, again = rigs.wl_json("bob", "chain", "deploy", "--rpc-url", TESTER, "--replace")
    assert code == 0 and again["contract"] != deployed["contract"]
    assert rigs.wl("alice", "sync").exit_code == 0
    with rigs.board("alice") as b:
        assert b.view().chain()["contract"] == again["contract"]  # type: ignore[index]


def test_anchor_records_the_transaction_in_the_evidence_and_never_twice(rigs: Rigs, deployed: dict[str, Any]) -> None:
    iid = _ran(rigs)
    signed_before = Evidence.decode(_completion(rigs, iid).evidence)
    code, first = rigs.wl_json("bob", "infer", "anchor", iid)
    assert code == 0, first
    assert first["already_anchored"] is False and first["recorded"] and first["pushed"]
    assert first["tx"].startswith("0x") and first["block"] > 0 and first["gas_used"] > 0

    comp = _completion(rigs, iid)
    data = orjson.loads(comp.evidence)
    assert data["anchor"] == {"chain_id": deployed["chain_id"], "contract": deployed["contract"],
                              "tx": first["tx"], "block": first["block"]}
    ev = Evidence.decode(comp.evidence)
    assert ev.unsigned_dict() == signed_before.unsigned_dict() and ev.signature == signed_before.signature
    context = {"board_id": _board_id(rigs), "item_id": iid}
    assert verify_signature("evidence", ev.to_dict(), context, address_of(rigs.home("bob")))  # anchor is outside
    assert first["evidence_hash"] == evidence_hash(ev.unsigned_dict(), context)
    record = chain.read_anchor(TESTER, deployed["contract"], context["board_id"], iid, address_of(rigs.home("bob")))
    assert record is not None and record.worker == address_of(rigs.home("bob"))
    assert (record.output_hash, record.evidence_hash) == (ev.output_hash, first["evidence_hash"])
    with rigs.board("alice") as b:
        b.refresh()
        assert b.get_item(iid).evidence_url == comp.evidence  # mirrored, as `done` stores it

    nonce = _nonce(address_of(rigs.home("bob")))
    res = rigs.wl("bob", "infer", "anchor", iid)
    assert res.exit_code == 0, res.output
    assert f"{iid} is already anchored: tx {first['tx']} in block {first['block']} (no new transaction)" in res.stdout
    assert _nonce(address_of(rigs.home("bob"))) == nonce  # nothing sent
    assert _completion(rigs, iid).evidence == comp.evidence  # nothing committed either

    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 0, res.output
    assert "✓ VERIFIED" in res.stdout and "on-chain: matches" in res.stdout


def test_run_with_anchor_publishes_and_verify_agrees(rigs: Rigs, deployed: dict[str, Any]) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    code, data = rigs.wl_json("bob", "infer", "run", iid, "--anchor")
    assert code == 0, data
    assert data["anchor"]["tx"].startswith("0x") and data["anchor"]["already_anchored"] is False
    res = rigs.wl("bob", "infer", "run", post(rigs, "alice", "--prompt", "2+2", "--model", MODEL), "--anchor")
    assert res.exit_code == 0 and "Anchored: tx 0x" in res.stdout
    code, verdict = rigs.wl_json("carol", "infer", "verify", iid)
    assert code == 0 and verdict["verdict"] == "VERIFIED" and verdict["on_chain"] == "matches"


def test_an_unanchored_result_is_reported_as_not_anchored(rigs: Rigs, deployed: dict[str, Any]) -> None:
    iid = _ran(rigs)
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 0 and "on-chain: not anchored" in res.stdout


def test_a_front_runners_anchor_is_anchored_only_by_others(rigs: Rigs, deployed: dict[str, Any]) -> None:
    """carol copies bob's hashes onto the chain before bob anchors: verify does not credit her record."""
    iid = _ran(rigs)
    comp = _completion(rigs, iid)
    ev = Evidence.decode(comp.evidence)
    board_id = _board_id(rigs)
    ehash = evidence_hash(ev.unsigned_dict(), {"board_id": board_id, "item_id": iid})
    chain.anchor(TESTER, deployed["contract"], load_private_key(rigs.home("carol")), board_id, iid, ev.output_hash,
                 ehash)
    code, verdict = rigs.wl_json("alice", "infer", "verify", iid, "--no-record")
    assert code == 0 and verdict["on_chain"] == "anchored only by others"
    code, data = rigs.wl_json("bob", "infer", "anchor", iid)  # bob's own slot is still free
    assert code == 0 and data["already_anchored"] is False
    code, verdict = rigs.wl_json("alice", "infer", "verify", iid, "--no-record")
    assert code == 0 and verdict["on_chain"] == "matches"


def test_without_a_chain_verify_says_nothing_and_anchor_explains(rigs: Rigs) -> None:
    iid = _ran(rigs)
    code, verdict = rigs.wl_json("carol", "infer", "verify", iid)
    assert code == 0 and verdict["on_chain"] is None
    assert "on-chain" not in rigs.wl("carol", "infer", "verify", iid, "--no-record").stdout
    res = rigs.wl("bob", "infer", "anchor", iid)
    assert res.exit_code == 2 and res.stderr.startswith("wl: error: no chain configured for this board")


def test_evidence_rewritten_by_its_worker_after_anchoring_differs(rigs: Rigs, deployed: dict[str, Any]) -> None:
    iid = _ran(rigs, "--anchor")
    ev = Evidence.decode(_completion(rigs, iid).evidence)
    # the worker re-submits the same output with a touched-up envelope, properly re-signed with its own key
    rewritten = {k: v for k, v in ev.to_dict().items() if k not in ("signature", "anchor")}
    rewritten["envelope"] = {**(ev.envelope or {}), "note": "re-run on a faster machine"}
    context = {"board_id": _board_id(rigs), "item_id": iid}
    rewritten["signature"] = sign_record("evidence", rewritten, context, load_private_key(rigs.home("bob")))
    assert rigs.wl("alice", "reject", iid).exit_code == 0
    assert rigs.wl("bob", "done", iid, "--evidence", orjson.dumps(rewritten).decode()).exit_code == 0
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 0, res.output  # the output still reproduces and the signature is bob's...
    assert "✓ VERIFIED" in res.stdout and "on-chain: differs" in res.stdout  # ...but it is not what was anchored
    res = rigs.wl("bob", "infer", "anchor", iid)  # and the chain keeps the first record
    assert res.exit_code == 1 and "already anchored by" in res.stderr and len(res.stderr.splitlines()) == 1


def test_forged_evidence_pushed_by_hand_never_reaches_verify(rigs: Rigs, deployed: dict[str, Any]) -> None:
    """A hand-edited completion is an invalid commit: validation excludes it, so verify checks the real one."""
    iid = _ran(rigs, "--anchor")
    comp = _completion(rigs, iid)
    lie = "The answer is 2."
    forged = dict(orjson.loads(comp.evidence), output=lie, output_hash=output_hash(lie))  # anchor block kept
    hostile = Completion(**{**comp.to_dict(), "evidence": orjson.dumps(forged).decode()})
    bad = commit_file_to_remote(rigs.commons, layout.completion_path(iid), hostile.encode())  # carol's hand edit
    res = rigs.wl("carol", "sync")
    assert res.exit_code == 1 and bad.decode()[:12] in res.stdout
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 0, res.output
    assert lie not in res.stdout and "on-chain: differs" not in res.stdout


def test_only_the_worker_may_anchor_its_result(rigs: Rigs, deployed: dict[str, Any]) -> None:
    iid = _ran(rigs)
    res = rigs.wl("carol", "infer", "anchor", iid)
    assert res.exit_code == 1
    assert res.stderr.strip() == f"wl: error: carol may not anchor the result of wanted item {iid}: only its worker (bob) may"
    board_id = _board_id(rigs)
    for rig in ("bob", "carol"):
        assert chain.read_anchor(TESTER, deployed["contract"], board_id, iid, address_of(rigs.home(rig))) is None
    open_id = post(rigs, "alice", "--prompt", "x", "--model", MODEL)
    res = rigs.wl("bob", "infer", "anchor", open_id)
    assert res.exit_code == 1 and 'has status "open"' in res.stderr


def test_flags_and_environment_beat_chain_json(rigs: Rigs, deployed: dict[str, Any]) -> None:
    other = chain.deploy(TESTER, load_private_key(rigs.home("carol"))).contract
    iid = _ran(rigs)
    code, data = rigs.wl_json("bob", "infer", "anchor", iid, "--contract", other)
    assert code == 0 and data["contract"] == other
    board_id = _board_id(rigs)
    bob = address_of(rigs.home("bob"))
    assert chain.read_anchor(TESTER, deployed["contract"], board_id, iid, bob) is None
    assert chain.read_anchor(TESTER, other, board_id, iid, bob) is not None
    assert rigs.wl_json("carol", "infer", "verify", iid, "--no-record")[1]["on_chain"] == "not anchored"
    code, verdict = rigs.wl_json("carol", "infer", "verify", iid, "--no-record", env={"WL_CONTRACT": other})
    assert verdict["on_chain"] == "matches"
    assert rigs.wl("carol", "config", "set", "contract", other).exit_code == 0
    assert rigs.wl_json("carol", "infer", "verify", iid, "--no-record")[1]["on_chain"] == "matches"


def test_an_unreachable_chain_does_not_break_verify(rigs: Rigs, deployed: dict[str, Any]) -> None:
    iid = _ran(rigs)
    dead = f"http://127.0.0.1:{free_port()}"
    res = rigs.wl("carol", "infer", "verify", iid, env={"WL_RPC_URL": dead})
    assert res.exit_code == 0, res.output
    assert "✓ VERIFIED" in res.stdout and "on-chain: unreachable (" in res.stdout


def test_chain_errors_are_one_line(rigs: Rigs) -> None:
    res = rigs.wl("alice", "chain", "deploy", "--rpc-url", "ftp://127.0.0.1/nope")
    assert res.exit_code == 1
    assert res.stderr.startswith("wl: error: chain connect: unsupported RPC URL") and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1
    with rigs.board("alice") as b:
        assert b.view().chain() is None
    res = rigs.wl("alice", "chain", "deploy")
    assert res.exit_code == 2 and "--rpc-url is required" in res.stderr


def test_a_verifier_can_publish_its_attestation(rigs: Rigs, deployed: dict[str, Any]) -> None:
    iid = _ran(rigs, "--anchor")
    assert rigs.wl("carol", "infer", "verify", iid).exit_code == 0
    code, data = rigs.wl_json("carol", "chain", "attest", iid)
    assert code == 0, data
    found = chain.read_attestations(TESTER, deployed["contract"], _board_id(rigs), iid)
    assert [(a.verifier, a.verdict, a.tx) for a in found] == [(address_of(rigs.home("carol")), "VERIFIED", data["tx"])]


def test_credentials_in_the_rpc_url_never_reach_the_board() -> None:
    from wl_infer.commands.chain import public_rpc_url

    assert public_rpc_url("https://user:secret@node.example:8545/rpc") == "https://node.example:8545/rpc"
    assert public_rpc_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert public_rpc_url(TESTER) == TESTER


def test_importing_the_cli_modules_does_not_import_web3() -> None:
    code = (
        "import sys, board.cli.main, board.cli.rig, wl_infer.commands.infer, wl_infer.commands.chain, wl_infer.anchoring;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('web3', 'eth_tester'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
