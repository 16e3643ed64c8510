"""Shared test setup: every test gets its own WL_HOME; the embedded model is assembled once per machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Assembling the 250 MB embedded model once per machine keeps the suite fast; each test still has its own
# home, registry and board. The cache is keyed by the model's sha256, so it cannot serve wrong weights.
os.environ.setdefault("WL_MODEL_CACHE", str(Path.home() / ".cache" / "wl-infer-test-models"))


@pytest.fixture(autouse=True)
def wl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "wl-home"
    monkeypatch.setenv("WL_HOME", str(home))
    for var in ("WL_RPC_URL", "WL_CONTRACT", "WL_OPENAI_BASE_URL", "OLLAMA_HOST"):
        monkeypatch.delenv(var, raising=False)
    return home
