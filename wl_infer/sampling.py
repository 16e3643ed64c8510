"""Verifiable token choice: greedy at temperature 0, keyed Gumbel-max above it.

The token chosen at output index k (0 for the first generated token) from a row of logits `l` (float32, one
per vocabulary id) is a pure function of (logits, temperature T, seed, k), so whoever holds the same logits
(a rerun, or one batched scoring pass) recomputes it exactly:

- T = 0: the lowest id among the maximal logits (`argmax`).
- T > 0 (Gumbel-max): `key` = the first 8 bytes, read as a little-endian unsigned integer, of
  SHA-256(`wl-infer/gumbel-v1|seed=<seed>|index=<k>`) (decimal integers, ASCII). For every id i, in unsigned
  64-bit arithmetic modulo 2^64 (SplitMix64's output function):
  z = key + (i + 1) * 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z = z ^ (z >> 31);
  u_i = ((z >> 11) + 0.5) * 2^-53 (exactly representable, strictly inside (0, 1));
  g_i = -ln(-ln(u_i)) and s_i = l_i / T + g_i in IEEE-754 binary64 (l_i widened from float32 exactly).
  The token is the lowest id among the maximal s_i. This samples from softmax(l / T).

ln is the platform's binary64 logarithm; implementations that round it differently by an ulp could only
disagree where two scores tie to within a few ulps (relative ~1e-15), which for real logits does not occur.
"""

from __future__ import annotations

import hashlib
from typing import Any

METHOD_GREEDY = "greedy"
METHOD_GUMBEL = "gumbel-max"
NOISE = "splitmix64(sha256('wl-infer/gumbel-v1|seed=S|index=K')[:8] LE, id+1) -> u53 -> -ln(-ln u)"
MAX_TEMPERATURE = 4.0

_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


class SamplingError(ValueError):
    """A temperature that is not a number in [0, MAX_TEMPERATURE]."""


def temperature_of(options: dict[str, Any]) -> float:
    """The job's temperature (options.temperature, default 0), validated."""
    value = options.get("temperature", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SamplingError("job option temperature must be a number")
    t = float(value)
    if not 0.0 <= t <= MAX_TEMPERATURE:  # also rejects NaN
        raise SamplingError(f"job option temperature must be in [0, {MAX_TEMPERATURE:g}]")
    return t


def noise_key(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"wl-infer/gumbel-v1|seed={seed}|index={index}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little")


def uniforms(seed: int, index: int, n_vocab: int) -> Any:
    """u_i for ids 0..n_vocab-1 (float64 in (0, 1)), as specified in the module docstring."""
    import numpy as np

    u64 = np.uint64
    with np.errstate(over="ignore"):
        z = u64(noise_key(seed, index)) + np.arange(1, n_vocab + 1, dtype=np.uint64) * u64(_GAMMA)
        z ^= z >> u64(30)
        z *= u64(_M1)
        z ^= z >> u64(27)
        z *= u64(_M2)
        z ^= z >> u64(31)
    return ((z >> u64(11)).astype(np.float64) + 0.5) * (2.0**-53)


def scores(row: Any, temperature: float, seed: int, index: int) -> Any:
    """The decision scores s_i (float64) for one logit row; argmax picks the token."""
    import numpy as np

    u = uniforms(seed, index, len(row))
    return np.asarray(row, dtype=np.float64) / temperature - np.log(-np.log(u))


def choose(row: Any, temperature: float, seed: int, index: int) -> int:
    """The token at output index `index` from its logit row (lowest id on ties)."""
    import numpy as np

    if temperature == 0.0:
        return int(np.argmax(row))
    return int(np.argmax(scores(row, temperature, seed, index)))


def describe(temperature: float, seed: int) -> dict[str, Any]:
    """How tokens are chosen, for the envelope."""
    if temperature == 0.0:
        return {"method": METHOD_GREEDY, "temperature": 0.0, "argmax_ties": "lowest-token-id", "seed": seed}
    return {
        "method": METHOD_GUMBEL,
        "temperature": temperature,
        "noise": NOISE,
        "argmax_ties": "lowest-token-id",
        "seed": seed,
    }


def check_backend(job: Any) -> None:
    """Refuse a job whose temperature its backend cannot honour verifiably (raises BackendError)."""
    from wl_infer.backends import BackendError, backend_class

    try:
        t = temperature_of(job.options)
    except SamplingError as e:
        raise BackendError(job.backend, str(e)) from None
    if t > 0.0 and not backend_class(job.backend).samples:
        raise BackendError(
            job.backend,
            f"temperature {t:g} needs verifiable sampling, which this backend does not offer "
            "(it runs greedy only); use --backend llama-cpp or temperature 0",
        )
