"""InferenceBounty on the in-process EVM (eth-tester) and on a Hardhat node on 127.0.0.1, with time travel:
payout, dispute and slash, refund at the deadline, a dispute after the window, a second withdraw, the wrong
verifier, a front-runner, and a reentrant receiver. Every path ends in one payout or one refund."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("eth_tester", reason="web3[tester] is not installed")

from eth_account import Account  # noqa: E402

from wl_infer import bounty, chain  # noqa: E402
from wl_infer.chain import TESTER_URL, ChainError  # noqa: E402

try:
    from tests.chain_helpers import (
        compile_solidity,
        fund,
        hardhat_missing_reason,
        hardhat_node,
        rpc,
        solc_missing_reason,
    )
except ImportError:  # tests/ on sys.path rather than the repository root
    from chain_helpers import (  # type: ignore[no-redef]
        compile_solidity,
        fund,
        hardhat_missing_reason,
        hardhat_node,
        rpc,
        solc_missing_reason,
    )

pytestmark = pytest.mark.chain

BOARD = "0123456789abcdef"
OUT = "sha256:" + hashlib.sha256(b"The answer is 2.").hexdigest()
EV = "sha256:" + "22" * 32
ETH = 10**18
AMOUNT, STAKE = ETH, ETH // 10
HOUR = 3600


@dataclass
class Net:
    name: str
    url: str
    contract: str = ""

    def key(self) -> bytes:
        key = bytes(Account.create().key)
        if self.url != TESTER_URL:
            fund(self.url, Account.from_key(key).address)
        return key

    def now(self) -> int:
        return bounty.chain_time(self.url)

    def advance(self, seconds: int) -> None:
        if self.url == TESTER_URL:
            w3: Any = chain.connect(TESTER_URL)
            tester = w3.provider.ethereum_tester
            tester.time_travel(self.now() + seconds)
            tester.mine_blocks(1)
        else:
            rpc(self.url, "evm_increaseTime", [seconds])
            rpc(self.url, "evm_mine")

    def balance(self, address: str) -> int:
        return int(chain.connect(self.url).eth.get_balance(chain.contract_address(address)))

    def gas_cost(self, tx: str) -> int:
        receipt = chain.connect(self.url).eth.get_transaction_receipt(tx)  # type: ignore[arg-type]
        return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


@pytest.fixture(scope="module", params=["eth-tester", pytest.param("hardhat", marks=pytest.mark.slow)])
def net(request: pytest.FixtureRequest) -> Iterator[Net]:
    if request.param == "eth-tester":
        n = Net("eth-tester", TESTER_URL)
        n.contract = chain.deploy(TESTER_URL, n.key(), name="InferenceBounty").contract
        yield n
        return
    reason = hardhat_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with hardhat_node(startup_timeout=60.0) as url:
        n = Net("hardhat", url)
        n.contract = chain.deploy(url, n.key(), name="InferenceBounty").contract
        yield n


_counter = iter(range(10**6))


def _item() -> str:
    return f"w-b{next(_counter):09x}"


@dataclass
class Posted:
    item: str
    bid: str
    poster: bytes
    worker: bytes
    verifiers: list[bytes]


def _post(net: Net, *, verifiers: int = 2, threshold: int = 1, window: int = HOUR, deadline: int = 24 * HOUR,
          assign: bool = True) -> Posted:
    poster, worker = net.key(), net.key()
    vkeys = [net.key() for _ in range(verifiers)]
    item = _item()
    receipt = bounty.post(
        net.url, net.contract, poster, BOARD, item, amount=AMOUNT, deadline=net.now() + deadline, window=window,
        stake=STAKE, verifiers=[Account.from_key(v).address for v in vkeys], threshold=threshold,
    )
    assert receipt.bounty_id == "0x" + bounty.bounty_id(BOARD, item, Account.from_key(poster).address).hex()
    if assign:
        bounty.assign(net.url, net.contract, poster, receipt.bounty_id, Account.from_key(worker).address)
    return Posted(item, receipt.bounty_id, poster, worker, vkeys)


def _state(net: Net, bid: str) -> bounty.OnChainBounty:
    found = bounty.read_bounty(net.url, net.contract, bid)
    assert found is not None
    return found


def _credit(net: Net, key: bytes) -> int:
    return bounty.credit_of(net.url, net.contract, Account.from_key(key).address)


def _refused(error: str) -> Any:
    return pytest.raises(ChainError, match=rf"the contract refused it: {error}\b")


def test_no_dispute_pays_the_worker_once_after_the_window(net: Net) -> None:
    p = _post(net)
    b = _state(net, p.bid)
    assert (b.state, b.amount, b.stake, b.threshold) == ("assigned", AMOUNT, STAKE, 1)
    assert b.worker == Account.from_key(p.worker).address and len(b.verifiers) == 2
    with _refused("WrongStake"):
        bounty.submit(net.url, net.contract, p.worker, p.bid, OUT, EV, stake=STAKE - 1)
    sub = bounty.submit(net.url, net.contract, p.worker, p.bid, OUT, EV, stake=STAKE)
    b = _state(net, p.bid)
    assert (b.state, b.output_hash, b.evidence_hash) == ("submitted", OUT, EV)
    assert b.window_closes_at is not None and b.window_closes_at >= net.now() + HOUR - 5
    assert sub.gas_used > 0
    bounty.attest(net.url, net.contract, p.verifiers[0], p.bid, "VERIFIED", OUT)  # a confirmation: no effect
    with _refused("WindowOpen"):
        bounty.finalize(net.url, net.contract, p.poster, p.bid)
    net.advance(HOUR + 1)
    bounty.finalize(net.url, net.contract, p.poster, p.bid)  # anyone may finalize; the worker is credited
    assert _state(net, p.bid).state == "paid"
    assert _credit(net, p.worker) == AMOUNT + STAKE and _credit(net, p.poster) == 0
    with _refused("WrongState"):
        bounty.finalize(net.url, net.contract, p.poster, p.bid)
    with _refused("WrongState"):
        bounty.refund(net.url, net.contract, p.poster, p.bid)

    address = Account.from_key(p.worker).address
    before = net.balance(address)
    receipt, owed = bounty.withdraw(net.url, net.contract, p.worker)
    assert owed == AMOUNT + STAKE
    assert net.balance(address) == before + owed - net.gas_cost(receipt.tx)
    with pytest.raises(ChainError, match="nothing is credited"):
        bounty.withdraw(net.url, net.contract, p.worker)  # the second withdraw: refused before sending
    c: Any = chain.connect(net.url).eth.contract(address=net.contract, abi=chain.load_artifact("InferenceBounty")["abi"])
    with pytest.raises(Exception) as info:  # and by the contract itself
        c.functions.withdraw().call({"from": address})
    assert chain.decode_revert(info.value) == "NothingToWithdraw()"


def test_threshold_disputes_refund_the_poster_and_slash_the_stake(net: Net) -> None:
    p = _post(net, verifiers=3, threshold=2)
    bounty.submit(net.url, net.contract, p.worker, p.bid, OUT, EV, stake=STAKE)
    outsider = net.key()
    with _refused("NotVerifier"):  # the wrong verifier
        bounty.attest(net.url, net.contract, outsider, p.bid, "MISMATCH", "sha256:" + "99" * 32)
    with _refused("NotVerifier"):  # the worker is no verifier either
        bounty.attest(net.url, net.contract, p.worker, p.bid, "VERIFIED", OUT)
    bounty.attest(net.url, net.contract, p.verifiers[0], p.bid, "MISMATCH", "sha256:" + "99" * 32)
    with _refused("AlreadyVoted"):  # one verdict per verifier: one verifier cannot reach the threshold alone
        bounty.attest(net.url, net.contract, p.verifiers[0], p.bid, "INVALID", "sha256:" + "99" * 32)
    assert (_state(net, p.bid).state, _state(net, p.bid).disputes) == ("submitted", 1)
    bounty.attest(net.url, net.contract, p.verifiers[1], p.bid, "INVALID", "sha256:" + "98" * 32)
    b = _state(net, p.bid)
    assert (b.state, b.disputes) == ("refunded", 2)
    assert _credit(net, p.poster) == AMOUNT  # STAKE is even: no rounding dust
    assert _credit(net, p.verifiers[0]) == _credit(net, p.verifiers[1]) == STAKE // 2
    assert _credit(net, p.verifiers[2]) == 0 and _credit(net, p.worker) == 0
    with _refused("WrongState"):  # the third verifier is too late: the bounty is settled
        bounty.attest(net.url, net.contract, p.verifiers[2], p.bid, "MISMATCH", "sha256:" + "99" * 32)
    net.advance(HOUR + 1)
    with _refused("WrongState"):  # and the worker cannot be paid as well
        bounty.finalize(net.url, net.contract, p.worker, p.bid)
    for key in (p.poster, p.verifiers[0], p.verifiers[1]):
        bounty.withdraw(net.url, net.contract, key)
        assert _credit(net, key) == 0


def test_a_dispute_after_the_window_is_refused_and_the_worker_is_paid(net: Net) -> None:
    p = _post(net, verifiers=1, threshold=1)
    bounty.submit(net.url, net.contract, p.worker, p.bid, OUT, EV, stake=STAKE)
    net.advance(HOUR + 1)
    with _refused("WindowClosed"):
        bounty.attest(net.url, net.contract, p.verifiers[0], p.bid, "MISMATCH", "sha256:" + "99" * 32)
    bounty.finalize(net.url, net.contract, p.worker, p.bid)
    assert _credit(net, p.worker) == AMOUNT + STAKE and _credit(net, p.verifiers[0]) == 0


def test_no_result_by_the_deadline_refunds_the_poster_once(net: Net) -> None:
    p = _post(net, deadline=2 * HOUR)
    with _refused("DeadlineNotReached"):
        bounty.refund(net.url, net.contract, p.poster, p.bid)
    net.advance(2 * HOUR + 1)
    with _refused("DeadlinePassed"):  # too late to submit
        bounty.submit(net.url, net.contract, p.worker, p.bid, OUT, EV, stake=STAKE)
    with _refused("WrongState"):  # the poster cannot re-point an assigned bounty
        bounty.assign(net.url, net.contract, p.poster, p.bid, Account.from_key(net.key()).address)
    bounty.refund(net.url, net.contract, p.worker, p.bid)  # anyone may trigger it; the poster is credited
    assert _state(net, p.bid).state == "refunded"
    assert _credit(net, p.poster) == AMOUNT and _credit(net, p.worker) == 0
    with _refused("WrongState"):
        bounty.refund(net.url, net.contract, p.poster, p.bid)
    # an unassigned bounty is refunded the same way, and cannot be assigned any more
    q = _post(net, deadline=HOUR, assign=False)
    net.advance(HOUR + 1)
    with _refused("DeadlinePassed"):
        bounty.assign(net.url, net.contract, q.poster, q.bid, Account.from_key(net.key()).address)
    bounty.refund(net.url, net.contract, q.poster, q.bid)
    assert _credit(net, q.poster) == AMOUNT


def test_only_the_poster_cancels_and_only_while_no_worker_is_named(net: Net) -> None:
    p = _post(net, assign=False)
    for stranger in (p.worker, p.verifiers[0]):
        with _refused("NotPoster"):
            bounty.cancel(net.url, net.contract, stranger, p.bid)
    receipt = bounty.cancel(net.url, net.contract, p.poster, p.bid)  # long before the deadline: a full refund
    assert receipt.gas_used > 0 and _state(net, p.bid).state == "refunded"
    assert _credit(net, p.poster) == AMOUNT
    for again in (bounty.cancel, bounty.refund):  # ended: no second refund, no assignment, no submission
        with _refused("WrongState"):
            again(net.url, net.contract, p.poster, p.bid)
    with _refused("WrongState"):
        bounty.assign(net.url, net.contract, p.poster, p.bid, Account.from_key(p.worker).address)
    _, owed = bounty.withdraw(net.url, net.contract, p.poster)
    assert owed == AMOUNT and _credit(net, p.poster) == 0

    q = _post(net)  # a named worker is protected: the poster cannot pull the bounty from under it...
    with _refused("WrongState"):
        bounty.cancel(net.url, net.contract, q.poster, q.bid)
    bounty.release(net.url, net.contract, q.worker, q.bid)  # ...until the worker gives it back
    bounty.cancel(net.url, net.contract, q.poster, q.bid)
    assert _credit(net, q.poster) == AMOUNT and _credit(net, q.worker) == 0
    r = _post(net)
    bounty.submit(net.url, net.contract, r.worker, r.bid, OUT, EV, stake=STAKE)
    with _refused("WrongState"):  # nor a submitted one
        bounty.cancel(net.url, net.contract, r.poster, r.bid)


def test_a_front_runner_can_neither_submit_nor_be_paid_nor_block_the_bounty(net: Net) -> None:
    attacker = net.key()
    attacker_address = Account.from_key(attacker).address
    poster, worker = net.key(), net.key()
    item = _item()
    # the attacker sees the posted item and escrows a (tiny) bounty for the same job first...
    theirs = bounty.post(net.url, net.contract, attacker, BOARD, item, amount=1, deadline=net.now() + HOUR,
                         window=60, worker=attacker_address)
    # ...which does not occupy the poster's bounty: each poster has its own id
    mine = bounty.post(net.url, net.contract, poster, BOARD, item, amount=AMOUNT, deadline=net.now() + HOUR,
                       window=60, stake=STAKE)
    assert mine.bounty_id != theirs.bounty_id
    with _refused("WrongState"):  # before the poster names the board's claimer, nobody may submit
        bounty.submit(net.url, net.contract, attacker, mine.bounty_id, OUT, EV, stake=STAKE)
    with _refused("NotPoster"):  # the attacker cannot name itself
        bounty.assign(net.url, net.contract, attacker, mine.bounty_id, attacker_address)
    bounty.assign(net.url, net.contract, poster, mine.bounty_id, Account.from_key(worker).address)
    with _refused("NotWorker"):  # copying the worker's hashes does not make the attacker the worker
        bounty.submit(net.url, net.contract, attacker, mine.bounty_id, OUT, EV, stake=STAKE)
    bounty.submit(net.url, net.contract, worker, mine.bounty_id, OUT, EV, stake=STAKE)
    net.advance(61)
    bounty.finalize(net.url, net.contract, attacker, mine.bounty_id)  # even finalized by the attacker...
    assert _credit(net, worker) == AMOUNT + STAKE  # ...the worker is the one paid
    assert _credit(net, attacker) == 0


def test_only_the_named_worker_can_release_the_bounty_for_another(net: Net) -> None:
    p = _post(net)
    second = net.key()
    with _refused("WrongState"):  # assigned once: the poster cannot re-point it...
        bounty.assign(net.url, net.contract, p.poster, p.bid, Account.from_key(second).address)
    with _refused("NotWorker"):  # ...nor release it for the worker
        bounty.release(net.url, net.contract, p.poster, p.bid)
    bounty.release(net.url, net.contract, p.worker, p.bid)  # the worker gives up its claim
    assert _state(net, p.bid).state == "open" and _state(net, p.bid).worker is None
    bounty.assign(net.url, net.contract, p.poster, p.bid, Account.from_key(second).address)
    with _refused("NotWorker"):  # the first worker is no longer the one to be paid
        bounty.submit(net.url, net.contract, p.worker, p.bid, OUT, EV, stake=STAKE)
    bounty.submit(net.url, net.contract, second, p.bid, OUT, EV, stake=STAKE)
    with _refused("WrongState"):  # nobody releases a submitted result
        bounty.release(net.url, net.contract, second, p.bid)


def test_posting_is_validated(net: Net) -> None:
    poster = net.key()
    v = Account.from_key(net.key()).address
    now = net.now()
    with pytest.raises(ChainError, match="more than 0 wei"):
        bounty.post(net.url, net.contract, poster, BOARD, _item(), amount=0, deadline=now + HOUR, window=60)
    with pytest.raises(ChainError, match="threshold 2 does not fit 1"):
        bounty.post(net.url, net.contract, poster, BOARD, _item(), amount=1, deadline=now + HOUR, window=60,
                    verifiers=[v], threshold=2)
    with _refused("BadDeadline"):
        bounty.post(net.url, net.contract, poster, BOARD, _item(), amount=1, deadline=now - 1, window=60)
    with _refused("BadWindow"):
        bounty.post(net.url, net.contract, poster, BOARD, _item(), amount=1, deadline=now + HOUR, window=0)
    with _refused("DuplicateVerifier"):
        bounty.post(net.url, net.contract, poster, BOARD, _item(), amount=1, deadline=now + HOUR, window=60,
                    verifiers=[v, v], threshold=1)
    item = _item()
    bounty.post(net.url, net.contract, poster, BOARD, item, amount=1, deadline=now + HOUR, window=60)
    with _refused("BountyExists"):
        bounty.post(net.url, net.contract, poster, BOARD, item, amount=1, deadline=now + HOUR, window=60)
    assert bounty.read_bounty(net.url, net.contract, "0x" + "ab" * 32) is None


REENTRANT = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;
interface IBounty {
    function submit(bytes32 id, bytes32 o, bytes32 e) external payable;
    function withdraw() external;
}
/// A worker that is a contract and tries to withdraw again from inside the payment it receives.
contract Reentrant {
    IBounty public immutable target;
    uint256 public reentries;
    uint256 public failedReentries;
    constructor(address t) { target = IBounty(t); }
    function submitTo(bytes32 id, bytes32 o, bytes32 e) external payable { target.submit{value: msg.value}(id, o, e); }
    function pull() external { target.withdraw(); }
    receive() external payable {
        if (reentries < 3) {
            reentries += 1;
            try target.withdraw() {} catch { failedReentries += 1; }
        }
    }
}
"""


def test_a_reentrant_receiver_is_paid_exactly_once(net: Net) -> None:
    reason = solc_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    abi, bytecode = compile_solidity(REENTRANT, "Reentrant")
    owner = net.key()
    w3: Any = chain.connect(net.url)
    factory = w3.eth.contract(abi=abi, bytecode=bytecode)
    data = factory.constructor(net.contract).data_in_transaction
    sent = chain._transact(net.url, owner, None, data, "deploy attacker", chain.DEFAULT_RETRY)
    attacker = w3.eth.contract(address=sent.contract_address, abi=abi)

    # another bounty's escrow sits in the same contract: the attacker must not be able to drain it
    other = _post(net)
    p = _post(net, assign=False)
    bounty.assign(net.url, net.contract, p.poster, p.bid, attacker.address)
    call = attacker.encode_abi("submitTo", args=[bytes.fromhex(p.bid[2:]), bytes.fromhex(OUT[7:]),
                                                  bytes.fromhex(EV[7:])])
    chain._transact(net.url, owner, attacker.address, call, "attacker submit", chain.DEFAULT_RETRY, STAKE)
    net.advance(HOUR + 1)
    bounty.finalize(net.url, net.contract, owner, p.bid)
    held = net.balance(net.contract)
    chain._transact(net.url, owner, attacker.address, attacker.encode_abi("pull", args=[]), "attacker pull",
                    chain.DEFAULT_RETRY)
    assert net.balance(attacker.address) == AMOUNT + STAKE  # paid once
    assert attacker.functions.reentries().call() == 1 and attacker.functions.failedReentries().call() == 1
    assert net.balance(net.contract) == held - (AMOUNT + STAKE)
    assert bounty.credit_of(net.url, net.contract, attacker.address) == 0
    assert _state(net, other.bid).amount == AMOUNT and _state(net, other.bid).state == "assigned"
