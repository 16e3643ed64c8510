// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title InferenceAnchor
/// @notice Public, append-only record of wl-infer results: per job the worker's output hash and
///         evidence hash (set once), verifiers' attestations as events, and Merkle roots of batches.
/// @dev A job id is keccak256(utf8("<board_id>/<item_id>")), computed off chain.
contract InferenceAnchor {
    /// Verdicts as `wl infer verify` prints them; 0 is reserved so an unset value is never a verdict.
    uint8 public constant VERIFIED = 1;
    uint8 public constant MISMATCH = 2;
    uint8 public constant INVALID = 3;

    /// One storage record per job: worker and block share a slot, so an anchor writes three slots.
    struct Job {
        address worker;
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

    mapping(bytes32 => Job) private _jobs;
    mapping(bytes32 => Batch) private _batches;

    /// Number of attestations emitted per job (all verifiers, all verdicts).
    mapping(bytes32 => uint256) public attestationCount;

    event Anchored(bytes32 indexed jobId, address indexed worker, bytes32 outputHash, bytes32 evidenceHash);
    event Attested(bytes32 indexed jobId, address indexed verifier, uint8 verdict, bytes32 resultHash);
    event RootAnchored(bytes32 indexed batchId, address indexed submitter, bytes32 root);

    /// The job already has a record; records are never overwritten.
    error AlreadyAnchored(bytes32 jobId, address worker, uint256 blockNumber);
    /// The batch already has a root; roots are never overwritten.
    error RootAlreadyAnchored(bytes32 batchId, bytes32 root);
    /// A zero hash would be indistinguishable from "not anchored".
    error ZeroHash();
    /// Verdict outside VERIFIED..INVALID.
    error InvalidVerdict(uint8 verdict);

    /// Record the caller as the worker of `jobId` with its output and evidence hashes, once.
    function anchor(bytes32 jobId, bytes32 outputHash, bytes32 evidenceHash) external {
        if (outputHash == bytes32(0) || evidenceHash == bytes32(0)) revert ZeroHash();
        Job storage job = _jobs[jobId];
        if (job.worker != address(0)) revert AlreadyAnchored(jobId, job.worker, job.blockNumber);
        job.worker = msg.sender;
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

    /// Read a job record back; worker is the zero address when the job is not anchored.
    function getJob(bytes32 jobId)
        external
        view
        returns (address worker, bytes32 outputHash, bytes32 evidenceHash, uint256 blockNumber)
    {
        Job storage job = _jobs[jobId];
        return (job.worker, job.outputHash, job.evidenceHash, job.blockNumber);
    }

    /// True once `jobId` has a record.
    function isAnchored(bytes32 jobId) external view returns (bool) {
        return _jobs[jobId].worker != address(0);
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
