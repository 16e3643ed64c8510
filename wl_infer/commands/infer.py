"""`wl infer`: post, run, verify and inspect inference jobs (registered through the wl.plugins entry point).

Importing this module is cheap: engines, web3 and even the job logic load inside the commands.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from board.api import BoardError
from board.cli.main import ITEM_ID, Obj
from board.cli.output import emit, report_push, say
from wl_infer.commands.bounty import (
    bounty_maker,
    bounty_options,
    say_bounty,
    say_bounty_status,
    say_submission,
)
from wl_infer.commands.params import BackendChoice, digest_option, limit_options
from wl_infer.commands.progress import progress_view


class _LazyGroup(click.Group):
    """Subcommands that live in other modules load only when named (keeps `wl --help` fast)."""

    lazy: dict[str, str] = {
        "anchor": "wl_infer.commands.chain:anchor",
        "audit": "wl_infer.commands.audit:audit",
        "canary": "wl_infer.commands.canary:canary",
        "feed": "wl_infer.commands.feed:feed",
        "worker": "wl_infer.commands.worker:worker",
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


class PostFailed(BoardError):
    """The board refused a post after its bounty was escrowed: the post's error plus what became of the escrow."""

    def __init__(self, error: Exception, escrow: str) -> None:
        said = str(error) if isinstance(error, BoardError) else f"{type(error).__name__}: {error}"
        super().__init__(f"posting failed: {said}; {escrow}")
        self.exit_code = getattr(error, "exit_code", 1)


@infer.command()
@click.option("--prompt", required=True)
@click.option("--model", required=True, help="e.g. gemma3:270m (the embedded default for llama-cpp).")
@click.option("--backend", type=BackendChoice(), default=None, help="Default: config default_backend, else the backend that knows the model here, else ollama.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--max-tokens", type=click.IntRange(0, None), default=0, show_default=True, help="0: the model's default.")
@click.option("--chat", is_flag=True, help="Apply the model's chat template instead of raw completion.")
@click.option("--force", is_flag=True, help="Post even when the backend here says it does not have the model.")
@click.option("--model-digest", metavar="sha256:HEX", callback=digest_option, default=None,
              help="Pin these weights (default: the digest the backend here reports, if any); a worker whose "
                   "backend reports other weights, or none, refuses the job.")
@click.option("--temperature", type=click.FloatRange(0.0, 4.0), default=0.0, show_default=True,
              help="Above 0: sample, keyed by seed and position (llama-cpp only; verifiable).")
@click.option("--no-push", is_flag=True)
@bounty_options
@click.pass_obj
def post(obj: Obj, /, prompt: str, model: str, backend: str | None, seed: int, max_tokens: int, chat: bool,
         force: bool, model_digest: str | None, temperature: float, no_push: bool, **bounty: Any) -> None:  # fmt: skip
    """Post an inference job (with --bounty, escrow payment for it on the board's chain first)."""
    from wl_infer.codec import Job
    from wl_infer.jobs import infer_backend, open_pool, post_job

    board = obj.board()
    with open_pool(board, timeout=5.0) as pool:
        backend = backend or board.config.get("default_backend") or infer_backend(model, pool) or "ollama"
        options: dict[str, object] = {"chat": True} if chat else {}
        if temperature > 0:
            options["temperature"] = temperature
        job = Job(prompt=prompt, model=model, seed=seed, max_tokens=max_tokens, backend=backend, options=options,
                  model_digest=model_digest)
        escrow = bounty_maker(board, bounty)
        try:  # the escrow comes first (the item records its tx); a post that then fails cancels it
            res = post_job(board, job, push=not no_push, pool=pool, force=force, extra=escrow)
        except Exception as e:  # whatever failed (a rule, a push, a bug), escrowed funds are not left behind
            if escrow is None or not escrow.record:
                raise
            from wl_infer.bounty_settle import undo_escrow

            raise PostFailed(e, undo_escrow(board, escrow.record)) from None

    def human() -> None:
        for w in res.warnings:
            say(f"⚠ {w}", "yellow")
        say(f"✓ Posted inference job: {res.item_id}")
        say(f"  Model: {res.job.model} ({res.job.backend}" + (f", {res.job.model_digest[:19]}…)" if res.job.model_digest else ")"))
        say(f"  Seed: {res.job.seed}")
        say(f"  Prompt: {res.job.prompt}")
        report_push(res.mutation)
        if escrow is not None:
            say_bounty(escrow.record)
        say(f"\nNext: wl infer run {res.item_id}")

    emit(
        {"ok": True, "id": res.item_id, "job": res.job.to_dict(), "warnings": res.warnings,
         "pushed": res.mutation.pushed, "local_reason": res.mutation.local_reason,
         "bounty": escrow.record if escrow is not None else None},
        human,
    )


@infer.command()
@click.argument("item_id", type=ITEM_ID)
@click.option("--skip-claim", is_flag=True, help="The item is already claimed for this rig (by a feeder).")
@click.option("--no-push", is_flag=True)
@click.option("--anchor", is_flag=True, help="Also anchor the result hash on the board's chain.")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Engine threads (recorded in the envelope).")
@click.option("--unpaid", is_flag=True, help="Run a bounty job even though its bounty is not assigned to this rig.")
@limit_options
@click.pass_obj
def run(obj: Obj, /, item_id: str, skip_claim: bool, no_push: bool, anchor: bool, threads: int | None,
        unpaid: bool, **limits: Any) -> None:  # fmt: skip
    """Claim an inference item, run it, and submit signed evidence.

    Pre-flight checks (key, limits, backend, model) run before the claim. SIGINT/SIGTERM abandon the
    generation and release the claim (not under --skip-claim), then exit 128+signum.
    """
    from wl_infer.interrupt import Interrupted, RunGuard
    from wl_infer.jobs import open_pool, run_item

    board = obj.board()
    if not unpaid:
        from wl_infer.bounty_board import require_assigned

        require_assigned(board, item_id)  # never reveal a paid result before the payout is bound to this rig
    guard = RunGuard(item_id, skip_claim)  # issue 10: signals handled as the worker does
    committed: list[Any] = []
    commit = None
    if anchor and not unpaid:  # a bounty's stake and hashes go on chain before the board sees the output

        def commit(iid: str, evidence: Any) -> None:
            from wl_infer.bounty_board import commit_before_reveal

            committed.append(commit_before_reveal(board, iid, evidence))

    try:
        with open_pool(board, threads=threads, **limits) as pool, progress_view("Running inference…") as shown:
            pool.config.progress = shown  # live token counts (and the model's first assembly) on a terminal
            res = guard.run(
                lambda cancel, on_event: run_item(board, item_id, pool, skip_claim=skip_claim, push=not no_push,
                                                  on_event=on_event, cancel=cancel, before_publish=commit),
                lambda: _release_fresh(board, guard.item, not no_push),
            )
    except Interrupted as e:
        click.echo(f"wl: {e.message}", err=True)
        sys.exit(e.code)
    anchored = None
    if anchor:
        from wl_infer.anchoring import anchor_result

        anchored = anchor_result(board, res, push=not no_push)
        if committed and committed[0] is not None:
            anchored["bounty"] = committed[0]  # submitted before the result was published
    gen = res.generation

    def human() -> None:
        say(f"✓ Inference completed for {res.item_id}")
        say(f"  Hash: {res.evidence.output_hash}")
        n = gen.n_tokens
        rate = f", {n / gen.elapsed_s:.1f} tok/s" if gen.elapsed_s > 0 and n else ""
        say(f"  Tokens: {n if n is not None else '?'} in {gen.elapsed_s:.2f}s{rate} ({gen.finish_reason})")
        preview = gen.output if len(gen.output) <= 200 else gen.output[:200] + "…"
        say(f"  Output: {preview}")
        report_push(res.mutation)
        if anchored is not None:
            say(f"  Anchored: tx {anchored['tx']} in block {anchored['block']}")
            say_submission(anchored.get("bounty"))
        say(f"\nNext: wl infer verify {res.item_id}")

    emit(
        {"ok": True, "id": res.item_id, "output_hash": res.evidence.output_hash, "output": gen.output,
         "tokens": gen.n_tokens or 0, "finish_reason": gen.finish_reason, "elapsed_s": gen.elapsed_s,
         "pushed": res.mutation.pushed, "local_reason": res.mutation.local_reason, "anchor": anchored},
        human,
    )


@infer.command()
@click.argument("item_id", type=ITEM_ID)
@click.option("--no-record", is_flag=True, help="Do not record an attestation on the board.")
@click.option("--no-push", is_flag=True)
@click.option("--mode", type=click.Choice(["rerun", "prefill", "auto"]), default="auto", show_default=True)
@click.pass_obj
def verify(obj: Obj, item_id: str, no_record: bool, no_push: bool, mode: str) -> None:
    """Re-run (or re-score) a result and compare hashes: exit 0 VERIFIED, 1 MISMATCH/INVALID, 3 cannot verify."""
    from board.api import Ambiguous, BoardError, NotFound, UsageError
    from wl_infer.errors import CannotVerify
    from wl_infer.jobs import open_pool
    from wl_infer.outcomes import Verdict
    from wl_infer.verify import verify_item

    board = obj.board()
    try:
        with open_pool(board) as pool, progress_view("Verifying…") as shown:
            pool.config.progress = shown
            v = verify_item(board, item_id, pool, mode=mode, record=not no_record, push=not no_push)
    except (CannotVerify, NotFound, Ambiguous, UsageError):
        raise  # a bad or unknown id keeps its own exit code
    except BoardError as e:
        raise CannotVerify(str(e)) from None
    v.on_chain = _chain_report(board, v)

    def human() -> None:
        if v.verdict is Verdict.VERIFIED:
            say("✓ VERIFIED — hashes match", "green")
        elif v.verdict is Verdict.MISMATCH:
            say("✗ MISMATCH — hashes differ", "red")
        else:
            say(f"✗ INVALID — {v.reason}", "red")
        say(f"  Expected: {v.expected or '(none)'}")
        say(f"  Actual:   {v.actual or ('(not reproduced)' if v.verdict is Verdict.INVALID else '(prefill: see divergence)')}")
        out = v.actual_output if v.actual_output is not None else v.claimed_output
        if out is not None:
            say(f"  Output:   {out if len(out) <= 200 else out[:200] + '…'}")
        say(f"  Mode:     {v.mode}")
        if v.divergence:
            d = v.divergence
            margin = f", logit margin {d['margin']:.3f}" if d.get("margin") is not None else ""
            say(f"  Diverges at token {d.get('position')}: claimed {d.get('claimed_token')} "
                f"{d.get('claimed_piece')!r}, expected {d.get('expected_token')} {d.get('expected_piece')!r}{margin}")
        if v.verdict is Verdict.MISMATCH and v.reason:
            say(f"  Reason:   {v.reason}")
        if v.envelope_differences:
            say(f"  Note: envelopes differ in {', '.join(v.envelope_differences)}")
        if v.weights == "unbound":
            say("  Weights:  unbound (no digest pinned by the job or reported by the worker's server): the output "
                "is reproduced, but nothing ties it to particular weights", "yellow")
        if v.on_chain:
            say(f"  on-chain: {v.on_chain}")
        if v.mutation is not None:
            say("  Attestation recorded" + ("" if v.mutation.pushed else f" locally ({v.mutation.local_reason})"))

    emit(v.to_dict(), human)
    if v.verdict.exit_code:
        click.get_current_context().exit(v.verdict.exit_code)


def _release_fresh(board: Any, item_id: str, push: bool) -> bool:
    """Release through a new board handle (the interrupted job's thread may still hold the first)."""
    from board.api import Board, Home
    from wl_infer.jobs import release

    with Board(Home(board.home.path)) as b:
        return release(b, item_id, push)


def _chain_report(board: Any, v: Any) -> str | None:
    """`matches` / `differs` / `not anchored` when this board anchors on a chain; None otherwise."""
    try:
        from wl_infer.anchoring import chain_status
    except ImportError:
        return None
    return chain_status(board, v.item_id)


@infer.command()
@click.argument("item_id", type=ITEM_ID)
@click.pass_obj
def status(obj: Obj, item_id: str) -> None:
    """The item, its job, the result (hash, output, envelope), attestations and its bounty, if any."""
    from board.api import refresh_if_online, sanitize
    from wl_infer.codec import CodecError, Evidence
    from wl_infer.jobs import load_job

    board = obj.board()
    fresh = refresh_if_online(board)  # the remote's state when it answers; say so when this is a local copy
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
    from wl_infer.attestations import checked_attestations
    from wl_infer.bounty_board import bounty_report

    checked = checked_attestations(view, iid)
    atts = {who: {**att, "check": check.to_dict()} for who, (att, check) in checked.items()}
    paid = bounty_report(board, item)
    data = {"item": item.to_dict(), "job": job.to_dict(), "completion": comp.to_dict() if comp else None,
            "evidence": evidence, "evidence_error": problem, "attestations": atts, "refreshed": fresh,
            "bounty": paid}  # fmt: skip

    def human() -> None:
        pad = "\n" + " " * 12  # continuation lines of a multi-line value line up under its first line

        def line(label: str, value: Any, style: str | None = None) -> None:
            """`  Label:    value`, the Go labels automation scrapes (Model:, Seed:, Prompt:, Hash:, Output:)."""
            text = sanitize("" if value is None else value, keep_newlines=True).replace("\n", pad)
            say(f"  {label + ':':<10}{text}", style)

        say(f"{item.id}  {sanitize(item.title)}", "bold")
        if not fresh and board.remote is not None:
            say("  (the remote could not be reached: this is the local copy)", "yellow")
        held = f" (claimed by {item.claimed_by} until {item.claim_expires_at})" if item.claimed_by and item.status == "claimed" else ""
        line("Status", item.status + held)
        line("Model", f"{job.model} ({job.backend})")
        line("Seed", job.seed)
        line("Tokens", f"at most {job.max_tokens}" if job.max_tokens else "the model's default")
        if job.model_digest:
            line("Weights", job.model_digest)
        if job.options:
            line("Options", ", ".join(f"{k}={v}" for k, v in sorted(job.options.items())))
        line("Prompt", job.prompt)
        if comp is None:
            line("Result", "none yet")
        elif evidence is None:
            line("Result", f"undecodable evidence: {problem}", "red")
        else:
            line("Hash", evidence["output_hash"])
            line("Worker", f"{comp.completed_by} at {comp.completed_at}")
            out = evidence.get("output")
            if out is not None:
                line("Output", out if len(out) <= 2000 else out[:2000] + "…")
            else:
                line("Output", f"in blob {evidence.get('output_blob')}")
            env = evidence.get("envelope") or {}
            if env:
                say("  Envelope:")
                for key, value in sorted(env.items()):
                    shown = value if not isinstance(value, dict) else ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
                    text = sanitize(shown)
                    say(f"    {sanitize(key) + ':':<24}{text if len(text) <= 76 else text[:73] + '…'}")
        for who, (att, check) in sorted(checked.items()):
            if not check.valid:  # never shown as the verifier's verdict
                say(f"  Attestation under {who}: INVALID — {check.problem}", "red")
                continue
            note = f"; {check.problem}" if check.stale else ""
            say(f"  Attested by {who}: {att.get('verdict')} ({att.get('mode')}, {att.get('at')}{note})")
        say_bounty_status(paid)

    emit(data, human)


@infer.command()
@click.option("--add", "add_path", type=click.Path(exists=True, dir_okay=False), help="Register a GGUF file.")
@click.option("--name", help="Name for --add.")
@click.option("--pull", "pull_model", metavar="MODEL", help="Fetch or assemble MODEL now (as `ollama pull` does), digest-checked.")
@click.option("--backend", type=BackendChoice(), default=None, help="Backend for --pull (default: the one that knows the model).")
@click.pass_obj
def models(obj: Obj, add_path: str | None, name: str | None, pull_model: str | None, backend: str | None) -> None:
    """Models each backend can run here, with digests (`--add PATH --name N` registers a GGUF)."""
    from wl_infer.catalog import list_all, register

    if pull_model:
        from wl_infer.jobs import BackendPool, infer_backend
        from wl_infer.settings import backend_config

        config = obj.home.load_config()  # no board needed: models can be fetched before `wl join`
        pool = BackendPool(backend_config(obj.home.path, config, timeout=600.0))
        try:
            chosen = backend or infer_backend(pull_model, pool) or config.get("default_backend") or "ollama"
            with progress_view(f"Fetching {pull_model} ({chosen})…") as shown:
                pool.config.progress = shown
                info = pool.get(chosen).pull(pull_model)
        finally:
            pool.close()
        emit({"ok": True, "backend": chosen, "name": info.name, "digest": info.digest, "path": info.path,
              "size": info.size},
             lambda: say(f"✓ {info.name} ({chosen}) {info.digest or '(no digest)'}" + (f"\n  {info.path}" if info.path else "")))  # fmt: skip
        return
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
                where = f"  {r['path']}" if r.get("path") else ""
                say(f"{r['backend']:<10} {r['name']:<28} {r['digest'] or '(no digest)'}{where}")

    emit({"models": rows}, human)
