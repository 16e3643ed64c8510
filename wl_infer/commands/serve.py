"""`wl serve`: registered through the wl.plugins entry point; Starlette and uvicorn load only when it runs."""

from __future__ import annotations

import ipaddress

import click

from board.cli.main import Obj, WlError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8999, show_default=True)
@click.option("--poll", type=click.FloatRange(0.2, 3600), default=5.0, show_default=True,
              help="Seconds between fetches of the remote (open pages update live).")
@click.option("--allow-post", is_flag=True,
              help="Let the pages post jobs and verify results as this rig (loopback --host only; CSRF-protected).")
@click.pass_obj
def serve(obj: Obj, host: str, port: int, poll: float, allow_post: bool) -> None:
    """Serve the board, its results and its workers in a browser (read-only by default)."""
    if allow_post and not is_loopback(host):
        raise click.UsageError(f"--allow-post needs a loopback --host (127.0.0.1, ::1 or localhost), not {host!r}")
    try:
        import uvicorn

        from wl_infer.web.app import create_app
        from wl_infer.web.data import BoardSource, SourceError
    except ImportError as e:
        raise WlError(f"wl serve needs the web extra: pip install 'wl-infer[web]' ({e})") from None
    try:
        source = BoardSource(obj.home.path)
    except SourceError as e:
        raise WlError(str(e)) from None
    hosts = sorted({host, "127.0.0.1", "localhost", "::1"}) if is_loopback(host) else ["*"]
    app = create_app(source, poll=poll, allow_post=allow_post, hosts=hosts)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"wl serve: http://{shown}:{port}/ (poll every {poll:g}s{', posting allowed' if allow_post else ', read-only'})",
               err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2, access_log=False)
    finally:
        source.close()
