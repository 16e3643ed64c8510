"""Crafted board entries met by a reader: skipped with one warning naming the path, never a failed command.

Another participant pushes, with plain git plumbing (tests/hostile_git.py), commits whose trees hold
gitlinks, symlinks, folders where files belong and files where folders belong, objects of the wrong type,
non-UTF-8 names and JSON, timestamps that match the pattern but not the calendar, and bad enum values. The
readers (TreeView and its parse cache) are tested straight on those trees; the commands (browse, show,
doctor, claim/unclaim, `wl infer worker --once`, `feed --once`, `audit`) run on a rig that fetched them and
must keep serving the honest items. The inference commands use the ollama backend against the small
Ollama-speaking HTTP server on 127.0.0.1 (tests/fake_servers.py), as the other worker tests do.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fake_servers import FakeOllama
from hostile_git import FILE, GITLINK, SYMLINK, TREE, Mallory
from infer_helpers import Rigs, make_rigs
from remotes import WL
from test_worker import post_jobs

from board.errors import CorruptRecord
from board.ids import parse_time
from board.records import Item, RecordError
from board.store import MAIN, Store
from board.view import TreeView

MODEL = "llama3.2:1b"
NOW = "2026-01-01T00:00:00Z"


def item_json(item_id: str, **fields: Any) -> bytes:
    base = {"id": item_id, "title": "crafted", "posted_by": "mallory", "created_at": NOW, "updated_at": NOW,
            "status": "open", "type": "feature"}
    return orjson.dumps({**base, **fields})


def free_buckets(rigs: Rigs, n: int) -> list[str]:
    """Buckets no honest item uses yet, so a crafted folder-level entry hides nothing honest."""
    used = set()
    with rigs.board("alice") as b:
        b.refresh()
        used = {i.id[2:4] for i in b.view().items()}
    return [f"{x:02x}" for x in range(256) if f"{x:02x}" not in used][:n]


def craft_everything(mallory: Mallory, buckets: list[str], honest_done: str) -> dict[str, str]:
    """One commit holding every kind of bad entry; returns path → the reason a reader must give."""
    b = iter(buckets)
    gitlink_id, symlink_id, folder_id, utf8_id, time_id, enum_id, wrong_bucket_id = (
        f"w-{next(b)}0000000{i}" for i in range(7)
    )
    blob_bucket = next(b)
    honest_bucket = honest_done[2:4]
    some_tree = mallory.tree({b"x.json": mallory.file(b"{}")})
    paths = {
        f"wanted/{gitlink_id[2:4]}/{gitlink_id}.json": ("gitlink", (GITLINK, "1" * 40)),
        f"wanted/{symlink_id[2:4]}/{symlink_id}.json": ("symbolic link", (SYMLINK, mallory.blob(b"../../board.json"))),
        f"wanted/{folder_id[2:4]}/{folder_id}.json": ("folder where a file belongs", (TREE, some_tree)),
        f"wanted/{blob_bucket}": ("file where a folder belongs", mallory.file(item_json(f"w-{blob_bucket}00000009"))),
        f"wanted/{utf8_id[2:4]}/{utf8_id}.json": ("not valid JSON", mallory.file(b'{"id": "\xff\xfe", "title": "x"}')),
        f"wanted/{time_id[2:4]}/{time_id}.json": (
            "claim_expires_at is not an RFC 3339 UTC time",
            mallory.file(item_json(time_id, status="claimed", claimed_by="mallory",
                                   claim_expires_at="2026-99-99T99:99:99Z")),
        ),
        f"wanted/{enum_id[2:4]}/{enum_id}.json": ("type must be one of", mallory.file(item_json(enum_id, type="malware"))),
        f"wanted/{honest_bucket}/{wrong_bucket_id}.json": (
            f"belongs in wanted/{wrong_bucket_id[2:4]}/", mallory.file(item_json(wrong_bucket_id))),
        f"completions/{honest_bucket}/{honest_done}.json": ("gitlink", (GITLINK, "2" * 40)),
        f"attestations/{honest_bucket}/{honest_done}/mallory.json": ("symbolic link", (SYMLINK, mallory.blob(b"x"))),
        f"attestations/{honest_bucket}/{honest_done}/eve.json": ("not valid JSON", mallory.file(b"\xff{")),
        "rigs/eve.json": ("gitlink", (GITLINK, "3" * 40)),
    }
    changes: dict[str | bytes, tuple[str, str] | None] = {p: e for p, (_, e) in paths.items()}
    changes[f"wanted/{honest_bucket}/w-\xff.json".encode("latin-1")] = mallory.file(b"{}")  # a non-UTF-8 name
    mallory.push(changes, "crafted entries")
    expected = {p: reason for p, (reason, _) in paths.items()}
    expected[f"wanted/{honest_bucket}/w-\\xff.json"] = "name is not UTF-8"
    return expected


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}}) as server:
        yield server


@pytest.fixture
def rigs(tmp_path: Path, ollama: FakeOllama) -> Rigs:
    return make_rigs(tmp_path, ("alice", "bob", "carol"), env={"OLLAMA_HOST": ollama.url})


def wl(rigs: Rigs, handle: str, *args: str) -> tuple[int, str, str]:
    res = rigs.wl(handle, *args)
    both = res.stdout + res.stderr
    assert "Traceback" not in both and "internal error" not in both, both
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def warnings_of(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("wl: warning: skipped ")]


@pytest.mark.timeout(240)
def test_commands_keep_serving_honest_items_past_every_crafted_entry(rigs: Rigs, tmp_path: Path) -> None:
    [done_job] = post_jobs(rigs.home("alice"), ["finished before the attack"])
    assert wl(rigs, "bob", "infer", "run", done_job)[0] == 0
    plain = json.loads(wl(rigs, "alice", "--json", "post", "--title", "plain work")[1])["id"]
    [job] = post_jobs(rigs.home("alice"), ["what is 1+1"])
    expected = craft_everything(Mallory(rigs.commons, tmp_path / "mallory.git"), free_buckets(rigs, 8), done_job)
    # Validation excludes the crafted commit: each rig's sync names it once (exit 1); alice's also repairs.
    for handle in ("alice", "bob", "carol"):
        code, out, _ = wl(rigs, handle, "sync")
        assert code == 1 and "is invalid" in out

    code, out, err = wl(rigs, "bob", "browse", "--status", "all")
    assert code == 0 and plain in out and job in out and done_job in out
    assert warnings_of(err) == []  # no reader ever meets the crafted entries: they are not in the state
    code, out, err = wl(rigs, "bob", "--json", "browse", "--status", "all")
    doc = json.loads(out)
    assert code == 0 and {plain, job, done_job} <= {i["id"] for i in doc["items"]}
    assert not set(expected) & set(doc["corrupt"])
    assert len(doc["items"]) == 3

    code, out, err = wl(rigs, "bob", "show", done_job)  # its completion and attestations stay the real ones
    assert code == 0 and done_job in out and warnings_of(err) == []
    gitlink_path = next(p for p, r in expected.items() if r == "gitlink" and p.startswith("wanted/"))
    code, out, err = wl(rigs, "bob", "show", gitlink_path.rsplit("/", 1)[1][:-5])
    assert code == 1 and err.splitlines()[-1].startswith("wl: error: no wanted item matching")

    code, out, err = wl(rigs, "bob", "--json", "doctor")
    board_check = next(c for c in json.loads(out)["checks"] if c["name"] == "board")
    assert board_check["ok"] is True and "3 items" in board_check["detail"]

    assert wl(rigs, "carol", "claim", plain)[0] == 0
    assert wl(rigs, "carol", "unclaim", plain)[0] == 0
    code, out, err = wl(rigs, "bob", "--json", "infer", "worker", "--once", "--backend", "ollama", "--poll", "0.05")
    events = orjson.loads(out)["events"]
    assert code == 0 and any(e["event"] == "done" and e.get("id") == job for e in events), out + err
    assert rigs.item("alice", job).status == "in_review"

    [fed] = post_jobs(rigs.home("alice"), ["fed after the attack"])
    code, out, err = wl(rigs, "carol", "--json", "infer", "feed", "--once", "--poll", "0.1")
    assert code == 0, out + err
    assert orjson.loads(out)["summary"]["succeeded"] == 1
    assert rigs.item("alice", fed).status == "in_review"

    code, out, err = wl(rigs, "carol", "--json", "infer", "audit", "--rate", "1", "--no-record")
    assert code == 0, out + err
    audited = orjson.loads(out)
    assert job in json.dumps(audited) and fed in json.dumps(audited)


@pytest.mark.timeout(120)
def test_real_wl_processes_warn_once_and_keep_working(rigs: Rigs, tmp_path: Path) -> None:
    [job] = post_jobs(rigs.home("alice"), ["served by a real process"])
    expected = craft_everything(Mallory(rigs.commons, tmp_path / "mallory.git"), free_buckets(rigs, 8), job)
    env = {k: v for k, v in os.environ.items() if k != "WL_DEBUG"} | rigs.env

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WL, "--home", str(rigs.home("bob")), *args], env=env, capture_output=True,
                              text=True, timeout=60)

    res = run("sync")  # the crafted commit is named once, in one line, and repaired
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "\x1b" not in res.stdout + res.stderr
    res = run("browse")
    assert res.returncode == 0 and job in res.stdout, res.stderr
    assert "\x1b" not in res.stdout + res.stderr
    assert warnings_of(res.stderr) == [] and expected
    res = run("doctor")
    assert res.returncode == 0 and "✓ ledger" in res.stdout and "internal error" not in res.stderr
    res = run("--json", "infer", "worker", "--once", "--backend", "ollama", "--poll", "0.05")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "internal error" not in res.stderr and any(
        e["event"] == "done" for e in orjson.loads(res.stdout)["events"])


# --- the readers, straight on the crafted tree ------------------------------------------------------------------
def _head_view(commons: Path, cache: Path | None = None) -> tuple[Store, TreeView]:
    store = Store(commons)
    head = store.ref(MAIN)
    assert head is not None
    return store, TreeView(store, store.tree_id(head), cache)


@pytest.mark.timeout(120)
def test_treeview_on_the_raw_commit_skips_each_entry_with_its_reason(rigs: Rigs, tmp_path: Path) -> None:
    plain = json.loads(wl(rigs, "alice", "--json", "post", "--title", "plain")[1])["id"]
    expected = craft_everything(Mallory(rigs.commons, tmp_path / "mallory.git"), free_buckets(rigs, 8), plain)
    cache = tmp_path / "cache" / "items.json"
    store, view = _head_view(rigs.commons, cache)
    try:
        assert [i.id for i in view.items()] == [plain]
        for path, reason in expected.items():
            if path.startswith("wanted/"):
                assert reason in view.skipped[path], (path, view.skipped)
        assert view.resolve(plain[:6]) == plain and view.item(plain) is not None
        gitlink_id = next(p for p, r in expected.items() if r == "gitlink" and p.startswith("wanted/"))
        gid = gitlink_id.rsplit("/", 1)[1][:-5]
        assert view.item(gid) is None and "gitlink" in view.skipped[gitlink_id]
        with pytest.raises(CorruptRecord, match="claim_expires_at"):  # asked for by id: says why, one line
            view.item(next(p for p, r in expected.items() if "RFC 3339" in r).rsplit("/", 1)[1][:-5])
        assert view.completion(plain) is None and view.attestations(plain) == {}
        assert any(p.startswith("completions/") for p in view.skipped)
        assert view.rig("eve") is None and {r.handle for r in view.rigs()} == {"alice", "bob", "carol"}
        blob_bucket = next(p for p, r in expected.items() if r == "file where a folder belongs").split("/")[1]
        assert view.item(f"w-{blob_bucket}00000009") is None  # under a file, nothing: not an error
    finally:
        store.close()

    store, again = _head_view(rigs.commons, cache)  # from the parse cache: same items, same warnings
    try:
        assert [i.id for i in again.items()] == [plain]
        assert {p: r for p, r in again.skipped.items() if p.startswith("wanted/")} == {
            p: r for p, r in view.skipped.items() if p.startswith("wanted/")}
        assert oct(cache.stat().st_mode & 0o777) == "0o600"
    finally:
        store.close()


def test_a_time_must_exist_on_the_calendar() -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 UTC time"):
        parse_time("2026-99-99T99:99:99Z")
    with pytest.raises(ValueError):
        parse_time("2026-02-30T00:00:00Z")
    assert parse_time("2026-02-28T23:59:59.5Z").microsecond == 500000
    good = orjson.loads(item_json("w-0123456789"))
    for key in ("created_at", "updated_at", "claim_expires_at"):
        with pytest.raises(RecordError, match=key):
            Item.from_dict({**good, key: "2026-13-01T00:00:00Z"})


@pytest.mark.timeout(120)
def test_a_cache_written_by_a_laxer_reader_is_not_trusted(rigs: Rigs, tmp_path: Path) -> None:
    """Rows cached before times were checked (or tampered with) are re-read from the tree."""
    plain = json.loads(wl(rigs, "alice", "--json", "post", "--title", "plain")[1])["id"]
    cache = tmp_path / "items.json"
    store, view = _head_view(rigs.commons, cache)
    try:
        view.items()
        doc = orjson.loads(cache.read_bytes())
        [key] = doc["buckets"]
        doc["buckets"][key] = [{"item": {"id": plain, "bogus_field": 1}}]
        cache.write_bytes(orjson.dumps(doc))
        assert [i.id for i in TreeView(store, view.tree, cache).items()] == [plain]
        cache.write_bytes(orjson.dumps({key: [{"id": "w-0000000000"}]}))  # the format before version 2
        assert [i.id for i in TreeView(store, view.tree, cache).items()] == [plain]
        cache.write_bytes(b"\xff not json")
        assert [i.id for i in TreeView(store, view.tree, cache).items()] == [plain]
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_objects_of_the_wrong_type_and_missing_objects(rigs: Rigs, tmp_path: Path) -> None:
    """Trees git itself refuses to push (blob mode on a tree, a folder on a blob, an absent object) can
    still sit in a local copy (another implementation, a bug): the reader skips them too."""
    plain = json.loads(wl(rigs, "alice", "--json", "post", "--title", "plain")[1])["id"]
    mallory = Mallory(rigs.commons, tmp_path / "mallory.git")
    a, b, c = free_buckets(rigs, 3)
    some_tree = mallory.tree({b"x.json": mallory.file(b"{}")})
    mallory.commit({f"wanted/{a}/w-{a}00000000.json": (FILE, some_tree),
                    f"wanted/{b}": (TREE, mallory.blob(b"not a tree")),
                    f"wanted/{c}/w-{c}00000000.json": (FILE, "4" * 40),
                    "board.json.missing": (FILE, "5" * 40)})
    store, view = _head_view(mallory.work)
    try:
        assert [i.id for i in view.items()] == [plain]
        assert "is a tree, not a blob" in view.skipped[f"wanted/{a}/w-{a}00000000.json"]
        assert "is a blob, not a tree" in view.skipped[f"wanted/{b}"]
        assert "missing" in view.skipped[f"wanted/{c}/w-{c}00000000.json"]
        assert view.item(f"w-{a}00000000") is None and view.item(f"w-{b}00000000") is None
        assert view.read("board.json.missing") is None and view.meta()["format"] == "wl-board/2"
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_duplicates_and_flat_entries(rigs: Rigs, tmp_path: Path) -> None:
    """A flat copy of a fanned-out item is not listed twice; a flat file whose id differs is skipped."""
    plain = json.loads(wl(rigs, "alice", "--json", "post", "--title", "plain")[1])["id"]
    mallory = Mallory(rigs.commons, tmp_path / "mallory.git")
    liar = "w-" + ("e" if plain[2] != "e" else "f") * 10
    mallory.push({f"wanted/{plain}.json": mallory.file(item_json(plain, title="flat twin")),
                  f"wanted/{liar}.json": mallory.file(item_json("w-" + "0" * 10)),
                  "wanted/README": mallory.file(b"not an item")})
    store, view = _head_view(rigs.commons)
    try:
        items = view.items()
        assert [i.id for i in items] == [plain] and items[0].title == "plain"
        assert "id field says" in view.skipped[f"wanted/{liar}.json"]
        assert "wanted/README" not in view.skipped  # unrelated files are not items, nor errors
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_a_flood_of_bad_entries_prints_a_screenful_not_a_flood(rigs: Rigs, tmp_path: Path) -> None:
    plain = json.loads(wl(rigs, "alice", "--json", "post", "--title", "plain")[1])["id"]
    mallory = Mallory(rigs.commons, tmp_path / "mallory.git")
    [b] = free_buckets(rigs, 1)
    mallory.push({f"wanted/{b}/w-{b}{i:08x}.json": (GITLINK, f"{i:040x}") for i in range(1, 61)})
    store, view = _head_view(rigs.commons)  # a reader that meets the flood anyway skips every entry
    try:
        assert [i.id for i in view.items()] == [plain] and len(view.skipped) == 60
    finally:
        store.close()
    code, out, err = wl(rigs, "bob", "sync")  # validation names the one commit, its paths capped
    assert code == 1 and err.count("\n") == 1 and out.count(f"wanted/{b}/") <= 20
    code, out, err = wl(rigs, "bob", "browse")
    assert code == 0 and plain in out and err == ""
    code, out, _ = wl(rigs, "bob", "--json", "browse")
    assert json.loads(out)["corrupt"] == []
