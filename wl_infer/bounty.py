"""Bounties in escrow through ``contracts/InferenceBounty.sol``: post, assign, release, submit, attest,
finalize, refund, cancel, withdraw and read back.

A bounty id is ``keccak256(abi.encode(jobId, poster))``: each poster's bounty on a job has its own slot.
Only the poster names the worker (the board's accepted claimer), and only that address can stake, submit
and be paid. Transactions go through wl_infer.chain's signed, retried send path; web3 loads inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wl_infer import chain
from wl_infer.chain_abi import BOUNTY, _contract, bytes32_to_hash, contract_address, hash_to_bytes32, job_key
from wl_infer.rpc import DEFAULT_RETRY, ChainError, RetryPolicy, connect, with_retry

STATES = ("none", "open", "assigned", "submitted", "paid", "refunded")
FINAL_STATES = ("paid", "refunded")
MAX_VERIFIERS = 16


@dataclass(frozen=True)
class TxReceipt:
    """One mined bounty transaction."""

    op: str
    chain_id: int
    contract: str
    tx: str
    block: int
    gas_used: int
    bounty_id: str


@dataclass(frozen=True)
class OnChainBounty:
    """A bounty as the contract stores it; hashes are None until the worker submits."""

    bounty_id: str
    poster: str
    deadline: int
    window: int
    state: str
    worker: str | None
    submitted_at: int
    threshold: int
    disputes: int
    amount: int
    stake: int
    output_hash: str | None
    evidence_hash: str | None
    verifiers: tuple[str, ...]

    @property
    def window_closes_at(self) -> int | None:
        return self.submitted_at + self.window if self.state == "submitted" else None


def address_of_key(private_key: bytes) -> str:
    """The checksummed address of a private key (the poster, worker or verifier a transaction comes from)."""
    from eth_account import Account

    return str(Account.from_key(private_key).address)


def bounty_id(board_id: str, item_id: str, poster: str) -> bytes:
    """The contract's bounty id for ``poster``'s bounty on the job."""
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    return bytes(keccak(encode(["bytes32", "address"], [job_key(board_id, item_id), contract_address(poster)])))


def _key_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        if len(value) != 32:
            raise ValueError(f"bounty id must be 32 bytes, got {len(value)}")
        return value
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise ValueError(f"bounty id must be 0x + 64 hex digits, got {value!r}")
    return bytes.fromhex(value[2:])


def _send(
    rpc_url: str, contract: str, key: bytes, op: str, fn: str, args: list[Any], bid: bytes,
    retry: RetryPolicy, value: int = 0,
) -> TxReceipt:
    w3 = connect(rpc_url)
    address = contract_address(contract, op)
    data = _contract(w3, address, BOUNTY).encode_abi(fn, args=args)
    sent = chain._transact(rpc_url, key, address, data, op, retry, value)
    return TxReceipt(op, sent.chain_id, address, sent.tx, sent.block, sent.gas_used, "0x" + bid.hex())


def post(
    rpc_url: str,
    contract: str,
    private_key: bytes,
    board_id: str,
    item_id: str,
    *,
    amount: int,
    deadline: int,
    window: int,
    stake: int = 0,
    verifiers: Sequence[str] = (),
    threshold: int = 0,
    worker: str | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> TxReceipt:
    """Escrow ``amount`` wei for the job until ``deadline`` (unix seconds); the sender is the poster."""
    from eth_account import Account

    if amount <= 0:
        raise ChainError("post bounty", "the bounty must be more than 0 wei")
    if len(verifiers) > MAX_VERIFIERS:
        raise ChainError("post bounty", f"at most {MAX_VERIFIERS} verifiers")
    named = [contract_address(v, "post bounty") for v in verifiers]
    if threshold > len(named) or (threshold > 0) != bool(named):
        raise ChainError("post bounty", f"threshold {threshold} does not fit {len(named)} verifier(s)")
    poster = Account.from_key(private_key).address
    bid = bounty_id(board_id, item_id, poster)
    args = [job_key(board_id, item_id), deadline, window, stake, named, threshold,
            contract_address(worker, "post bounty") if worker else chain.ZERO_ADDRESS]
    return _send(rpc_url, contract, private_key, "post bounty", "post", args, bid, retry, amount)


def assign(
    rpc_url: str, contract: str, private_key: bytes, bid: str | bytes, worker: str, *, retry: RetryPolicy = DEFAULT_RETRY
) -> TxReceipt:
    """The poster names the worker the board accepted."""
    key = _key_bytes(bid)
    return _send(rpc_url, contract, private_key, "assign bounty", "assign",
                 [key, contract_address(worker, "assign bounty")], key, retry)


def release(
    rpc_url: str, contract: str, private_key: bytes, bid: str | bytes, *, retry: RetryPolicy = DEFAULT_RETRY
) -> TxReceipt:
    """The named worker gives the bounty back (it will not deliver); the poster may name someone else."""
    key = _key_bytes(bid)
    return _send(rpc_url, contract, private_key, "release bounty", "release", [key], key, retry)


def submit(
    rpc_url: str,
    contract: str,
    private_key: bytes,
    bid: str | bytes,
    output_hash: str,
    evidence_hash: str,
    *,
    stake: int,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> TxReceipt:
    """The named worker stakes ``stake`` wei and submits its hashes; the challenge window starts."""
    key = _key_bytes(bid)
    args = [key, hash_to_bytes32(output_hash), hash_to_bytes32(evidence_hash)]
    return _send(rpc_url, contract, private_key, "submit", "submit", args, key, retry, stake)


def attest(
    rpc_url: str,
    contract: str,
    private_key: bytes,
    bid: str | bytes,
    verdict: str,
    result_hash: str,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> TxReceipt:
    """A named verifier's verdict within the window: VERIFIED confirms, MISMATCH or INVALID disputes."""
    code = chain.VERDICTS.get(verdict.upper())
    if code is None:
        raise ChainError("attest", f"unknown verdict {verdict!r} (expected {', '.join(chain.VERDICTS)})")
    key = _key_bytes(bid)
    return _send(rpc_url, contract, private_key, "attest", "attest", [key, code, hash_to_bytes32(result_hash)],
                 key, retry)


def finalize(
    rpc_url: str, contract: str, private_key: bytes, bid: str | bytes, *, retry: RetryPolicy = DEFAULT_RETRY
) -> TxReceipt:
    """After an undisputed window, credit bounty and stake to the worker."""
    key = _key_bytes(bid)
    return _send(rpc_url, contract, private_key, "finalize", "finalize", [key], key, retry)


def refund(
    rpc_url: str, contract: str, private_key: bytes, bid: str | bytes, *, retry: RetryPolicy = DEFAULT_RETRY
) -> TxReceipt:
    """No result by the deadline: credit the bounty back to its poster."""
    key = _key_bytes(bid)
    return _send(rpc_url, contract, private_key, "refund", "refund", [key], key, retry)


def cancel(
    rpc_url: str, contract: str, private_key: bytes, bid: str | bytes, *, retry: RetryPolicy = DEFAULT_RETRY
) -> TxReceipt:
    """The poster takes back a bounty no worker has been named for (at any time before a worker is named)."""
    key = _key_bytes(bid)
    return _send(rpc_url, contract, private_key, "cancel bounty", "cancel", [key], key, retry)


def withdraw(
    rpc_url: str, contract: str, private_key: bytes, *, retry: RetryPolicy = DEFAULT_RETRY
) -> tuple[TxReceipt, int]:
    """Send this key everything credited to it; returns the receipt and the amount in wei."""
    from eth_account import Account

    owed = credit_of(rpc_url, contract, Account.from_key(private_key).address, retry=retry)
    if owed == 0:
        raise ChainError("withdraw", "nothing is credited to this key")
    return _send(rpc_url, contract, private_key, "withdraw", "withdraw", [], b"\0" * 32, retry), owed


def _view(rpc_url: str, contract: str, op: str, fn: str, args: list[Any], retry: RetryPolicy) -> Any:
    from web3.exceptions import BadFunctionCallOutput

    w3 = connect(rpc_url)
    c = _contract(w3, contract_address(contract, op), BOUNTY)
    try:
        return with_retry(op, lambda: getattr(c.functions, fn)(*args).call(), retry)
    except BadFunctionCallOutput:
        raise ChainError(op, f"no InferenceBounty contract at {c.address} on this chain", contract=c.address) from None


def credit_of(rpc_url: str, contract: str, address: str, *, retry: RetryPolicy = DEFAULT_RETRY) -> int:
    """Wei credited to ``address`` and not yet withdrawn."""
    return int(_view(rpc_url, contract, "read credit", "credit", [contract_address(address, "read credit")], retry))


def read_bounty(
    rpc_url: str, contract: str, bid: str | bytes, *, retry: RetryPolicy = DEFAULT_RETRY
) -> OnChainBounty | None:
    """The bounty as stored, or None when there is none under that id."""
    key = _key_bytes(bid)
    raw = _view(rpc_url, contract, "read bounty", "getBounty", [key], retry)
    (poster, deadline, window, state, worker, submitted_at, threshold, disputes, amount, stake, out, ev) = raw
    if int(state) == 0:
        return None
    verifiers = _view(rpc_url, contract, "read bounty", "verifiersOf", [key], retry)
    zero = b"\0" * 32
    return OnChainBounty(
        bounty_id="0x" + key.hex(),
        poster=str(poster),
        deadline=int(deadline),
        window=int(window),
        state=STATES[int(state)] if int(state) < len(STATES) else f"state {int(state)}",
        worker=None if int(worker, 16) == 0 else str(worker),
        submitted_at=int(submitted_at),
        threshold=int(threshold),
        disputes=int(disputes),
        amount=int(amount),
        stake=int(stake),
        output_hash=None if bytes(out) == zero else bytes32_to_hash(out),
        evidence_hash=None if bytes(ev) == zero else bytes32_to_hash(ev),
        verifiers=tuple(str(v) for v in verifiers),
    )


def chain_time(rpc_url: str, *, retry: RetryPolicy = DEFAULT_RETRY) -> int:
    """The latest block's timestamp: the clock the contract's deadline and window run on."""
    w3 = connect(rpc_url)
    return int(with_retry("read time", lambda: w3.eth.get_block("latest"), retry)["timestamp"])
