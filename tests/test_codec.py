"""The job/evidence codec: what the Go anchor writes must decode, and what we write must round-trip.

Vectors come from SPEC §10 (fixtures/hash_vectors.json, fixtures/anchor_job.json,
fixtures/anchor_evidence.json).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wl_infer.codec import CodecError, Evidence, Job, bytes_hash, output_hash
from wl_infer.plugins import backend_names

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HASH_VECTORS = json.loads((FIXTURES / "hash_vectors.json").read_text(encoding="utf-8"))["vectors"]
ANCHOR_JOB = (FIXTURES / "anchor_job.json").read_text(encoding="utf-8").strip()
ANCHOR_EVIDENCE = (FIXTURES / "anchor_evidence.json").read_text(encoding="utf-8").strip()
ANSWER_HASH = "sha256:9f257ef08ce4a87bfbe460ce5a51e7d17ec4856ad13ebf5e44979318db98a8fe"
DIGEST = "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
INT64 = (-(2**63), 2**63 - 1)


# -- anchor compatibility --------------------------------------------------------------------------------


def test_anchor_fixtures_are_the_spec_strings() -> None:
    assert ANCHOR_JOB == '{"prompt":"what is 1+1","model":"llama3.2:1b","seed":42,"max_tokens":100}'
    assert ANCHOR_EVIDENCE == (
        '{"output":"The answer is 2.","output_hash":"' + ANSWER_HASH + '","model":"llama3.2:1b","seed":42}'
    )


def test_anchor_job_decodes() -> None:
    job = Job.decode(ANCHOR_JOB)
    assert job == Job(prompt="what is 1+1", model="llama3.2:1b", seed=42, max_tokens=100)
    assert job.backend == "ollama"
    assert job.model_digest is None and job.options == {}


def test_anchor_job_keys_keep_their_order() -> None:
    encoded = Job.decode(ANCHOR_JOB).encode()
    assert encoded.startswith(ANCHOR_JOB[:-1] + ",")
    assert list(orjson.loads(encoded))[:4] == ["prompt", "model", "seed", "max_tokens"]


def test_anchor_evidence_decodes() -> None:
    ev = Evidence.decode(ANCHOR_EVIDENCE)
    assert (ev.output, ev.output_hash, ev.model, ev.seed) == (
        "The answer is 2.",
        ANSWER_HASH,
        "llama3.2:1b",
        42,
    )
    assert ev.backend is None and ev.envelope is None and ev.tokens is None and ev.signature is None
    assert output_hash(ev.output or "") == ev.output_hash
    assert ev.encode() == ANCHOR_EVIDENCE


@pytest.mark.parametrize("vector", HASH_VECTORS, ids=lambda v: repr(v["output"]))
def test_hash_vectors(vector: dict[str, str]) -> None:
    assert output_hash(vector["output"]) == vector["output_hash"]
    assert bytes_hash(vector["output"].encode("utf-8")) == vector["output_hash"]


def test_hash_vectors_cover_the_spec() -> None:
    assert [v["output"] for v in HASH_VECTORS] == [
        "The answer is 2.",
        "",
        "different output",
        "héllo wörld\n",
    ]


# -- jobs ------------------------------------------------------------------------------------------------


def test_job_round_trip_full() -> None:
    job = Job(
        prompt="what is 1+1",
        model="gemma3:270m",
        seed=7,
        max_tokens=64,
        backend="llama-cpp",
        model_digest=DIGEST,
        options={"chat_template": True, "n_ctx": 2048},
    )
    text = job.encode()
    assert list(orjson.loads(text)) == [
        "prompt", "model", "seed", "max_tokens", "backend", "model_digest", "options",
    ]  # fmt: skip
    assert Job.decode(text) == job
    assert Job.decode(text.encode()) == job


def test_job_max_tokens_omitted_when_zero() -> None:
    data = orjson.loads(Job(prompt="p", model="m", max_tokens=0).encode())
    assert "max_tokens" not in data
    assert data == {"prompt": "p", "model": "m", "seed": 42, "backend": "ollama", "options": {}}
    assert Job.decode(orjson.dumps(data)).max_tokens == 0


def test_job_defaults() -> None:
    """As in Go: a description written without a seed decodes as seed 0 (the command line's default is 42)."""
    job = Job.decode('{"prompt":"p","model":"m"}')
    assert (job.seed, job.max_tokens, job.backend, job.model_digest, job.options) == (
        0,
        0,
        "ollama",
        None,
        {},
    )
    assert Job.decode('{"prompt":"p","model":"m","seed":null,"backend":null,"options":null}').seed == 0


def test_job_keys_match_in_any_letter_case_as_in_go() -> None:
    job = Job.decode('{"Prompt":"p","MODEL":"m","Seed":7,"Max_Tokens":5,"extra":1}')
    assert (job.prompt, job.model, job.seed, job.max_tokens) == ("p", "m", 7, 5)
    assert Job.decode('{"prompt":"exact","PROMPT":"later wins","model":"m"}').prompt == "later wins"


def test_job_negative_max_tokens_means_the_model_default() -> None:
    assert Job.decode('{"prompt":"p","model":"m","max_tokens":-1}').max_tokens == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"model":"m"}', "inference job: prompt is required"),
        ('{"prompt":"","model":"m"}', "inference job: prompt is required"),
        ('{"prompt":5,"model":"m"}', "inference job: prompt is required"),
        ('{"prompt":"p"}', "inference job: model is required"),
        ('{"prompt":"p","model":""}', "inference job: model is required"),
        ('{"prompt":"p","model":"m","seed":"42"}', "inference job: seed must be an integer"),
        ('{"prompt":"p","model":"m","seed":true}', "inference job: seed must be an integer"),
        ('{"prompt":"p","model":"m","max_tokens":1.5}', "inference job: max_tokens must be an integer"),
        ('{"prompt":"p","model":"m","backend":"gpt"}', "inference job: unknown backend 'gpt'"),
        (
            '{"prompt":"p","model":"m","model_digest":"abc"}',
            "inference job: model_digest must be sha256:<64 hex>",
        ),
        ('{"prompt":"p","model":"m","options":[1]}', "inference job: options must be an object"),
        ("not json", "inference job: description is not valid JSON"),
        ("Fix the login page", "inference job: description is not valid JSON"),
        ("", "inference job: description is not valid JSON"),
        ('["prompt"]', "inference job: expected a JSON object"),
        ('"just a string"', "inference job: expected a JSON object"),
    ],
)
def test_job_refused(text: str, message: str) -> None:
    with pytest.raises(CodecError) as err:
        Job.decode(text)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_job_constructor_validates() -> None:
    with pytest.raises(CodecError, match="inference job: prompt is required"):
        Job(prompt="", model="m")
    with pytest.raises(CodecError, match="inference job: model is required"):
        Job(prompt="p", model="")


def test_all_registered_backends_accepted() -> None:
    assert {"ollama", "llama-cpp", "vllm", "openai"} <= set(backend_names())  # the built-ins, via entry points
    for backend in backend_names():
        assert Job.decode(Job(prompt="p", model="m", backend=backend).encode()).backend == backend


def test_job_seed_out_of_int64_refused() -> None:
    with pytest.raises(CodecError, match="seed"):
        Job(prompt="p", model="m", seed=2**64)
    with pytest.raises(CodecError, match="max_tokens"):
        Job(prompt="p", model="m", max_tokens=2**63)


def test_job_prompt_that_is_not_utf8_refused() -> None:
    # click hands undecodable argv bytes over as lone surrogates; such a prompt has no UTF-8 encoding
    with pytest.raises(CodecError, match="prompt is not valid UTF-8"):
        Job(prompt="caf\udce9", model="m")


# -- evidence --------------------------------------------------------------------------------------------


def evidence(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "output": "The answer is 2.",
        "output_hash": ANSWER_HASH,
        "model": "m",
        "seed": 42,
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def test_evidence_round_trip_full() -> None:
    ev = Evidence(
        output="The answer is 2.",
        output_hash=ANSWER_HASH,
        model="gemma3:270m",
        seed=42,
        backend="llama-cpp",
        envelope={"backend": "llama-cpp", "n_threads": 4, "platform": {"arch": "x86_64"}},
        tokens=[1, 2, 3],
        worker="alice",
        signature="0x" + "ab" * 65,
    )
    text = ev.encode()
    keys = list(orjson.loads(text))
    assert keys[:4] == ["output", "output_hash", "model", "seed"]
    assert keys[-1] == "signature"
    assert Evidence.decode(text) == ev
    assert "signature" not in ev.unsigned_dict()


def test_empty_output_is_valid() -> None:
    ev = Evidence.decode(orjson.dumps(evidence(output="", output_hash=output_hash(""))))
    assert ev.output == ""
    assert '"output":""' in ev.encode()


def test_output_blob_instead_of_output() -> None:
    blob = "sha256:" + "cd" * 32
    data = evidence(output=None, output_blob=blob, output_hash=blob)
    ev = Evidence.decode(orjson.dumps(data))
    assert ev.output is None and ev.output_blob == blob
    assert "output" not in orjson.loads(ev.encode())
    assert Evidence.decode(ev.encode()) == ev


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (evidence(output=None), "inference result: output is required"),
        (evidence(output=5), "inference result: output must be a string"),
        (evidence(output_hash=None), "inference result: output_hash is required"),
        (evidence(output_hash=""), "inference result: output_hash is required"),
        (evidence(output_hash="sha256:" + "AB" * 32), "inference result: output_hash must be sha256:"),
        (evidence(output_hash="9f257ef0"), "inference result: output_hash must be sha256:"),
        (evidence(model=None), "inference result: model is required"),
        (evidence(model=""), "inference result: model is required"),
        (evidence(tokens=[1, -2]), "inference result: tokens must be a list of non-negative integers"),
        (evidence(tokens=[True]), "inference result: tokens must be a list of non-negative integers"),
        (evidence(tokens="1 2"), "inference result: tokens must be a list of non-negative integers"),
        (evidence(envelope=[]), "inference result: envelope must be an object"),
        (evidence(worker=3), "inference result: worker must be a string"),
        (evidence(output=None, output_blob="blob"), "inference result: output_blob must be sha256:<64 hex>"),
        (evidence(seed="x"), "inference result: seed must be an integer"),
    ],
)
def test_evidence_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(CodecError) as err:
        Evidence.decode(orjson.dumps(data))
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("text", ["not json", "", "[1,2]", "null"])
def test_evidence_not_an_object(text: str) -> None:
    with pytest.raises(CodecError, match="^inference result: "):
        Evidence.decode(text)


def test_unknown_evidence_keys_preserved() -> None:
    data = evidence(anchor={"tx": "0xabc", "chain_id": 31337}, note="from the future", signature="0x01")
    ev = Evidence.decode(orjson.dumps(data))
    assert ev.extra == {"anchor": {"tx": "0xabc", "chain_id": 31337}, "note": "from the future"}
    again = orjson.loads(ev.encode())
    assert again == data
    assert list(again)[-1] == "signature"
    unsigned = ev.unsigned_dict()
    assert "signature" not in unsigned and "anchor" not in unsigned and unsigned["note"] == "from the future"


def test_evidence_hash_is_not_checked_by_the_codec() -> None:
    # a wrong hash decodes (verify reports it as INVALID); the codec only checks the shape
    ev = Evidence.decode(orjson.dumps(evidence(output="tampered")))
    assert output_hash(ev.output or "") != ev.output_hash


# -- output_hash never normalises ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variants",
    [
        ("a", "a\n", "a ", " a", "a\r\n", "A"),
        ("é", "e\u0301"),  # NFC vs NFD: same glyph, different bytes
        ("x\u00a0y", "x y"),
        ("", " ", "\n", "\x00"),
    ],
)
def test_output_hash_does_not_normalise(variants: tuple[str, ...]) -> None:
    hashes = {output_hash(v) for v in variants}
    assert len(hashes) == len(variants)


# -- properties ------------------------------------------------------------------------------------------

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
nonempty = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=80)
int64 = st.integers(min_value=INT64[0], max_value=INT64[1])
hexdigest = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h)
json_scalar = st.one_of(
    st.none(), st.booleans(), int64, st.floats(allow_nan=False, allow_infinity=False), text
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=10,
)

jobs = st.builds(
    Job,
    prompt=nonempty,
    model=nonempty,
    seed=int64,
    max_tokens=st.integers(min_value=0, max_value=INT64[1]),
    backend=st.sampled_from(backend_names()),
    model_digest=st.one_of(st.none(), hexdigest),
    options=st.dictionaries(text, json_value, max_size=4),
)

_KNOWN = {"output", "output_hash", "model", "seed", "backend", "envelope", "tokens", "worker", "output_blob"}
_KNOWN |= {"signature"}


@st.composite
def evidences(draw: st.DrawFn) -> Evidence:
    output: str | None = draw(text)
    blob = draw(st.one_of(st.none(), hexdigest))
    if blob is not None and draw(st.booleans()):
        output = None  # a large output lives in a blob
    return Evidence(
        output=output,
        output_hash=output_hash(output) if output is not None else blob or "",
        model=draw(nonempty),
        seed=draw(int64),
        backend=draw(st.one_of(st.none(), st.sampled_from(backend_names()))),
        envelope=draw(st.one_of(st.none(), st.dictionaries(text, json_value, max_size=4))),
        tokens=draw(st.one_of(st.none(), st.lists(st.integers(min_value=0, max_value=2**31), max_size=20))),
        worker=draw(st.one_of(st.none(), nonempty)),
        output_blob=blob,
        signature=draw(st.one_of(st.none(), hexdigest.map(lambda h: "0x" + h[7:] * 2))),
        extra=draw(st.dictionaries(text.filter(lambda k: k not in _KNOWN), json_value, max_size=3)),
    )


@settings(max_examples=100, deadline=None)
@given(jobs)
def test_job_encode_decode_identity(job: Job) -> None:
    assert Job.decode(job.encode()) == job


@settings(max_examples=100, deadline=None)
@given(evidences())
def test_evidence_encode_decode_identity(ev: Evidence) -> None:
    assert Evidence.decode(ev.encode()) == ev


@settings(max_examples=200, deadline=None)
@given(text, text)
def test_output_hash_is_injective_on_distinct_outputs(a: str, b: str) -> None:
    assert (output_hash(a) == output_hash(b)) == (a == b)


@settings(max_examples=100, deadline=None)
@given(text)
def test_output_hash_sees_every_whitespace_change(s: str) -> None:
    variants = {s, s + "\n", s + " ", " " + s, s.strip(), s.rstrip("\n")}
    assert len({output_hash(v) for v in variants}) == len(variants)
    assert output_hash(s) == "sha256:" + hashlib.sha256(s.encode("utf-8")).hexdigest()
