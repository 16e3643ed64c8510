"""Gas used by InferenceAnchor: deploy, one anchor, one attestation, and per job for 100 single anchors
against one Merkle batch of 100; and by InferenceBounty: deploy, post-with-bounty (two verifiers), assign,
submit (with stake), a confirmation, a dispute (threshold 1: refund and slash in the same transaction),
finalize, withdraw, refund, release (the named worker gives it back) and cancel (the poster, while no worker
is named). Runs on the in-process chain, and on a local Hardhat node when installed.

    .venv/bin/python tests/benchmarks/bench_gas.py
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from eth_account import Account  # noqa: E402

from tests.chain_helpers import fund, hardhat_missing_reason, hardhat_node  # noqa: E402
from wl_infer import bounty, chain  # noqa: E402

JOBS = 100
BOARD = "0123456789abcdef"


@dataclass
class Figures:
    network: str
    deploy: int
    anchor: int
    attest: int
    singles_total: int
    batch_total: int
    singles_seconds: float
    batch_seconds: float


def _key(url: str) -> bytes:
    key = bytes(Account.create().key)
    if url != chain.TESTER_URL:
        fund(url, Account.from_key(key).address)
    return key


def _hashes(i: int) -> tuple[str, str]:
    out = "sha256:" + hashlib.sha256(f"output {i}".encode()).hexdigest()
    ev = "sha256:" + hashlib.sha256(f"evidence {i}".encode()).hexdigest()
    return out, ev


def measure(url: str, network: str) -> Figures:
    deployment = chain.deploy(url, _key(url))
    contract = deployment.contract
    worker, verifier = _key(url), _key(url)

    out, ev = _hashes(0)
    first = chain.anchor(url, contract, worker, BOARD, "w-first00000", out, ev)
    attestation = chain.attest(url, contract, verifier, BOARD, "w-first00000", "VERIFIED", out)

    started = time.perf_counter()
    singles = 0
    for i in range(JOBS):
        out, ev = _hashes(i)
        singles += chain.anchor(url, contract, worker, BOARD, f"w-{i:010x}", out, ev).gas_used
    singles_seconds = time.perf_counter() - started

    leaves = [chain.batch_leaf(BOARD, f"w-b{i:09x}", *_hashes(i)) for i in range(JOBS)]
    started = time.perf_counter()
    batch, proofs = chain.anchor_batch(url, contract, worker, f"bench-{time.time_ns()}", leaves)
    batch_seconds = time.perf_counter() - started
    root = bytes.fromhex(batch.root[2:])
    assert all(chain.verify_proof(leaf, p, root) for leaf, p in zip(leaves, proofs, strict=True))

    return Figures(
        network, deployment.gas_used, first.gas_used, attestation.gas_used, singles, batch.gas_used,
        singles_seconds, batch_seconds,
    )


def _advance(url: str, seconds: int) -> None:
    from tests.chain_helpers import rpc

    if url == chain.TESTER_URL:
        tester = chain.connect(url).provider.ethereum_tester  # type: ignore[attr-defined]
        tester.time_travel(bounty.chain_time(url) + seconds)
        tester.mine_blocks(1)
    else:
        rpc(url, "evm_increaseTime", [seconds])
        rpc(url, "evm_mine")


def measure_bounty(url: str) -> dict[str, int]:
    """One bounty paid out, one disputed, one refunded: the gas of each step."""
    gas: dict[str, int] = {}
    gas["deploy"] = chain.deploy(url, _key(url), name="InferenceBounty").gas_used
    contract = chain.deploy(url, _key(url), name="InferenceBounty").contract
    poster, worker = _key(url), _key(url)
    verifiers = [_key(url), _key(url)]
    named = [Account.from_key(v).address for v in verifiers]
    out, ev = _hashes(1)

    def posted(item: str, window: int = 3600) -> str:
        receipt = bounty.post(url, contract, poster, BOARD, item, amount=10**16, deadline=bounty.chain_time(url) + 7200,
                              window=window, stake=10**15, verifiers=named, threshold=1)
        gas.setdefault("post with bounty (2 verifiers)", receipt.gas_used)
        return receipt.bounty_id

    paid = posted("w-paid000001")
    gas["assign"] = bounty.assign(url, contract, poster, paid, Account.from_key(worker).address).gas_used
    gas["submit (with stake)"] = bounty.submit(url, contract, worker, paid, out, ev, stake=10**15).gas_used
    gas["confirm (VERIFIED)"] = bounty.attest(url, contract, verifiers[0], paid, "VERIFIED", out).gas_used
    disputed = posted("w-dispute0001")
    bounty.assign(url, contract, poster, disputed, Account.from_key(worker).address)
    bounty.submit(url, contract, worker, disputed, out, ev, stake=10**15)
    gas["dispute (MISMATCH: refund + slash)"] = bounty.attest(
        url, contract, verifiers[1], disputed, "MISMATCH", "sha256:" + "99" * 32).gas_used
    _advance(url, 3601)
    gas["finalize (payout credited)"] = bounty.finalize(url, contract, worker, paid).gas_used
    gas["withdraw"] = bounty.withdraw(url, contract, worker)[0].gas_used
    late = posted("w-refund00001")
    _advance(url, 7201)
    gas["refund (after the deadline)"] = bounty.refund(url, contract, poster, late).gas_used
    gas["withdraw (poster, two credits)"] = bounty.withdraw(url, contract, poster)[0].gas_used
    given_back = posted("w-release0001")
    bounty.assign(url, contract, poster, given_back, Account.from_key(worker).address)
    gas["release (the named worker gives it back)"] = bounty.release(url, contract, worker, given_back).gas_used
    gas["cancel (poster, no worker named)"] = bounty.cancel(url, contract, poster, given_back).gas_used
    return gas


def report_bounty(network: str, gas: dict[str, int]) -> None:
    print(f"\n== InferenceBounty on {network} ==")
    for step, used in gas.items():
        print(f"{step:<42} {used:>10,} gas")


def report(f: Figures) -> None:
    print(f"\n== {f.network} ==")
    print(f"deploy                         {f.deploy:>10,} gas")
    print(f"anchor (one job)               {f.anchor:>10,} gas")
    print(f"attest (one verdict)           {f.attest:>10,} gas")
    print(f"{JOBS} single anchors             {f.singles_total:>10,} gas   "
          f"{f.singles_total / JOBS:>9,.0f} gas/job   {f.singles_seconds:6.2f} s")
    print(f"Merkle batch of {JOBS} (1 tx)     {f.batch_total:>10,} gas   "
          f"{f.batch_total / JOBS:>9,.0f} gas/job   {f.batch_seconds:6.2f} s")
    print(f"batch saves                    {100 * (1 - f.batch_total / f.singles_total):>9.1f} %")


def main() -> int:
    report(measure(chain.TESTER_URL, "eth-tester (py-evm, in process)"))
    report_bounty("eth-tester", measure_bounty(chain.TESTER_URL))
    reason = hardhat_missing_reason()
    if reason is not None:
        print(f"\n(Hardhat skipped: {reason})")
        return 0
    with hardhat_node() as url:
        report(measure(url, f"Hardhat node ({url})"))
        report_bounty(f"Hardhat node ({url})", measure_bounty(url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
