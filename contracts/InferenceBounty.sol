// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title InferenceBounty
/// @notice Escrowed payment for one wl-infer job: the poster escrows a bounty and names the worker the board
///         accepted; that worker stakes and submits its result hashes; the poster's named verifiers may
///         dispute within a challenge window. Every bounty ends in exactly one payout (worker: bounty + stake)
///         or one refund (poster: bounty; a disputed worker's stake goes to the disputing verifiers).
/// @dev A bounty id is keccak256(abi.encode(jobId, poster)), so nobody can occupy another poster's bounty.
///      Only the poster can name the worker (from the board's accepted claim), once; only that address can
///      submit and be paid, so a front-runner who copies the job id or the result gets nothing, and only the
///      named worker can release the bounty back to Open (so the poster cannot re-point it).
///      While no worker is named the poster may cancel for a full refund (a post the board never accepted,
///      a job nobody claimed); once one is named, only the deadline refunds it.
///      Funds move by pull payment: resolutions credit balances, `withdraw` sends them. There is no owner.
contract InferenceBounty {
    /// Verdicts as `wl infer verify` prints them (same numbers as InferenceAnchor).
    uint8 public constant VERIFIED = 1;
    uint8 public constant MISMATCH = 2;
    uint8 public constant INVALID = 3;
    /// The most verifiers one bounty may name (bounds the dispute loop).
    uint256 public constant MAX_VERIFIERS = 16;

    enum State {
        None,
        Open, // escrowed, waiting for the poster to name the board's claimer
        Assigned, // a worker is named; it may stake and submit until the deadline
        Submitted, // result on chain; the challenge window runs
        Paid, // final: bounty and stake credited to the worker
        Refunded // final: bounty credited to the poster (and a disputed stake to the disputers)
    }

    struct Bounty {
        address poster;
        uint64 deadline; // unix seconds: submit before it, or the poster may take a refund
        uint32 window; // challenge window in seconds, counted from the submission
        State state;
        address worker;
        uint64 submittedAt;
        uint8 threshold; // MISMATCH/INVALID verdicts that refund the poster and slash the stake
        uint8 disputes;
        uint128 amount;
        uint128 stake;
        bytes32 outputHash;
        bytes32 evidenceHash;
    }

    mapping(bytes32 => Bounty) private _bounties;
    mapping(bytes32 => address[]) private _verifiers;
    /// 0 = not a verifier of this bounty, 1 = named, verdict + 1 once it has given one.
    mapping(bytes32 => mapping(address => uint8)) private _verifierState;
    mapping(bytes32 => address[]) private _disputers;

    /// What each address can withdraw (pull payments).
    mapping(address => uint256) public credit;

    event Posted(
        bytes32 indexed bountyId,
        bytes32 indexed jobId,
        address indexed poster,
        uint256 amount,
        uint256 stake,
        uint64 deadline,
        uint32 window,
        uint8 threshold,
        address[] verifiers
    );
    event Assigned(bytes32 indexed bountyId, address indexed worker);
    event Released(bytes32 indexed bountyId, address indexed worker);
    event Submitted(bytes32 indexed bountyId, address indexed worker, bytes32 outputHash, bytes32 evidenceHash);
    event Verdict(bytes32 indexed bountyId, address indexed verifier, uint8 verdict, bytes32 resultHash);
    event Paid(bytes32 indexed bountyId, address indexed worker, uint256 amount);
    event Refunded(bytes32 indexed bountyId, address indexed poster, uint256 amount, uint256 slashed);
    event Cancelled(bytes32 indexed bountyId, address indexed poster, uint256 amount);
    event Withdrawn(address indexed to, uint256 amount);

    error BountyExists(bytes32 bountyId);
    error UnknownBounty(bytes32 bountyId);
    error ZeroAmount();
    error ZeroHash();
    error BadDeadline(uint64 deadline);
    error BadWindow(uint32 window);
    error BadVerifiers(uint256 count, uint8 threshold);
    error DuplicateVerifier(address verifier);
    error NotPoster(address caller);
    error NotWorker(address caller, address worker);
    error NotVerifier(address caller);
    error AlreadyVoted(address verifier);
    error WrongState(State state);
    error WrongStake(uint256 sent, uint256 required);
    error DeadlinePassed(uint64 deadline);
    error DeadlineNotReached(uint64 deadline);
    error WindowClosed(uint256 closedAt);
    error WindowOpen(uint256 closesAt);
    error InvalidVerdict(uint8 verdict);
    error NothingToWithdraw();
    error TransferFailed(address to, uint256 amount);

    /// Escrow msg.value for `jobId`; `worker` may be zero (named later with `assign`).
    function post(
        bytes32 jobId,
        uint64 deadline,
        uint32 window,
        uint128 stake,
        address[] calldata verifiers,
        uint8 threshold,
        address worker
    ) external payable returns (bytes32 bountyId) {
        if (msg.value == 0) revert ZeroAmount();
        if (deadline <= block.timestamp) revert BadDeadline(deadline);
        if (window == 0) revert BadWindow(window);
        if (verifiers.length > MAX_VERIFIERS || threshold > verifiers.length || (verifiers.length > 0) != (threshold > 0)) {
            revert BadVerifiers(verifiers.length, threshold);
        }
        bountyId = keccak256(abi.encode(jobId, msg.sender));
        Bounty storage b = _bounties[bountyId];
        if (b.state != State.None) revert BountyExists(bountyId);
        for (uint256 i = 0; i < verifiers.length; i++) {
            address v = verifiers[i];
            if (v == address(0) || _verifierState[bountyId][v] != 0) revert DuplicateVerifier(v);
            _verifierState[bountyId][v] = 1;
        }
        _verifiers[bountyId] = verifiers;
        b.poster = msg.sender;
        b.deadline = deadline;
        b.window = window;
        b.threshold = threshold;
        b.amount = uint128(msg.value);
        b.stake = stake;
        b.state = State.Open;
        emit Posted(bountyId, jobId, msg.sender, msg.value, stake, deadline, window, threshold, verifiers);
        if (worker != address(0)) _assign(bountyId, b, worker);
    }

    /// The poster names the board's accepted claimer, once: only that worker can give the bounty back
    /// (`release`), so a worker who was named can run the job knowing the payout cannot be re-pointed.
    function assign(bytes32 bountyId, address worker) external {
        Bounty storage b = _get(bountyId);
        if (msg.sender != b.poster) revert NotPoster(msg.sender);
        if (b.state != State.Open) revert WrongState(b.state);
        if (block.timestamp >= b.deadline) revert DeadlinePassed(b.deadline);
        _assign(bountyId, b, worker);
    }

    /// The named worker gives the bounty back before submitting (it abandoned the claim): Open again.
    function release(bytes32 bountyId) external {
        Bounty storage b = _get(bountyId);
        if (b.state != State.Assigned) revert WrongState(b.state);
        if (msg.sender != b.worker) revert NotWorker(msg.sender, b.worker);
        b.worker = address(0);
        b.state = State.Open;
        emit Released(bountyId, msg.sender);
    }

    /// The named worker stakes exactly `stake` and submits its hashes before the deadline.
    function submit(bytes32 bountyId, bytes32 outputHash, bytes32 evidenceHash) external payable {
        Bounty storage b = _get(bountyId);
        if (b.state != State.Assigned) revert WrongState(b.state);
        if (msg.sender != b.worker) revert NotWorker(msg.sender, b.worker);
        if (block.timestamp >= b.deadline) revert DeadlinePassed(b.deadline);
        if (msg.value != b.stake) revert WrongStake(msg.value, b.stake);
        if (outputHash == bytes32(0) || evidenceHash == bytes32(0)) revert ZeroHash();
        b.state = State.Submitted;
        b.submittedAt = uint64(block.timestamp);
        b.outputHash = outputHash;
        b.evidenceHash = evidenceHash;
        emit Submitted(bountyId, msg.sender, outputHash, evidenceHash);
    }

    /// A named verifier's verdict within the window; `threshold` MISMATCH/INVALID verdicts refund the
    /// poster at once and split the worker's stake between the disputing verifiers.
    function attest(bytes32 bountyId, uint8 verdict, bytes32 resultHash) external {
        Bounty storage b = _get(bountyId);
        if (verdict < VERIFIED || verdict > INVALID) revert InvalidVerdict(verdict);
        if (b.state != State.Submitted) revert WrongState(b.state);
        uint8 seen = _verifierState[bountyId][msg.sender];
        if (seen == 0) revert NotVerifier(msg.sender);
        if (seen != 1) revert AlreadyVoted(msg.sender);
        uint256 closesAt = uint256(b.submittedAt) + b.window;
        if (block.timestamp >= closesAt) revert WindowClosed(closesAt);
        _verifierState[bountyId][msg.sender] = verdict + 1;
        emit Verdict(bountyId, msg.sender, verdict, resultHash);
        if (verdict == VERIFIED) return;
        _disputers[bountyId].push(msg.sender);
        b.disputes += 1;
        if (b.disputes >= b.threshold) _refundDisputed(bountyId, b);
    }

    /// After an undisputed window, credit bounty + stake to the worker (anyone may call; the worker is paid).
    function finalize(bytes32 bountyId) external {
        Bounty storage b = _get(bountyId);
        if (b.state != State.Submitted) revert WrongState(b.state);
        uint256 closesAt = uint256(b.submittedAt) + b.window;
        if (block.timestamp < closesAt) revert WindowOpen(closesAt);
        uint256 total = uint256(b.amount) + b.stake;
        b.state = State.Paid;
        credit[b.worker] += total;
        emit Paid(bountyId, b.worker, total);
    }

    /// No result by the deadline: credit the bounty back to the poster (anyone may call).
    function refund(bytes32 bountyId) external {
        Bounty storage b = _get(bountyId);
        if (b.state != State.Open && b.state != State.Assigned) revert WrongState(b.state);
        if (block.timestamp < b.deadline) revert DeadlineNotReached(b.deadline);
        b.state = State.Refunded;
        credit[b.poster] += b.amount;
        emit Refunded(bountyId, b.poster, b.amount, 0);
    }

    /// The poster takes an unassigned bounty back at once (no worker can have been promised it yet).
    function cancel(bytes32 bountyId) external {
        Bounty storage b = _get(bountyId);
        if (msg.sender != b.poster) revert NotPoster(msg.sender);
        if (b.state != State.Open) revert WrongState(b.state);
        b.state = State.Refunded;
        credit[b.poster] += b.amount;
        emit Cancelled(bountyId, b.poster, b.amount);
    }

    /// Send the caller everything credited to it (checks, effects, then the one interaction).
    function withdraw() external {
        uint256 amount = credit[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        credit[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    /// The bounty as stored; state None means there is no such bounty.
    function getBounty(bytes32 bountyId) external view returns (Bounty memory) {
        return _bounties[bountyId];
    }

    /// The named verifiers of a bounty.
    function verifiersOf(bytes32 bountyId) external view returns (address[] memory) {
        return _verifiers[bountyId];
    }

    /// The bounty id a poster's bounty on `jobId` has.
    function bountyIdOf(bytes32 jobId, address poster) external pure returns (bytes32) {
        return keccak256(abi.encode(jobId, poster));
    }

    function _get(bytes32 bountyId) private view returns (Bounty storage b) {
        b = _bounties[bountyId];
        if (b.state == State.None) revert UnknownBounty(bountyId);
    }

    function _assign(bytes32 bountyId, Bounty storage b, address worker) private {
        if (worker == address(0)) revert NotWorker(worker, address(0));
        b.worker = worker;
        b.state = State.Assigned;
        emit Assigned(bountyId, worker);
    }

    function _refundDisputed(bytes32 bountyId, Bounty storage b) private {
        b.state = State.Refunded;
        address[] storage disputers = _disputers[bountyId];
        uint256 n = disputers.length;
        uint256 share = b.stake / n;
        for (uint256 i = 0; i < n; i++) {
            credit[disputers[i]] += share;
        }
        uint256 back = uint256(b.amount) + (b.stake - share * n); // rounding dust goes back to the poster
        credit[b.poster] += back;
        emit Refunded(bountyId, b.poster, back, b.stake);
    }
}
