"""A backend that lives outside wl-infer: it registers through the `wl_infer.backends` entry point only.

Its "model" is a rule: the output is the prompt's words, reversed, repeated `seed % 3 + 1` times and cut to
`max_tokens` words. Deterministic, so a verifier reproduces it; the digest names the rule.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from wl_infer.backends.base import Backend, Generation, ModelInfo, ModelNotFound
from wl_infer.codec import Job

MODELS = ("echo-1",)


class EchoBackend(Backend):
    name = "echo"
    reports_digest = True
    supported_options = frozenset()
    default_model = "echo-1"

    def resolve(self, model: str) -> ModelInfo:
        if model not in MODELS:
            raise ModelNotFound(self.name, model, f"this backend knows {', '.join(MODELS)}")
        return ModelInfo(name=model, digest="sha256:" + hashlib.sha256(model.encode()).hexdigest())

    def list_models(self) -> list[ModelInfo]:
        return [self.resolve(m) for m in MODELS]

    def envelope(self, job: Job) -> dict[str, Any]:
        return {"backend": self.name, "model": job.model, "model_digest": self.resolve(job.model).digest,
                "rule": "reverse-words-v1"}

    def generate(self, job: Job) -> Generation:
        started = time.perf_counter()
        self.check_digest(job)
        words = list(reversed(job.prompt.split())) * (job.seed % 3 + 1)
        if job.max_tokens:
            words = words[: job.max_tokens]
        return Generation(output=" ".join(words), tokens=None, envelope=self.envelope(job),
                          elapsed_s=time.perf_counter() - started)
