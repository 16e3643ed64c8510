"""Where records live in the board tree.

Items, completions and attestations are fanned out by the first two hex digits of the item id
(`wanted/ab/w-ab12…json`) so a commit rewrites three small trees, never a 10,000-entry one. Readers accept
the flat form (`wanted/w-ab12…json`) too.
"""

from __future__ import annotations

import re

from board.ids import ITEM_RE, check_handle, check_item_id

BOARD = "board.json"
CHAIN = "chain.json"
BLOB_RE = re.compile(r"^[0-9a-f]{64}\Z")


def bucket(item_id: str) -> str:
    return item_id[2:4]


def item_path(item_id: str) -> str:
    check_item_id(item_id)
    return f"wanted/{bucket(item_id)}/{item_id}.json"


def item_flat_path(item_id: str) -> str:
    return f"wanted/{check_item_id(item_id)}.json"


def completion_path(item_id: str) -> str:
    check_item_id(item_id)
    return f"completions/{bucket(item_id)}/{item_id}.json"


def completion_flat_path(item_id: str) -> str:
    return f"completions/{check_item_id(item_id)}.json"


def attestation_dir(item_id: str) -> str:
    check_item_id(item_id)
    return f"attestations/{bucket(item_id)}/{item_id}"


def attestation_flat_dir(item_id: str) -> str:
    return f"attestations/{check_item_id(item_id)}"


def attestation_path(item_id: str, handle: str) -> str:
    return f"{attestation_dir(item_id)}/{check_handle(handle)}.json"


def rig_path(handle: str) -> str:
    return f"rigs/{check_handle(handle)}.json"


def blob_path(hexdigest: str) -> str:
    if not BLOB_RE.match(hexdigest):
        raise ValueError(f"invalid blob digest {hexdigest!r}")
    return f"blobs/sha256/{hexdigest}"


LANE_PREFIX = b"refs/wl/claims/"  # claim lanes on the commons: one ref per item (board/lanes.py)


def lane_item(ref: bytes, prefix: bytes = LANE_PREFIX) -> str | None:
    """The item id a lane ref names, or None when the name is not exactly a lane."""
    if not ref.startswith(prefix):
        return None
    try:
        name = ref[len(prefix) :].decode("ascii")
    except UnicodeDecodeError:
        return None
    return name if ITEM_RE.match(name) else None


# --- the archive: completed and withdrawn items moved out of the live tree (board/archive.py) ----------
ARCHIVE = "archive"


def archived(path: str) -> str:
    """Where a live record path (`wanted/…`, `completions/…`, `attestations/…`) lives once archived."""
    return f"{ARCHIVE}/{path}"


def archive_item_path(item_id: str) -> str:
    return archived(item_path(item_id))


def archive_completion_path(item_id: str) -> str:
    return archived(completion_path(item_id))


def archive_attestation_dir(item_id: str) -> str:
    return archived(attestation_dir(item_id))
