"""The config.toml keys wl_infer reads, declared to `wl config` through the `wl.config` entry point.

A module of its own with no imports: `wl` loads it to check a config file, and that must not import backends.
"""

from __future__ import annotations

# The config.toml keys wl_infer reads, declared to `wl config` through the `wl.config` entry point.
CONFIG_KEYS: dict[str, type] = {
    "default_backend": str,
    "ollama_url": str,
    "openai_base_url": str,
    "rpc_url": str,
    "contract": str,
    "timeout": int,  # seconds a backend waits for its engine or server
    "threads": int,  # engine threads (llama-cpp); default: usable cores less one, 1 to 4
    # per-job limits (wl_infer/limits.py): 0 means no limit
    "limit_ctx": int,
    "limit_tokens": int,
    "limit_seconds": int,
    "limit_output_bytes": int,
    "limit_memory_mb": int,
}
