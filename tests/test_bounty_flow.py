"""Paid jobs end to end through `wl` on the in-process EVM: post with a bounty, the poster names the board's
claimer, run --anchor stakes and submits, a named verifier confirms, the worker withdraws after the window;
a job nobody delivers is refunded; a forged bounty record on the board is reported, never paid."""

from __future__ import annotations

import subprocess
import sys
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
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    assert rigs.wl("alice", "chain", "assign", iid).exit_code == 0
    res = rigs.wl("alice", "chain", "refund", iid)  # a named worker is protected until the deadline
    assert res.exit_code == 1 and "assigned to" in res.stderr and "refundable after its deadline" in res.stderr
    assert res.stderr.count("\n") == 1
    assert "deadline in" in rigs.wl("alice", "infer", "status", iid).stdout
    _travel(3601)
    code, back = rigs.wl_json("carol", "chain", "refund", iid)  # anyone may call it; the poster is credited
    assert code == 0 and back["how"] == "refund" and back["resolved"] and back["withdrawn"] == 0
    code, paid = rigs.wl_json("alice", "chain", "withdraw")
    assert code == 0 and paid["withdrawn"] == 5 * 10**9
    assert _status(rigs, iid)["state"] == "refunded"
    res = rigs.wl("bob", "infer", "run", iid, "--skip-claim", "--anchor")  # too late: nothing is revealed
    assert res.exit_code == 1 and "is refunded, not assigned" in res.stderr


def test_the_poster_cancels_an_unassigned_bounty_by_item_or_raw_id(rigs: Rigs, deployed: dict[str, Any]) -> None:
    contract = deployed["bounty_contract"]
    iid = post(rigs, "alice", "--prompt", "2+2", "--model", MODEL, "--bounty", "7gwei", "--deadline", "1h")
    bid = orjson.loads(rigs.item("alice", iid).description)["bounty"]["bounty_id"]
    code, shown = rigs.wl_json("carol", "chain", "status", bid)
    assert code == 0 and shown["bounty"]["state"] == "open" and shown["bounty"]["item_id"] is None
    assert shown["bounty"]["amount"] == str(7 * 10**9) and 3500 < shown["bounty"]["deadline_left_s"] <= 3600
    assert rigs.wl_json("carol", "chain", "status", iid)[1]["bounty"]["bounty_id"] == bid
    res = rigs.wl("bob", "chain", "refund", bid)  # not the poster, before the deadline: refused
    assert res.exit_code == 1 and "only its poster" in res.stderr and res.stderr.count("\n") == 1
    for bad in ("0x1234", "0x" + "zz" * 32):
        res = rigs.wl("alice", "chain", "refund", bad)
        assert res.exit_code == 2 and "0x + 64 hex digits" in res.stderr and res.stderr.count("\n") == 1
    res = rigs.wl("alice", "chain", "status", "0x" + "ab" * 32)
    assert res.exit_code == 1 and "no bounty 0x" + "ab" * 32 in res.stderr

    # the worker gives back its assignment; then the poster may cancel at once
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    assert rigs.wl("alice", "chain", "assign", iid).exit_code == 0
    res = rigs.wl("carol", "chain", "release", iid)
    assert res.exit_code == 1 and "not assigned to this rig" in res.stderr
    code, released = rigs.wl_json("bob", "chain", "release", bid)
    assert code == 0 and released["tx"]
    code, back = rigs.wl_json("alice", "chain", "refund", bid.upper().replace("0X", "0x"))
    assert code == 0 and back["how"] == "cancel" and back["withdrawn"] == 7 * 10**9
    on_chain = bounty.read_bounty(TESTER, contract, bid)
    assert on_chain is not None and on_chain.state == "refunded"
    res = rigs.wl("alice", "chain", "assign", iid)  # ended: it cannot be re-opened or paid
    assert res.exit_code == 1 and "WrongState" in res.stderr
    code, again = rigs.wl_json("alice", "chain", "refund", iid)
    assert code == 0 and again["withdrawn"] == 0 and again["resolved"] is None


def test_a_post_that_fails_after_the_escrow_gets_its_bounty_back(rigs: Rigs, deployed: dict[str, Any]) -> None:
    contract = deployed["bounty_contract"]
    alice = address_of(rigs.home("alice"))
    w3: Any = chain.connect(TESTER)
    before = int(w3.eth.get_balance(alice))
    huge = "x" * (1 << 20)  # escrowed, then refused by the board: its description is over the record limit
    res = rigs.wl("alice", "infer", "post", "--prompt", huge, "--model", MODEL, "--bounty", "0.01")
    assert res.exit_code != 0 and res.stderr.count("\n") == 1, res.output
    assert "too long" in res.stderr and "the escrowed bounty was cancelled and 0.01 ETH withdrawn" in res.stderr
    assert bounty.credit_of(TESTER, contract, alice) == 0
    assert before - int(w3.eth.get_balance(alice)) < 10**15  # only gas is spent, the 0.01 ETH came back
    assert rigs.wl_json("alice", "browse", "--status", "all")[1]["total"] == 0


def test_a_poster_cannot_name_itself_as_a_verifier(rigs: Rigs, deployed: dict[str, Any]) -> None:
    res = rigs.wl("alice", "infer", "post", "--prompt", "x", "--model", MODEL, "--bounty", "1gwei",
                  "--verifiers", "carol,alice")
    assert res.exit_code == 2 and "alice is the poster's own rig" in res.stderr and res.stderr.count("\n") == 1
    code, _ = rigs.wl_json("alice", "browse", "--status", "all")
    assert rigs.wl_json("alice", "browse", "--status", "all")[1]["total"] == 0  # refused before any escrow


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
    contract = deployed["bounty_contract"]
    bid = orjson.loads(rigs.item("bob", rich).description)["bounty"]["bounty_id"]
    # claimed, but held: nothing runs or is published before the poster names bob on chain
    res = rigs.wl("bob", "infer", "worker", "--once", "--min-bounty", "0.005", "--poll", "0.1")
    assert res.exit_code == 0, res.output
    assert '"awaiting_assignment"' in res.stdout and '"no_job"' in res.stdout
    held = rigs.item("bob", rich)
    assert held.status == "claimed" and held.claimed_by == "bob"
    assert rigs.board("bob").view().completion(rich) is None
    assert rigs.item("bob", cheap).status == "open" and rigs.item("bob", unpaid).status == "open"

    assert rigs.wl("alice", "chain", "assign", rich).exit_code == 0
    res = rigs.wl("bob", "infer", "worker", "--once", "--min-bounty", "0.005", "--poll", "0.1")  # a new process
    assert res.exit_code == 0, res.output
    assert '"assigned"' in res.stdout and '"bounty_submitted"' in res.stdout
    assert rigs.item("bob", rich).status == "in_review"
    comp = rigs.board("bob").view().completion(rich)
    assert comp is not None
    published = orjson.loads(comp.evidence)["output_hash"]
    on_chain = bounty.read_bounty(TESTER, contract, bid)
    assert on_chain is not None and on_chain.state == "submitted" and on_chain.output_hash == published
    assert on_chain.worker == address_of(rigs.home("bob")) and on_chain.stake == MILLI
    assert rigs.item("bob", cheap).status == "open" and rigs.item("bob", unpaid).status == "open"
    res = rigs.wl("bob", "infer", "worker", "--once", "--min-bounty", "a lot")
    assert res.exit_code == 2 and res.stderr.startswith("wl: error: amount 'a lot'")


def test_a_result_that_cannot_be_staked_is_not_published(rigs: Rigs, deployed: dict[str, Any]) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL, "--bounty", "1gwei", "--deadline", "1h")
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    assert rigs.wl("alice", "chain", "assign", iid).exit_code == 0
    _travel(3601)  # still assigned on chain, but the deadline has passed: the submission is refused
    res = rigs.wl("bob", "infer", "run", iid, "--skip-claim", "--anchor")
    assert res.exit_code == 1 and "DeadlinePassed" in res.stderr and res.stderr.count("\n") == 1
    assert rigs.item("bob", iid).status == "claimed" and rigs.board("bob").view().completion(iid) is None


def test_browse_shows_the_recorded_bounty_without_touching_the_chain(rigs: Rigs, deployed: dict[str, Any]) -> None:
    unpaid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    paid = post(rigs, "alice", "--prompt", "what is 2+2", "--model", MODEL, "--bounty", "0.01", "--deadline", "2d")
    job = {"prompt": "what is 3+3", "model": MODEL, "seed": 42, "backend": "ollama", "options": {}}
    bad = orjson.dumps({**job, "bounty": {"amount": "\x1b[31mfree money"}}).decode()
    code, made = rigs.wl_json("carol", "post", "--title", "garbage", "--type", "inference", "--description", bad)
    assert code == 0 and rigs.wl("bob", "sync").exit_code == 0
    code, listed = rigs.wl_json("bob", "browse")
    assert code == 0, listed
    column = listed["columns"]["bounty"]
    assert unpaid not in column and column[made["id"]] == "bad record"
    assert column[paid].startswith("0.01 ETH, ") and column[paid].endswith(" left")
    res = rigs.wl("bob", "browse")
    assert res.exit_code == 0 and "BOUNTY" in res.stdout and "0.01 ETH" in res.stdout and "\x1b" not in res.stdout
    # the board command loads no chain library to show it
    code_text = (
        "import sys\nfrom board.cli.main import cli\n"
        f"cli.main(args=['--home', {str(rigs.home('bob'))!r}, 'browse'], standalone_mode=False)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('web3', 'eth_account', 'eth_abi', 'eth_utils'))\n"
        "print('BAD', bad); sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code_text], capture_output=True, text=True, timeout=120,
                          env={**rigs.env, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "0.01 ETH" in done.stdout, done.stdout + done.stderr
