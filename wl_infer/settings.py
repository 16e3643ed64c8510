"""Backend settings from flags, environment, config and the board, in that order of precedence."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wl_infer.backends import BackendConfig
from wl_infer.config_keys import CONFIG_KEYS as CONFIG_KEYS  # re-exported


def backend_config(home: Path, config: dict[str, Any], **flags: Any) -> BackendConfig:
    """Flags beat environment beat config.toml (SPEC §9)."""

    def pick(flag: str, env: str, key: str) -> Any:
        if flags.get(flag) is not None:
            return flags[flag]
        if os.environ.get(env):
            return os.environ[env]
        return config.get(key)

    from wl_infer.limits import resolve_limits  # issue 10: the operator's limits travel with the config

    threads = flags.get("threads") or config.get("threads")
    return BackendConfig(
        home=home,
        ollama_host=pick("ollama_host", "OLLAMA_HOST", "ollama_url"),
        openai_base_url=pick("openai_base_url", "WL_OPENAI_BASE_URL", "openai_base_url"),
        timeout=float(flags.get("timeout") or config.get("timeout") or 300.0),
        threads=int(threads) if threads else None,
        extra={"limits": resolve_limits(config, **flags)},
    )


def chain_settings(config: dict[str, Any], chain_json: dict[str, Any] | None, **flags: Any) -> tuple[str | None, str | None]:
    """(rpc_url, contract): flags beat environment beat config beat the board's chain.json."""
    chain_json = chain_json or {}
    rpc = flags.get("rpc_url") or os.environ.get("WL_RPC_URL") or config.get("rpc_url") or chain_json.get("rpc_url")
    contract = (
        flags.get("contract") or os.environ.get("WL_CONTRACT") or config.get("contract") or chain_json.get("contract")
    )
    return rpc, contract
