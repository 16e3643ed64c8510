"""Option types shared by the infer commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click


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
