"""`wl chain deploy`, `wl infer run --anchor` and `wl infer anchor` against a local Hardhat node on 127.0.0.1.

The chain side is real JSON-RPC (Hardhat, and a deliberately flaky proxy in front of it). The jobs run on the
ollama backend against tests/fake_servers.py's Ollama on 127.0.0.1 so that a run takes milliseconds: what is
under test is the publishing, not the engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("web3", reason="web3 is not installed")

from fake_servers import FakeOllama  # noqa: E402
from infer_helpers import Rigs, make_rigs, post  # noqa: E402
from web3 import Web3  # noqa: E402

from board.keys import address_of, load_private_key  # noqa: E402
from wl_infer import chain  # noqa: E402
from wl_infer.chain import ChainError  # noqa: E402

try:
    from tests.chain_helpers import FlakyProxy, fund, hardhat_missing_reason, hardhat_node, rpc
except ImportError:  # tests/ on sys.path rather than the repository root
    from chain_helpers import FlakyProxy, fund, hardhat_missing_reason, hardhat_node, rpc  # type: ignore[no-redef]

pytestmark = [pytest.mark.chain, pytest.mark.slow]

MODEL = "llama3.2:1b"
WL = str(Path(sys.executable).with_name("wl"))


@pytest.fixture(scope="module")
def hardhat_url() -> Iterator[str]:
    reason = hardhat_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with hardhat_node(startup_timeout=60.0) as url:
        yield url


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}}) as server:
        yield server


@pytest.fixture
def rigs(tmp_path: Path, ollama: FakeOllama, hardhat_url: str) -> Rigs:
    """Three rigs whose keys hold test ether on the node (Hardhat starts nobody with a balance but its own)."""
    rigs = make_rigs(tmp_path, env={"OLLAMA_HOST": ollama.url})
    for handle in ("alice", "bob", "carol"):
        fund(hardhat_url, address_of(rigs.home(handle)))
    return rigs


@pytest.fixture
def deployed(rigs: Rigs, hardhat_url: str) -> dict[str, Any]:
    code, data = rigs.wl_json("alice", "chain", "deploy", "--rpc-url", hardhat_url)
    assert code == 0, data
    for h in ("bob", "carol"):
        assert rigs.wl(h, "sync").exit_code == 0
    return dict(data)


def _board_id(rigs: Rigs) -> str:
    with rigs.board("alice") as b:
        return str(b.meta()["board_id"])


def _anchored_events(url: str, contract: str, board_id: str, item_id: str) -> int:
    topic = "0x" + bytes(Web3.keccak(text="Anchored(bytes32,address,bytes32,bytes32)")).hex()
    logs = rpc(url, "eth_getLogs", [{"address": contract, "fromBlock": "0x0", "toBlock": "latest",
                                     "topics": [topic, "0x" + chain.job_key(board_id, item_id).hex()]}])
    assert isinstance(logs, list)
    return len(logs)


def test_deploy_run_anchor_and_verify_agree(rigs: Rigs, deployed: dict[str, Any], hardhat_url: str) -> None:
    assert deployed["chain_id"] == 31337 and deployed["rpc_url"] == hardhat_url
    code = rpc(hardhat_url, "eth_getCode", [deployed["contract"], "latest"])
    assert isinstance(code, str) and len(code) > 2
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    code_, data = rigs.wl_json("bob", "infer", "run", iid, "--anchor")
    assert code_ == 0, data
    anchored = data["anchor"]
    receipt = rpc(hardhat_url, "eth_getTransactionReceipt", [anchored["tx"]])
    assert isinstance(receipt, dict) and receipt["status"] == "0x1"
    assert int(receipt["blockNumber"], 16) == anchored["block"]
    assert receipt["from"].lower() == address_of(rigs.home("bob")).lower()  # the worker anchored its own result
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 0, res.output
    assert "✓ VERIFIED" in res.stdout and "on-chain: matches" in res.stdout
    # the real executable, as users run it: the entry points resolve and the node answers
    done = subprocess.run([WL, "--home", str(rigs.home("carol")), "chain", "status", "--check"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **rigs.env})
    assert done.returncode == 0, done.stderr
    assert f"at {deployed['contract']}" in done.stdout and "✓ node answers (chain 31337)" in done.stdout


def test_a_second_anchor_of_the_same_job_is_refused(rigs: Rigs, deployed: dict[str, Any], hardhat_url: str) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    code, data = rigs.wl_json("bob", "infer", "run", iid, "--anchor")
    assert code == 0, data
    board_id, contract = _board_id(rigs), deployed["contract"]
    key = load_private_key(rigs.home("bob"))
    other = "sha256:" + "33" * 32
    with pytest.raises(ChainError, match="already anchored by"):
        chain.anchor(hardhat_url, contract, key, board_id, iid, data["output_hash"], other)
    # The library checks first; sent anyway (its own send path, without that check), the contract refuses it.
    call = chain.connect(hardhat_url).eth.contract(address=contract, abi=chain.load_artifact()["abi"])
    payload = call.encode_abi("anchor", args=[chain.job_key(board_id, iid), chain.hash_to_bytes32(data["output_hash"]),
                                              chain.hash_to_bytes32(other)])
    with pytest.raises(ChainError, match=r"the contract refused it: AlreadyAnchored\(jobId=0x"):
        chain._transact(hardhat_url, key, contract, payload, "anchor", chain.DEFAULT_RETRY)
    assert _anchored_events(hardhat_url, contract, board_id, iid) == 1
    assert rigs.wl("carol", "infer", "verify", iid, "--no-record").stdout.count("on-chain: matches") == 1


def test_wl_infer_anchor_survives_a_flaky_rpc(rigs: Rigs, deployed: dict[str, Any], hardhat_url: str) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    bob = address_of(rigs.home("bob"))
    nonce = int(str(rpc(hardhat_url, "eth_getTransactionCount", [bob, "latest"])), 16)
    with FlakyProxy(hardhat_url, fail_first=4, drop_methods=frozenset({"eth_sendRawTransaction"}),
                    drop_replies=1) as proxy:
        code, data = rigs.wl_json("bob", "infer", "anchor", iid, "--rpc-url", proxy.url)
    assert code == 0, data
    assert proxy.failed == 4 and proxy.dropped == 1  # refused connections, 502s and a lost send reply
    assert data["already_anchored"] is False and data["recorded"] and data["pushed"]
    assert int(str(rpc(hardhat_url, "eth_getTransactionCount", [bob, "latest"])), 16) == nonce + 1  # one tx
    assert _anchored_events(hardhat_url, deployed["contract"], _board_id(rigs), iid) == 1
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 0 and "on-chain: matches" in res.stdout, res.output


def test_a_bounty_paid_over_json_rpc_with_time_travel(rigs: Rigs, deployed: dict[str, Any], hardhat_url: str) -> None:
    """post --bounty, claim, assign, run --anchor (stake and submit), confirm, then withdraw after the window."""
    assert deployed["bounty_contract"].startswith("0x")
    code, posted = rigs.wl_json("alice", "infer", "post", "--prompt", "what is 1+1", "--model", MODEL,
                                "--bounty", "0.5", "--stake", "0.05", "--verifiers", "carol", "--challenge-window", "10m")
    assert code == 0, posted
    iid = posted["id"]
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    assert rigs.wl_json("alice", "chain", "assign", iid)[0] == 0
    bob = address_of(rigs.home("bob"))
    before = int(str(rpc(hardhat_url, "eth_getBalance", [bob, "latest"])), 16)
    code, ran = rigs.wl_json("bob", "infer", "run", iid, "--skip-claim", "--anchor")
    assert code == 0 and ran["anchor"]["bounty"]["submitted"] and ran["anchor"]["bounty"]["stake"] == 5 * 10**16
    assert rigs.wl("carol", "infer", "verify", iid).exit_code == 0
    assert rigs.wl_json("carol", "chain", "attest", iid)[1]["bounty"]["verdict"] == "VERIFIED"
    res = rigs.wl("bob", "chain", "withdraw", iid)
    assert res.exit_code == 1 and "WindowOpen" in res.stderr
    rpc(hardhat_url, "evm_increaseTime", [601])
    rpc(hardhat_url, "evm_mine")
    code, paid = rigs.wl_json("bob", "chain", "withdraw", iid)
    assert code == 0 and paid["withdrawn"] == 55 * 10**16
    after = int(str(rpc(hardhat_url, "eth_getBalance", [bob, "latest"])), 16)
    assert 5 * 10**17 - 10**16 < after - before <= 5 * 10**17  # the bounty, less gas; the stake came back
    assert rigs.wl_json("bob", "chain", "withdraw")[1]["withdrawn"] == 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_readme_funding_recipe_lets_a_fresh_rig_deploy(tmp_path: Path, hardhat_url: str) -> None:
    """README, Anchoring on a chain: `hardhat_setBalance` through curl funds the address `wl rig show` prints."""
    rigs = make_rigs(tmp_path, ("dave",))
    code, shown = rigs.wl_json("dave", "rig", "show")
    address = shown["rig"]["address"]
    assert int(str(rpc(hardhat_url, "eth_getBalance", [address, "latest"])), 16) == 0
    res = rigs.wl("dave", "chain", "deploy", "--rpc-url", hardhat_url)
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1, res.output  # unfunded: one line
    body = '{"jsonrpc":"2.0","id":1,"method":"hardhat_setBalance","params":["' + address + '","0x56BC75E2D63100000"]}'
    done = subprocess.run(["curl", "-s", "-H", "Content-Type: application/json", hardhat_url, "--data", body],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0 and '"result":true' in done.stdout, done.stdout + done.stderr
    assert int(str(rpc(hardhat_url, "eth_getBalance", [address, "latest"])), 16) == 100 * 10**18
    code, deployed = rigs.wl_json("dave", "chain", "deploy", "--rpc-url", hardhat_url)
    assert code == 0 and deployed["chain_id"] == 31337, deployed
    assert rigs.wl("dave", "chain", "status", "--check").exit_code == 0


def test_bounty_endings_by_raw_id_and_a_held_worker_claim(rigs: Rigs, deployed: dict[str, Any], hardhat_url: str) -> None:
    """A post refused after its escrow is cancelled and refunded; a worker holds a paid claim until the poster
    assigns it, then stakes and submits before publishing; a deadline refund by raw bounty id."""
    import orjson

    alice = address_of(rigs.home("alice"))
    before = int(str(rpc(hardhat_url, "eth_getBalance", [alice, "latest"])), 16)
    res = rigs.wl("alice", "infer", "post", "--prompt", "x" * (1 << 20), "--model", MODEL, "--bounty", "0.5")
    assert res.exit_code != 0 and "the escrowed bounty was cancelled and 0.5 ETH withdrawn" in res.stderr
    after = int(str(rpc(hardhat_url, "eth_getBalance", [alice, "latest"])), 16)
    assert before - after < 10**16  # gas only

    paid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL, "--bounty", "0.5")
    late = post(rigs, "alice", "--prompt", "what is 2+2", "--model", MODEL, "--bounty", "0.01", "--deadline", "1h")
    res = rigs.wl("bob", "infer", "worker", "--max-jobs", "1", "--idle-exit", "0", "--min-bounty", "0.1", "--poll", "0.1")
    assert res.exit_code == 0 and '"awaiting_assignment"' in res.stdout, res.output
    assert rigs.item("bob", paid).status == "claimed" and rigs.board("bob").view().completion(paid) is None
    assert rigs.wl("alice", "chain", "assign", paid).exit_code == 0
    res = rigs.wl("bob", "infer", "worker", "--once", "--min-bounty", "0.1", "--poll", "0.1")
    assert res.exit_code == 0 and '"bounty_submitted"' in res.stdout, res.output
    assert rigs.item("bob", paid).status == "in_review"
    code, shown = rigs.wl_json("carol", "chain", "status", paid)
    assert code == 0 and shown["bounty"]["state"] == "submitted" and shown["bounty"]["window_left_s"] > 0

    bid = orjson.loads(rigs.item("carol", late).description)["bounty"]["bounty_id"]
    rpc(hardhat_url, "evm_increaseTime", [3601])
    rpc(hardhat_url, "evm_mine")
    code, back = rigs.wl_json("carol", "chain", "refund", bid)  # anyone, after the deadline, by raw id
    assert code == 0 and back["how"] == "refund" and back["item_id"] is None and back["withdrawn"] == 0
    code, got = rigs.wl_json("alice", "chain", "withdraw", bid)
    assert code == 0 and got["withdrawn"] == 10**16
