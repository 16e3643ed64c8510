"""InferenceAnchor over real JSON-RPC: a local Hardhat node on 127.0.0.1, directly and through a flaky proxy."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("web3", reason="web3 is not installed")

from eth_account import Account  # noqa: E402
from web3 import Web3  # noqa: E402

from wl_infer import chain  # noqa: E402
from wl_infer.chain import ChainError, RetryPolicy  # noqa: E402

try:
    from tests.chain_helpers import FlakyProxy, free_port, fund, hardhat_missing_reason, hardhat_node, rpc
except ImportError:  # tests/ on sys.path rather than the repository root
    from chain_helpers import (  # type: ignore[no-redef]
        FlakyProxy,
        free_port,
        fund,
        hardhat_missing_reason,
        hardhat_node,
        rpc,
    )

pytestmark = [pytest.mark.chain, pytest.mark.slow]

BOARD = "fedcba9876543210"
OUT = "sha256:" + hashlib.sha256(b"The answer is 2.").hexdigest()
EV = "sha256:" + "22" * 32
FAST = RetryPolicy(attempts=6, base_delay=0.05, max_delay=0.4, total_timeout=20.0, poll_interval=0.05)


@pytest.fixture(scope="module")
def hardhat_url() -> Iterator[str]:
    reason = hardhat_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with hardhat_node(startup_timeout=60.0) as url:
        yield url


def _funded_key(url: str) -> bytes:
    key = bytes(Account.create().key)
    fund(url, Account.from_key(key).address)
    return key


@pytest.fixture(scope="module")
def contract(hardhat_url: str) -> str:
    return chain.deploy(hardhat_url, _funded_key(hardhat_url)).contract


def _anchored_events(url: str, contract: str, item: str) -> int:
    topic = "0x" + bytes(Web3.keccak(text="Anchored(bytes32,address,bytes32,bytes32)")).hex()
    logs = rpc(url, "eth_getLogs", [{
        "address": contract, "fromBlock": "0x0", "toBlock": "latest",
        "topics": [topic, "0x" + chain.job_key(BOARD, item).hex()],
    }])
    assert isinstance(logs, list)
    return len(logs)


def _nonce(url: str, key: bytes) -> int:
    return int(str(rpc(url, "eth_getTransactionCount", [Account.from_key(key).address, "latest"])), 16)


def test_node_is_local_and_answers(hardhat_url: str) -> None:
    assert hardhat_url.startswith("http://127.0.0.1:")
    assert int(str(rpc(hardhat_url, "eth_chainId")), 16) == 31337


def test_deploy_anchor_read_attest_over_json_rpc(hardhat_url: str) -> None:
    deployer = _funded_key(hardhat_url)
    deployment = chain.deploy(hardhat_url, deployer)
    assert deployment.chain_id == 31337
    assert deployment.deployed_by == Account.from_key(deployer).address

    worker = _funded_key(hardhat_url)
    receipt = chain.anchor(hardhat_url, deployment.contract, worker, BOARD, "w-0000000001", OUT, EV)
    assert not receipt.already_anchored and receipt.gas_used > 0
    worker_address = Account.from_key(worker).address
    record = chain.read_anchor(hardhat_url, deployment.contract, BOARD, "w-0000000001", worker_address)
    assert record == chain.OnChainRecord(worker_address, OUT, EV, receipt.block)
    assert chain.compare_with_board(record, OUT, EV) == "matches"

    again = chain.anchor(hardhat_url, deployment.contract, worker, BOARD, "w-0000000001", OUT, EV)
    assert again.already_anchored and again.tx == receipt.tx and again.block == receipt.block
    with pytest.raises(ChainError, match="already anchored"):
        chain.anchor(hardhat_url, deployment.contract, worker, BOARD, "w-0000000001", OUT, "sha256:" + "33" * 32)

    # the contract's own refusal, decoded from Hardhat's custom-error revert data
    w3: Any = chain.connect(hardhat_url)
    c = w3.eth.contract(address=deployment.contract, abi=chain.load_artifact()["abi"])
    with pytest.raises(Exception) as info:
        c.functions.anchor(chain.job_key(BOARD, "w-0000000001"), b"\x01" * 32, b"\x02" * 32).call(
            {"from": worker_address}
        )
    assert chain.decode_revert(info.value).startswith("AlreadyAnchored(")

    verifier = _funded_key(hardhat_url)
    att = chain.attest(hardhat_url, deployment.contract, verifier, BOARD, "w-0000000001", "VERIFIED", OUT)
    found = chain.read_attestations(hardhat_url, deployment.contract, BOARD, "w-0000000001")
    assert [(a.verifier, a.verdict, a.result_hash, a.tx) for a in found] == [
        (Account.from_key(verifier).address, "VERIFIED", OUT, att.tx)
    ]
    assert _anchored_events(hardhat_url, deployment.contract, "w-0000000001") == 1


def test_batch_on_hardhat(hardhat_url: str, contract: str) -> None:
    key = _funded_key(hardhat_url)
    leaves = [chain.batch_leaf(BOARD, f"w-{i:010x}", OUT, EV) for i in range(100)]
    receipt, proofs = chain.anchor_batch(hardhat_url, contract, key, "hh-batch", leaves)
    root = bytes.fromhex(receipt.root[2:])
    assert all(chain.verify_proof(leaf, p, root) for leaf, p in zip(leaves, proofs, strict=True))
    assert chain.verify_proof_on_chain(hardhat_url, contract, "hh-batch", leaves[42], proofs[42])
    assert not chain.verify_proof_on_chain(hardhat_url, contract, "hh-batch", leaves[42], proofs[41])


@pytest.mark.parametrize("mode", ["alternate", "close", "502"])
def test_flaky_rpc_is_survived_and_the_anchor_lands_once(hardhat_url: str, contract: str, mode: str) -> None:
    key = _funded_key(hardhat_url)
    item = f"w-flaky{mode[:3]:0>3}"
    with FlakyProxy(hardhat_url, fail_first=5, mode=mode) as proxy:
        receipt = chain.anchor(proxy.url, contract, key, BOARD, item, OUT, EV, retry=FAST)
    assert proxy.failed == 5 and proxy.forwarded > 0
    assert not receipt.already_anchored
    assert _anchored_events(hardhat_url, contract, item) == 1
    assert _nonce(hardhat_url, key) == 1  # exactly one transaction was mined from this key
    record = chain.read_anchor(hardhat_url, contract, BOARD, item, Account.from_key(key).address)
    assert record is not None and record.block == receipt.block


def test_dropped_reply_to_the_send_resends_the_same_transaction(hardhat_url: str, contract: str) -> None:
    key = _funded_key(hardhat_url)
    item = "w-dropped001"
    with FlakyProxy(
        hardhat_url, drop_methods=frozenset({"eth_sendRawTransaction"}), drop_replies=2
    ) as proxy:
        receipt = chain.anchor(proxy.url, contract, key, BOARD, item, OUT, EV, retry=FAST)
    assert proxy.dropped == 2  # the node got the transaction, and its reply was lost, twice
    assert proxy.seen.count("eth_sendRawTransaction") >= 3
    assert not receipt.already_anchored
    assert _nonce(hardhat_url, key) == 1
    assert _anchored_events(hardhat_url, contract, item) == 1
    tx = rpc(hardhat_url, "eth_getTransactionByHash", [receipt.tx])
    assert isinstance(tx, dict) and tx["hash"] == receipt.tx


def test_rpc_that_never_recovers_fails_within_bounds(hardhat_url: str, contract: str) -> None:
    key = _funded_key(hardhat_url)
    started = time.monotonic()
    with FlakyProxy(hardhat_url, fail_first=10_000, mode="502") as proxy, pytest.raises(ChainError) as info:
        chain.anchor(proxy.url, contract, key, BOARD, "w-neverup01", OUT, EV, retry=FAST)
    assert time.monotonic() - started < 30
    assert proxy.failed == FAST.attempts
    assert "still failing after 6 attempts" in str(info.value)
    assert _nonce(hardhat_url, key) == 0


def test_unreachable_node_is_a_chain_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused every time
    started = time.monotonic()
    with pytest.raises(ChainError, match="still failing after 6 attempts"):
        chain.read_anchor(url, "0x" + "11" * 20, BOARD, "w-0000000001", "0x" + "22" * 20, retry=FAST)
    assert time.monotonic() - started < 20
