"""Paid jobs end to end through `wl` on the in-process EVM: post with a bounty, the poster names the board's
claimer, run --anchor stakes and submits, a named verifier confirms, the worker withdraws after the window;
a job nobody delivers is refunded; a forged bounty record on the board is reported, never paid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("eth_tester", reason="web3[tester] is not installed")

from fake_servers import FakeOllama  # noqa: E402
from infer_helpers import Rigs, make_rigs, post  # noqa: E402

from board.keys import address_of  # noqa: E402
from wl_infer import bounty, chain  # noqa: E402

pytestmark = pytest.mark.chain

MODEL = "llama3.2:1b"
TESTER = chain.TESTER_URL
MILLI = 10**15  # 0.001 ETH


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}}) as server:
        yield server


@pytest.fixture
def rigs(tmp_path: Path, ollama: FakeOllama) -> Rigs:
    return make_rigs(tmp_path, env={"OLLAMA_HOST": ollama.url})


@pytest.fixture
def deployed(rigs: Rigs) -> dict[str, Any]:
    code, data = rigs.wl_json("alice", "chain", "deploy", "--rpc-url", TESTER)
    assert code == 0, data
    assert data["bounty_contract"].startswith("0x") and data["bounty_contract"] != data["contract"]
    for h in ("bob", "carol"):
        assert rigs.wl(h, "sync").exit_code == 0
    return dict(data)


def _travel(seconds: int) -> None:
    w3: Any = chain.connect(TESTER)
    tester = w3.provider.ethereum_tester
    tester.time_travel(bounty.chain_time(TESTER) + seconds)
    tester.mine_blocks(1)


def _status(rigs: Rigs, iid: str) -> dict[str, Any]:
    assert rigs.wl("carol", "sync").exit_code == 0
    code, data = rigs.wl_json("carol", "infer", "status", iid)
    assert code == 0, data
    return dict(data["bounty"])


def test_a_paid_job_from_post_to_withdraw(rigs: Rigs, deployed: dict[str, Any]) -> None:
    code, posted = rigs.wl_json("alice", "infer", "post", "--prompt", "what is 1+1", "--model", MODEL,
                                "--bounty", "0.01", "--verifiers", "carol", "--challenge-window", "1h")
    assert code == 0, posted
    iid = posted["id"]
    rec = posted["bounty"]
    assert (rec["amount"], rec["stake"], rec["window"], rec["threshold"]) == (str(10 * MILLI), str(MILLI), 3600, 1)
    assert rec["verifiers"] == [{"handle": "carol", "address": address_of(rigs.home("carol"))}]
    assert orjson.loads(rigs.item("bob", iid).description)["bounty"]["bounty_id"] == rec["bounty_id"]
    on_chain = bounty.read_bounty(TESTER, deployed["bounty_contract"], rec["bounty_id"])
    assert on_chain is not None and on_chain.state == "open" and on_chain.amount == 10 * MILLI
    assert _status(rigs, iid)["state"] == "open"

    # bob would run before alice has named him: refused before anything runs or is revealed
    res = rigs.wl("bob", "infer", "run", iid, "--anchor")
    assert res.exit_code == 1 and "is open, not assigned to this rig" in res.stderr and res.stderr.count("\n") == 1
    assert rigs.item("bob", iid).status == "open"
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    res = rigs.wl("carol", "chain", "assign", iid)  # only the poster names the worker
    assert res.exit_code == 1 and res.stderr.startswith("wl: error: carol may not assign") and res.stderr.count("\n") == 1
    code, assigned = rigs.wl_json("alice", "chain", "assign", iid)
    assert code == 0 and assigned["worker"] == "bob" and assigned["address"] == address_of(rigs.home("bob"))
    assert rigs.wl_json("alice", "chain", "assign", iid)[1]["already_assigned"] is True
    res = rigs.wl("carol", "infer", "run", iid, "--skip-claim")  # carol is not the one assigned either
    assert res.exit_code == 1 and "not assigned to this rig" in res.stderr

    code, ran = rigs.wl_json("bob", "infer", "run", iid, "--skip-claim", "--anchor")
    assert code == 0, ran
    assert ran["anchor"]["bounty"]["submitted"] and ran["anchor"]["bounty"]["stake"] == MILLI
    code, anchored = rigs.wl_json("bob", "infer", "anchor", iid)
    assert code == 0 and anchored["bounty"]["already_submitted"] is True
    state = _status(rigs, iid)
    assert state["state"] == "submitted" and 3500 < state["window_left_s"] <= 3600
    assert "challenge window left" in rigs.wl("carol", "infer", "status", iid).stdout

    assert rigs.wl("carol", "infer", "verify", iid).exit_code == 0
    code, attested = rigs.wl_json("carol", "chain", "attest", iid)
    assert code == 0 and attested["bounty"]["verdict"] == "VERIFIED"
    res = rigs.wl("bob", "chain", "withdraw", iid)
    assert res.exit_code == 1 and "WindowOpen" in res.stderr and res.stderr.count("\n") == 1

    _travel(3601)
    code, paid = rigs.wl_json("bob", "chain", "withdraw", iid)
    assert code == 0 and paid["withdrawn"] == 11 * MILLI and paid["resolved"]
    assert _status(rigs, iid)["state"] == "paid"
    res = rigs.wl("bob", "chain", "withdraw", iid)  # the second withdraw pays nothing
    assert res.exit_code == 0 and "Nothing is credited" in res.stdout
    res = rigs.wl("alice", "chain", "refund", iid)
    assert res.exit_code == 0 and "Nothing is credited" in res.stdout  # settled: no refund on top


def test_no_result_by_the_deadline_is_refunded(rigs: Rigs, deployed: dict[str, Any]) -> None:
    iid = post(rigs, "alice", "--prompt", "2+2", "--model", MODEL, "--bounty", "5gwei", "--deadline", "1h")
    res = rigs.wl("alice", "chain", "refund", iid)
    assert res.exit_code == 1 and "DeadlineNotReached" in res.stderr
    assert "deadline in" in rigs.wl("alice", "infer", "status", iid).stdout
    _travel(3601)
    code, back = rigs.wl_json("alice", "chain", "refund", iid)
    assert code == 0 and back["withdrawn"] == 5 * 10**9
    assert _status(rigs, iid)["state"] == "refunded"


def test_bounty_options_are_checked_before_anything_is_escrowed(rigs: Rigs, deployed: dict[str, Any]) -> None:
    for args, message in [
        (("--bounty", "lots"), "amount 'lots'"),
        (("--bounty", "0"), "--bounty must be more than 0"),
        (("--bounty", "1", "--challenge-window", "0"), "duration '0'"),
        (("--verifiers", "carol"), "need --bounty"),
        (("--bounty", "1gwei", "--verifiers", "mallory"), "mallory is not a registered rig"),
        (("--bounty", "1gwei", "--verifiers", "carol", "--threshold", "2"), "--threshold 2 does not fit 1"),
    ]:
        res = rigs.wl("alice", "infer", "post", "--prompt", "x", "--model", MODEL, *args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.stderr and res.stderr.count("\n") == 1, (args, res.stderr)


def test_a_forged_bounty_record_is_reported_and_never_paid(rigs: Rigs, deployed: dict[str, Any]) -> None:
    real = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL, "--bounty", "1gwei")
    rec = orjson.loads(rigs.item("carol", real).description)["bounty"]
    # carol posts her own item claiming alice's escrow as its bounty
    job = {"prompt": "what is 3+3", "model": MODEL, "seed": 42, "backend": "ollama", "options": {}}
    description = orjson.dumps({**job, "bounty": rec}).decode()
    code, made = rigs.wl_json("carol", "post", "--title", "forged", "--type", "inference", "--description", description)
    assert code == 0, made
    iid = made["id"]
    report = _status(rigs, iid)
    assert "not an address registered for carol" in report["problem"]
    res = rigs.wl("bob", "infer", "run", iid, "--anchor")  # a run checks the record first: refused, one line
    assert res.exit_code != 0 and "not an address registered for carol" in res.stderr and res.stderr.count("\n") == 1
    code, ran = rigs.wl_json("bob", "infer", "run", iid, "--anchor", "--unpaid")
    assert code == 0 and ran["anchor"]["bounty"]["submitted"] is False
    assert "not an address registered for carol" in ran["anchor"]["bounty"]["reason"]
    res = rigs.wl("carol", "chain", "assign", iid)
    assert res.exit_code != 0 and res.stderr.count("\n") == 1
    # garbage in the bounty field is one line in status, not a traceback
    bad = orjson.dumps({**job, "bounty": {"amount": "\x1b[31mfree money"}}).decode()
    code, made = rigs.wl_json("carol", "post", "--title", "garbage", "--type", "inference", "--description", bad)
    assert code == 0 and rigs.wl("alice", "sync").exit_code == 0
    res = rigs.wl("alice", "infer", "status", made["id"])
    assert res.exit_code == 0 and "malformed bounty record" in res.stdout and "\x1b" not in res.stdout


def test_worker_min_bounty_takes_only_paid_work_above_the_floor(rigs: Rigs, deployed: dict[str, Any]) -> None:
    unpaid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    cheap = post(rigs, "alice", "--prompt", "what is 2+2", "--model", MODEL, "--bounty", "1gwei")
    rich = post(rigs, "alice", "--prompt", "what is 3+3", "--model", MODEL, "--bounty", "0.01")
    res = rigs.wl("bob", "infer", "worker", "--once", "--min-bounty", "0.005", "--poll", "0.1")
    assert res.exit_code == 0, res.output
    assert rigs.item("bob", rich).status == "in_review"
    assert rigs.item("bob", cheap).status == "open" and rigs.item("bob", unpaid).status == "open"
    res = rigs.wl("bob", "infer", "worker", "--once", "--min-bounty", "a lot")
    assert res.exit_code == 2 and res.stderr.startswith("wl: error: amount 'a lot'")
