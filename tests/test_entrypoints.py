"""The entry-point cache (board/entrypoints.py): used while nothing on the path changed, and a plugin that is
installed or removed is seen at once. Real distributions in a real folder on sys.path, found by
importlib.metadata on a miss; a real `wl` process shows that a hit leaves importlib.metadata unimported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from board import entrypoints
from board.entrypoints import entry_points

GROUP = "wl.browse_columns"


def install(site: Path, name: str, entries: str) -> None:
    (site / f"{name}.py").write_text("def column(items):\n    return {}\n", encoding="utf-8")
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(entries, encoding="utf-8")


def age(path: Path) -> None:
    """As if the folder last changed a minute ago (a fresh change is never cached: see RACY)."""
    old = time.time() - 60
    os.utime(path, (old, old))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(folder))
    entrypoints.forget()
    yield folder
    entrypoints.forget()


def names(group: str = GROUP) -> set[str]:
    entrypoints.forget()  # a new process, as far as the cache goes
    return {ep.name for ep in entry_points(group)}


def test_a_cached_answer_is_used_until_a_plugin_is_installed_or_removed(site: Path) -> None:
    age(site)
    before = names()
    assert "bounty" in before and "extra" not in before  # this checkout's own column, found by the scan
    cache = entrypoints.cache_path()
    assert cache.exists() and oct(cache.stat().st_mode & 0o777) == "0o600"

    doc = orjson.loads(cache.read_bytes())  # a planted answer proves the next call reads the cache
    for env in doc["envs"].values():
        env["groups"][GROUP].append(["planted", "nowhere:nothing"])
    cache.write_bytes(orjson.dumps(doc))
    assert names() == before | {"planted"}

    install(site, "extra", f"[{GROUP}]\nextra = extra:column\n")  # the folder changes: the cache is not used
    assert names() == before | {"extra"}
    [ep] = [e for e in entry_points(GROUP) if e.name == "extra"]
    assert callable(ep.load()) and ep.load()([]) == {}
    age(site)
    assert names() == before | {"extra"}  # cached again, with the plugin

    shutil.rmtree(site / "extra-0.1.dist-info")  # uninstalled
    assert names() == before


def test_a_broken_cache_costs_a_scan_not_a_failure(site: Path) -> None:
    age(site)
    cache = entrypoints.cache_path()
    cache.parent.mkdir(parents=True)
    for junk in (b"not json", b'{"version": 1, "envs": []}', b'{"version": 1, "envs": {"x": 5}}'):
        cache.write_bytes(junk)
        assert "bounty" in names()
    doc = orjson.loads(cache.read_bytes())
    for env in doc["envs"].values():
        env["groups"][GROUP] = [[1, 2]]  # wrong types: rescanned
    cache.write_bytes(orjson.dumps(doc))
    assert "bounty" in names()


def test_other_groups_are_read_as_importlib_reads_them(site: Path) -> None:
    install(site, "scripts", "[console_scripts]\nsome-tool = scripts:column\n")
    assert "some-tool" in names("console_scripts")


def test_a_warm_wl_process_does_not_import_importlib_metadata(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WL_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    wl = str(Path(sys.executable).with_name("wl"))

    def imported() -> set[str]:
        res = subprocess.run([sys.executable, "-X", "importtime", wl, "--help"], env=env, capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)  # fmt: skip
        assert res.returncode == 0 and "infer" in res.stdout, res.stderr[-2000:]
        return {ln.rsplit("|", 1)[1].strip() for ln in res.stderr.splitlines() if ln.startswith("import time:")}

    first = imported()
    if not (tmp_path / "cache" / "wl" / "entry-points.json").exists():
        pytest.skip("a folder on this interpreter's path changed within the last seconds (nothing is cached then)")
    assert "importlib.metadata" in first
    assert "importlib.metadata" not in imported()
