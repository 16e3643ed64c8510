"""Key rotation as its own recorded operation: `wl rig rotate-key`, proofs, and results signed before it.

Real homes and a bare commons on disk; jobs run on the ollama backend against tests/fake_servers.py's Ollama
on 127.0.0.1 (verification needs a backend, not a particular engine).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from eth_account import Account
from eth_account.messages import encode_defunct
from fake_servers import FakeOllama
from infer_helpers import Rigs, make_rigs, post
from remotes import remote_ops

from board.cli.main import cli
from board.cli.rig import key_history, rotation_message, rotation_signer
from board.errors import RuleError
from board.keys import address_of, key_path, next_key_path
from wl_infer.codec import Evidence
from wl_infer.signing import recover_signer

MODEL = "llama3.2:1b"


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}}) as server:
        yield server


@pytest.fixture
def rigs(tmp_path: Path, ollama: FakeOllama) -> Rigs:
    return make_rigs(tmp_path, env={"OLLAMA_HOST": ollama.url})


def _rig(rigs: Rigs, handle: str) -> dict[str, object]:
    with rigs.board("alice") as b:
        b.refresh()
        rig = b.view().rig(handle)
        assert rig is not None
        return rig.to_dict()


def _signer(rigs: Rigs, item_id: str) -> str | None:
    with rigs.board("carol") as b:
        b.refresh()
        view = b.view()
        comp = view.completion(item_id)
        assert comp is not None
        context = {"board_id": view.meta()["board_id"], "item_id": item_id}
    return recover_signer("evidence", Evidence.decode(comp.evidence).to_dict(), context)


def _rotations(rigs: Rigs) -> int:
    return sum(1 for _, op in remote_ops(rigs.commons) if op is not None and op.op == "rotate-key")


def test_results_signed_before_a_rotation_still_verify_and_new_ones_use_the_new_key(rigs: Rigs) -> None:
    old = address_of(rigs.home("bob"))
    before = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", before).exit_code == 0

    code, data = rigs.wl_json("bob", "rig", "rotate-key")
    assert code == 0, data
    new = data["new_address"]
    assert (data["old_address"], data["committed"], data["pushed"]) == (old, True, True) and new != old
    assert address_of(rigs.home("bob")) == new and not next_key_path(rigs.home("bob")).exists()
    rig = _rig(rigs, "bob")
    assert rig["address"] == new
    assert [p["address"] for p in rig["previous_addresses"]] == [old]  # type: ignore[attr-defined]

    res = rigs.wl("carol", "infer", "verify", before)
    assert res.exit_code == 0 and "✓ VERIFIED" in res.stdout, res.output
    assert _signer(rigs, before) == old

    after = post(rigs, "alice", "--prompt", "what is 2+2", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", after).exit_code == 0
    assert _signer(rigs, after) == new
    assert rigs.wl("carol", "infer", "verify", after).exit_code == 0


def test_each_rotation_is_proven_by_the_key_it_replaces(rigs: Rigs) -> None:
    first = address_of(rigs.home("bob"))
    assert rigs.wl("bob", "rig", "rotate-key").exit_code == 0
    second = address_of(rigs.home("bob"))
    assert rigs.wl("bob", "rig", "rotate-key").exit_code == 0
    third = address_of(rigs.home("bob"))
    code, shown = rigs.wl_json("carol", "rig", "show", "bob")
    assert code == 0 and shown["rig"]["address"] == third
    assert [(h["address"], h["handed_to"], h["proof_valid"]) for h in shown["previous"]] == [
        (first, second, True), (second, third, True)
    ]
    proof = shown["rig"]["previous_addresses"][0]["proof"]
    with rigs.board("carol") as b:
        board_id = b.meta()["board_id"]
    assert rotation_signer(rotation_message(board_id, "bob", first, second), proof) == first
    assert rotation_signer(rotation_message(board_id, "carol", first, second), proof) != first  # bound to bob
    res = rigs.wl("bob", "rig", "show")
    assert f"Earlier key {first}" in res.stdout and "proof ok" in res.stdout
    assert _rotations(rigs) == 2


def test_the_board_refuses_a_rotation_from_a_key_that_is_not_the_current_one(rigs: Rigs) -> None:
    stranger = Account.create()
    with rigs.board("bob") as b, pytest.raises(RuleError, match="rig bob is registered with 0x"):
        b.mutate(b.new_op("rotate-key", None, old_address=stranger.address, new_address=Account.create().address,
                          proof="0x"))
    assert "previous_addresses" not in _rig(rigs, "bob")
    # a home whose key is not the registered one cannot even ask
    key_path(rigs.home("bob")).write_text("0x" + bytes(stranger.key).hex() + "\n")
    res = rigs.wl("bob", "rig", "rotate-key")
    assert res.exit_code == 1 and "this home cannot prove the rotation" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and _rotations(rigs) == 0


def test_the_board_refuses_a_rotation_not_signed_by_the_current_key(rigs: Rigs) -> None:
    old = address_of(rigs.home("bob"))
    new = Account.create().address
    with rigs.board("bob") as b:
        message = encode_defunct(text=rotation_message(b.meta()["board_id"], "bob", old, new))
        bad = Account.sign_message(message, private_key=Account.create().key)
        op = b.new_op("rotate-key", None, old_address=old, new_address=new, proof="0x" + bad.signature.hex())
        with pytest.raises(RuleError, match="not signed by its current key"):
            b.mutate(op)
        with pytest.raises(RuleError, match="not signed by its current key"):
            b.mutate(b.new_op("rotate-key", None, old_address=old, new_address=new))  # no proof at all
    assert _rig(rigs, "bob")["address"] == old


def test_an_unpublished_rotation_keeps_key_next_until_sync(rigs: Rigs) -> None:
    old = address_of(rigs.home("bob"))
    res = rigs.wl("bob", "rig", "rotate-key", "--no-push")
    assert res.exit_code == 0 and "not published yet (--no-push)" in res.stdout and "key.next" in res.stdout
    assert address_of(rigs.home("bob")) == old and next_key_path(rigs.home("bob")).exists()
    assert _rig(rigs, "bob")["address"] == old
    assert rigs.wl("bob", "sync").exit_code == 0
    new = _rig(rigs, "bob")["address"]
    assert new != old and address_of(rigs.home("bob")) == old  # published; this home switches when told to

    iid = post(rigs, "alice", "--prompt", "in between", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0  # signed with the old key: still accepted
    assert rigs.wl("carol", "infer", "verify", iid).exit_code == 0

    code, data = rigs.wl_json("bob", "rig", "rotate-key")
    assert code == 0 and data["committed"] and data["new_address"] == new
    assert address_of(rigs.home("bob")) == new and _rotations(rigs) == 1  # the pending key, not a third one


def test_a_rotation_that_cannot_be_pushed_is_finished_later(rigs: Rigs) -> None:
    old = address_of(rigs.home("bob"))
    away = rigs.commons.with_name("moved.git")
    shutil.move(rigs.commons, away)
    try:
        code, data = rigs.wl_json("bob", "rig", "rotate-key")
        assert code == 0 and data["committed"] is False and "unreachable" in data["local_reason"]
        pending = data["new_address"]
        code, data = rigs.wl_json("bob", "rig", "rotate-key")  # still offline: nothing new, still waiting
        assert code == 0 and data["committed"] is False and data["new_address"] == pending
    finally:
        shutil.move(away, rigs.commons)
    assert address_of(rigs.home("bob")) == old
    code, data = rigs.wl_json("bob", "rig", "rotate-key")  # publishes the pending operation, then switches
    assert code == 0 and data["committed"] and data["new_address"] == pending
    assert address_of(rigs.home("bob")) == pending and _rig(rigs, "bob")["address"] == pending
    assert _rotations(rigs) == 1


def test_a_local_board_rotates_at_once(tmp_path: Path) -> None:
    home = tmp_path / "solo"
    runner = CliRunner()
    assert runner.invoke(cli, ["--home", str(home), "init", "--handle", "solo"]).exit_code == 0
    old = address_of(home)
    res = runner.invoke(cli, ["--home", str(home), "--json", "rig", "rotate-key"])
    assert res.exit_code == 0, res.output
    data = orjson.loads(res.stdout)
    assert data["committed"] and address_of(home) == data["new_address"] != old
    res = runner.invoke(cli, ["--home", str(home), "--json", "rig", "show"])
    shown = orjson.loads(res.stdout)
    assert shown["key_matches"] is True and shown["pending_rotation"] is None
    assert [h["proof_valid"] for h in shown["previous"]] == [True]


def test_key_history_of_a_rig_that_never_rotated_is_empty(rigs: Rigs) -> None:
    with rigs.board("bob") as b:
        rig = b.view().rig("bob")
        assert rig is not None
        assert key_history(b.meta()["board_id"], rig) == []


def test_an_anchor_made_before_a_rotation_still_matches(rigs: Rigs) -> None:
    pytest.importorskip("eth_tester", reason="web3[tester] is not installed")
    assert rigs.wl("alice", "chain", "deploy", "--rpc-url", "eth-tester://").exit_code == 0
    iid = post(rigs, "alice", "--prompt", "what is 1+1", "--model", MODEL)
    assert rigs.wl("bob", "infer", "run", iid, "--anchor").exit_code == 0
    assert rigs.wl("bob", "rig", "rotate-key").exit_code == 0
    res = rigs.wl("carol", "infer", "verify", iid)
    assert res.exit_code == 0 and "on-chain: matches" in res.stdout, res.output
