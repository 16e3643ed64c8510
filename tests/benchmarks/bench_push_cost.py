"""Per-push costs for the README's scale model (issue 15), on `git daemon` and on git's `git http-backend`.

    .venv/bin/python tests/benchmarks/bench_push_cost.py [--samples 30] [--remote daemon,http-backend]

All on 127.0.0.1, one client, no contention; medians (and p90) over `--samples`:

- mutation window w: one board mutation (`Board.mutate` of a claim: fetch, validate, commit, sign, CAS push
  of main) — the fetch-to-push window that separates two commits on one branch;
- fetch, no change: `Board.refresh()` when the remote has not moved (what each poll and each retry pays),
  and the bare ref advertisement (`get_refs`, the floor of any round trip);
- lane create: a push creating a new ref `refs/wl/claims/<id>` whose old value is zero (git's
  create-if-absent), with dulwich's send_pack written here (no board code), and a lost lane create (the
  ref is already in the advertisement: the client stops there);
- server CPU per mutation (its fetch and its push), per no-change fetch and per lane push: git daemon's
  reaped children's CPU (/proc, cutime+cstime) or, over http-backend, the CGI children's CPU (os.times):
  what one server core spends.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from counting_servers import CountingDaemon, CountingServer, serving  # noqa: E402
from dulwich.client import get_transport_and_path  # noqa: E402
from dulwich.objects import Commit  # noqa: E402
from dulwich.repo import Repo  # noqa: E402
from remotes import join_rig, make_commons  # noqa: E402

from board.store import MAIN  # noqa: E402

ZERO = b"0" * 40
LANES = b"refs/wl/claims/"


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def med_p90(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{1000 * statistics.median(xs):.1f} ms (p90 {1000 * xs[int(0.9 * (len(xs) - 1))]:.1f})"


class LaneClient:
    """Creates lane refs on the remote with dulwich's send_pack: old value zero, so git creates or refuses."""

    def __init__(self, url: str, local: Path) -> None:
        self.client, self.path = get_transport_and_path(url)
        self.repo = Repo.init_bare(str(local), mkdir=True)
        self.client.fetch(self.path, self.repo, determine_wants=lambda refs, depth=None: [refs[MAIN]])
        self.main = self.client.get_refs(self.path).refs[MAIN]
        self.n = 0

    def new_commit(self) -> bytes:
        self.n += 1
        parent = self.repo.object_store[self.main]
        assert isinstance(parent, Commit)
        c = Commit()
        c.tree, c.parents = parent.tree, [self.main]
        c.author = c.committer = b"bench <bench@example.invalid>"
        c.author_time = c.commit_time = int(time.time())
        c.author_timezone = c.commit_timezone = 0
        c.message = f"lane claim {self.n}\n".encode()
        self.repo.object_store.add_object(c)
        return c.id

    def create(self, ref: bytes, sha: bytes) -> bool:
        """Push ref -> sha if the ref is absent (True), or stop at the advertisement if it exists (False)."""
        created = []

        def update_refs(refs: dict[bytes, bytes]) -> dict[bytes, bytes]:
            if refs.get(ref, ZERO) != ZERO:
                return {}  # someone else's lane: lost, nothing sent
            created.append(ref)
            return {ref: sha}

        def pack(have: Any, want: Any, ofs_delta: bool = True, progress: Any = None) -> Any:
            return self.repo.object_store.generate_pack_data(have, want, ofs_delta=ofs_delta)

        result = self.client.send_pack(self.path, update_refs, generate_pack_data=pack)
        errors = getattr(result, "ref_status", None) or {}
        if created and errors.get(ref):
            raise SystemExit(f"lane create refused by the server: {errors[ref]!r}")
        return bool(created)

    def close(self) -> None:
        self.repo.close()


def server_cpu(server: CountingServer) -> float:
    """CPU seconds the server's reaped children (receive-pack, upload-pack) have used so far."""
    time.sleep(0.5)  # let the daemon reap the requests that just ended
    if isinstance(server, CountingDaemon):
        assert server.proc is not None
        fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime
    t = os.times()  # http-backend runs as this process's CGI children
    return t.children_user + t.children_system


def measure(kind: str, root: Path, n: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with serving(kind, root / "srv") as server:
        make_commons(root / "srv")
        url = server.url("commons.git")
        rig = join_rig(root, url, "bench")
        items = [rig.post(f"item {i}") for i in range(n)]  # one push each; warms both sides
        with rig.board() as b:
            b.refresh()
            pushes0, cpu0 = server.counts()["receive-pack"], server_cpu(server)
            it = iter(items)
            window = timed(lambda: b.mutate(b.new_op("claim", next(it), lease_seconds=1800)), n)
            pushes, cpu = server.counts()["receive-pack"] - pushes0, server_cpu(server) - cpu0
            rows.append(("mutation window w (claim: fetch+commit+push)", med_p90(window)))
            per_push = f"{1000 * cpu / max(1, pushes):.1f} ms"
            rows.append(("  server CPU per mutation (its fetch + push)", per_push))
            fetches0, cpu0 = server.counts()["upload-pack"], server_cpu(server)
            fetch = timed(b.refresh, n)
            fetches, cpu = server.counts()["upload-pack"] - fetches0, server_cpu(server) - cpu0
            rows.append(("fetch, no change (Board.refresh)", med_p90(fetch)))
            rows.append(("  server CPU per fetch", f"{1000 * cpu / max(1, fetches):.1f} ms"))
        client, path = get_transport_and_path(url)
        adverts = timed(lambda: client.get_refs(path), n)
        rows.append(("ref advertisement (get_refs)", med_p90(adverts)))
        lanes = LaneClient(url, root / "lane-client.git")
        try:
            shas = [lanes.new_commit() for _ in range(n)]
            refs = [LANES + f"bench-{i:05d}".encode() for i in range(n)]
            pushes0, cpu0 = server.counts()["receive-pack"], server_cpu(server)
            pairs = iter(zip(refs, shas, strict=True))
            won = []
            create = timed(lambda: won.append(lanes.create(*next(pairs))), n)
            pushes, cpu = server.counts()["receive-pack"] - pushes0, server_cpu(server) - cpu0
            if not all(won):
                raise SystemExit("a fresh lane ref was not created")
            rows.append(("lane create (new ref, old value zero)", med_p90(create)))
            rows.append(("  server CPU per lane push", f"{1000 * cpu / max(1, pushes):.1f} ms"))
            again = iter(zip(refs, shas, strict=True))
            lost = []
            losing = timed(lambda: lost.append(lanes.create(*next(again))), n)
            if any(lost):
                raise SystemExit("a lane ref was created twice")
            rows.append(("lost lane create (ref exists)", med_p90(losing)))
        finally:
            lanes.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--remote", default="daemon,http-backend", help="comma-separated: daemon, http-backend")
    args = ap.parse_args()
    kinds = [k for k in args.remote.split(",") if k]
    if args.samples < 2 or not kinds or any(k not in ("daemon", "http-backend") for k in kinds):
        ap.error("--samples must be at least 2; --remote takes daemon and/or http-backend")
    print(
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, {args.samples} samples per figure",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="wl-bench-push-") as tmp:
        for kind in kinds:
            (Path(tmp) / kind).mkdir()
            rows = measure(kind, Path(tmp) / kind, args.samples)
            print(f"\n{kind}")
            for name, value in rows:
                print(f"  {name:<48} {value}", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
