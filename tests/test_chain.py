"""InferenceAnchor on the in-process py-evm chain (eth-tester): deploy, anchor once, attest, batches, retries."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("eth_tester", reason="web3[tester] is not installed")

import requests  # noqa: E402  (after the skip: it comes with web3)
from eth_account import Account  # noqa: E402
from web3.exceptions import ContractLogicError, Web3RPCError  # noqa: E402

from wl_infer import chain  # noqa: E402
from wl_infer.chain import (  # noqa: E402
    TESTER_URL,
    ChainError,
    OnChainRecord,
    RetryPolicy,
    anchor,
    anchor_batch,
    attest,
    batch_leaf,
    compare_with_board,
    deploy,
    job_key,
    merkle_tree,
    read_anchor,
    read_attestations,
    verify_proof,
    verify_proof_on_chain,
)

pytestmark = pytest.mark.chain

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "contracts"
BOARD = "0123456789abcdef"
OUT = "sha256:" + hashlib.sha256(b"The answer is 2.").hexdigest()
EV = "sha256:" + "22" * 32


def _key() -> bytes:
    return bytes(Account.create().key)


@pytest.fixture(scope="module")
def worker_key() -> bytes:
    return _key()


@pytest.fixture(scope="module")
def deployed(worker_key: bytes) -> chain.Deployment:
    return deploy(TESTER_URL, _key())


def _raw_call(contract: str, key: bytes, fn: str, args: list[Any], gas: int = 200_000) -> Any:
    """Send a transaction straight to the contract, bypassing chain.anchor()'s own checks."""
    w3: Any = chain.connect(TESTER_URL)
    acct = Account.from_key(key)
    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": acct.address, "value": 10**18})
    c = w3.eth.contract(address=contract, abi=chain.load_artifact()["abi"])
    tx = {
        "to": contract, "data": c.encode_abi(fn, args=args), "gas": gas, "chainId": w3.eth.chain_id,
        "nonce": w3.eth.get_transaction_count(acct.address), "maxFeePerGas": 10**11,
        "maxPriorityFeePerGas": 10**9, "value": 0,
    }
    tx_hash = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    return w3.eth.get_transaction_receipt(tx_hash)


def _contract(address: str) -> Any:
    w3: Any = chain.connect(TESTER_URL)
    return w3.eth.contract(address=address, abi=chain.load_artifact()["abi"])


# ------------------------------------------------------------ artifact


@pytest.mark.parametrize(
    ("name", "events"),
    [("InferenceAnchor", {"Anchored", "Attested", "RootAnchored"}),
     ("InferenceBounty", {"Posted", "Assigned", "Released", "Submitted", "Verdict", "Paid", "Refunded", "Cancelled", "Withdrawn"})],
)
def test_artifact_is_built_from_the_committed_source(name: str, events: set[str]) -> None:
    art = chain.load_artifact(name)
    source = (CONTRACTS / f"{name}.sol").read_bytes()
    assert art["sourceSha256"] == hashlib.sha256(source).hexdigest(), "run `node contracts/compile.js`"
    assert art["evmVersion"] == "shanghai"
    assert art["compiler"]["version"].startswith("0.8.28+")
    assert art["bytecode"].startswith("0x60") and art["deployedBytecode"].startswith("0x60")
    assert {e["name"] for e in art["abi"] if e["type"] == "event"} == events


@pytest.mark.parametrize("name", ["InferenceAnchor", "InferenceBounty"])
def test_artifact_matches_source(name: str) -> None:
    if not (CONTRACTS / "node_modules" / "solc").is_dir():
        pytest.skip("contracts/node_modules/solc is absent: run `npm ci --prefix contracts` to recompile")
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    out = subprocess.run(
        [node, "compile.js", "--stdout", name], cwd=CONTRACTS, capture_output=True, text=True, timeout=120,
        check=True,
    )
    fresh = json.loads(out.stdout)
    committed = chain.load_artifact(name)
    for field in ("abi", "bytecode", "deployedBytecode", "compiler", "evmVersion", "optimizer", "sourceSha256"):
        assert fresh[field] == committed[field], f"{field} differs: run `node contracts/compile.js` and commit"


# ------------------------------------------------------------ deploy, anchor, read


def test_connect_shares_one_tester_chain_and_refuses_unknown_schemes() -> None:
    assert chain.connect(TESTER_URL) is chain.connect(TESTER_URL)
    with pytest.raises(ChainError, match="unsupported RPC URL"):
        chain.connect("ftp://example.invalid")


def test_deploy(deployed: chain.Deployment) -> None:
    w3: Any = chain.connect(TESTER_URL)
    assert deployed.chain_id == w3.eth.chain_id
    assert w3.eth.get_code(deployed.contract).hex().lstrip("0x") != ""
    assert deployed.tx.startswith("0x") and len(deployed.tx) == 66
    assert 100_000 < deployed.gas_used < 1_000_000
    assert w3.eth.get_transaction_receipt(deployed.tx)["contractAddress"] == deployed.contract


def test_job_key_is_keccak_of_board_slash_item() -> None:
    from eth_utils import keccak

    assert job_key(BOARD, "w-abc1234567") == keccak(text=f"{BOARD}/w-abc1234567")
    for bad in [("a/b", "w-1"), (BOARD, "w/1"), ("", "w-1")]:
        with pytest.raises(ValueError):
            job_key(*bad)


def test_anchor_read_back_and_second_anchor(deployed: chain.Deployment, worker_key: bytes) -> None:
    worker = Account.from_key(worker_key).address
    first = anchor(TESTER_URL, deployed.contract, worker_key, BOARD, "w-0000000001", OUT, EV)
    assert not first.already_anchored and first.gas_used > 0 and first.tx
    record = read_anchor(TESTER_URL, deployed.contract, BOARD, "w-0000000001", worker)
    assert record == OnChainRecord(worker, OUT, EV, first.block)

    again = anchor(TESTER_URL, deployed.contract, worker_key, BOARD, "w-0000000001", OUT, EV)
    assert again.already_anchored and again.block == first.block and again.tx == first.tx

    with pytest.raises(ChainError, match="already anchored by this key") as info:
        anchor(TESTER_URL, deployed.contract, worker_key, BOARD, "w-0000000001", OUT, "sha256:" + "33" * 32)
    assert info.value.data["record"] == record
    assert "\n" not in str(info.value)
    assert read_anchor(TESTER_URL, deployed.contract, BOARD, "w-0000000001", worker) == record
    assert chain.anchor_count(TESTER_URL, deployed.contract, BOARD, "w-0000000001") == 1


def test_a_front_runner_cannot_occupy_the_workers_slot(deployed: chain.Deployment) -> None:
    """The job id is public once posted: an attacker anchors garbage first; the worker still anchors."""
    worker_key, attacker_key = _key(), _key()
    worker, attacker = Account.from_key(worker_key).address, Account.from_key(attacker_key).address
    item = "w-frontrun01"
    garbage = "sha256:" + "66" * 32
    receipt = _raw_call(
        deployed.contract, attacker_key, "anchor",
        [job_key(BOARD, item), chain.hash_to_bytes32(garbage), chain.hash_to_bytes32(garbage)],
    )
    assert receipt["status"] == 1  # the attacker got in first...
    assert read_anchor(TESTER_URL, deployed.contract, BOARD, item, worker) is None
    honest = anchor(TESTER_URL, deployed.contract, worker_key, BOARD, item, OUT, EV)
    assert not honest.already_anchored  # ...and the worker's own slot was still free
    assert read_anchor(TESTER_URL, deployed.contract, BOARD, item, worker) == OnChainRecord(
        worker, OUT, EV, honest.block
    )
    garbage_record = read_anchor(TESTER_URL, deployed.contract, BOARD, item, attacker)
    assert garbage_record is not None and garbage_record.output_hash == garbage
    assert chain.anchor_count(TESTER_URL, deployed.contract, BOARD, item) == 2
    # the attacker copying the honest hashes gets its own record, never the worker's
    copied = anchor(TESTER_URL, deployed.contract, _key(), BOARD, item, OUT, EV)
    assert not copied.already_anchored
    assert read_anchor(TESTER_URL, deployed.contract, BOARD, item, worker) == OnChainRecord(
        worker, OUT, EV, honest.block
    )


def test_contract_itself_refuses_a_second_anchor(deployed: chain.Deployment, worker_key: bytes) -> None:
    worker = Account.from_key(worker_key).address
    anchor(TESTER_URL, deployed.contract, worker_key, BOARD, "w-0000000002", OUT, EV)
    key = job_key(BOARD, "w-0000000002")
    c = _contract(deployed.contract)
    with pytest.raises(Exception) as info:  # eth_call: web3 or eth-tester revert type
        c.functions.anchor(key, b"\x01" * 32, b"\x02" * 32).call({"from": worker})
    assert chain.decode_revert(info.value).startswith("AlreadyAnchored(jobId=0x" + key.hex())

    again_key = _key()
    ok = _raw_call(deployed.contract, again_key, "anchor", [key, b"\x01" * 32, b"\x02" * 32])
    assert ok["status"] == 1
    receipt = _raw_call(deployed.contract, again_key, "anchor", [key, b"\x03" * 32, b"\x04" * 32])
    assert receipt["status"] == 0  # mined and reverted: nothing overwritten
    record = read_anchor(TESTER_URL, deployed.contract, BOARD, "w-0000000002", worker)
    assert record is not None and record.output_hash == OUT and record.evidence_hash == EV
    other = read_anchor(TESTER_URL, deployed.contract, BOARD, "w-0000000002", Account.from_key(again_key).address)
    assert other is not None and other.output_hash == "sha256:" + "01" * 32


def test_zero_hash_is_refused(deployed: chain.Deployment, worker_key: bytes) -> None:
    with pytest.raises(ChainError, match="ZeroHash"):
        anchor(TESTER_URL, deployed.contract, worker_key, BOARD, "w-0000000003", OUT, "sha256:" + "00" * 32)
    assert read_anchor(TESTER_URL, deployed.contract, BOARD, "w-0000000003", Account.from_key(worker_key).address) is None


def test_bad_hash_strings_are_refused_before_sending(deployed: chain.Deployment, worker_key: bytes) -> None:
    with pytest.raises(ValueError, match="sha256"):
        anchor(TESTER_URL, deployed.contract, worker_key, BOARD, "w-0000000004", "md5:abc", EV)


def test_compare_with_board_outcomes(deployed: chain.Deployment, worker_key: bytes) -> None:
    worker = Account.from_key(worker_key).address
    anchor(TESTER_URL, deployed.contract, worker_key, BOARD, "w-0000000005", OUT, EV)
    record = read_anchor(TESTER_URL, deployed.contract, BOARD, "w-0000000005", worker.lower())
    assert record is not None and record.worker == worker
    assert compare_with_board(record, OUT, EV) == "matches"
    assert compare_with_board(record, "sha256:" + "44" * 32, EV) == "differs"
    assert compare_with_board(record, OUT, "sha256:" + "44" * 32) == "differs"
    assert read_anchor(TESTER_URL, deployed.contract, BOARD, "w-0000000005", Account.from_key(_key()).address) is None
    missing = read_anchor(TESTER_URL, deployed.contract, BOARD, "w-ffffffffff", worker)
    assert missing is None
    assert compare_with_board(missing, OUT, EV) == "not anchored"


def test_bad_or_empty_contract_address_is_a_chain_error(worker_key: bytes) -> None:
    with pytest.raises(ChainError, match="is not a contract address"):
        anchor(TESTER_URL, "0x1234", worker_key, BOARD, "w-0000000008", OUT, EV)
    with pytest.raises(ChainError, match="no InferenceAnchor contract at"):
        read_anchor(TESTER_URL, "0x" + "12" * 20, BOARD, "w-0000000008", Account.from_key(worker_key).address)


def test_anchor_found_on_chain_is_reported_not_repeated(deployed: chain.Deployment) -> None:
    key = _key()
    receipt = _raw_call(
        deployed.contract, key, "anchor",
        [job_key(BOARD, "w-0000000009"), chain.hash_to_bytes32(OUT), chain.hash_to_bytes32(EV)],
    )
    assert receipt["status"] == 1
    result = anchor(TESTER_URL, deployed.contract, key, BOARD, "w-0000000009", OUT, EV)
    assert result.already_anchored and result.block == receipt["blockNumber"]
    assert result.tx == "0x" + bytes(receipt["transactionHash"]).hex()


# ------------------------------------------------------------ attestations


def test_attestation_event_is_emitted_and_decodable(deployed: chain.Deployment) -> None:
    verifier_key = _key()
    verifier = Account.from_key(verifier_key).address
    receipt = attest(TESTER_URL, deployed.contract, verifier_key, BOARD, "w-0000000006", "verified", OUT)
    assert receipt.verdict == "VERIFIED" and receipt.gas_used > 0
    w3: Any = chain.connect(TESTER_URL)
    c = _contract(deployed.contract)
    (event,) = c.events.Attested().process_receipt(w3.eth.get_transaction_receipt(receipt.tx))
    assert event["args"]["jobId"] == job_key(BOARD, "w-0000000006")
    assert event["args"]["verifier"] == verifier
    assert event["args"]["verdict"] == 1
    assert event["args"]["resultHash"] == chain.hash_to_bytes32(OUT)

    attest(TESTER_URL, deployed.contract, _key(), BOARD, "w-0000000006", "MISMATCH", "sha256:" + "55" * 32)
    found = read_attestations(TESTER_URL, deployed.contract, BOARD, "w-0000000006")
    assert [(a.verdict, a.result_hash) for a in found] == [("VERIFIED", OUT), ("MISMATCH", "sha256:" + "55" * 32)]
    assert found[0].verifier == verifier and found[0].tx == receipt.tx
    assert c.functions.attestationCount(job_key(BOARD, "w-0000000006")).call() == 2


def test_invalid_verdicts_are_refused(deployed: chain.Deployment) -> None:
    with pytest.raises(ChainError, match="unknown verdict"):
        attest(TESTER_URL, deployed.contract, _key(), BOARD, "w-0000000007", "PROBABLY", OUT)
    c = _contract(deployed.contract)
    for code in (0, 4):
        with pytest.raises(Exception) as info:
            c.functions.attest(job_key(BOARD, "w-0000000007"), code, b"\x01" * 32).call()
        assert chain.decode_revert(info.value) == f"InvalidVerdict(verdict={code})"


# ------------------------------------------------------------ Merkle batches


def test_merkle_batch_of_100(deployed: chain.Deployment, worker_key: bytes) -> None:
    leaves = [batch_leaf(BOARD, f"w-{i:010x}", OUT, "sha256:" + f"{i:064x}") for i in range(100)]
    receipt, proofs = anchor_batch(TESTER_URL, deployed.contract, worker_key, "batch-100", leaves)
    assert not receipt.already_anchored and len(proofs) == 100
    root = bytes.fromhex(receipt.root[2:])
    assert all(verify_proof(leaf, proof, root) for leaf, proof in zip(leaves, proofs, strict=True))
    assert chain.read_root(TESTER_URL, deployed.contract, "batch-100") == (
        root, Account.from_key(worker_key).address, receipt.block
    )
    for i in (0, 1, 37, 63, 64, 98, 99):
        assert verify_proof_on_chain(TESTER_URL, deployed.contract, "batch-100", leaves[i], proofs[i])

    tampered = list(proofs[5])
    tampered[2] = bytes([tampered[2][0] ^ 1]) + tampered[2][1:]
    assert not verify_proof(leaves[5], tampered, root)
    assert not verify_proof_on_chain(TESTER_URL, deployed.contract, "batch-100", leaves[5], tampered)
    assert not verify_proof(leaves[5], proofs[5][:-1], root)
    assert not verify_proof(leaves[5], proofs[6], root)
    assert not verify_proof(leaves[5] + b"\x00", proofs[5], root)
    assert not verify_proof_on_chain(TESTER_URL, deployed.contract, "no-such-batch", leaves[5], proofs[5])

    again, _ = anchor_batch(TESTER_URL, deployed.contract, worker_key, "batch-100", leaves)
    assert again.already_anchored and again.block == receipt.block and again.tx == receipt.tx
    with pytest.raises(ChainError, match="already has root"):
        anchor_batch(TESTER_URL, deployed.contract, worker_key, "batch-100", leaves[:99])


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_merkle_proofs_for_every_size(size: int) -> None:
    leaves = [bytes([i]) * (i + 1) for i in range(size)]
    root, proofs = merkle_tree(leaves)
    assert all(verify_proof(leaf, proof, root) for leaf, proof in zip(leaves, proofs, strict=True))
    assert max(len(p) for p in proofs) <= max(1, (size - 1).bit_length())
    assert not verify_proof(b"not a leaf", proofs[0], root)


def test_merkle_inner_node_cannot_pose_as_a_leaf() -> None:
    leaves = [b"a", b"b", b"c", b"d"]
    root, proofs = merkle_tree(leaves)
    left = chain._inner(chain._leaf_node(b"a"), chain._leaf_node(b"b"))
    right = chain._inner(chain._leaf_node(b"c"), chain._leaf_node(b"d"))
    assert root == chain._inner(left, right)
    pair = min(chain._leaf_node(b"a"), chain._leaf_node(b"b")) + max(chain._leaf_node(b"a"), chain._leaf_node(b"b"))
    assert not verify_proof(pair, [right], root)  # the 0x00/0x01 prefixes keep the levels apart
    with pytest.raises(ValueError):
        merkle_tree([])


# ------------------------------------------------------------ retry policy


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} error", response=response)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (requests.ConnectionError("connection refused"), True),
        (requests.Timeout("read timed out"), True),
        (ConnectionResetError("reset by peer"), True),
        (_http_error(502), True),
        (_http_error(503), True),
        (_http_error(429), True),
        (_http_error(404), False),
        (_http_error(400), False),
        (Web3RPCError("x", rpc_response={"error": {"code": -32603, "message": "Internal error"}}), True),
        (Web3RPCError("x", rpc_response={"error": {"code": -32000, "message": "header not found"}}), True),
        (Web3RPCError("x", rpc_response={"error": {"code": -32603, "message": "execution reverted"}}), False),
        (Web3RPCError("x", rpc_response={"error": {"code": -32000, "message": "nonce too low"}}), False),
        (Web3RPCError("x", rpc_response={"error": {"code": -32601, "message": "method not found"}}), False),
        (ContractLogicError("execution reverted"), False),
        (ValueError("bad"), False),
    ],
)
def test_transient_classification(exc: Exception, transient: bool) -> None:
    assert chain.is_transient(exc) is transient


def test_retry_recovers_with_bounded_full_jitter_backoff() -> None:
    delays: list[float] = []
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise requests.ConnectionError("connection refused")
        return "ok"

    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=1.5)
    assert chain.with_retry("test", flaky, policy, sleep=delays.append) == "ok"
    assert calls == 4 and len(delays) == 3
    for attempt, delay in enumerate(delays):
        assert 0 <= delay <= min(1.5, 0.5 * 2**attempt)


def test_retry_gives_up_after_the_attempt_bound() -> None:
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise _http_error(503)

    with pytest.raises(ChainError, match="after 6 attempts") as info:
        chain.with_retry("read", down, RetryPolicy(), sleep=lambda _s: None)
    assert calls == 6 and info.value.data["attempts"] == 6
    assert str(info.value).startswith("chain read: RPC still failing")


def test_retry_respects_the_total_time_bound() -> None:
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise requests.Timeout("timed out")

    policy = RetryPolicy(attempts=100, base_delay=5.0, max_delay=5.0, total_timeout=0.0)
    with pytest.raises(ChainError):
        chain.with_retry("read", down, policy, sleep=lambda _s: None)
    assert calls == 1


def test_permanent_errors_are_not_retried() -> None:
    calls = 0

    def reverted() -> None:
        nonlocal calls
        calls += 1
        raise ContractLogicError("execution reverted")

    with pytest.raises(ContractLogicError):
        chain.with_retry("anchor", reverted, RetryPolicy(), sleep=lambda _s: None)
    assert calls == 1


def test_chain_error_builds_a_one_line_message() -> None:
    err = ChainError("anchor", "the node\nsaid  no", tx="0xabc", block=3)
    assert str(err) == "chain anchor: the node said no (tx 0xabc)"
    assert err.data == {"block": 3} and err.tx == "0xabc"


def test_artifact_path_is_found_without_the_working_directory(tmp_path: Path) -> None:
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert chain.artifact_path() == CONTRACTS / "InferenceAnchor.json"
    finally:
        os.chdir(old)


def test_revert_data_holding_quote_bytes_is_decoded() -> None:
    """eth-tester quotes the revert bytes as b"…" when they contain a ' (as a random address may)."""
    from eth_abi.abi import encode
    from eth_utils import keccak

    address = "0x" + "c7e44c70e212ded46bc5bdfa15b03d1b62276f87"  # holds 0x27 (') and "b'" in its bytes
    data = keccak(text="DuplicateVerifier(address)")[:4] + encode(["address"], [address])
    exc = Exception(f"execution reverted: {data!r}")
    assert chain.decode_revert(exc).startswith("DuplicateVerifier(verifier=")
