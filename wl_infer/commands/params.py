"""Option types shared by the infer commands."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from wl_infer import limit_keys as limits

F = TypeVar("F", bound=Callable[..., Any])


class BackendChoice(click.Choice):  # type: ignore[type-arg]
    """A backend name from the registry, read when first needed (help, or a value to check), not at import."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property  # type: ignore[override]
    def choices(self) -> Sequence[Any]:
        from wl_infer.plugins import backend_names

        return backend_names()

    @choices.setter
    def choices(self, value: Sequence[Any]) -> None:
        """click.Choice assigns its list in __init__; the registry is the list, so this is ignored."""


def limit_options(fn: F) -> F:
    """The `--limit-*` flags shared by run, worker and feed (passed to the command as limit_* keywords)."""
    helps = {
        "limit_ctx": f"Largest context (tokens) a job may ask for; 0: no limit [default: config, else {limits.DEFAULT_MAX_CTX}].",
        "limit_tokens": f"Largest max_tokens a job may ask for [default: config, else {limits.DEFAULT_MAX_TOKENS}].",
        "limit_seconds": f"Wall-clock deadline per job, in seconds [default: config, else {limits.DEFAULT_DEADLINE_S:g}].",
        "limit_output_bytes": f"Largest output (bytes) read from a server [default: config, else {limits.DEFAULT_MAX_OUTPUT_BYTES}].",
        "limit_memory_mb": f"Largest estimated memory (weights + KV cache, MiB) a job may need [default: config, else {limits.DEFAULT_MAX_MEMORY_MB}].",
    }
    for key in reversed(list(limits.CONFIG_KEYS)):
        kind = click.FloatRange(0, None) if limits.CONFIG_KEYS[key][1] is float else click.IntRange(0, None)
        fn = click.option(f"--{key.replace('_', '-')}", key, type=kind, default=None, help=helps[key])(fn)
    return fn


def digest_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A weights digest as jobs pin it: `sha256:` and 64 hex digits (upper case accepted, stored lower)."""
    import re

    if value is None:
        return None
    text = value.strip().lower()
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", text):
        raise click.BadParameter("expected sha256: followed by 64 hex digits", ctx, param)
    return text
