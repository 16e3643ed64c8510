"""Record codecs and ID validation, as properties: what goes onto the board comes back unchanged, in one
canonical byte form, and no malformed ID or record gets past validation to touch a file.
"""

from __future__ import annotations

import json
import re
import string
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from board import layout
from board.cli.main import cli
from board.errors import InvalidHandle, InvalidId
from board.ids import (
    check_handle,
    check_item_id,
    fmt_time,
    new_completion_id,
    new_item_id,
    normalise_prefix,
    parse_time,
)
from board.ops import Op, op_from_message
from board.records import EFFORTS, STATUSES, TYPES, Completion, Item, RecordError, Rig, dumps

HEX = "0123456789abcdef"
PREFIX_SHAPE = re.compile(r"(w-)?[0-9a-f]{1,10}")  # the spec's shape, matched with fullmatch
HANDLE_SHAPE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

item_ids = st.text(HEX, min_size=10, max_size=10).map(lambda h: "w-" + h)
handles = st.from_regex(HANDLE_SHAPE, fullmatch=True)
times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
).map(fmt_time)
short_text = st.text(max_size=40)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def items(draw: st.DrawFn) -> Item:
    status = draw(st.sampled_from(STATUSES))
    return Item(
        id=draw(item_ids),
        title=draw(st.text(max_size=200)),
        description=draw(st.text(max_size=500)),
        project=draw(st.text(max_size=50)),
        type=draw(st.sampled_from(TYPES)),
        priority=draw(st.integers(0, 4)),
        tags=draw(st.lists(st.text(max_size=64), max_size=5)),
        posted_by=draw(handles),
        claimed_by=draw(st.none() | handles),
        claim_expires_at=draw(st.none() | times),
        status=status,
        effort_level=draw(st.sampled_from(EFFORTS)),
        evidence_url=draw(st.none() | st.text(min_size=1, max_size=200)),
        created_at=draw(times),
        updated_at=draw(times),
    )


@st.composite
def completions(draw: st.DrawFn) -> Completion:
    stamp = draw(
        st.none()
        | st.fixed_dictionaries(
            {"by": handles, "at": times, "quality": st.integers(1, 5), "reliability": st.integers(1, 5)}
        )
    )
    return Completion(
        id="c-" + draw(st.text(HEX, min_size=16, max_size=16)),
        wanted_id=draw(item_ids),
        completed_by=draw(handles),
        evidence=draw(st.text(max_size=2000)),
        completed_at=draw(times),
        stamp=stamp,
    )


RIG_FIELDS = {"handle", "address", "registered_at", "display_name", "extra"}


@st.composite
def rigs(draw: st.DrawFn) -> Rig:
    extra_keys = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12).filter(
        lambda k: k not in RIG_FIELDS
    )
    return Rig(
        handle=draw(handles),
        address="0x" + draw(st.text("0123456789abcdefABCDEF", min_size=40, max_size=40)),
        registered_at=draw(times),
        display_name=draw(st.text(max_size=100)),
        extra=draw(st.dictionaries(extra_keys, json_values, max_size=3)),
    )


def assert_canonical(raw: bytes) -> None:
    """UTF-8 JSON, 2-space indent, sorted keys, one newline at the end: the form `git diff` reads well in."""
    text = raw.decode("utf-8")
    assert text.endswith("}\n") and not text.endswith("\n\n")
    data = json.loads(text)
    assert raw == (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    top_keys = [line[3 : line.index('"', 3)] for line in text.splitlines() if line.startswith('  "')]
    assert top_keys == sorted(data)


# --- codecs -------------------------------------------------------------------------------------------
@given(items())
def test_item_roundtrip_and_canonical_bytes(item: Item) -> None:
    raw = item.encode()
    assert Item.decode(raw) == item
    assert Item.decode(raw).encode() == raw
    assert_canonical(raw)


@given(completions())
def test_completion_roundtrip_and_canonical_bytes(comp: Completion) -> None:
    raw = comp.encode()
    assert Completion.decode(raw) == comp
    assert Completion.decode(raw).encode() == raw
    assert_canonical(raw)


@given(rigs())
def test_rig_roundtrip_keeps_plugin_fields(rig: Rig) -> None:
    raw = rig.encode()
    back = Rig.decode(raw)
    assert back == rig
    assert back.encode() == raw
    assert_canonical(raw)


def test_canonical_bytes_exact() -> None:
    assert (
        dumps({"b": 1, "a": ["x", "é"], "c": {}})
        == b'{\n  "a": [\n    "x",\n    "\xc3\xa9"\n  ],\n  "b": 1,\n  "c": {}\n}\n'
    )


@given(
    st.dictionaries(st.sampled_from(sorted(Item.__dataclass_fields__) + ["junk"]), json_values, max_size=16)
)
@example(
    {
        "id": "w-0123456789\n",
        "title": "t",
        "posted_by": "a",
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z",
    }
)
@example(
    {
        "id": "w-0123456789",
        "title": "t",
        "posted_by": "a",
        "created_at": "٢٠٢٠-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z",
    }
)
@example(
    {
        "id": "w-0123456789",
        "title": "t",
        "posted_by": "a",
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z",
        "priority": True,
    }
)
def test_item_decoder_refuses_bad_fields_with_record_error_only(data: dict[str, Any]) -> None:
    """Board JSON is never trusted: anything malformed is a RecordError (never a crash), anything accepted
    is valid by every rule a reader relies on."""
    try:
        item = Item.from_dict(data)
    except RecordError:
        return
    assert re.fullmatch(r"w-[0-9a-f]{10}", item.id)
    assert HANDLE_SHAPE.fullmatch(item.posted_by)
    assert item.claimed_by is None or HANDLE_SHAPE.fullmatch(item.claimed_by)
    assert item.status in STATUSES and item.type in TYPES and item.effort_level in EFFORTS
    assert type(item.priority) is int and 0 <= item.priority <= 4
    for t in (item.created_at, item.updated_at, item.claim_expires_at):
        if t is not None:
            parse_time(t)


@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_never_crashes(raw: bytes) -> None:
    for cls in (Item, Completion, Rig):
        try:
            cls.decode(raw)
        except RecordError:
            pass


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'"x"', b"null", b"\xff\xfe", b'{"id": 1}', b'{"id": "w-0123456789"}'],
)
def test_bad_item_files_are_record_errors(raw: bytes) -> None:
    with pytest.raises(RecordError):
        Item.decode(raw)


# --- ids ----------------------------------------------------------------------------------------------
NASTY = [
    "../x",
    "w-$(x)",
    "w-../../etc",
    "/etc/passwd",
    "w-abc/def",
    "w-abc\n",
    "abc\n",
    "w-0123456789\n",
    "w-0123456789a",
    "W-ABC",
    "w-ABC",
    "w-",
    "",
    " w-abc",
    "w-abc ",
    "w-ab\x00c",
    "ｗ-abc",
    "w-١٢٣",
    "w-abc;rm -rf",
    "~",
    ".",
    "..",
    "w-0123456789/..",
]


@given(st.text(max_size=20) | st.sampled_from(NASTY) | st.text(HEX + "w-./$\n", max_size=14))
@example("../x")
@example("w-abc\n")
def test_prefix_validation_accepts_exactly_the_spec_shape(value: str) -> None:
    if PREFIX_SHAPE.fullmatch(value):
        assert normalise_prefix(value) == (value if value.startswith("w-") else "w-" + value)
    else:
        with pytest.raises(InvalidId):
            normalise_prefix(value)


@given(st.text(max_size=14) | st.sampled_from(NASTY) | st.text(HEX + "w-\n", min_size=11, max_size=13))
@example("w-0123456789\n")
def test_item_id_validation_accepts_exactly_full_ids(value: str) -> None:
    if re.fullmatch(r"w-[0-9a-f]{10}", value):
        assert check_item_id(value) == value
        assert layout.item_path(value) == f"wanted/{value[2:4]}/{value}.json"
    else:
        with pytest.raises(InvalidId):
            check_item_id(value)
        with pytest.raises(InvalidId):
            layout.item_path(value)
        with pytest.raises(InvalidId):
            layout.completion_path(value)


@given(st.text(max_size=40) | st.sampled_from(["alice\n", "../alice", "Alice", "-a", "a" * 33, "ali ce"]))
@example("alice\n")
def test_handle_validation(value: str) -> None:
    if HANDLE_SHAPE.fullmatch(value):
        assert check_handle(value) == value
        assert layout.rig_path(value) == f"rigs/{value}.json"
    else:
        with pytest.raises(InvalidHandle):
            check_handle(value)
        with pytest.raises(InvalidHandle):
            layout.rig_path(value)


def test_generated_ids_have_the_spec_shape() -> None:
    now = datetime.now(UTC)
    ids = {new_item_id("same title", now) for _ in range(200)}
    assert len(ids) == 200  # random bytes make equal titles at equal times distinct
    assert all(re.fullmatch(r"w-[0-9a-f]{10}", i) for i in ids)
    assert re.fullmatch(r"c-[0-9a-f]{16}", new_completion_id())


@given(st.text(max_size=30))
def test_parse_time_refuses_what_fmt_time_would_not_write(value: str) -> None:
    try:
        t = parse_time(value)
    except ValueError:
        return
    assert t.tzinfo is not None and value.endswith("Z") and value.isascii()


# --- the operation trailer ----------------------------------------------------------------------------
@given(
    st.sampled_from(["post", "claim", "unclaim", "done", "accept", "reject", "close", "delete"]),
    handles,
    item_ids,
    st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=10), json_values, max_size=4),
)
def test_op_message_roundtrip(name: str, by: str, item_id: str, args: dict[str, Any]) -> None:
    op = Op(op=name, by=by, at="2026-01-01T00:00:00Z", id=item_id, args=args)
    msg = op.message()
    assert msg.splitlines()[0] == f"wl: {name} {item_id} by {by}"
    assert op_from_message(msg) == op


@pytest.mark.parametrize(
    "message",
    [
        "plain commit\n",
        "wl: claim w-0123456789 by a\n\nWl-Op: not json\n",
        'wl: x\n\nWl-Op: {"op":"rm -rf","by":"a","at":"t"}\n',
        'wl: x\n\nWl-Op: {"op":"claim","by":"../a","at":"t"}\n',
        'wl: x\n\nWl-Op: {"op":"claim","by":"a","at":"t","id":"../../x"}\n',
        'wl: x\n\nWl-Op: {"op":"done","by":"a","at":"t","attachments":["../../etc/passwd"]}\n',
        'wl: x\n\nWl-Op: {"op":"done","by":"a","at":"t","args":[1]}\n',
    ],
)
def test_op_from_message_refuses_malformed_trailers(message: str) -> None:
    assert op_from_message(message) is None


# --- refused before any file is touched -------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("records") / "home"
    result = CliRunner().invoke(cli, ["--home", str(home), "init", "--handle", "alice"])
    assert result.exit_code == 0, result.output
    return home


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(NASTY) | st.text(min_size=1, max_size=12).filter(lambda s: not PREFIX_SHAPE.fullmatch(s))
)
@example("../x")
@example("w-$(x)")
def test_cli_refuses_bad_ids_before_touching_the_home(module_home: Path, value: str) -> None:
    before = _snapshot(module_home)
    runner = CliRunner()
    for args in (["show", value], ["claim", value], ["unclaim", value], ["done", value, "--evidence", "e"]):
        if value.startswith("-"):
            args = (
                [*args[:1], "--", *args[1:]]
                if args[0] != "done"
                else ["done", "--evidence", "e", "--", value]
            )
        result = runner.invoke(cli, ["--home", str(module_home), *args])
        assert result.exit_code == 2, (args, result.output, result.stderr)
        assert result.stderr.startswith("wl: error: invalid wanted item id"), result.stderr
        assert "Traceback" not in result.output + result.stderr
    assert _snapshot(module_home) == before


# --- the quick pass of Item.from_dict (issue 15: a cold read decodes 100,000 records) ---------------------
_VALID_ITEM = {"id": "w-0123456789", "title": "t", "posted_by": "alice", "created_at": "2026-01-02T03:04:05Z",
               "updated_at": "2026-01-02T03:04:05Z"}
_EDGE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 6), st.floats(0, 4), st.just(""), st.text(max_size=4),
    st.sampled_from(["w-0123456789", "w-012345678", "alice", "bad handle!", "bug", "inference", "closed",
                     "epic", "claimed", "2026-01-02T03:04:05Z", "2026-99-99T99:99:99Z", "2026-01-02T03:04:05.5Z",
                     "x" * 201, "x" * 1001]),
    st.lists(st.sampled_from(["a", "", "x" * 65]), max_size=3), st.lists(st.integers(), max_size=1),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
_ITEM_KEYS = st.sampled_from(["id", "title", "description", "project", "type", "priority", "tags", "posted_by",
                              "claimed_by", "claim_expires_at", "status", "effort_level", "evidence_url",
                              "created_at", "updated_at", "unknown"])


_SINGLE_VALUES = [None, True, False, -1, 0, 2, 4, 5, 2.0, "", "x", "w-0123456789", "w-012345678", "alice",
                  "bad handle!", "bug", "closed", "epic", "claimed", "2026-01-02T03:04:05Z", "2026-99-99T99:99:99Z",
                  "x" * 201, "x" * 1001, [], ["a"], [""], ["x" * 65], [1], "a,b", {}]


def _outcome(decode: Any, d: dict[str, Any]) -> Item | str:
    try:
        return decode(d)  # type: ignore[no-any-return]
    except RecordError as e:
        return f"refused: {e}"


def test_quick_item_pass_agrees_on_every_single_field_change() -> None:
    for key in [*_VALID_ITEM, "description", "project", "type", "priority", "tags", "claimed_by",
                "claim_expires_at", "status", "effort_level", "evidence_url"]:
        for value in [*_SINGLE_VALUES, "missing"]:
            d = {k: v for k, v in _VALID_ITEM.items() if k != key}
            if value != "missing":
                d[key] = value
            assert _outcome(Item.from_dict, d) == _outcome(Item.checked, d), (key, value)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(_ITEM_KEYS, _EDGE_VALUES, max_size=4), st.sets(_ITEM_KEYS, max_size=2))
def test_quick_item_pass_agrees_with_the_field_by_field_check(changes: dict[str, Any], dropped: set[str]) -> None:
    """Whatever the record holds, from_dict (quick pass first) accepts exactly what the field-by-field check
    accepts, builds the same item, and otherwise fails with the same message."""
    d = {k: v for k, v in {**_VALID_ITEM, **changes}.items() if k not in dropped}
    assert _outcome(Item.from_dict, d) == _outcome(Item.checked, d)
