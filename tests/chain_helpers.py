"""Shared chain test helpers: a local Hardhat node and a deliberately flaky JSON-RPC proxy, both on 127.0.0.1.

Used by tests/test_chain_hardhat.py and tests/benchmarks/bench_gas.py; every wait here is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "contracts"
HARDHAT_BIN = CONTRACTS / "node_modules" / ".bin" / "hardhat"

# Hardhat's first well-known development account (mnemonic "test test ... junk"); public, test-only.
HARDHAT_DEV_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
HARDHAT_CHAIN_ID = 31337


class HardhatStartError(RuntimeError):
    """The Hardhat node did not come up; carries the tail of its log."""

    def __init__(self, reason: str, log_tail: str) -> None:
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"hardhat node {reason}; log tail:\n{log_tail}")


def hardhat_missing_reason() -> str | None:
    """Why a Hardhat node cannot be started here, or None when it can."""
    if not HARDHAT_BIN.exists():
        return f"{HARDHAT_BIN.relative_to(ROOT)} is absent: run `npm ci --prefix contracts`"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc(url: str, method: str, params: list[object] | None = None, timeout: float = 2.0) -> object:
    """One raw JSON-RPC call (no web3), for readiness checks and assertions."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


@contextlib.contextmanager
def hardhat_node(startup_timeout: float = 60.0) -> Iterator[str]:
    """Run ``hardhat node`` bound to 127.0.0.1 on a free port; yield its URL; stop it (its group) after."""
    reason = hardhat_missing_reason()
    if reason is not None:
        raise HardhatStartError(reason, "")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HARDHAT_DISABLE_TELEMETRY_PROMPT="true", DO_NOT_TRACK="1")
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [str(HARDHAT_BIN), "node", "--hostname", "127.0.0.1", "--port", str(port)],
            cwd=CONTRACTS,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group, so we stop exactly what we started
        )
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    raise HardhatStartError(f"exited with {proc.returncode}", _tail(log))
                try:
                    if int(str(rpc(url, "eth_chainId")), 16) == HARDHAT_CHAIN_ID:
                        break
                except (OSError, ValueError, RuntimeError):
                    pass
                if time.monotonic() > deadline:
                    raise HardhatStartError(f"did not answer eth_chainId within {startup_timeout:.0f}s", _tail(log))
                time.sleep(0.25)
            yield url
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _tail(log: object, limit: int = 2000) -> str:
    assert hasattr(log, "seek") and hasattr(log, "read")
    log.seek(0)
    text: str = log.read()
    return text[-limit:]


def fund(url: str, to: str, wei: int = 10**20) -> None:
    """Send ``wei`` from Hardhat's first dev account to ``to`` and wait for it."""
    from eth_account import Account
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}))
    dev = Account.from_key(HARDHAT_DEV_KEY)
    tx = {
        "to": Web3.to_checksum_address(to), "value": wei, "gas": 21_000, "chainId": HARDHAT_CHAIN_ID,
        "nonce": w3.eth.get_transaction_count(dev.address, "pending"),
        "maxFeePerGas": 2 * int(w3.eth.get_block("latest")["baseFeePerGas"]) + 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    tx_hash = w3.eth.send_raw_transaction(dev.sign_transaction(tx).raw_transaction)
    w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)


class FlakyProxy:
    """A JSON-RPC forwarder on 127.0.0.1 that fails on purpose.

    - the first ``fail_first`` requests fail without reaching the node, alternating a closed connection and
      an HTTP 502 (``mode`` "close" or "502" picks one kind only);
    - the first ``drop_replies`` requests for a method in ``drop_methods`` are forwarded, then the reply is
      dropped (the connection closed), as when a node accepts a transaction and the answer is lost.
    """

    def __init__(
        self,
        upstream: str,
        *,
        fail_first: int = 0,
        mode: str = "alternate",
        drop_methods: frozenset[str] = frozenset(),
        drop_replies: int = 0,
    ) -> None:
        self.upstream = upstream
        self.fail_first = fail_first
        self.mode = mode
        self.drop_methods = drop_methods
        self.drop_replies = drop_replies
        self.lock = threading.Lock()
        self.seen: list[str] = []  # every method received, in order
        self.failed = 0
        self.dropped = 0
        self.forwarded = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _decide(self, method: str) -> str:
        with self.lock:
            self.seen.append(method)
            if self.failed < self.fail_first:
                self.failed += 1
                if self.mode == "alternate":
                    return "close" if self.failed % 2 else "502"
                return self.mode
            if method in self.drop_methods and self.dropped < self.drop_replies:
                self.dropped += 1
                return "drop"
            self.forwarded += 1
            return "forward"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                return

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    method = str(json.loads(body).get("method", "?"))
                except (ValueError, AttributeError):
                    method = "?"
                action = proxy._decide(method)
                if action == "close":
                    self.close_connection = True
                    return
                if action == "502":
                    self._reply(502, b"bad gateway", "text/plain")
                    return
                request = urllib.request.Request(
                    proxy.upstream, data=body, headers={"Content-Type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        payload = response.read()
                except (urllib.error.URLError, OSError):
                    self._reply(502, b"upstream unreachable", "text/plain")
                    return
                if action == "drop":
                    self.close_connection = True
                    return
                self._reply(200, payload, "application/json")

            def _reply(self, status: int, payload: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def compile_solidity(source: str, name: str, timeout: float = 120.0) -> tuple[list[dict[str, object]], str]:
    """Compile one contract from ``source`` with the pinned solc-js in contracts/node_modules (tests only)."""
    script = (
        "const solc = require('solc'); let src = ''; process.stdin.on('data', d => src += d);"
        "process.stdin.on('end', () => { const input = {language: 'Solidity', sources: {'T.sol': {content: src}},"
        "settings: {evmVersion: 'shanghai', optimizer: {enabled: true, runs: 200},"
        "outputSelection: {'*': {'*': ['abi', 'evm.bytecode.object']}}}};"
        "process.stdout.write(solc.compile(JSON.stringify(input))); });"
    )
    done = subprocess.run(
        ["node", "-e", script], input=source, cwd=CONTRACTS, capture_output=True, text=True, timeout=timeout,
        check=True,
    )
    out = json.loads(done.stdout)
    errors = [e["formattedMessage"] for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise RuntimeError("solc: " + "\n".join(errors))
    contract = out["contracts"]["T.sol"][name]
    return contract["abi"], "0x" + contract["evm"]["bytecode"]["object"]


def solc_missing_reason() -> str | None:
    """Why a test contract cannot be compiled here, or None when it can."""
    import shutil

    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (CONTRACTS / "node_modules" / "solc").is_dir():
        return "contracts/node_modules/solc is absent: run `npm ci --prefix contracts`"
    return None
