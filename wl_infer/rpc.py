"""JSON-RPC plumbing for the chain module: connections, transient-error classification, bounded retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from wl_infer.errors import InferError
from wl_infer.text import error_line, one_line

if TYPE_CHECKING:
    from web3 import Web3

T = TypeVar("T")
TESTER_URL = "eth-tester://"
_TRANSIENT_WORDS = (
    "internal error", "timeout", "timed out", "temporarily", "try again", "rate limit",
    "too many requests", "header not found", "service unavailable", "bad gateway", "connection",
)
_PERMANENT_WORDS = ("revert", "nonce", "insufficient funds", "invalid", "underpriced", "intrinsic gas")


class ChainError(InferError):
    """An on-chain operation failed; carries what was attempted and why, and builds a one-line message."""

    def __init__(self, op: str, reason: str, *, tx: str | None = None, **data: Any) -> None:
        self.op = op
        self.reason = reason
        self.tx = tx
        self.data = data
        suffix = f" (tx {tx})" if tx else ""
        super().__init__(f"chain {op}: {one_line(reason, None)}{suffix}")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter for transient RPC failures."""

    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0
    total_timeout: float = 60.0
    receipt_timeout: float = 120.0
    poll_interval: float = 0.2


DEFAULT_RETRY = RetryPolicy()




_tester_lock = threading.Lock()
_tester_w3: Any = None


def connect(rpc_url: str) -> Web3:
    """A Web3 for ``rpc_url``; ``eth-tester://`` is one in-process chain shared by this process."""
    from web3 import HTTPProvider, Web3

    global _tester_w3
    if rpc_url == TESTER_URL:
        with _tester_lock:
            if _tester_w3 is None:
                from web3 import EthereumTesterProvider

                _tester_w3 = Web3(EthereumTesterProvider())
            return _tester_w3  # type: ignore[no-any-return]
    if not rpc_url.startswith(("http://", "https://")):
        raise ChainError("connect", f"unsupported RPC URL {rpc_url!r} (use http(s)://… or {TESTER_URL})")
    # web3's own retry is off: ours (below) is bounded in time and knows which errors are transient.
    provider = HTTPProvider(rpc_url, request_kwargs={"timeout": 30}, exception_retry_configuration=None)
    return Web3(provider)


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: transport errors, HTTP 5xx/429, transport-kind JSON-RPC errors."""
    import requests
    from web3.exceptions import (
        BadResponseFormat,
        ContractLogicError,
        RequestTimedOut,
        TooManyRequests,
        Web3RPCError,
    )

    if isinstance(exc, ContractLogicError):
        return False
    if isinstance(exc, (RequestTimedOut, TooManyRequests, BadResponseFormat)):
        return True
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        return status >= 500 or status == 429
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, Web3RPCError):
        error = (exc.rpc_response or {}).get("error") if isinstance(exc.rpc_response, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        text = str(error.get("message", "") if isinstance(error, dict) else exc.message).lower()
        if any(word in text for word in _PERMANENT_WORDS):
            return False
        return code in (-32603, -32005) or any(word in text for word in _TRANSIENT_WORDS)
    return False


def with_retry(
    what: str,
    fn: Callable[[], T],
    policy: RetryPolicy = DEFAULT_RETRY,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; retry transient failures with full-jitter backoff within the policy's bounds (tenacity)."""
    import tenacity

    def give_up(state: tenacity.RetryCallState) -> T:
        exc = state.outcome.exception() if state.outcome is not None else None
        last = error_line(exc) if exc is not None else "unknown error"
        raise ChainError(
            what,
            f"RPC still failing after {state.attempt_number} attempts over {state.seconds_since_start:.1f}s: {last}",
            attempts=state.attempt_number,
            last_error=last,
        ) from None

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_before_delay(policy.total_timeout),
        wait=tenacity.wait_random_exponential(multiplier=policy.base_delay, max=policy.max_delay),
        sleep=sleep,
        retry_error_callback=give_up,
    )
    return retrying(fn)
