"""The contract's encodings: job and batch keys, bytes32 hashes, the deployed artifact, revert reasons.

Split from wl_infer.chain (which re-exports these names); web3 and eth_utils load inside the functions.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wl_infer.rpc import ChainError

if TYPE_CHECKING:
    from web3 import Web3

_ARTIFACT_NAME = "InferenceAnchor.json"


# ---------------------------------------------------------------- encoding helpers


def job_key(board_id: str, item_id: str) -> bytes:
    """The contract's job id: keccak256 of UTF-8 ``"<board_id>/<item_id>"``."""
    from eth_utils.crypto import keccak

    for name, value in (("board_id", board_id), ("item_id", item_id)):
        if not value or "/" in value:
            raise ValueError(f"{name} {value!r} must be non-empty and contain no '/'")
    return bytes(keccak(f"{board_id}/{item_id}".encode()))


def batch_key(batch_id: str | bytes) -> bytes:
    """A batch id as bytes32: 32 bytes as given, or keccak256 of a UTF-8 name."""
    from eth_utils.crypto import keccak

    if isinstance(batch_id, bytes):
        if len(batch_id) != 32:
            raise ValueError(f"batch id must be 32 bytes, got {len(batch_id)}")
        return batch_id
    return bytes(keccak(batch_id.encode()))


def hash_to_bytes32(value: str) -> bytes:
    """``sha256:<64 hex>`` to the 32 raw bytes the contract stores."""
    if not isinstance(value, str) or not value.startswith("sha256:") or len(value) != 71:
        raise ValueError(f"expected sha256:<64 hex>, got {value!r}")
    return bytes.fromhex(value[7:])


def bytes32_to_hash(value: bytes) -> str:
    return "sha256:" + bytes(value).hex()


def batch_leaf(board_id: str, item_id: str, output_hash: str, evidence_hash: str) -> bytes:
    """The leaf a batch commits to for one job: job id || output hash || evidence hash (96 bytes)."""
    return job_key(board_id, item_id) + hash_to_bytes32(output_hash) + hash_to_bytes32(evidence_hash)


# ---------------------------------------------------------------- artifact and contract


def artifact_path() -> Path:
    """The committed artifact: ``contracts/`` beside the package (checkout or editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "contracts" / _ARTIFACT_NAME, here / _ARTIFACT_NAME):
        if candidate.is_file():
            return candidate
    raise ChainError("load artifact", f"{_ARTIFACT_NAME} not found beside {here}")


def load_artifact() -> dict[str, Any]:
    """ABI, bytecode, compiler and EVM version of InferenceAnchor, as compiled by contracts/compile.js."""
    data: dict[str, Any] = json.loads(artifact_path().read_text(encoding="utf-8"))
    return data


def contract_address(contract: str, op: str = "contract") -> str:
    """Checksummed form of a contract address, or a ChainError naming the bad value."""
    from eth_utils.address import is_address, to_checksum_address

    if not isinstance(contract, str) or not is_address(contract):
        raise ChainError(op, f"{contract!r} is not a contract address (0x + 40 hex digits)")
    return str(to_checksum_address(contract))


def _contract(w3: Web3, address: str | None = None) -> Any:
    art = load_artifact()
    if address is None:
        return w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    return w3.eth.contract(address=contract_address(address), abi=art["abi"])  # type: ignore[call-overload]


def decode_revert(exc: BaseException) -> str:
    """A readable reason for a revert: custom error with arguments, Error(string), Panic, or the message."""
    from eth_abi.abi import decode
    from eth_utils.crypto import keccak

    data = _revert_data(exc)
    if data is None or len(data) < 4:
        text = str(getattr(exc, "message", None) or exc)
        return text.replace("execution reverted: ", "").strip() or "reverted"
    selector, body = data[:4], data[4:]
    known: list[tuple[str, list[str], list[str]]] = [
        ("Error", ["string"], ["reason"]),
        ("Panic", ["uint256"], ["code"]),
    ]
    for entry in load_artifact()["abi"]:
        if entry.get("type") == "error":
            known.append((entry["name"], [i["type"] for i in entry["inputs"]], [i["name"] for i in entry["inputs"]]))
    for name, types, names in known:
        if keccak(f"{name}({','.join(types)})".encode())[:4] == selector:
            try:
                values = decode(types, body)
            except Exception:  # noqa: BLE001 - undecodable payload: name is still useful
                return name
            if name == "Error":
                return str(values[0])
            shown = ", ".join(f"{n}={_show(v)}" for n, v in zip(names, values, strict=True))
            return f"{name}({shown})"
    return "reverted with data 0x" + data.hex()


def _show(value: Any) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


def _revert_data(exc: BaseException) -> bytes | None:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    # eth-tester puts the raw revert bytes into the message as a Python bytes literal.
    text = str(exc.args[0]) if exc.args else ""
    start = text.find("b'") if "b'" in text else text.find('b"')
    if start >= 0:
        try:
            value = ast.literal_eval(text[start:])
        except (ValueError, SyntaxError):
            return None
        return value if isinstance(value, bytes) else None
    return None


def _is_revert(exc: BaseException) -> bool:
    from web3.exceptions import ContractLogicError

    if isinstance(exc, ContractLogicError):
        return True
    try:
        from eth_tester.exceptions import TransactionFailed
    except ImportError:  # pragma: no cover - eth-tester absent
        return False
    return isinstance(exc, TransactionFailed)
