"""Results in `wl serve`: a real job run on the embedded model by one rig, verified by another through the CLI
and by the serving rig through its own page, a forged attestation, the leaderboard and the dashboard."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from infer_helpers import Rigs, make_rigs, post
from web_helpers import client_for, op, wait_for

from board.ids import fmt_time, utcnow

pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

JOB = ("--prompt", "Question: What is 2+2?\nAnswer:", "--model", "gemma3:270m", "--backend", "llama-cpp",
       "--max-tokens", "8")


@pytest.fixture
def rigs(tmp_path: Path) -> Rigs:
    return make_rigs(tmp_path, ("alice", "bob", "carol", "mallory"))


@pytest.mark.model
@pytest.mark.slow
def test_item_page_leaderboard_dashboard_and_verify_as_this_rig(rigs: Rigs) -> None:
    iid = post(rigs, "alice", *JOB)
    assert rigs.wl("bob", "infer", "run", iid).exit_code == 0
    assert rigs.wl("carol", "infer", "verify", iid, "--mode", "rerun").exit_code == 0
    # mallory records a MISMATCH it never signed: shown, flagged, and never counted against bob
    forged = {"verdict": "MISMATCH", "item_id": iid, "mode": "rerun", "verifier": "mallory",
              "at": fmt_time(utcnow()), "signature": "0x" + "11" * 65}
    with rigs.board("mallory") as b:
        b.refresh()
        forged["completion_id"] = b.view().completion(iid).id
    op(rigs, "mallory", "attest", iid, record=forged)

    with client_for(rigs.home("alice"), allow_post=True) as (client, hub):
        page = client.get(f"/items/{iid}").text
        api = client.get(f"/api/items/{iid}").json()
        assert api["evidence"]["worker"] == "bob" and api["output_hash_ok"] is True
        assert api["evidence_check"] == {"ok": True, "reason": None}
        assert api["signatures"] == {"carol": True, "mallory": False}
        assert api["outcome"] == "VERIFIED"
        assert api["job"]["model_digest"] in page and api["evidence"]["output_hash"] in page
        assert "output hashes to it" in page and "signed by the worker's registered key" in page
        assert re.search(r"carol</a></td>\s*<td><span class=\"badge v-verified\">VERIFIED", page)
        assert "does not check" in page  # mallory's row
        assert "Full envelope" in page and "llama.cpp" in page
        assert [e["op"] for e in api["history"]] == ["post", "claim", "done", "attest", "attest"]

        code, status = rigs.wl_json("alice", "infer", "status", iid)
        assert code == 0
        for key in ("item", "job", "completion", "evidence", "evidence_error", "attestations"):
            assert api[key] == status[key], key

        board = client.get("/?type=inference").text
        assert "gemma3:270m" in board and "VERIFIED" in board
        assert "MISMATCH?" in board  # the forged badge, marked as not checking

        leaders = {r["handle"]: r for r in client.get("/api/rigs").json()["rigs"]}
        assert (leaders["bob"]["completed"], leaders["bob"]["verified"], leaders["bob"]["mismatched"]) == (1, 1, 0)
        assert leaders["bob"]["tokens_generated"] == len(api["evidence"]["tokens"]) > 0
        assert leaders["carol"]["attestations_made"] == 1 and leaders["mallory"]["attestations_made"] == 0
        assert leaders["bob"]["address"].startswith("0x")
        assert "bob" in client.get("/rigs").text and client.get("/rigs/bob").status_code == 200

        dash = client.get("/api/dashboard").json()
        s = dash["hourly"]["series"]
        assert (sum(s["posted"]), sum(s["completed"]), sum(s["VERIFIED"])) == (1, 1, 1)
        assert dash["models"][0]["model"] == "gemma3:270m" and dash["models"][0]["tokens"] > 0
        svg = client.get("/dashboard").text
        assert svg.count("<svg") == 3 and "<rect" in svg

        token = hub.csrf
        res = client.post(f"/items/{iid}/verify", data={"csrf": token, "mode": "rerun"}, follow_redirects=False)
        assert res.status_code == 303 and "msg=VERIFIED" in res.headers["location"]
        after = client.get(f"/api/items/{iid}").json()
        assert after["signatures"].get("alice") is True and after["attestations"]["alice"]["verdict"] == "VERIFIED"
    # recorded on the commons, not only in alice's copy
    with rigs.board("carol") as b:
        b.refresh()
        assert b.view().attestations(iid)["alice"]["verifier"] == "alice"


def test_a_tampered_result_is_shown_invalid(rigs: Rigs) -> None:
    iid = post(rigs, "alice", *JOB)
    op(rigs, "bob", "claim", iid)
    evidence = ('{"output":"4","output_hash":"sha256:' + "0" * 64 + '","model":"gemma3:270m","seed":42,'
                '"backend":"llama-cpp","worker":"bob"}')
    from board.ids import new_completion_id

    op(rigs, "bob", "done", iid, evidence=evidence, completion_id=new_completion_id())
    with client_for(rigs.home("alice")) as (client, _):
        api = wait_for(lambda: (d := client.get(f"/api/items/{iid}").json())["completion"] and d)
        assert api["output_hash_ok"] is False and api["evidence_check"]["ok"] is False
        assert "does not hash" in api["evidence_check"]["reason"]
        page = client.get(f"/items/{iid}").text
        assert "output does not hash to it" in page and "INVALID" in page
