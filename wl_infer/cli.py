"""`wl infer`: post, run, verify and inspect inference jobs (registered through the wl.plugins entry point).

Importing this module is cheap: engines, web3 and even the job logic load inside the commands.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from board.cli.main import Obj, WlError
from board.cli.output import emit, is_json, report_push, say

BACKEND_CHOICE = click.Choice(["ollama", "llama-cpp", "vllm", "openai"])


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Engine and codec errors become one `wl: error:` line (exit 1), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from wl_infer.backends import BackendError
        from wl_infer.codec import CodecError

        try:
            return fn(*args, **kwargs)
        except (BackendError, CodecError) as e:
            raise WlError(str(e)) from None

    return wrapper


def _progress(label: str) -> Any:
    """A spinner on a terminal; silent when stdout is not one (automation)."""
    import contextlib

    if is_json() or not sys.stdout.isatty():
        return contextlib.nullcontext()
    from board.cli.output import console

    return console().status(label)


class _LazyGroup(click.Group):
    """Subcommands that live in other modules load only when named (keeps `wl --help` fast)."""

    lazy: dict[str, str] = {
        "anchor": "wl_infer.chain_cli:anchor",
        "audit": "wl_infer.audit:audit",
        "canary": "wl_infer.canary:canary",
        "feed": "wl_infer.feeder:feed",
        "worker": "wl_infer.worker:worker",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = self.lazy.get(name)
        if target is None:
            return None
        import importlib

        module, attr = target.split(":")
        cmd: click.Command = getattr(importlib.import_module(module), attr)
        return cmd


@click.group(cls=_LazyGroup)
def infer() -> None:
    """Verifiable LLM inference jobs on the board."""


@infer.command()
@click.option("--prompt", required=True)
@click.option("--model", required=True, help="e.g. gemma3:270m (the embedded default for llama-cpp).")
@click.option("--backend", type=BACKEND_CHOICE, default=None, help="Default: config default_backend, else ollama.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--max-tokens", type=click.IntRange(0, None), default=0, show_default=True, help="0: the model's default.")
@click.option("--chat", is_flag=True, help="Apply the model's chat template instead of raw completion.")
@click.option("--temperature", type=click.FloatRange(0.0, 4.0), default=0.0, show_default=True,
              help="Above 0: sample, keyed by seed and position (llama-cpp only; verifiable).")
@click.option("--no-push", is_flag=True)
@click.pass_obj
@friendly
def post(obj: Obj, prompt: str, model: str, backend: str | None, seed: int, max_tokens: int, chat: bool,
         temperature: float, no_push: bool) -> None:
    """Post an inference job."""
    from wl_infer.codec import Job
    from wl_infer.jobs import open_pool, post_job

    board = obj.board()
    backend = backend or board.config.get("default_backend") or "ollama"
    options: dict[str, object] = {"chat": True} if chat else {}
    if temperature > 0:
        options["temperature"] = temperature
    job = Job(prompt=prompt, model=model, seed=seed, max_tokens=max_tokens, backend=backend, options=options)
    with open_pool(board, timeout=5.0) as pool:
        res = post_job(board, job, push=not no_push, pool=pool)

    def human() -> None:
        for w in res.warnings:
            say(f"⚠ {w}", "yellow")
        say(f"✓ Posted inference job: {res.item_id}")
        say(f"  Model: {res.job.model} ({res.job.backend}" + (f", {res.job.model_digest[:19]}…)" if res.job.model_digest else ")"))
        say(f"  Seed: {res.job.seed}")
        say(f"  Prompt: {res.job.prompt}")
        report_push(res.mutation)
        say(f"\nNext: wl infer run {res.item_id}")

    emit(
        {"ok": True, "id": res.item_id, "job": res.job.to_dict(), "warnings": res.warnings,
         "pushed": res.mutation.pushed, "local_reason": res.mutation.local_reason},
        human,
    )


@infer.command()
@click.argument("item_id")
@click.option("--skip-claim", is_flag=True, help="The item is already claimed for this rig (by a feeder).")
@click.option("--no-push", is_flag=True)
@click.option("--anchor", is_flag=True, help="Also anchor the result hash on the board's chain.")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Engine threads (recorded in the envelope).")
@click.pass_obj
@friendly
def run(obj: Obj, item_id: str, skip_claim: bool, no_push: bool, anchor: bool, threads: int | None) -> None:
    """Claim an inference item, run it, and submit signed evidence."""
    from wl_infer.jobs import open_pool, run_item

    board = obj.board()
    with open_pool(board, threads=threads) as pool, _progress("Running inference…"):
        res = run_item(board, item_id, pool, skip_claim=skip_claim, push=not no_push)
    anchored = None
    if anchor:
        from wl_infer.anchoring import anchor_item

        anchored = anchor_item(board, res.item_id, push=not no_push)
    gen = res.generation

    def human() -> None:
        say(f"✓ Inference completed for {res.item_id}")
        say(f"  Hash: {res.evidence.output_hash}")
        n = len(gen.tokens or [])
        rate = f", {n / gen.elapsed_s:.1f} tok/s" if gen.elapsed_s > 0 and n else ""
        say(f"  Tokens: {n if gen.tokens is not None else '?'} in {gen.elapsed_s:.2f}s{rate} ({gen.finish_reason})")
        preview = gen.output if len(gen.output) <= 200 else gen.output[:200] + "…"
        say(f"  Output: {preview}")
        report_push(res.mutation)
        if anchored is not None:
            say(f"  Anchored: tx {anchored['tx']} in block {anchored['block']}")
        say(f"\nNext: wl infer verify {res.item_id}")

    emit(
        {"ok": True, "id": res.item_id, "output_hash": res.evidence.output_hash, "output": gen.output,
         "tokens": len(gen.tokens or []), "finish_reason": gen.finish_reason, "elapsed_s": gen.elapsed_s,
         "pushed": res.mutation.pushed, "local_reason": res.mutation.local_reason, "anchor": anchored},
        human,
    )


@infer.command()
@click.argument("item_id")
@click.option("--no-record", is_flag=True, help="Do not record an attestation on the board.")
@click.option("--no-push", is_flag=True)
@click.option("--mode", type=click.Choice(["rerun", "prefill", "auto"]), default="auto", show_default=True)
@click.pass_obj
def verify(obj: Obj, item_id: str, no_record: bool, no_push: bool, mode: str) -> None:
    """Re-run (or re-score) a result and compare hashes: exit 0 VERIFIED, 1 MISMATCH/INVALID, 3 cannot verify."""
    from board.errors import Ambiguous, BoardError, NotFound, UsageError
    from wl_infer.jobs import open_pool
    from wl_infer.verify import VERIFIED, CannotVerify, verify_item

    board = obj.board()
    try:
        with open_pool(board) as pool, _progress("Verifying…"):
            v = verify_item(board, item_id, pool, mode=mode, record=not no_record, push=not no_push)
    except (CannotVerify, NotFound, Ambiguous, UsageError):
        raise  # a bad or unknown id keeps its own exit code
    except BoardError as e:
        raise CannotVerify(str(e)) from None
    v.on_chain = _chain_report(board, v)

    def human() -> None:
        if v.verdict == VERIFIED:
            say("✓ VERIFIED — hashes match", "green")
        elif v.verdict == "MISMATCH":
            say("✗ MISMATCH — hashes differ", "red")
        else:
            say(f"✗ INVALID — {v.reason}", "red")
        say(f"  Expected: {v.expected or '(none)'}")
        say(f"  Actual:   {v.actual or ('(not reproduced)' if v.verdict == 'INVALID' else '(prefill: see divergence)')}")
        out = v.actual_output if v.actual_output is not None else v.claimed_output
        if out is not None:
            say(f"  Output:   {out if len(out) <= 200 else out[:200] + '…'}")
        say(f"  Mode:     {v.mode}")
        if v.divergence:
            d = v.divergence
            margin = f", logit margin {d['margin']:.3f}" if d.get("margin") is not None else ""
            say(f"  Diverges at token {d.get('position')}: claimed {d.get('claimed_token')} "
                f"{d.get('claimed_piece')!r}, expected {d.get('expected_token')} {d.get('expected_piece')!r}{margin}")
        if v.verdict == "MISMATCH" and v.reason:
            say(f"  Reason:   {v.reason}")
        if v.envelope_differences:
            say(f"  Note: envelopes differ in {', '.join(v.envelope_differences)}")
        if v.on_chain:
            say(f"  on-chain: {v.on_chain}")
        if v.mutation is not None:
            say("  Attestation recorded" + ("" if v.mutation.pushed else f" locally ({v.mutation.local_reason})"))

    emit(v.to_dict(), human)
    if v.verdict != VERIFIED:
        sys.exit(1)


def _chain_report(board: Any, v: Any) -> str | None:
    """`matches` / `differs` / `not anchored` when this board anchors on a chain; None otherwise."""
    try:
        from wl_infer.anchoring import chain_status
    except ImportError:
        return None
    return chain_status(board, v.item_id)


@infer.command()
@click.argument("item_id")
@click.pass_obj
@friendly
def status(obj: Obj, item_id: str) -> None:
    """The item, its job, the result (hash, output, envelope) and attestations."""
    from wl_infer.codec import CodecError, Evidence
    from wl_infer.jobs import load_job

    board = obj.board()
    view = board.view()
    iid = view.resolve(item_id)
    item = view.item(iid)
    assert item is not None
    job = load_job(item)
    comp = view.completion(iid)
    evidence: dict[str, Any] | None = None
    problem = None
    if comp is not None:
        try:
            evidence = Evidence.decode(comp.evidence).to_dict()
        except CodecError as e:
            problem = str(e)
    atts = view.attestations(iid)
    data = {"item": item.to_dict(), "job": job.to_dict(), "completion": comp.to_dict() if comp else None,
            "evidence": evidence, "evidence_error": problem, "attestations": atts}

    def human() -> None:
        say(f"{item.id}  {item.title}", "bold")
        say(f"  Status:  {item.status}" + (f" (claimed by {item.claimed_by} until {item.claim_expires_at})" if item.claimed_by and item.status == "claimed" else ""))
        say(f"  Job:     {job.model} via {job.backend}, seed {job.seed}, max_tokens {job.max_tokens or 'default'}")
        if job.model_digest:
            say(f"  Weights: {job.model_digest}")
        say(f"  Prompt:  {job.prompt}")
        if comp is None:
            say("  Result:  none yet")
        elif evidence is None:
            say(f"  Result:  undecodable evidence: {problem}", "red")
        else:
            say(f"  Result:  {evidence['output_hash']} by {comp.completed_by} at {comp.completed_at}")
            out = evidence.get("output")
            if out is not None:
                say(f"  Output:  {out if len(out) <= 300 else out[:300] + '…'}")
            else:
                say(f"  Output:  in blob {evidence.get('output_blob')}")
            env = evidence.get("envelope") or {}
            if env:
                say("  Envelope: " + ", ".join(f"{k}={v}" for k, v in sorted(env.items()) if not isinstance(v, dict)))
        for who, att in sorted(atts.items()):
            say(f"  Attested by {who}: {att.get('verdict')} ({att.get('mode')}, {att.get('at')})")

    emit(data, human)


@infer.command()
@click.option("--add", "add_path", type=click.Path(exists=True, dir_okay=False), help="Register a GGUF file.")
@click.option("--name", help="Name for --add.")
@click.pass_obj
@friendly
def models(obj: Obj, add_path: str | None, name: str | None) -> None:
    """Models each backend can run here, with digests (`--add PATH --name N` registers a GGUF)."""
    from wl_infer.catalog import list_all, register

    if add_path:
        if not name:
            raise click.UsageError("--add needs --name")
        info = register(obj.home.path, name, add_path)
        emit({"ok": True, "name": info.name, "digest": info.digest, "path": info.path},
             lambda: say(f"✓ Registered {info.name} → {info.path}\n  {info.digest}"))
        return
    config = obj.home.load_config()
    rows = list_all(obj.home.path, config)

    def human() -> None:
        for r in rows:
            if r["error"]:
                say(f"{r['backend']:<10} unavailable: {r['error']}", "dim")
            else:
                say(f"{r['backend']:<10} {r['name']:<28} {r['digest'] or '(no digest)'}")

    emit({"models": rows}, human)
