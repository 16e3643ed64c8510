"""SIGINT/SIGTERM for `wl infer run`, as the worker handles them (issue 10).

The run goes on a helper thread while the main thread waits for signals. A first signal cancels the job: the
generation stops at its next checkpoint (a token, a chunk read), `run_item` releases the claim (never under
--skip-claim, where the claim belongs to whoever made it), and the command says so in one line and exits
128+signum. Once generation is done the result is submitted first — nothing completed is thrown away. A second
signal exits at once (automation.StopSignals).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
GRACE_S = 15.0  # how long a cancelled job may take to reach its next checkpoint before we release it ourselves


class Interrupted(Exception):
    """The run stopped on a signal; `message` is the line to print, `code` the exit status (128+signum)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.code = 128 + signum
        self.message = message


class RunGuard:
    """Runs one job on a helper thread; a signal cancels it unless its result is already being submitted."""

    def __init__(self, item_hint: str, skip_claim: bool) -> None:
        self.cancel = threading.Event()
        self.item = item_hint
        self.skip_claim = skip_claim
        self.claimed = skip_claim
        self._lock = threading.Lock()
        self._submitting = False

    def checkpoint(self, event: str, data: dict[str, Any]) -> None:
        """run_item's on_event: remembers the claim and the start of submission."""
        with self._lock:
            if event == "claimed":
                self.claimed = True
                self.item = str(data.get("id") or self.item)
            elif event == "generated":
                self._submitting = True

    def _left(self) -> str:
        if not self.claimed or self.skip_claim:
            return ""
        return f"the claim on {self.item} is left to expire"

    def run(self, work: Callable[[threading.Event, Callable[[str, dict[str, Any]], None]], T],
            release: Callable[[], bool]) -> T:  # fmt: skip
        from wl_infer.automation import StopSignals

        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["result"] = work(self.cancel, self.checkpoint)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                box["error"] = e
            finally:
                done.set()

        with StopSignals(self._left) as stop:
            thread = threading.Thread(target=target, name=f"run-{self.item}", daemon=True)
            thread.start()
            while not done.wait(0.1):
                if stop.is_set():
                    with self._lock:
                        if not self._submitting:
                            self.cancel.set()
                    break
            finished = done.wait(GRACE_S if self.cancel.is_set() else None)
            signum = stop.signum
        if signum is None:
            if "error" in box:
                raise box["error"]
            result: T = box["result"]
            return result
        message = self._describe(signum, finished, box, release)
        if not finished:  # the engine may still be inside a call: closing it under the thread is unsafe
            os.write(2, f"wl: {message}\n".encode())
            os._exit(128 + signum)
        raise Interrupted(signum, message)

    def _describe(self, signum: int, finished: bool, box: dict[str, Any], release: Callable[[], bool]) -> str:
        from wl_infer.jobs import RunFailed

        name = signal.Signals(signum).name
        head = f"interrupted by {name}"
        if finished and "result" in box:
            return f"{head} after the result for {self.item} was submitted"
        if self._submitting:  # generated: the result is saved and its claim kept for a later submission
            return f"{head} while submitting the result for {self.item}: {box.get('error') or 'still going'}"
        if not self.claimed:
            return f"{head} before {self.item} was claimed; nothing was claimed"
        if self.skip_claim:
            return f"{head}: the generation for {self.item} was abandoned; the claim is left to its claimer (--skip-claim)"
        err = box.get("error")
        released = err.released if isinstance(err, RunFailed) else None
        if released is None:  # the job did not get to release it (still stuck, or failed elsewhere)
            released = release()
        tail = "its claim was released" if released else "its claim could not be released (the lease will expire)"
        return f"{head}: the generation for {self.item} was abandoned; {tail}"
