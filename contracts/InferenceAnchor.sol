// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title InferenceAnchor
/// @notice Public, append-only record of wl-infer results: per job and per worker address the output hash
///         and evidence hash (set once), verifiers' attestations as events, and Merkle roots of batches.
/// @dev A job id is keccak256(utf8("<board_id>/<item_id>")), computed off chain and public as soon as the
///      item is posted, so a record is keyed by (job, msg.sender): nobody can occupy another worker's slot.
///      Readers look up the record of the address the board registers for the job's claimer.
contract InferenceAnchor {
    /// Verdicts as `wl infer verify` prints them; 0 is reserved so an unset value is never a verdict.
    uint8 public constant VERIFIED = 1;
    uint8 public constant MISMATCH = 2;
    uint8 public constant INVALID = 3;

    /// One storage record per (job, worker): block and hashes, so an anchor writes three slots.
    struct Job {
        uint64 blockNumber;
        bytes32 outputHash;
        bytes32 evidenceHash;
    }

    /// One storage record per batch; the leaves themselves live off chain.
    struct Batch {
        address submitter;
        uint64 blockNumber;
        bytes32 root;
    }

    mapping(bytes32 => mapping(address => Job)) private _jobs;

    /// Number of distinct workers that anchored each job (so a reader can tell "only by others").
    mapping(bytes32 => uint256) public anchorCount;
    mapping(bytes32 => Batch) private _batches;

    /// Number of attestations emitted per job (all verifiers, all verdicts).
    mapping(bytes32 => uint256) public attestationCount;

    event Anchored(bytes32 indexed jobId, address indexed worker, bytes32 outputHash, bytes32 evidenceHash);
    event Attested(bytes32 indexed jobId, address indexed verifier, uint8 verdict, bytes32 resultHash);
    event RootAnchored(bytes32 indexed batchId, address indexed submitter, bytes32 root);

    /// The caller already anchored this job; records are never overwritten.
    error AlreadyAnchored(bytes32 jobId, address worker, uint256 blockNumber);
    /// The batch already has a root; roots are never overwritten.
    error RootAlreadyAnchored(bytes32 batchId, bytes32 root);
    /// A zero hash would be indistinguishable from "not anchored".
    error ZeroHash();
    /// Verdict outside VERIFIED..INVALID.
    error InvalidVerdict(uint8 verdict);

    /// Record the caller's output and evidence hashes for `jobId`, once per caller.
    function anchor(bytes32 jobId, bytes32 outputHash, bytes32 evidenceHash) external {
        if (outputHash == bytes32(0) || evidenceHash == bytes32(0)) revert ZeroHash();
        Job storage job = _jobs[jobId][msg.sender];
        if (job.blockNumber != 0) revert AlreadyAnchored(jobId, msg.sender, job.blockNumber);
        unchecked {
            anchorCount[jobId] += 1;
        }
        job.blockNumber = uint64(block.number);
        job.outputHash = outputHash;
        job.evidenceHash = evidenceHash;
        emit Anchored(jobId, msg.sender, outputHash, evidenceHash);
    }

    /// Emit the caller's verdict on `jobId`; attestations are events, so any verifier may add one.
    function attest(bytes32 jobId, uint8 verdict, bytes32 resultHash) external {
        if (verdict < VERIFIED || verdict > INVALID) revert InvalidVerdict(verdict);
        unchecked {
            attestationCount[jobId] += 1;
        }
        emit Attested(jobId, msg.sender, verdict, resultHash);
    }

    /// Store the Merkle root of a batch of job leaves, once per batch id.
    function anchorRoot(bytes32 batchId, bytes32 root) external {
        if (root == bytes32(0)) revert ZeroHash();
        Batch storage batch = _batches[batchId];
        if (batch.submitter != address(0)) revert RootAlreadyAnchored(batchId, batch.root);
        batch.submitter = msg.sender;
        batch.blockNumber = uint64(block.number);
        batch.root = root;
        emit RootAnchored(batchId, msg.sender, root);
    }

    /// Read `worker`'s record of `jobId` back; blockNumber is 0 when that worker has not anchored it.
    function getJob(bytes32 jobId, address worker)
        external
        view
        returns (bytes32 outputHash, bytes32 evidenceHash, uint256 blockNumber)
    {
        Job storage job = _jobs[jobId][worker];
        return (job.outputHash, job.evidenceHash, job.blockNumber);
    }

    /// True once `worker` has a record of `jobId`.
    function isAnchored(bytes32 jobId, address worker) external view returns (bool) {
        return _jobs[jobId][worker].blockNumber != 0;
    }

    /// Read a batch back; submitter is the zero address when the batch is not anchored.
    function getRoot(bytes32 batchId)
        external
        view
        returns (bytes32 root, address submitter, uint256 blockNumber)
    {
        Batch storage batch = _batches[batchId];
        return (batch.root, batch.submitter, batch.blockNumber);
    }

    /// Check that `leaf` is in the batch's tree: leaf node keccak256(0x00 || leaf), inner node
    /// keccak256(0x01 || min(a, b) || max(a, b)). False for an unknown batch.
    function verifyInclusion(bytes32 batchId, bytes calldata leaf, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        bytes32 root = _batches[batchId].root;
        if (root == bytes32(0)) return false;
        bytes32 node = keccak256(abi.encodePacked(bytes1(0x00), leaf));
        for (uint256 i = 0; i < proof.length; i++) {
            bytes32 sibling = proof[i];
            node = node < sibling
                ? keccak256(abi.encodePacked(bytes1(0x01), node, sibling))
                : keccak256(abi.encodePacked(bytes1(0x01), sibling, node));
        }
        return node == root;
    }
}
