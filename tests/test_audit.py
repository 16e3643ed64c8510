"""`wl infer audit`: spot checks selected from the board head, reproducible by anyone, unpredictable to workers.

The selection function is tested on many synthetic ids (no board, no model). The end-to-end audits use the
ollama backend for speed: the Ollama server cannot be installed here, so they run against a small HTTP server
on 127.0.0.1 that speaks Ollama's API (tests/fake_servers.py). Everything else is real: a bare git commons,
four homes with their own keys, signed evidence, one dishonest worker, and signed attestations.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fake_servers import FakeOllama
from infer_helpers import Rigs, make_rigs, post

from board.keys import load_private_key
from wl_infer.audit import select, selection_score
from wl_infer.codec import output_hash
from wl_infer.signing import sign_record

MODEL = "llama3.2:1b"
HEAD_A = "3f1c9a0d5e7b2c4a6e8f0b1d3c5e7a9b1c3d5e7f"
HEAD_B = "3f1c9a0d5e7b2c4a6e8f0b1d3c5e7a9b1c3d5e80"  # one hex digit away


def _ids(n: int) -> list[str]:
    rng = random.Random(7)
    return [f"w-{rng.getrandbits(40):010x}" for _ in range(n)]


# --- selection ------------------------------------------------------------------------------------------------
def test_the_same_head_gives_the_same_selection() -> None:
    ids = _ids(500)
    first = select(HEAD_A, ids, 0.2)
    assert first == select(HEAD_A, list(reversed(ids)), 0.2)  # order of discovery does not matter
    assert first == [i for i in sorted(ids, key=lambda i: selection_score(HEAD_A, i)) if selection_score(HEAD_A, i) < 0.2]


def test_the_selection_covers_about_the_asked_share() -> None:
    ids = _ids(2000)
    for rate in (0.1, 0.25):
        share = len(select(HEAD_A, ids, rate)) / len(ids)
        assert rate - 0.03 <= share <= rate + 0.03, (rate, share)


def test_different_heads_select_differently() -> None:
    ids = _ids(2000)
    a, b = set(select(HEAD_A, ids, 0.1)), set(select(HEAD_B, ids, 0.1))
    assert a != b
    assert len(a & b) < 0.5 * min(len(a), len(b))  # about rate² of the ids, not most of them


def test_rate_bounds_and_limit() -> None:
    ids = _ids(300)
    assert select(HEAD_A, ids, 0.0) == []
    assert sorted(select(HEAD_A, ids, 1.0)) == sorted(ids)
    some = select(HEAD_A, ids, 0.5)
    assert select(HEAD_A, ids, 0.5, limit=5) == some[:5]  # the lowest scores: a reproducible subset
    assert 0.0 <= selection_score(HEAD_A, ids[0]) < 1.0


# --- end to end -----------------------------------------------------------------------------------------------
@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}}) as server:
        yield server


@pytest.fixture
def rigs(tmp_path: Path, ollama: FakeOllama) -> Rigs:
    return make_rigs(tmp_path, ("alice", "bob", "carol", "dave"), env={"OLLAMA_HOST": ollama.url})


def _lie(rigs: Rigs, handle: str, item_id: str, text: str) -> None:
    """A dishonest worker: claims, then submits an output it made up, consistently hashed and signed."""
    assert rigs.wl(handle, "claim", item_id).exit_code == 0
    with rigs.board(handle) as b:
        context = {"board_id": b.meta()["board_id"], "item_id": item_id}
    record: dict[str, object] = {"output": text, "output_hash": output_hash(text), "model": MODEL, "seed": 42,
                                 "backend": "ollama", "worker": handle}
    record["signature"] = sign_record("evidence", record, context, load_private_key(rigs.home(handle)))
    res = rigs.wl(handle, "done", item_id, "--evidence", orjson.dumps(record).decode())
    assert res.exit_code == 0, res.output


def _board_of_completions(rigs: Rigs) -> dict[str, str]:
    """Five completions: bob two honest, dave one honest and one lie, carol (the auditor) one of her own."""
    ids = {name: post(rigs, "alice", "--prompt", f"question {name}", "--model", MODEL, "--max-tokens", "24")
           for name in ("bob1", "bob2", "dave1", "dave_lie", "carol1")}
    for name in ("bob1", "bob2", "dave1", "carol1"):
        res = rigs.wl(name[:-1] if name[-1].isdigit() else name, "infer", "run", ids[name])
        assert res.exit_code == 0, res.output
    _lie(rigs, "dave", ids["dave_lie"], "The answer is 2.")
    return ids


def test_audit_at_rate_one_attests_everything_and_counts_per_worker(rigs: Rigs) -> None:
    ids = _board_of_completions(rigs)
    code, data = rigs.wl_json("carol", "infer", "audit", "--rate", "1")
    assert code == 1, data  # a MISMATCH was found
    checked = {r["item_id"]: r for r in data["results"]}
    assert set(checked) == {ids[n] for n in ("bob1", "bob2", "dave1", "dave_lie")}  # never her own
    assert data["skipped"]["own"] == [ids["carol1"]]
    assert checked[ids["dave_lie"]]["outcome"] == "MISMATCH"
    assert checked[ids["dave_lie"]]["verdict"]["expected"] == output_hash("The answer is 2.")
    assert data["summary"] == {
        "bob": {"checked": 2, "verified": 2, "mismatched": 0, "invalid": 0, "could_not_verify": 0},
        "dave": {"checked": 2, "verified": 1, "mismatched": 1, "invalid": 0, "could_not_verify": 0},
    }
    with rigs.board("alice") as b:  # recorded and pushed: another home sees the attestations
        b.refresh()
        head = b.head().decode()
        view = b.view()
        for name, verdict in (("bob1", "VERIFIED"), ("bob2", "VERIFIED"), ("dave1", "VERIFIED"),
                              ("dave_lie", "MISMATCH")):
            att = view.attestations(ids[name])["carol"]
            assert att["verdict"] == verdict and att["mode"] == "rerun"
            comp = view.completion(ids[name])
            assert comp is not None and att["completion_id"] == comp.id
        assert "carol" not in view.attestations(ids["carol1"])
    assert data["seed"] != head  # the seed was the head before the audit's own commits

    again = rigs.wl_json("carol", "infer", "audit", "--rate", "1")[1]  # already attested: nothing to do
    assert again["results"] == [] and sorted(again["skipped"]["already_attested"]) == sorted(checked)


def test_the_human_summary_table(rigs: Rigs) -> None:
    ids = _board_of_completions(rigs)
    res = rigs.wl("carol", "infer", "audit", "--rate", "1", "--no-record")
    assert res.exit_code == 1, res.output
    assert "Audit seed " in res.stdout and "4 of 4 eligible selected" in res.stdout
    assert "MISMATCH (rerun)" in res.stdout
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in res.stdout.splitlines() if line.startswith("│")}
    assert lines["bob"] == ["2", "2", "0", "0", "0"] and lines["dave"] == ["2", "1", "1", "0", "0"]
    with rigs.board("alice") as b:  # --no-record
        b.refresh()
        assert all(b.view().attestations(i) == {} for i in ids.values())


def test_dry_run_lists_the_same_selection_for_every_auditor_and_records_nothing(rigs: Rigs) -> None:
    ids = _board_of_completions(rigs)
    code_a, by_alice = rigs.wl_json("alice", "infer", "audit", "--rate", "0.5", "--dry-run")
    code_c, by_carol = rigs.wl_json("carol", "infer", "audit", "--rate", "0.5", "--dry-run")
    assert code_a == code_c == 0
    assert by_alice["seed"] == by_carol["seed"]  # same head after the fetch
    chosen = select(by_alice["seed"], [ids[n] for n in ("bob1", "bob2", "dave1", "dave_lie")], 0.5)
    assert [c["item_id"] for c in by_carol["selected"]] == chosen
    assert [c["item_id"] for c in by_alice["selected"]] == select(by_alice["seed"], list(ids.values()), 0.5)
    assert by_carol["results"] == [] and by_carol["dry_run"] is True
    with rigs.board("alice") as b:
        b.refresh()
        assert all(b.view().attestations(i) == {} for i in ids.values())


def test_limit_keeps_the_lowest_scores(rigs: Rigs) -> None:
    _board_of_completions(rigs)
    full = rigs.wl_json("carol", "infer", "audit", "--rate", "1", "--dry-run")[1]
    cut = rigs.wl_json("carol", "infer", "audit", "--rate", "1", "--dry-run", "--limit", "2")[1]
    assert cut["selected"] == full["selected"][:2] and cut["over_limit"] == 2


def test_exit_three_when_nothing_selected_could_be_verified(rigs: Rigs, ollama: FakeOllama) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    ollama.state.fail_status = 500  # the engine is down while carol audits
    code, data = rigs.wl_json("carol", "infer", "audit", "--rate", "1")
    assert code == 3
    assert data["results"][0]["outcome"] == "COULD-NOT-VERIFY" and "500" in data["results"][0]["reason"]
    assert data["summary"]["bob"]["could_not_verify"] == 1


def test_nothing_selected_is_success(rigs: Rigs) -> None:
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    code, data = rigs.wl_json("carol", "infer", "audit", "--rate", "0")
    assert code == 0 and data["selected"] == [] and data["eligible"] == 1
