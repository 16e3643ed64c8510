"""Generation and batched scoring on the llama.cpp engine, with one token rule for both.

The token at output index k is `sampling.choose(row, T, seed, k)` where `row` is the logit row of the position
before it. On a batch-invariant engine (see llama_cpp's module docstring) that row is the same bit for bit
whether it came from a two-token decode during generation or from one batched pass over prompt + output, so
scoring reproduces every choice exactly: no tolerance, no rerun.

Generation evaluates each new token with a filler after it (a two-token decode, one logit row), which
costs less on the CPU than computing a second logit row for a guessed next token would save (from the measured
costs, a guess pays only when it is right more than ~7 times in 8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wl_infer import sampling
from wl_infer.backends.base import ScoreResult
from wl_infer.limits import checkpoint


@dataclass
class GenerationStats:
    decodes: int = 0  # llama_decode calls after the prompt


def prefill(engine: Any, prompt: list[int]) -> Any:
    """Evaluate the prompt from an empty cache; returns a copy of its last row."""
    engine.reset()
    step = engine.capacity
    row = None
    for start in range(0, len(prompt), step):
        checkpoint()  # issue 10: the job's deadline, or an interrupted run
        chunk = prompt[start : start + step]
        last = start + len(chunk) == len(prompt)
        rows = engine.decode(chunk, start, [last and i == len(chunk) - 1 for i in range(len(chunk))])
        if last:
            row = rows[0].copy()
    return row


def generate(
    engine: Any, prompt: list[int], limit: int, temperature: float, seed: int, stats: GenerationStats,
    on_token: Callable[[int], None] | None = None,
) -> tuple[list[int], str]:
    """Tokens and finish reason ("stop" at an end-of-generation token, not included; "length" at limit).

    `on_token(n)` after each token kept (n tokens so far): live counts for a display."""
    row = prefill(engine, prompt)
    out: list[int] = []
    while True:
        tok = sampling.choose(row, temperature, seed, len(out))
        if engine.is_eog(tok):
            return out, "stop"
        out.append(tok)
        if on_token is not None:
            on_token(len(out))
        if len(out) >= limit:
            return out, "length"
        checkpoint()  # issue 10: the job's deadline, or an interrupted run
        row = engine.decode([tok], len(prompt) + len(out) - 1, [True])[0]
        stats.decodes += 1


@dataclass
class Scored:
    """Per scored position k (predicting output index k; k == n is the row after the last claimed token):
    the chosen token, its decision score, the claimed token's score (k < n), and for the row after the last
    token the best end-of-generation score."""

    choice: Any
    top: Any
    claimed: Any
    eog_best: float | None


def forward(
    engine: Any, prompt: list[int], tokens: list[int], need_next: bool, temperature: float, seed: int
) -> Scored:
    """One teacher-forced pass over prompt + tokens, in chunks of the engine's batch size, with logit rows
    only at the positions that predict a claimed token (and the one after the last, when a stop must follow)."""
    import numpy as np

    seq, first, n = prompt + tokens, len(prompt) - 1, len(tokens)
    last = first + n + (1 if need_next else 0)  # scored positions: [first, last)
    count = last - first
    choice = np.empty(count, dtype=np.int64)
    top = np.empty(count, dtype=np.float64)
    claimed = np.empty(n, dtype=np.float64)
    eog_ids = sorted(engine.eog_ids) if need_next else []
    eog_best = None
    engine.reset()
    k = 0
    for start in range(0, len(seq), engine.capacity):
        checkpoint()  # a verification is held to the same deadline as the generation it checks
        chunk = seq[start : start + engine.capacity]
        rows = engine.decode(chunk, start, [first <= start + i < last for i in range(len(chunk))])
        if temperature == 0.0:
            am = np.argmax(rows, axis=1)  # first maximum: lowest token id on ties, as in generation
            idx = np.arange(len(rows))
            choice[k : k + len(rows)] = am
            top[k : k + len(rows)] = rows[idx, am]
            for j in range(len(rows)):
                if k + j < n:
                    claimed[k + j] = rows[j, tokens[k + j]]
                elif eog_ids:
                    eog_best = float(rows[j, eog_ids].max())
            k += len(rows)
            continue
        for j in range(len(rows)):
            s = sampling.scores(rows[j], temperature, seed, k)
            c = int(np.argmax(s))
            choice[k], top[k] = c, s[c]
            if k < n:
                claimed[k] = s[tokens[k]]
            elif eog_ids:
                eog_best = float(s[eog_ids].max())
            k += 1
    return Scored(choice, top, claimed, eog_best)


def judge(
    engine: Any, tokens: list[int], scored: Scored, need_next: bool, strict: bool, tol: float, temperature: float
) -> ScoreResult:
    """Compare the claimed tokens with the choices: the first divergence, near-ties (tolerance mode only), and
    whether the claim stops where generation would."""
    n = len(tokens)
    rule = "greedy decoding" if temperature == 0.0 else f"sampling at temperature {temperature:g}"
    result = ScoreResult(ok=True, n_tokens=n)
    near: list[list[float]] = []
    margins = scored.top[:n] - scored.claimed
    for k in range(n):
        if engine.is_eog(tokens[k]):
            result.stop_consistent = False
            result.reason = result.reason or (
                f"claimed token {k} ({engine.show(tokens[k])!r}) ends generation; it can never be output"
            )
        expected, margin = int(scored.choice[k]), float(margins[k])
        if expected == tokens[k]:
            continue
        if not strict and margin <= tol:
            near.append([k, round(margin, 4)])
        elif result.first_divergence is None:
            result.first_divergence, result.margin = k, margin
            result.claimed_token, result.expected_token = tokens[k], expected
            result.claimed_piece, result.expected_piece = engine.show(tokens[k]), engine.show(expected)
    next_token = int(scored.choice[n]) if need_next else None
    if next_token is not None and not engine.is_eog(next_token):
        eog_best = scored.eog_best if scored.eog_best is not None else float("-inf")
        eog_margin = float(scored.top[n] - eog_best)
        if not strict and eog_margin <= tol:
            near.append([n, round(eog_margin, 4)])
        else:
            result.stop_consistent = False
            result.reason = result.reason or (
                f"generation would continue after the last claimed token with {engine.show(next_token)!r} "
                f"(end-of-generation trails by {eog_margin:.3f})"
            )
    if result.first_divergence is not None:
        result.reason = (
            f"claimed token {result.first_divergence} is {result.claimed_piece!r} ({result.claimed_token}) "
            f"but {rule} gives {result.expected_piece!r} ({result.expected_token}); margin {result.margin:.3f}"
        )
    result.ok = result.first_divergence is None and result.stop_consistent
    result.details = {
        "scored_positions": len(scored.choice),
        "exact": not near and result.ok,
        "strict": strict,
        "near_ties": near,
        "tolerance": tol,
        "max_margin": round(float(margins.max()), 4) if n else 0.0,
        "next_token": next_token,
        "next_piece": engine.show(next_token),
    }
    return result
