"""Determinism canary: does this machine's backend give the same bytes every time, whatever the runtime knobs?

A few fixed prompts run repeatedly under different thread counts and batch sizes; every output hash of a
prompt must be equal, and prefill scoring must accept what generation produced. The result goes into this
rig's record on the board (`canary`), so posters and verifiers can tell which workers reproduce.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # engines and the board load only when the command runs
    from wl_infer.backends import Backend, BackendConfig
    from wl_infer.codec import Job

PROMPTS = (
    "Question: What is the capital of France?\nAnswer:",
    "def fibonacci(n):",
    "The three primary colours are",
)
DEFAULT_MAX_TOKENS = 16
DEFAULT_THREADS = (1, 2)
DEFAULT_BATCHES = (8, 512)  # 8 splits every prompt into several decode calls; 512 takes it in one
ENGINE_KEYS = ("engine", "llama_cpp_python", "backend_version", "gpu", "platform")


@dataclass(frozen=True)
class Setting:
    """One combination of runtime knobs (None: the backend's own choice; it has no such knob)."""

    threads: int | None
    n_batch: int | None

    @property
    def label(self) -> str:
        parts = [f"threads={self.threads}" if self.threads else "", f"n_batch={self.n_batch}" if self.n_batch else ""]
        return ",".join(p for p in parts if p) or "default"

    def to_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "n_batch": self.n_batch, "label": self.label}


def settings_for(backend: str, threads: Sequence[int], batches: Sequence[int]) -> list[Setting]:
    """The knob combinations this backend honours (others would only repeat the same run)."""
    from wl_infer.backends import backend_class

    cls = backend_class(backend)
    t_values: Sequence[int | None] = threads if cls.uses_threads and threads else (None,)
    b_values: Sequence[int | None] = batches if "n_batch" in (cls.supported_options or ()) and batches else (None,)
    return [Setting(t, b) for t in t_values for b in b_values]


@dataclass
class Probe:
    """One prompt under one setting: the hash of every repeat and whether prefill accepted the tokens."""

    setting: Setting
    prompt_index: int
    hashes: list[str]
    n_tokens: int | None
    prefill_ok: bool | None = None  # None: the backend cannot score, or gave no token ids
    prefill_exact: bool | None = None
    prefill_reason: str = ""
    generate_s: float = 0.0
    prefill_s: float = 0.0

    @property
    def repeatable(self) -> bool:
        return len(set(self.hashes)) == 1


@dataclass
class CanaryReport:
    backend: str
    model: str
    model_digest: str | None
    repeats: int
    max_tokens: int
    prompts: list[str]
    settings: list[Setting]
    probes: list[Probe] = field(default_factory=list)
    platform: dict[str, Any] = field(default_factory=dict)
    at: str = ""
    elapsed_s: float = 0.0

    def reference(self, prompt_index: int) -> str:
        """The first hash seen for a prompt: every other run is compared with it."""
        return next(p.hashes[0] for p in self.probes if p.prompt_index == prompt_index)

    def prompt_stable(self, prompt_index: int) -> bool:
        return len({h for p in self.probes if p.prompt_index == prompt_index for h in p.hashes}) == 1

    @property
    def stable(self) -> bool:
        return all(self.prompt_stable(i) for i in range(len(self.prompts)))

    @property
    def prefill_agrees(self) -> bool | None:
        checked = [p.prefill_ok for p in self.probes if p.prefill_ok is not None]
        return all(checked) if checked else None

    def setting_rows(self) -> list[dict[str, Any]]:
        rows = []
        for s in self.settings:
            mine = [p for p in self.probes if p.setting == s]
            scored = [p.prefill_ok for p in mine if p.prefill_ok is not None]
            rows.append({
                **s.to_dict(),
                "repeatable": all(p.repeatable for p in mine),
                "agrees": all(p.hashes[0] == self.reference(p.prompt_index) for p in mine),
                "prefill_ok": all(scored) if scored else None,
                "prefill_exact": all(bool(p.prefill_exact) for p in mine) if scored else None,
                "generate_s": round(sum(p.generate_s for p in mine), 3),
                "prefill_s": round(sum(p.prefill_s for p in mine), 3),
            })
        return rows

    @property
    def diverging(self) -> list[str]:
        """Settings whose outputs differ from the reference, between repeats, or that prefill contradicts."""
        return [
            r["label"] for r in self.setting_rows()
            if not (r["repeatable"] and r["agrees"]) or r["prefill_ok"] is False
        ]

    def record(self) -> dict[str, Any]:
        """The `canary` field of this rig's record on the board (small: hashes, not outputs)."""
        from wl_infer import __version__

        return {
            "at": self.at,
            "backend": self.backend,
            "model": self.model,
            "model_digest": self.model_digest,
            "stable": self.stable,
            "prefill_agrees": self.prefill_agrees,
            "repeats": self.repeats,
            "max_tokens": self.max_tokens,
            "prompts": [
                {"prompt": p, "output_hash": self.reference(i), "stable": self.prompt_stable(i)}
                for i, p in enumerate(self.prompts)
            ],
            "settings": [s.to_dict() for s in self.settings],
            "diverging": self.diverging,
            "wl_infer_version": __version__,
            "platform": self.platform,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.record(),
            "setting_results": self.setting_rows(),
            "probes": [
                {
                    "setting": p.setting.label, "prompt_index": p.prompt_index, "hashes": p.hashes,
                    "tokens": p.n_tokens, "prefill_ok": p.prefill_ok, "prefill_exact": p.prefill_exact,
                    "prefill_reason": p.prefill_reason or None,
                }
                for p in self.probes
            ],
            "elapsed_s": round(self.elapsed_s, 3),
        }


def platform_summary(envelope: dict[str, Any]) -> dict[str, Any]:
    """Where the canary ran: the interpreter and OS, plus the engine and hardware fields of the envelope."""
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "os": platform.system(),
    }
    out.update({k: envelope[k] for k in ENGINE_KEYS if envelope.get(k) is not None})
    return out


def _probe(backend: Backend, job: Job, setting: Setting, index: int, repeats: int) -> Probe:
    from wl_infer.codec import output_hash

    hashes: list[str] = []
    started = time.perf_counter()
    first = None
    for _ in range(repeats):
        gen = backend.generate(job)
        hashes.append(output_hash(gen.output))
        first = first or gen
    assert first is not None
    probe = Probe(setting, index, hashes, len(first.tokens) if first.tokens is not None else None)
    probe.generate_s = time.perf_counter() - started
    if backend.can_score and first.tokens is not None:
        started = time.perf_counter()
        score = backend.score(job, first.tokens, first.output)
        probe.prefill_s = time.perf_counter() - started
        probe.prefill_ok = score.ok
        probe.prefill_exact = bool(score.details.get("exact", score.ok))
        probe.prefill_reason = score.reason
    return probe


def run_canary(
    base: BackendConfig,
    backend: str,
    model: str,
    *,
    repeats: int = 3,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    threads: Sequence[int] = DEFAULT_THREADS,
    batches: Sequence[int] = DEFAULT_BATCHES,
    prompts: Sequence[str] = PROMPTS,
    on_probe: Callable[[Probe], None] | None = None,
) -> CanaryReport:
    """Run every prompt `repeats` times under every setting; one backend instance per thread count."""
    from board.api import fmt_time, utcnow
    from wl_infer.backends import get_backend
    from wl_infer.codec import Job

    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    started = time.perf_counter()
    settings = settings_for(backend, threads, batches)
    report = CanaryReport(backend, model, None, repeats, max_tokens, list(prompts), settings, at=fmt_time(utcnow()))
    by_threads: dict[int | None, list[Setting]] = {}
    for s in settings:
        by_threads.setdefault(s.threads, []).append(s)
    for t, group in by_threads.items():
        engine = get_backend(backend, dataclasses.replace(base, threads=t))
        try:
            if report.model_digest is None:
                report.model_digest = engine.resolve(model).digest
            for s in group:
                options = {"n_batch": s.n_batch} if s.n_batch else {}
                for i, prompt in enumerate(prompts):
                    job = Job(prompt=prompt, model=model, max_tokens=max_tokens, backend=backend,
                              model_digest=report.model_digest, options=options)
                    if not report.platform:
                        report.platform = platform_summary(engine.envelope(job))
                    probe = _probe(engine, job, s, i, repeats)
                    report.probes.append(probe)
                    if on_probe is not None:
                        on_probe(probe)
        finally:
            engine.close()
    report.elapsed_s = time.perf_counter() - started
    return report
