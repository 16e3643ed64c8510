"""Attestation signatures are checked wherever an attestation is shown or used (issue 9, point 5).

Carol's genuine attestation of one item, recorded by carol herself on another item through a plain `attest`
operation (a commit the ledger accepts: carol signs it), must never read as carol's verdict on that other item:
`wl infer status` shows it as invalid, `wl infer audit` does not count the item as attested, and the chain
publisher refuses it. The Ollama server cannot be installed here: the ollama backend runs against a small HTTP
server on 127.0.0.1 that speaks Ollama's API (tests/fake_servers.py); the board, keys and signatures are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_servers import FakeOllama
from infer_helpers import Rigs, make_rigs, post

from wl_infer.attestations import check_attestation

MODEL = "llama3.2:1b"


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}}) as server:
        yield server


@pytest.fixture
def rigs(tmp_path: Path, ollama: FakeOllama) -> Rigs:
    return make_rigs(tmp_path, env={"OLLAMA_HOST": ollama.url})


def _two_results(rigs: Rigs) -> tuple[str, str]:
    first = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    second = post(rigs, "alice", "--prompt", "what is 2+2", "--model", MODEL)
    for iid in (first, second):
        assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    assert rigs.wl("carol", "infer", "verify", first).exit_code == 0
    return first, second


def _copy_attestation(rigs: Rigs, source: str, target: str, handle: str = "carol") -> None:
    with rigs.board(handle) as b:
        b.refresh()
        record = dict(b.view().attestations(source)[handle])
        b.mutate(b.new_op("attest", target, record=record))


def test_a_copied_attestation_is_shown_as_invalid_never_as_the_verdict(rigs: Rigs) -> None:
    first, second = _two_results(rigs)
    _copy_attestation(rigs, first, second)
    res = rigs.wl("alice", "infer", "status", second)
    assert res.exit_code == 0, res.output
    assert "Attested by carol" not in res.stdout
    assert "Attestation under carol: INVALID" in res.stdout and second in res.stdout
    code, data = rigs.wl_json("alice", "infer", "status", second)
    assert code == 0
    assert data["attestations"]["carol"]["check"]["signature_valid"] is False
    code, data = rigs.wl_json("alice", "infer", "status", first)
    assert data["attestations"]["carol"]["check"] == {"signature_valid": True, "problem": None, "stale": False}


def test_a_record_with_its_item_id_changed_fails_the_signature(rigs: Rigs) -> None:
    first, second = _two_results(rigs)
    with rigs.board("carol") as b:
        b.refresh()
        view = b.view()
        record = dict(view.attestations(first)["carol"])
        assert check_attestation(view, first, "carol", record).valid
        forged = {**record, "item_id": second, "verdict": "MISMATCH"}
        check = check_attestation(view, second, "carol", forged)
        assert not check.valid and "signature" in (check.problem or "")
        assert not check_attestation(view, first, "bob", record).valid  # filed under another verifier's name


def test_audit_does_not_skip_an_item_whose_attestation_is_invalid(rigs: Rigs) -> None:
    first, second = _two_results(rigs)
    _copy_attestation(rigs, first, second)
    from wl_infer.audit import plan_audit

    with rigs.board("carol") as b:
        plan = plan_audit(b, rate=1.0)
    assert first in plan.skipped_attested
    assert second not in plan.skipped_attested
    assert second in [c.item_id for c in plan.selected]
