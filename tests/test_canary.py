"""`wl infer canary`: a determinism self-test of this machine's backend, recorded in the rig's board record.

The report logic is tested on made-up probes (no engine); the canary itself runs on the real llama.cpp engine
and embedded model, with short outputs and two repeats to stay small.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from infer_helpers import make_rigs

from wl_infer.canary import CanaryReport, Probe, Setting, settings_for

EMBEDDED_DIGEST = "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def test_only_the_knobs_a_backend_honours_are_varied() -> None:
    llama = settings_for("llama-cpp", (1, 2), (8, 512))
    assert [s.label for s in llama] == [
        "threads=1,n_batch=8", "threads=1,n_batch=512", "threads=2,n_batch=8", "threads=2,n_batch=512"]
    assert settings_for("ollama", (1, 2), (8, 512)) == [Setting(None, None)]
    assert settings_for("ollama", (1, 2), (8, 512))[0].label == "default"


def _report(*probes: Probe) -> CanaryReport:
    settings = list(dict.fromkeys(p.setting for p in probes))
    return CanaryReport("llama-cpp", "m", None, 2, 8, ["p0", "p1"], settings, list(probes))


A, B = Setting(1, 8), Setting(2, 512)


def test_a_setting_that_changes_an_output_is_named() -> None:
    same = _report(Probe(A, 0, ["h0", "h0"], 8, True), Probe(A, 1, ["h1", "h1"], 8, True),
                   Probe(B, 0, ["h0", "h0"], 8, True), Probe(B, 1, ["h1", "h1"], 8, True))
    assert same.stable and same.prefill_agrees and same.diverging == []
    other = _report(Probe(A, 0, ["h0", "h0"], 8, True), Probe(A, 1, ["h1", "h1"], 8, True),
                    Probe(B, 0, ["h0", "h0"], 8, True), Probe(B, 1, ["hX", "hX"], 8, True))
    assert not other.stable and other.diverging == [B.label]
    assert [p["stable"] for p in other.record()["prompts"]] == [True, False]


def test_repeats_that_differ_and_prefill_that_disagrees_are_unstable() -> None:
    flaky = _report(Probe(A, 0, ["h0", "h0"], 8, True), Probe(A, 1, ["h1", "h2"], 8, True))
    assert not flaky.stable and flaky.diverging == [A.label]
    assert flaky.setting_rows()[0]["repeatable"] is False
    rejected = _report(Probe(A, 0, ["h0", "h0"], 8, False), Probe(A, 1, ["h1", "h1"], 8, True))
    assert rejected.stable and rejected.prefill_agrees is False and rejected.diverging == [A.label]
    unscored = _report(Probe(A, 0, ["h0"], None, None), Probe(A, 1, ["h1"], None, None))
    assert unscored.stable and unscored.prefill_agrees is None


@pytest.mark.model
@pytest.mark.timeout(600)
def test_the_embedded_model_is_stable_here_and_the_rig_record_says_so(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    rigs = make_rigs(tmp_path, ("alice", "bob"))
    code, data = rigs.wl_json("bob", "infer", "canary", "--repeats", "2", "--max-tokens", "8")
    assert code == 0, data
    assert data["stable"] is True and data["prefill_agrees"] is True and data["diverging"] == []
    assert [s["label"] for s in data["settings"]] == [
        "threads=1,n_batch=8", "threads=1,n_batch=512", "threads=2,n_batch=8", "threads=2,n_batch=512"]
    assert len(data["probes"]) == 12 and all(len(p["hashes"]) == 2 for p in data["probes"])
    assert data["recorded"] is True and data["pushed"] is True

    with rigs.board("alice") as b:  # another home reads it back from the board
        b.refresh()
        rig = b.view().rig("bob")
    assert rig is not None
    canary = rig.extra["canary"]
    assert canary == {k: data[k] for k in canary}  # the record is the report's summary
    assert canary["stable"] is True and canary["backend"] == "llama-cpp" and canary["model"] == "gemma3:270m"
    assert canary["model_digest"] == EMBEDDED_DIGEST
    assert {"at", "prompts", "settings", "wl_infer_version", "platform"} <= set(canary)
    assert len(canary["prompts"]) == 3 and all(p["stable"] for p in canary["prompts"])
    assert canary["platform"]["machine"] and canary["platform"]["llama_cpp_python"]

    code, shown = rigs.wl_json("alice", "infer", "canary", "--show")
    assert code == 0 and shown["rigs"]["bob"]["stable"] is True
    res = rigs.wl("alice", "infer", "canary", "--show")
    assert res.exit_code == 0 and "bob" in res.stdout and "True" in res.stdout
