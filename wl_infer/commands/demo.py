"""`wl demo`: the whole post → run → verify story, offline, on the embedded default model.

Creates a commons in a temporary folder, joins a poster, a worker and a verifier (three homes, three keys),
posts a job on gemma3:270m, runs it as the worker, verifies it as the verifier, and shows the status.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import click

from board.cli.main import Obj, WlError
from board.cli.output import emit, is_json, say

DEFAULT_PROMPT = "Question: What is the capital of France?\nAnswer:"


class _Steps:
    """Prints each step as it finishes; a live spinner on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.log: list[dict[str, Any]] = []
        self._console: Any = None
        if not quiet:
            from board.cli.output import console

            self._console = console()

    def step(self, label: str) -> AbstractContextManager[Any]:
        self._label = label
        self._t0 = time.perf_counter()
        if self.quiet or not self._console.is_terminal:
            return nullcontext()
        return self._console.status(label + "…")  # type: ignore[no-any-return]

    def done(self, detail: str = "") -> None:
        elapsed = time.perf_counter() - self._t0
        self.log.append({"step": self._label, "detail": detail, "seconds": round(elapsed, 3)})
        if not self.quiet:
            say(f"✓ {self._label} ({elapsed:.2f}s)" + (f"\n    {detail}" if detail else ""))


@click.command()
@click.option("--prompt", default=DEFAULT_PROMPT, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1, 512), default=16, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the temporary folder (its path is printed).")
@click.pass_obj
def demo(obj: Obj, prompt: str, max_tokens: int, keep: bool) -> None:
    """Run the whole story offline: commons, three rigs, post, run, verify, status."""

    from board.api import Board, Home, create_commons, join
    from wl_infer.backends import BackendError
    from wl_infer.codec import Job
    from wl_infer.jobs import open_pool, post_job, run_item
    from wl_infer.verify import verify_item

    # The rigs live in a temporary folder; the assembled model is in the user's cache (embedded_cache_dir).
    quiet = is_json()
    steps = _Steps(quiet)
    root = Path(tempfile.mkdtemp(prefix="wl-demo-"))
    started = time.perf_counter()
    try:
        if not quiet:
            say(f"wl demo — offline, in {root}\n", "bold")
        with steps.step("Create a commons (a bare git repository)"):
            commons = root / "commons.git"
            board_id = create_commons(commons, "demo")
        steps.done(f"board {board_id} at {commons}")

        boards: dict[str, Board] = {}
        with steps.step("Join three rigs: alice (poster), bob (worker), carol (verifier)"):
            for handle in ("alice", "bob", "carol"):
                board, _ = join(Home(root / handle), str(commons), handle)
                boards[handle] = board
        steps.done(", ".join(f"{h} {b.view().rig(h).address[:10]}…" for h, b in boards.items()))  # type: ignore[union-attr]

        with steps.step("alice posts an inference job on gemma3:270m (llama.cpp, in-process)"):
            job = Job(prompt=prompt, model="gemma3:270m", seed=42, max_tokens=max_tokens, backend="llama-cpp")
            with open_pool(boards["alice"]) as pool:
                posted = post_job(boards["alice"], job, pool=pool)
        steps.done(f"{posted.item_id}, weights pinned to {posted.job.model_digest}")

        with steps.step("bob claims and runs it (the model is assembled once, then loaded)"), open_pool(boards["bob"]) as pool:
            result = run_item(boards["bob"], posted.item_id, pool)
        gen = result.generation
        rate = len(gen.tokens or []) / gen.elapsed_s if gen.elapsed_s else 0.0
        steps.done(f"{len(gen.tokens or [])} tokens ({gen.finish_reason}) at {rate:.1f} tok/s → {result.evidence.output_hash}\n"
                   f"    output: {gen.output!r}")

        with open_pool(boards["carol"]) as pool:  # one pool: carol's model loads once for both checks
            with steps.step("carol verifies it (prefill: one forward pass over the claimed tokens)"):
                verdict = verify_item(boards["carol"], posted.item_id, pool, mode="auto")
            steps.done(f"{verdict.verdict} ({verdict.mode}), attestation signed and pushed")

            with steps.step("carol also regenerates it from scratch (rerun)"):
                rerun = verify_item(boards["carol"], posted.item_id, pool, mode="rerun")
            steps.done(f"{rerun.verdict}: {rerun.actual}")

        alice = boards["alice"]
        alice.refresh()
        view = alice.view()
        item = view.item(posted.item_id)
        assert item is not None
        atts = view.attestations(posted.item_id)
        total = time.perf_counter() - started
        data = {
            "ok": verdict.verdict == "VERIFIED" and rerun.verdict == "VERIFIED",
            "folder": str(root) if keep else None,
            "board_id": board_id,
            "item_id": posted.item_id,
            "status": item.status,
            "output": gen.output,
            "output_hash": result.evidence.output_hash,
            "verdicts": {"prefill": verdict.verdict, "rerun": rerun.verdict},
            "attestations": sorted(atts),
            "steps": steps.log,
            "seconds": round(total, 2),
        }

        def human() -> None:
            say(f"\nStatus of {posted.item_id} as alice sees it after a sync:", "bold")
            say(f"  status {item.status}, result {result.evidence.output_hash[:23]}… by bob, "
                f"attested by {', '.join(sorted(atts))} ({atts['carol']['verdict']})")
            say(f"\nDone in {total:.1f}s." + (f" Kept in {root}" if keep else ""))
            say("Try it on a real board: wl create PATH, wl join PATH --handle you, wl infer post --help")

        emit(data, human)
        for b in boards.values():
            b.close()
        if not data["ok"]:
            raise WlError("the demo's verification did not succeed")
    except BackendError as e:
        raise WlError(f"{e} — the demo needs the llama extra: pip install 'wl-infer[llama]'") from None
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
