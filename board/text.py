"""Board strings made safe for a terminal: every control or invisible formatting character shown visibly.

Anything from the board (titles, handles, reasons, paths, outputs) is written by another participant. Sent
raw, an ESC starts a CSI/OSC sequence (clear the screen, set the window title, forge colours), a `\\r` or
`\\b` overwrites what was printed before, and a bidi override reorders what follows. `sanitize` replaces each
such character by its Python escape (`\\x1b`, `\\u202e`), so the text stays readable and nothing acts.
"""

from __future__ import annotations

import re
import unicodedata

# Categories escaped: Cc (C0, DEL, C1 controls), Cf (format: bidi embeddings/overrides/isolates, zero-width
# characters, tag characters that hide text), Cs (lone surrogates, which cannot even be encoded), Zl and Zp
# (line and paragraph separators, which some terminals treat as newlines).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Joiners shape emoji sequences and several scripts; they neither move the cursor nor reorder text.
_KEPT = frozenset({"\u200c", "\u200d"})
_SAFE_ASCII = re.compile(r"[\x20-\x7e]*\Z")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    cp = ord(ch)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _needs_escape(ch: str) -> bool:
    return ch not in _KEPT and unicodedata.category(ch) in _ESCAPED_CATEGORIES


def sanitize(value: object, *, keep_newlines: bool = False) -> str:
    """`value` as text with every control/format character escaped; `keep_newlines` leaves `\\n` alone.

    Only for display: JSON output keeps the exact value (JSON escaping already makes it inert).
    """
    text = value if isinstance(value, str) else str(value)
    if _SAFE_ASCII.match(text):
        return text  # the common case, without a per-character walk
    out = []
    for ch in text:
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif _needs_escape(ch):
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)


def is_clean(value: str) -> bool:
    """Whether `value` would be shown unchanged by `sanitize` (no control or format character at all)."""
    return sanitize(value) == value
