"""Anchoring result hashes and attestations on an EVM chain through ``contracts/InferenceAnchor.sol``.

Transactions are signed locally with an explicit nonce, chain id, fees and gas, then the same raw bytes are
re-sent on transient RPC failures, so a retry after a dropped reply can only land the one transaction.
``eth-tester://`` selects an in-process py-evm chain shared by the whole process (tests, demo). Without the
`chain` extra, importing this module raises ChainUnavailable; web3 itself loads inside the functions.
Batches are Merkle trees as wl_infer/merkle.py builds them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from wl_infer.chain_abi import (  # noqa: F401 - re-exported: callers use wl_infer.chain as the one entry point
    _contract,
    _is_revert,
    artifact_path,
    batch_key,
    batch_leaf,
    bytes32_to_hash,
    contract_address,
    decode_revert,
    hash_to_bytes32,
    job_key,
    load_artifact,
)
from wl_infer.errors import ChainUnavailable
from wl_infer.merkle import _inner, _leaf_node, merkle_tree, verify_proof  # noqa: F401 - re-exported
from wl_infer.outcomes import Verdict
from wl_infer.rpc import (  # noqa: F401 - re-exported: callers use wl_infer.chain as the one entry point
    DEFAULT_RETRY,
    TESTER_URL,
    ChainError,
    RetryPolicy,
    connect,
    is_transient,
    with_retry,
)
from wl_infer.text import error_line

__all__ = [
    "AnchorReceipt", "AttestReceipt", "BatchReceipt", "ChainError", "DEFAULT_RETRY", "Deployment",
    "OnChainAttestation", "OnChainRecord", "RetryPolicy", "TESTER_URL", "VERDICTS", "VERDICT_NAMES",
    "ZERO_ADDRESS", "anchor", "anchor_batch", "artifact_path", "attest", "batch_key", "batch_leaf",
    "bytes32_to_hash", "compare_with_board", "connect", "contract_address", "decode_revert", "deploy",
    "hash_to_bytes32", "is_transient", "job_key", "load_artifact", "merkle_tree", "read_anchor",
    "read_attestations", "read_root", "require_chain_libraries", "verify_proof", "verify_proof_on_chain",
    "with_retry",
]  # fmt: skip

if TYPE_CHECKING:
    from web3 import Web3


def require_chain_libraries() -> None:
    """Refuse, as one typed error, to go on without the `chain` extra (web3, eth-account)."""
    import importlib.util

    for module in ("web3", "eth_account", "tenacity"):
        if importlib.util.find_spec(module) is None:
            raise ChainUnavailable(module)


require_chain_libraries()

T = TypeVar("T")

VERDICTS: dict[str, int] = {Verdict.VERIFIED: 1, Verdict.MISMATCH: 2, Verdict.INVALID: 3}
VERDICT_NAMES = {v: k for k, v in VERDICTS.items()}
ZERO_ADDRESS = "0x" + "00" * 20
_TESTER_FUNDING_WEI = 10 * 10**18
_FALLBACK_PRIORITY_FEE = 10**9  # 1 gwei, when the node cannot suggest one


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    contract: str
    deployed_by: str
    tx: str
    block: int
    gas_used: int


@dataclass(frozen=True)
class AnchorReceipt:
    chain_id: int
    contract: str
    tx: str | None  # None only when an earlier anchor was found but its log could not be read back
    block: int
    gas_used: int
    already_anchored: bool


@dataclass(frozen=True)
class AttestReceipt:
    chain_id: int
    contract: str
    tx: str
    block: int
    gas_used: int
    verdict: str


@dataclass(frozen=True)
class BatchReceipt:
    chain_id: int
    contract: str
    batch_id: str
    root: str
    tx: str | None
    block: int
    gas_used: int
    already_anchored: bool


@dataclass(frozen=True)
class OnChainRecord:
    worker: str
    output_hash: str
    evidence_hash: str
    block: int


@dataclass(frozen=True)
class OnChainAttestation:
    verifier: str
    verdict: str
    result_hash: str
    block: int
    tx: str


def compare_with_board(
    record: OnChainRecord | None, output_hash: str, evidence_hash: str, worker_address: str | None
) -> str:
    """``"matches"``, ``"differs"`` or ``"not anchored"``; a None worker address is not compared."""
    if record is None:
        return "not anchored"
    same = record.output_hash == output_hash and record.evidence_hash == evidence_hash
    if worker_address is not None:
        same = same and record.worker.lower() == worker_address.lower()
    return "matches" if same else "differs"


# ---------------------------------------------------------------- transactions


@dataclass(frozen=True)
class _Sent:
    chain_id: int
    tx: str
    block: int
    gas_used: int
    contract_address: str | None
    receipt: Any


def _fund_on_tester(w3: Web3, address: str) -> None:
    """On the in-process chain only, top up a fresh key from the tester's pre-funded account."""
    from web3.types import Wei

    account = w3.to_checksum_address(address)
    if w3.eth.get_balance(account) >= _TESTER_FUNDING_WEI // 10:
        return
    tx = w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": account, "value": Wei(_TESTER_FUNDING_WEI)})
    w3.eth.wait_for_transaction_receipt(tx, timeout=30)


def _transact(
    rpc_url: str, private_key: bytes, to: str | None, data: str, op: str, policy: RetryPolicy
) -> _Sent:
    """Build, sign once, send (re-sending the same bytes on transient errors) and wait for the receipt."""
    from eth_account import Account
    from web3.exceptions import TransactionNotFound

    w3 = connect(rpc_url)
    account = Account.from_key(private_key)
    sender = account.address
    if rpc_url == TESTER_URL:
        _fund_on_tester(w3, sender)
    chain_id = with_retry(op, lambda: w3.eth.chain_id, policy)
    nonce = with_retry(op, lambda: w3.eth.get_transaction_count(sender, "pending"), policy)
    call: dict[str, Any] = {"from": sender, "data": data, "value": 0}
    if to is not None:
        call["to"] = w3.to_checksum_address(to)
    try:
        estimate = with_retry(op, lambda: w3.eth.estimate_gas(call), policy)  # type: ignore[arg-type]
    except ChainError:
        raise
    except Exception as exc:
        if _is_revert(exc):
            raise ChainError(op, f"the contract refused it: {decode_revert(exc)}", sender=sender) from None
        raise ChainError(op, f"gas estimate failed: {error_line(exc)}", sender=sender) from None
    tx: dict[str, Any] = dict(call, nonce=nonce, chainId=chain_id, gas=estimate * 6 // 5 + 10_000)
    tx.update(_fees(w3, op, policy))
    signed = account.sign_transaction(tx)
    raw = bytes(signed.raw_transaction)
    tx_hash = "0x" + bytes(signed.hash).hex()

    try:
        with_retry(op, lambda: w3.eth.send_raw_transaction(raw), policy)
    except Exception as exc:
        # A retry after a dropped reply meets "nonce too low"/"already known": fine if our tx is there.
        try:
            known = with_retry(op, lambda: w3.eth.get_transaction(tx_hash), policy)  # type: ignore[arg-type]
        except (TransactionNotFound, ChainError):
            known = None
        if known is None:
            if isinstance(exc, ChainError):
                raise
            raise ChainError(op, f"the node refused the transaction: {error_line(exc)}", tx=tx_hash) from None

    deadline = time.monotonic() + policy.receipt_timeout
    while True:
        try:
            receipt = with_retry(op, lambda: w3.eth.get_transaction_receipt(tx_hash), policy)  # type: ignore[arg-type]
            break
        except TransactionNotFound:
            if time.monotonic() >= deadline:
                raise ChainError(
                    op, f"no receipt within {policy.receipt_timeout:.0f}s; it may still be mined", tx=tx_hash
                ) from None
            time.sleep(policy.poll_interval)
    if receipt["status"] != 1:
        raise ChainError(op, "the transaction reverted", tx=tx_hash, block=receipt["blockNumber"])
    address = receipt.get("contractAddress")
    return _Sent(chain_id, tx_hash, int(receipt["blockNumber"]), int(receipt["gasUsed"]), address, receipt)


def _fees(w3: Web3, op: str, policy: RetryPolicy) -> dict[str, int]:
    """EIP-1559 fees (2 x base fee + tip) when the chain has a base fee, else a legacy gas price."""
    block = with_retry(op, lambda: w3.eth.get_block("latest"), policy)
    base = block.get("baseFeePerGas")
    if base is None:
        return {"gasPrice": with_retry(op, lambda: w3.eth.gas_price, policy)}
    tip: int
    try:
        tip = with_retry(op, lambda: w3.eth.max_priority_fee, policy)
    except ChainError:
        raise
    except Exception:  # noqa: BLE001 - nodes without eth_maxPriorityFeePerGas
        tip = _FALLBACK_PRIORITY_FEE
    return {"maxFeePerGas": 2 * int(base) + int(tip), "maxPriorityFeePerGas": int(tip)}


def _call(rpc_url: str, contract: str, op: str, fn: str, args: Sequence[Any], policy: RetryPolicy) -> Any:
    """A view call; empty output means there is no InferenceAnchor at that address on this chain."""
    from web3.exceptions import BadFunctionCallOutput

    w3 = connect(rpc_url)
    c = _contract(w3, contract_address(contract, op))
    try:
        return with_retry(op, lambda: getattr(c.functions, fn)(*args).call(), policy)
    except BadFunctionCallOutput:
        raise ChainError(
            op, f"no InferenceAnchor contract at {c.address} on this chain ({rpc_url})", contract=c.address
        ) from None


# ---------------------------------------------------------------- public operations


def deploy(rpc_url: str, private_key: bytes, *, retry: RetryPolicy = DEFAULT_RETRY) -> Deployment:
    """Deploy InferenceAnchor from the given key."""
    from eth_account import Account

    w3 = connect(rpc_url)
    sent = _transact(rpc_url, private_key, None, load_artifact()["bytecode"], "deploy", retry)
    if not sent.contract_address:
        raise ChainError("deploy", "the receipt names no contract address", tx=sent.tx)
    code = with_retry("deploy", lambda: w3.eth.get_code(sent.contract_address), retry)  # type: ignore[arg-type]
    if not code:
        raise ChainError("deploy", "no code at the new contract address", tx=sent.tx)
    return Deployment(
        chain_id=sent.chain_id,
        contract=w3.to_checksum_address(sent.contract_address),
        deployed_by=Account.from_key(private_key).address,
        tx=sent.tx,
        block=sent.block,
        gas_used=sent.gas_used,
    )


def read_anchor(
    rpc_url: str, contract: str, board_id: str, item_id: str, *, retry: RetryPolicy = DEFAULT_RETRY
) -> OnChainRecord | None:
    """The job's on-chain record, or None when it is not anchored."""
    worker, out, ev, block = _call(rpc_url, contract, "read", "getJob", [job_key(board_id, item_id)], retry)
    if int(worker, 16) == 0:
        return None
    return OnChainRecord(worker, bytes32_to_hash(out), bytes32_to_hash(ev), int(block))


def anchor(
    rpc_url: str,
    contract: str,
    private_key: bytes,
    board_id: str,
    item_id: str,
    output_hash: str,
    evidence_hash: str,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> AnchorReceipt:
    """Anchor a job's hashes once; an identical earlier anchor by this key is reported, not repeated."""
    from eth_account import Account

    w3 = connect(rpc_url)
    worker = Account.from_key(private_key).address
    key = job_key(board_id, item_id)
    args = [key, hash_to_bytes32(output_hash), hash_to_bytes32(evidence_hash)]
    address = contract_address(contract, "anchor")
    chain_id = with_retry("anchor", lambda: w3.eth.chain_id, retry)

    def existing() -> AnchorReceipt | None:
        record = read_anchor(rpc_url, contract, board_id, item_id, retry=retry)
        if record is None:
            return None
        if compare_with_board(record, output_hash, evidence_hash, worker) != "matches":
            raise ChainError(
                "anchor",
                f"job {board_id}/{item_id} is already anchored by {record.worker} in block {record.block} "
                f"with output {record.output_hash} and evidence {record.evidence_hash}",
                record=record,
            )
        tx = _find_log_tx(w3, address, "Anchored", key, record.block, retry)
        return AnchorReceipt(chain_id, address, tx, record.block, 0, already_anchored=True)

    found = existing()
    if found is not None:
        return found
    data = _contract(w3, address).encode_abi("anchor", args=args)
    try:
        sent = _transact(rpc_url, private_key, address, data, "anchor", retry)
    except ChainError:
        found = existing()  # e.g. lost a race with another sender: report what is there
        if found is None:
            raise
        return found
    return AnchorReceipt(chain_id, address, sent.tx, sent.block, sent.gas_used, already_anchored=False)


def attest(
    rpc_url: str,
    contract: str,
    private_key: bytes,
    board_id: str,
    item_id: str,
    verdict: str,
    result_hash: str,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> AttestReceipt:
    """Emit this key's verdict (VERIFIED, MISMATCH or INVALID) and result hash for a job."""
    code = VERDICTS.get(verdict.upper())
    if code is None:
        raise ChainError("attest", f"unknown verdict {verdict!r} (expected {', '.join(VERDICTS)})")
    w3 = connect(rpc_url)
    address = contract_address(contract, "attest")
    data = _contract(w3, address).encode_abi(
        "attest", args=[job_key(board_id, item_id), code, hash_to_bytes32(result_hash)]
    )
    sent = _transact(rpc_url, private_key, address, data, "attest", retry)
    return AttestReceipt(sent.chain_id, address, sent.tx, sent.block, sent.gas_used, VERDICT_NAMES[code])


def read_attestations(
    rpc_url: str,
    contract: str,
    board_id: str,
    item_id: str,
    *,
    from_block: int = 0,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> list[OnChainAttestation]:
    """Decoded Attested events for a job, oldest first."""
    w3 = connect(rpc_url)
    c = _contract(w3, contract)
    topic = "0x" + job_key(board_id, item_id).hex()
    logs = with_retry(
        "read attestations",
        lambda: w3.eth.get_logs(
            {"address": c.address, "fromBlock": from_block, "toBlock": "latest",
             "topics": [_topic(w3, "Attested"), topic]}
        ),
        retry,
    )
    out = []
    for log in logs:
        ev = c.events.Attested().process_log(log)
        args = ev["args"]
        out.append(
            OnChainAttestation(
                verifier=args["verifier"],
                verdict=VERDICT_NAMES.get(int(args["verdict"]), str(args["verdict"])),
                result_hash=bytes32_to_hash(args["resultHash"]),
                block=int(ev["blockNumber"]),
                tx="0x" + bytes(ev["transactionHash"]).hex(),
            )
        )
    return out


def _topic(w3: Web3, event: str) -> str:
    for entry in load_artifact()["abi"]:
        if entry.get("type") == "event" and entry["name"] == event:
            sig = f"{event}({','.join(i['type'] for i in entry['inputs'])})"
            return "0x" + bytes(w3.keccak(text=sig)).hex()
    raise ValueError(f"no event {event} in the ABI")


def _find_log_tx(w3: Web3, address: str, event: str, key: bytes, block: int, policy: RetryPolicy) -> str | None:
    """The transaction that emitted ``event`` for ``key`` in ``block``, or None if the node will not say."""
    try:
        logs = with_retry(
            event,
            lambda: w3.eth.get_logs(
                {"address": address, "fromBlock": block, "toBlock": block,  # type: ignore[typeddict-item]
                 "topics": [_topic(w3, event), "0x" + key.hex()]}
            ),
            policy,
        )
    except Exception:  # noqa: BLE001 - the record itself is authoritative; the tx hash is a courtesy
        return None
    return "0x" + bytes(logs[0]["transactionHash"]).hex() if logs else None


def read_root(
    rpc_url: str, contract: str, batch_id: str | bytes, *, retry: RetryPolicy = DEFAULT_RETRY
) -> tuple[bytes, str, int] | None:
    """``(root, submitter, block)`` of an anchored batch, or None."""
    root, submitter, block = _call(rpc_url, contract, "read root", "getRoot", [batch_key(batch_id)], retry)
    if int(submitter, 16) == 0:
        return None
    return bytes(root), submitter, int(block)


def anchor_batch(
    rpc_url: str,
    contract: str,
    private_key: bytes,
    batch_id: str | bytes,
    leaves: list[bytes],
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> tuple[BatchReceipt, list[list[bytes]]]:
    """Anchor the Merkle root of ``leaves`` once under ``batch_id``; returns the receipt and every proof."""
    from eth_account import Account

    root, proofs = merkle_tree(leaves)
    key = batch_key(batch_id)
    w3 = connect(rpc_url)
    address = contract_address(contract, "anchor batch")
    chain_id = with_retry("anchor batch", lambda: w3.eth.chain_id, retry)
    submitter = Account.from_key(private_key).address
    batch_hex, root_hex = "0x" + key.hex(), "0x" + root.hex()

    def existing() -> BatchReceipt | None:
        found = read_root(rpc_url, address, key, retry=retry)
        if found is None:
            return None
        if found[0] != root or found[1].lower() != submitter.lower():
            raise ChainError(
                "anchor batch",
                f"batch {batch_hex} already has root 0x{found[0].hex()} from {found[1]} in block {found[2]}",
            )
        tx = _find_log_tx(w3, address, "RootAnchored", key, found[2], retry)
        return BatchReceipt(chain_id, address, batch_hex, root_hex, tx, found[2], 0, already_anchored=True)

    done = existing()
    if done is not None:
        return done, proofs
    data = _contract(w3, address).encode_abi("anchorRoot", args=[key, root])
    try:
        sent = _transact(rpc_url, private_key, address, data, "anchor batch", retry)
    except ChainError:
        done = existing()  # e.g. lost a race: an identical root is success, another is an error
        if done is None:
            raise
        return done, proofs
    receipt = BatchReceipt(chain_id, address, batch_hex, root_hex, sent.tx, sent.block, sent.gas_used, False)
    return receipt, proofs


def verify_proof_on_chain(
    rpc_url: str,
    contract: str,
    batch_id: str | bytes,
    leaf: bytes,
    proof: Sequence[bytes],
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> bool:
    """Ask the contract whether ``leaf`` is in the stored batch root (a view call, no gas)."""
    args = [batch_key(batch_id), bytes(leaf), [bytes(p) for p in proof]]
    return bool(_call(rpc_url, contract, "verify proof", "verifyInclusion", args, retry))
