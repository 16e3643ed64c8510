"""The verifiable sampler (wl_infer/sampling.py): its specification, its distribution, and where it is refused.

No engine here: the noise is checked against a second, plain-Python implementation written from the module's
specification, and the draws against the softmax they are meant to sample.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from infer_helpers import make_rigs

from wl_infer import sampling
from wl_infer.backends import BackendError
from wl_infer.codec import Job

np = pytest.importorskip("numpy")

MASK = (1 << 64) - 1


def reference_uniform(seed: int, index: int, token: int) -> float:
    """u_i exactly as the specification words it, one id at a time, in Python integers."""
    msg = f"wl-infer/gumbel-v1|seed={seed}|index={index}".encode("ascii")
    key = int.from_bytes(hashlib.sha256(msg).digest()[:8], "little")
    z = (key + (token + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    z ^= z >> 31
    return ((z >> 11) + 0.5) * 2.0**-53


@pytest.mark.parametrize("seed, index", [(42, 0), (42, 1), (-7, 255), (2**63, 10**6)])
def test_noise_matches_the_specification_bit_for_bit(seed: int, index: int) -> None:
    u = sampling.uniforms(seed, index, 1000)
    for token in (0, 1, 2, 499, 998, 999):
        assert u[token] == reference_uniform(seed, index, token)
    assert 0.0 < u.min() and u.max() < 1.0
    row = np.linspace(-3, 3, 1000, dtype=np.float32)
    s = sampling.scores(row, 0.8, seed, index)
    for token in (0, 500, 999):  # ln may round differently by an ulp between libraries (see the module)
        ref = float(row[token]) / 0.8 - math.log(-math.log(reference_uniform(seed, index, token)))
        assert s[token] == pytest.approx(ref, rel=1e-15, abs=1e-15)


def test_each_position_and_seed_draws_fresh_noise() -> None:
    a = sampling.uniforms(1, 0, 64)
    assert not np.array_equal(a, sampling.uniforms(1, 1, 64))
    assert not np.array_equal(a, sampling.uniforms(2, 0, 64))
    assert np.array_equal(a, sampling.uniforms(1, 0, 64))


def test_gumbel_max_samples_the_softmax() -> None:
    logits = np.array([2.0, 1.0, 0.0, -1.0, -30.0], dtype=np.float32)
    for temp in (1.0, 0.5):
        draws = np.bincount([sampling.choose(logits, temp, 3, k) for k in range(4000)], minlength=5)
        p = np.exp(logits / temp - (logits / temp).max())
        p /= p.sum()
        sigma = np.sqrt(4000 * p * (1 - p))
        assert np.all(np.abs(draws - 4000 * p) <= 4 * sigma + 1), (temp, draws, 4000 * p)
        assert draws[4] == 0


def test_greedy_is_the_first_maximum() -> None:
    row = np.array([0.5, 3.0, 3.0, -1.0], dtype=np.float32)
    assert sampling.choose(row, 0.0, 42, 0) == 1
    assert sampling.describe(0.0, 42)["method"] == "greedy"
    assert sampling.describe(0.8, 42)["method"] == "gumbel-max"


@pytest.mark.parametrize("value, ok", [(0, True), (0.8, True), (4, True), (-0.1, False), (4.5, False),
                                       ("0.8", False), (True, False), (float("nan"), False)])
def test_temperature_is_validated(value: object, ok: bool) -> None:
    if ok:
        assert sampling.temperature_of({"temperature": value}) == float(value)  # type: ignore[arg-type]
    else:
        with pytest.raises(sampling.SamplingError):
            sampling.temperature_of({"temperature": value})


def test_backends_that_cannot_sample_refuse_a_temperature() -> None:
    for name in ("ollama", "openai", "vllm"):
        with pytest.raises(BackendError, match="temperature 0.8 needs verifiable sampling"):
            sampling.check_backend(Job(prompt="p", model="m", backend=name, options={"temperature": 0.8}))
        sampling.check_backend(Job(prompt="p", model="m", backend=name, options={"temperature": 0}))
    sampling.check_backend(Job(prompt="p", model="m", backend="llama-cpp", options={"temperature": 0.8}))


def test_post_refuses_a_temperature_the_backend_cannot_honour(tmp_path: Path) -> None:
    rigs = make_rigs(tmp_path, ("alice",))
    res = rigs.wl("alice", "infer", "post", "--prompt", "hi", "--model", "llama3", "--backend", "ollama",
                  "--temperature", "0.8")
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and "wl: error:" in res.output and "temperature" in res.output
    assert "Traceback" not in res.output
    code, data = rigs.wl_json("alice", "infer", "post", "--prompt", "hi", "--model", "gemma3:270m",
                              "--backend", "llama-cpp", "--temperature", "0.8", "--no-push")
    assert code == 0, data
    assert data["job"]["options"] == {"temperature": 0.8}
