"""The operator's limit settings: their defaults and config keys, with no imports (the CLI's --help needs them).

wl_infer/limits.py holds the checks; this module only names the figures, so declaring the `--limit-*` flags
costs `wl --help` nothing.
"""

from __future__ import annotations

# Defaults: generous for the embedded 270M model and small remote jobs, far from what hurts a shared machine.
DEFAULT_MAX_CTX = 32768
DEFAULT_MAX_TOKENS = 4096
DEFAULT_DEADLINE_S = 600.0
DEFAULT_MAX_OUTPUT_BYTES = 1 << 20
DEFAULT_MAX_MEMORY_MB = 4096
REPLY_OVERHEAD = 64 * 1024  # JSON around the output text in a server's reply
JSON_ESCAPE_FACTOR = 6  # worst case: every output byte written as \u00XX

# config key -> (Limits field, type); also the flag names without `--limit-` (see limit_options)
CONFIG_KEYS: dict[str, tuple[str, type]] = {
    "limit_ctx": ("max_ctx", int),
    "limit_tokens": ("max_tokens", int),
    "limit_seconds": ("deadline_s", float),
    "limit_output_bytes": ("max_output_bytes", int),
    "limit_memory_mb": ("max_memory_mb", int),
}
