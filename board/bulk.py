"""Work that touches every record of a board (a clone's pack, a checkpoint, an index build) in one go.

Such work allocates hundreds of thousands of small dicts, lists and records that hold no reference cycles; the
cyclic garbage collector would rescan the growing heap again and again meanwhile (about half the time of a cold
read of 100,000 records). It is paused for the duration and runs again as usual afterwards.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic collector for a bulk read (re-entrant: an outer pause stays in force)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
