"""Codec for inference jobs and result evidence.

Decodes everything the Go `wl` anchor writes (SPEC §10) and adds our fields. Key order of the first fields
follows the anchor so that records written here read naturally next to anchor-written ones.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from wl_infer.errors import CodecError as CodecError  # re-exported: the codec's error
from wl_infer.plugins import backend_names

HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
INLINE_LIMIT = 64 * 1024  # outputs larger than this (UTF-8 bytes) move to a content-addressed blob
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the anchor's Go ints; JSON encoding refuses wider ones


def output_hash(output: str) -> str:
    """`sha256:` + hex over the raw UTF-8 bytes of the output: nothing trimmed or normalised."""
    return "sha256:" + hashlib.sha256(output.encode("utf-8")).hexdigest()


def bytes_hash(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _load_object(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise CodecError(f"{what}: description is not valid JSON") from None
    if not isinstance(value, dict):
        raise CodecError(f"{what}: expected a JSON object")
    return value


# The fields a job has, for Go's decoding rule: a JSON key matches a field exactly or, failing that, ignoring
# letter case; when several keys land on one field the later one wins, and unknown keys are ignored.
JOB_FIELDS = ("prompt", "model", "seed", "max_tokens", "backend", "model_digest", "options")


def go_fields(data: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The object's values by field name, matched as Go's encoding/json matches them."""
    by_fold = {f.lower(): f for f in fields}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key if key in fields else by_fold.get(key.lower())
        if name is not None:
            out[name] = value
    return out


def _int_field(data: dict[str, Any], key: str, default: int, what: str) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    return _checked_int(value, key, what)


def _checked_int(value: Any, key: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"{what}: {key} must be an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise CodecError(f"{what}: {key} is out of range (64-bit signed integer)")
    return value


@dataclass(frozen=True)
class Job:
    """An inference job, stored as the item's description."""

    prompt: str
    model: str
    seed: int = 42
    max_tokens: int = 0
    backend: str = "ollama"
    model_digest: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.prompt:
            raise CodecError("inference job: prompt is required")
        if not self.model:
            raise CodecError("inference job: model is required")
        for name in ("prompt", "model"):
            try:
                getattr(self, name).encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates, e.g. undecodable argv bytes
                raise CodecError(f"inference job: {name} is not valid UTF-8") from None
        for name in ("seed", "max_tokens"):
            _checked_int(getattr(self, name), name, "inference job")
        if self.max_tokens < 0:
            raise CodecError("inference job: max_tokens must not be negative")
        known = backend_names()
        if self.backend not in known:
            raise CodecError(f"inference job: unknown backend {self.backend!r} (expected one of {', '.join(known)})")
        if self.model_digest is not None and not HASH_RE.match(self.model_digest):
            raise CodecError("inference job: model_digest must be sha256:<64 hex>")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "model": self.model, "seed": self.seed}
        if self.max_tokens:
            out["max_tokens"] = self.max_tokens
        out["backend"] = self.backend
        if self.model_digest:
            out["model_digest"] = self.model_digest
        out["options"] = dict(self.options)
        return out

    def encode(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Decode as Go's `wl` does: keys in any letter case, a missing seed is 0, a negative max_tokens means
        the model's default (0)."""
        what = "inference job"
        data = go_fields(data, JOB_FIELDS)
        prompt = data.get("prompt")
        model = data.get("model")
        if not isinstance(prompt, str) or not prompt:
            raise CodecError(f"{what}: prompt is required")
        if not isinstance(model, str) or not model:
            raise CodecError(f"{what}: model is required")
        backend = data.get("backend") or "ollama"
        if not isinstance(backend, str):
            raise CodecError(f"{what}: backend must be a string")
        digest = data.get("model_digest") or None
        if digest is not None and not isinstance(digest, str):
            raise CodecError(f"{what}: model_digest must be a string")
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise CodecError(f"{what}: options must be an object")
        return cls(
            prompt=prompt,
            model=model,
            seed=_int_field(data, "seed", 0, what),
            max_tokens=max(0, _int_field(data, "max_tokens", 0, what)),
            backend=backend,
            model_digest=digest,
            options=options,
        )

    @classmethod
    def decode(cls, text: str | bytes) -> Job:
        return cls.from_dict(_load_object(text, "inference job"))


_EVIDENCE_KNOWN = (
    "output",
    "output_hash",
    "model",
    "seed",
    "backend",
    "envelope",
    "tokens",
    "worker",
    "output_blob",
    "signature",
)


@dataclass
class Evidence:
    """Result evidence: what a worker claims it produced, and how."""

    output: str | None
    output_hash: str
    model: str
    seed: int
    backend: str | None = None
    envelope: dict[str, Any] | None = None
    tokens: list[int] | None = None
    worker: str | None = None
    output_blob: str | None = None  # "sha256:<hex>" when the output lives in blobs/sha256/<hex>
    signature: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # any other keys, kept on round trips

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.output is not None:
            out["output"] = self.output
        out["output_hash"] = self.output_hash
        out["model"] = self.model
        out["seed"] = self.seed
        for key in ("backend", "envelope", "tokens", "worker", "output_blob"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        for key, value in self.extra.items():
            out[key] = value
        if self.signature is not None:
            out["signature"] = self.signature
        return out

    def encode(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        what = "inference result"
        output = data.get("output")
        blob = data.get("output_blob")
        if blob is not None and (not isinstance(blob, str) or not HASH_RE.match(blob)):
            raise CodecError(f"{what}: output_blob must be sha256:<64 hex>")
        if output is None and blob is None:
            raise CodecError(f"{what}: output is required")
        if output is not None and not isinstance(output, str):
            raise CodecError(f"{what}: output must be a string")
        ohash = data.get("output_hash")
        if not ohash:
            raise CodecError(f"{what}: output_hash is required")
        if not isinstance(ohash, str) or not HASH_RE.match(ohash):
            raise CodecError(f"{what}: output_hash must be sha256:<64 lowercase hex>")
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise CodecError(f"{what}: model is required")
        tokens = data.get("tokens")
        if tokens is not None and (
            not isinstance(tokens, list)
            or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tokens)
        ):
            raise CodecError(f"{what}: tokens must be a list of non-negative integers")
        envelope = data.get("envelope")
        if envelope is not None and not isinstance(envelope, dict):
            raise CodecError(f"{what}: envelope must be an object")
        for key in ("backend", "worker", "signature"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise CodecError(f"{what}: {key} must be a string")
        return cls(
            output=output,
            output_hash=ohash,
            model=model,
            seed=_int_field(data, "seed", 0, what),
            backend=data.get("backend"),
            envelope=envelope,
            tokens=tokens,
            worker=data.get("worker"),
            output_blob=blob,
            signature=data.get("signature"),
            extra={k: v for k, v in data.items() if k not in _EVIDENCE_KNOWN},
        )

    @classmethod
    def decode(cls, text: str | bytes) -> Evidence:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise CodecError("inference result: evidence is not valid JSON") from None
        if not isinstance(data, dict):
            raise CodecError("inference result: expected a JSON object")
        return cls.from_dict(data)

    def unsigned_dict(self) -> dict[str, Any]:
        """The record a signature covers (signature and post-signing anchor details left out)."""
        data = self.to_dict()
        data.pop("signature", None)
        data.pop("anchor", None)
        return data
