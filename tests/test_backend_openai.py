"""The `openai` backend.

No OpenAI-compatible server can be installed here; these tests run the backend against a small HTTP server
on 127.0.0.1 that speaks the OpenAI-compatible API (`/v1/models`, `/v1/completions`; tests/fake_servers.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:
    from tests.fake_servers import FakeOpenAI, fake_completion, free_port
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from fake_servers import FakeOpenAI, fake_completion, free_port  # type: ignore[no-redef]
from wl_infer.backends import (
    BackendConfig,
    BackendError,
    BackendUnavailable,
    DigestMismatch,
    ModelNotFound,
    get_backend,
)
from wl_infer.backends.openai import OpenAIBackend, normalise_base
from wl_infer.codec import Job

MODEL = "Qwen/Qwen3-0.6B"
PINNED = "sha256:" + "ab" * 32


@pytest.fixture(autouse=True)
def _no_ambient_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WL_OPENAI_BASE_URL", "WL_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models={MODEL: {}, "pinned-model": {"digest": PINNED}}) as srv:
        yield srv


def backend_for(url: str, timeout: float = 5.0, key: str | None = None) -> OpenAIBackend:
    backend = get_backend("openai", BackendConfig(openai_base_url=url, timeout=timeout, openai_api_key=key))
    assert isinstance(backend, OpenAIBackend)
    return backend


@pytest.fixture
def backend(server: FakeOpenAI) -> Iterator[OpenAIBackend]:
    b = backend_for(server.url)
    yield b
    b.close()


def test_generate_sends_deterministic_request(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    gen = backend.generate(Job(prompt="what is 1+1", model=MODEL, seed=9, max_tokens=10, backend="openai"))
    sent = server.state.last("/v1/completions").body
    assert sent == {
        "model": MODEL,
        "prompt": "what is 1+1",
        "temperature": 0,
        "seed": 9,
        "max_tokens": 10,
        "stream": False,
    }
    text, reason, _ = fake_completion("what is 1+1", 9, 10)
    assert (gen.output, gen.finish_reason) == (text, reason)
    assert gen.tokens is None
    assert gen.prompt_tokens == len("what is 1+1")
    assert gen.completion_tokens == gen.n_tokens == len(text)  # the server's usage count, without token ids


def test_max_tokens_omitted_when_zero(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    gen = backend.generate(Job(prompt="hi", model=MODEL, seed=1))
    assert "max_tokens" not in server.state.last("/v1/completions").body
    assert gen.finish_reason == "stop"


def test_deterministic_per_seed(backend: OpenAIBackend) -> None:
    a = backend.generate(Job(prompt="p", model=MODEL, seed=1)).output
    assert backend.generate(Job(prompt="p", model=MODEL, seed=1)).output == a
    assert backend.generate(Job(prompt="p", model=MODEL, seed=2)).output != a


def test_sampling_options_and_token_ids(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    job = Job(
        prompt="p",
        model=MODEL,
        seed=3,
        options={"top_k": 1, "temperature": 1.0, "return_token_ids": True, "n_ctx": 99},
    )
    gen = backend.generate(job)
    sent = server.state.last("/v1/completions").body
    assert sent["temperature"] == 0 and sent["top_k"] == 1 and sent["return_token_ids"] is True
    assert "n_ctx" not in sent
    assert gen.tokens == [ord(c) for c in gen.output]
    assert gen.envelope["sampling"] == {"temperature": 0, "seed": 3, "return_token_ids": True, "top_k": 1}


def test_envelope(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    server.state.version = "0.11.0"
    env = backend.generate(Job(prompt="p", model=MODEL, seed=42, max_tokens=5)).envelope
    assert env == {
        "backend": "openai",
        "backend_version": "0.11.0",
        "host": server.url,
        "model": MODEL,
        "model_digest": None,
        "model_meta": None,
        "sampling": {"temperature": 0, "seed": 42, "max_tokens": 5},
        "system_fingerprint": "fp_fake",
        "wl_infer_version": env["wl_infer_version"],
    }
    assert env["wl_infer_version"]


def test_no_version_endpoint(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    server.state.missing_paths = ("/version",)
    assert backend.generate(Job(prompt="p", model=MODEL)).envelope["backend_version"] is None


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_base_url_with_or_without_v1(server: FakeOpenAI, suffix: str) -> None:
    backend = backend_for(server.url + suffix)
    assert backend.base_url == server.url
    assert backend.generate(Job(prompt="p", model=MODEL)).output
    assert server.state.last("/v1/completions")


def test_normalise_base() -> None:
    assert normalise_base("https://api.example.com/v1/") == "https://api.example.com"
    assert normalise_base("http://h:8000/proxy/v1") == "http://h:8000/proxy"


def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch, server: FakeOpenAI) -> None:
    monkeypatch.setenv("WL_OPENAI_BASE_URL", server.url + "/v1")
    backend = OpenAIBackend()
    assert backend.base_url == server.url
    assert backend.resolve(MODEL).name == MODEL


def test_no_base_url_configured() -> None:
    with pytest.raises(BackendUnavailable, match="WL_OPENAI_BASE_URL"):
        OpenAIBackend().generate(Job(prompt="p", model=MODEL))


def test_bearer_key(server: FakeOpenAI) -> None:
    server.state.api_key = "s3cret"
    with pytest.raises(BackendError) as err:
        backend_for(server.url).generate(Job(prompt="p", model=MODEL))
    assert "401" in str(err.value) and "WL_OPENAI_API_KEY" in str(err.value)
    gen = backend_for(server.url, key="s3cret").generate(Job(prompt="p", model=MODEL))
    assert server.state.last("/v1/completions").headers["authorization"] == "Bearer s3cret"
    assert "s3cret" not in str(gen.envelope)


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch, server: FakeOpenAI) -> None:
    server.state.api_key = "k"
    monkeypatch.setenv("WL_OPENAI_API_KEY", "k")
    assert backend_for(server.url).generate(Job(prompt="p", model=MODEL)).output


def test_digest_reported_by_server_is_pinned(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    assert backend.resolve("pinned-model").digest == PINNED
    assert (
        backend.generate(Job(prompt="p", model="pinned-model", model_digest=PINNED)).envelope["model_digest"]
        == PINNED
    )
    with pytest.raises(DigestMismatch):
        backend.generate(Job(prompt="p", model="pinned-model", model_digest="sha256:" + "cd" * 32))


def test_pinned_digest_refused_when_server_reports_none(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    with pytest.raises(DigestMismatch) as err:
        backend.generate(Job(prompt="p", model=MODEL, model_digest=PINNED))
    assert err.value.actual is None
    assert "reports no weights digest" in str(err.value) and "cannot be checked" in str(err.value)
    assert not [r for r in server.state.requests if r.path == "/v1/completions"]


def test_the_servers_own_model_record_binds_the_weights(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    """`/v1/models/{id}` is asked first; a digest in llama.cpp's `meta` counts as the server's report."""
    server.state.models["meta-model"] = {"meta": {"sha256": "CD" * 32, "n_params": 268098176, "size": 253}}
    assert backend.resolve("meta-model").digest == "sha256:" + "cd" * 32
    assert any(r.path == "/v1/models/meta-model" for r in server.state.requests)
    with pytest.raises(DigestMismatch, match="job pins " + PINNED):  # a mismatch refuses before generating
        backend.generate(Job(prompt="p", model="meta-model", model_digest=PINNED))
    assert not [r for r in server.state.requests if r.path == "/v1/completions"]
    ok = backend.generate(Job(prompt="p", model="meta-model", model_digest="sha256:" + "cd" * 32))
    assert ok.envelope["model_digest"] == "sha256:" + "cd" * 32 and ok.envelope["model_meta"] is None
    server.state.describe_models = False  # a server with only the list: the same digest from its entry
    other = backend_for(server.url)
    assert other.resolve("meta-model").digest == "sha256:" + "cd" * 32


def test_weights_facts_without_a_digest_are_recorded_not_trusted(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    server.state.models["llama-server"] = {"meta": {"n_params": 268098176, "n_vocab": 262144, "size": "big",
                                                    "path": "/home/me/secret/model.gguf"}}
    env = backend.generate(Job(prompt="p", model="llama-server")).envelope
    assert env["model_digest"] is None
    assert env["model_meta"] == {"n_params": 268098176, "n_vocab": 262144}  # numbers only; no paths or text


def test_sha256_field_spellings(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    server.state.models["m2"] = {"sha256": "EF" * 32}
    assert backend.resolve("m2").digest == "sha256:" + "ef" * 32


def test_unknown_model_listed(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    with pytest.raises(ModelNotFound) as err:
        backend.generate(Job(prompt="p", model="nope"))
    assert MODEL in str(err.value)  # says what the server does serve


def test_server_without_models_endpoint(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    server.state.missing_paths = ("/v1/models",)
    assert backend.resolve("anything").digest is None
    assert backend.list_models() == []
    assert backend.generate(Job(prompt="p", model=MODEL)).output
    with pytest.raises(ModelNotFound, match="does not exist"):
        backend.generate(Job(prompt="p", model="nope"))


def test_server_error_is_one_line(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    server.state.fail_status = 500
    server.state.fail_paths = ("/v1/completions",)
    server.state.fail_message = "CUDA out of memory.\nTried to allocate 2 GiB"
    with pytest.raises(BackendError) as err:
        backend.generate(Job(prompt="p", model=MODEL))
    msg = str(err.value)
    assert type(err.value) is BackendError
    assert "\n" not in msg and "500" in msg and "CUDA out of memory" in msg


def test_html_error_body(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    server.state.fail_status = 502
    server.state.fail_message = "<html>" + "x" * 1000 + "</html>"
    with pytest.raises(BackendError) as err:
        backend.resolve(MODEL)
    assert len(str(err.value)) < 300


def test_unreachable() -> None:
    backend = backend_for(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    with pytest.raises(BackendUnavailable) as err:
        backend.generate(Job(prompt="p", model=MODEL))
    assert "cannot reach the OpenAI-compatible server at http://127.0.0.1:" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_server_stopped(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    backend.resolve(MODEL)
    server.stop()
    with pytest.raises(BackendUnavailable):
        backend.resolve(MODEL)


def test_timeout(server: FakeOpenAI) -> None:
    backend = backend_for(server.url, timeout=0.3)
    backend.resolve(MODEL)
    server.state.slow_s = 1.5
    with pytest.raises(BackendError, match=r"timed out after 0\.3 s"):
        backend.generate(Job(prompt="p", model=MODEL))


def test_reply_without_choices(server: FakeOpenAI, backend: OpenAIBackend) -> None:
    server.state.fail_status = 200
    server.state.fail_paths = ("/v1/completions",)
    with pytest.raises(BackendError, match="no choices"):
        backend.generate(Job(prompt="p", model=MODEL))


def test_capabilities() -> None:
    assert OpenAIBackend.name == "openai"
    assert OpenAIBackend.can_score is False
