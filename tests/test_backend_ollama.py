"""The `ollama` backend.

The Ollama server cannot be installed here; these tests run the backend against a small HTTP server on
127.0.0.1 that speaks Ollama's API (tests/fake_servers.py), through the real official `ollama` client.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

try:
    from tests.fake_servers import FakeOllama, fake_completion, free_port, ollama_digest
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from fake_servers import FakeOllama, fake_completion, free_port, ollama_digest  # type: ignore[no-redef]
from wl_infer.backends import (
    BackendConfig,
    BackendError,
    BackendUnavailable,
    DigestMismatch,
    ModelNotFound,
    get_backend,
)
from wl_infer.backends.base import envelope_differences
from wl_infer.backends.ollama import OllamaBackend, base_url, canonical_name
from wl_infer.codec import Job

MODEL = "llama3.2:1b"
DIGEST = "sha256:" + ollama_digest(MODEL)


@pytest.fixture
def server() -> Iterator[FakeOllama]:
    with FakeOllama(models={MODEL: {}, "gemma3:latest": {}}) as srv:
        yield srv


def backend_for(url: str, timeout: float = 5.0) -> OllamaBackend:
    backend = get_backend("ollama", BackendConfig(ollama_host=url, timeout=timeout))
    assert isinstance(backend, OllamaBackend)
    return backend


@pytest.fixture
def backend(server: FakeOllama) -> Iterator[OllamaBackend]:
    b = backend_for(server.url)
    yield b
    b.close()


def test_generate_sends_deterministic_request(server: FakeOllama, backend: OllamaBackend) -> None:
    job = Job(prompt="what is 1+1", model=MODEL, seed=7, max_tokens=12)
    gen = backend.generate(job)
    sent = server.state.last("/api/generate").body
    assert sent["model"] == MODEL
    assert sent["prompt"] == "what is 1+1"
    assert sent["stream"] is False
    assert sent["raw"] is True
    assert sent["options"] == {"temperature": 0, "seed": 7, "num_predict": 12}
    text, reason, _ = fake_completion("what is 1+1", 7, 12)
    assert gen.output == text
    assert gen.finish_reason == reason == "length"
    assert gen.tokens is None  # Ollama does not report sampled ids (module docstring)
    assert gen.prompt_tokens == len("what is 1+1")


def test_num_predict_only_when_max_tokens_positive(server: FakeOllama, backend: OllamaBackend) -> None:
    gen = backend.generate(Job(prompt="hi", model=MODEL, seed=3))
    assert server.state.last("/api/generate").body["options"] == {"temperature": 0, "seed": 3}
    assert gen.finish_reason == "stop"


def test_same_job_same_output_other_seed_other_output(backend: OllamaBackend) -> None:
    a = backend.generate(Job(prompt="p", model=MODEL, seed=1)).output
    b = backend.generate(Job(prompt="p", model=MODEL, seed=1)).output
    c = backend.generate(Job(prompt="p", model=MODEL, seed=2)).output
    assert a == b != c


def test_job_options_pass_through_but_never_override_fixed(
    server: FakeOllama, backend: OllamaBackend
) -> None:
    job = Job(
        prompt="p", model=MODEL, seed=5, max_tokens=4,
        options={"num_ctx": 2048, "temperature": 0.9, "seed": 1, "chat_template": True},
    )  # fmt: skip
    gen = backend.generate(job)
    sent = server.state.last("/api/generate").body["options"]
    assert sent == {"temperature": 0, "seed": 5, "num_predict": 4, "num_ctx": 2048}
    assert gen.envelope["options"] == sent


def test_envelope(server: FakeOllama, backend: OllamaBackend) -> None:
    server.state.version = "0.12.3"
    env = backend.generate(Job(prompt="p", model=MODEL, seed=42)).envelope
    assert env["backend"] == "ollama"
    assert env["backend_version"] == "0.12.3"
    assert env["host"] == server.url
    assert env["model"] == MODEL
    assert env["model_digest"] == DIGEST
    assert env["options"] == {"temperature": 0, "seed": 42}
    assert env["raw"] is True and env["stream"] is False
    assert "/" in env["client_platform"]
    assert env["wl_infer_version"]
    assert backend.envelope(Job(prompt="p", model=MODEL, seed=42)) == env


def test_envelope_without_version_endpoint(server: FakeOllama, backend: OllamaBackend) -> None:
    server.state.missing_paths = ("/api/version",)
    assert backend.generate(Job(prompt="p", model=MODEL)).envelope["backend_version"] is None


def test_digest_from_tags_and_implicit_latest(backend: OllamaBackend) -> None:
    assert backend.resolve(MODEL).digest == DIGEST
    info = backend.resolve("gemma3")  # listed as gemma3:latest
    assert info.digest == "sha256:" + ollama_digest("gemma3:latest")
    assert info.name == "gemma3"
    with pytest.raises(ModelNotFound):
        backend.resolve("llama3.2")  # only :1b is there; no prefix matching
    names = {m.name for m in backend.list_models()}
    assert names == {MODEL, "gemma3:latest"}


def test_digest_prefixed_forms_are_normalised(server: FakeOllama, backend: OllamaBackend) -> None:
    server.state.models["odd:1"] = {"digest": "sha256:" + "AB" * 32}
    assert backend.resolve("odd:1").digest == "sha256:" + "ab" * 32


def test_pinned_digest_checked_first(server: FakeOllama, backend: OllamaBackend) -> None:
    assert backend.generate(Job(prompt="p", model=MODEL, model_digest=DIGEST)).output
    server.state.requests.clear()
    with pytest.raises(DigestMismatch) as err:
        backend.generate(Job(prompt="p", model=MODEL, model_digest="sha256:" + "0" * 64))
    assert err.value.actual == DIGEST
    assert [r.path for r in server.state.requests if r.path == "/api/generate"] == []


def test_unknown_model(server: FakeOllama, backend: OllamaBackend) -> None:
    with pytest.raises(ModelNotFound) as err:
        backend.generate(Job(prompt="p", model="nope:7b"))
    assert "ollama pull nope:7b" in str(err.value)
    assert str(err.value).startswith("ollama: ")


def test_model_removed_between_tags_and_generate(server: FakeOllama, backend: OllamaBackend) -> None:
    # /api/tags still lists it, but /api/generate answers 404: the same ModelNotFound with the pull hint
    server.state.fail_status = 404
    server.state.fail_paths = ("/api/generate",)
    server.state.fail_message = f'model "{MODEL}" not found, try pulling it first'
    with pytest.raises(ModelNotFound, match=f"ollama pull {MODEL}"):
        backend.generate(Job(prompt="p", model=MODEL))


def test_server_error_is_one_line(server: FakeOllama, backend: OllamaBackend) -> None:
    server.state.fail_status = 500
    server.state.fail_paths = ("/api/generate",)
    server.state.fail_message = "llama runner process has terminated:\nexit status 2"
    with pytest.raises(BackendError) as err:
        backend.generate(Job(prompt="p", model=MODEL))
    msg = str(err.value)
    assert "\n" not in msg
    assert "500" in msg and "llama runner process has terminated" in msg
    assert type(err.value) is BackendError


def test_unreachable_server() -> None:
    backend = backend_for(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    with pytest.raises(BackendUnavailable) as err:
        backend.generate(Job(prompt="p", model=MODEL))
    assert str(err.value) == (f"ollama: cannot reach Ollama at {backend.host} (is `ollama serve` running?)")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_server_stopped_mid_session(server: FakeOllama, backend: OllamaBackend) -> None:
    backend.resolve(MODEL)
    server.stop()
    with pytest.raises(BackendUnavailable, match="cannot reach Ollama"):
        backend.resolve(MODEL)


def test_timeout(server: FakeOllama) -> None:
    backend = backend_for(server.url, timeout=0.3)
    backend.resolve(MODEL)
    server.state.slow_s = 1.5
    with pytest.raises(BackendError) as err:
        backend.generate(Job(prompt="p", model=MODEL))
    assert "timed out after 0.3 s" in str(err.value)
    assert not isinstance(err.value, BackendUnavailable)


def test_host_from_environment(monkeypatch: pytest.MonkeyPatch, server: FakeOllama) -> None:
    monkeypatch.setenv("OLLAMA_HOST", server.url.removeprefix("http://"))
    backend = OllamaBackend()
    assert backend.host == server.url
    assert backend.resolve(MODEL).digest == DIGEST


def test_default_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert OllamaBackend().host == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("0.0.0.0:11434", "http://0.0.0.0:11434"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com/ollama/", "https://example.com:443/ollama"),
        ("[::1]", "http://[::1]:11434"),
    ],
)
def test_base_url(raw: str, url: str) -> None:
    assert base_url(raw) == url


def test_canonical_name() -> None:
    assert canonical_name("llama3.2") == "llama3.2:latest"
    assert canonical_name("llama3.2:1b") == "llama3.2:1b"
    assert canonical_name("myreg:5000/team/model") == "myreg:5000/team/model:latest"


def test_capabilities() -> None:
    assert OllamaBackend.name == "ollama"
    assert OllamaBackend.reports_digest is True
    assert OllamaBackend.can_score is False


def test_import_is_cheap() -> None:
    code = (
        "import sys, wl_infer.backends.ollama, wl_infer.backends.openai, wl_infer.backends.vllm;"
        "heavy = [m for m in ('ollama', 'httpx', 'vllm', 'torch') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_envelopes_of_two_clients_agree(server: FakeOllama) -> None:
    # a worker and a verifier reach the same server from different machines: no deciding field differs
    job = Job(prompt="p", model=MODEL)
    a = backend_for(server.url).envelope(job)
    b = dict(a, host="http://other:11434", client_platform="darwin/arm64")
    assert envelope_differences(a, b) == []
    assert envelope_differences(a, dict(b, backend_version="0.0.1")) == ["backend_version"]
