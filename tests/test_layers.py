"""The import graph of board/ and wl_infer/ keeps its floors: no module imports one from a higher floor.

Read with ast (every import, those inside functions included), so a lazy import cannot hide an upward edge.
The floors are written down here; a new module must be given one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500

BOARD_FLOORS: dict[str, int] = {
    # 0: no board imports
    "board": 0, "board.errors": 0, "board.secp256k1": 0, "board.store": 0, "board.text": 0,
    "board.parsecache": 0, "board.entrypoints": 0, "board.packs": 0, "board.bulk": 0,
    # 1: ids, home, keys
    "board.ids": 1, "board.home": 1, "board.keys": 1,
    # 2: records and paths, the remote
    "board.layout": 2, "board.records": 2, "board.remote": 2,
    # 3: rules and reading a tree
    "board.ops": 3, "board.view": 3, "board.index": 3, "board.archive": 3,
    # 4: a warm browse from the index alone (stamps read from plain files)
    "board.quick": 4,
    # 3: signed commits, tree checks, validating history (the ledger), what a sync or mutation reports
    "board.commits": 3, "board.treecheck": 3, "board.ledger": 3, "board.results": 3,
    # 3: claim lanes as readers fold them; creating a commons
    "board.lanes": 3, "board.commons": 3, "board.folds": 3,
    # 4: the service (commits, push, sync), publishing signed chains, the server-side hook
    "board.service": 4, "board.publish": 4, "board.hook": 4, "board.claims": 4, "board.folding": 4,
    # 5: the declared surface for plugins
    "board.api": 5,
    # 6: the command line
    "board.cli": 6, "board.cli.output": 6, "board.cli.main": 6, "board.cli.doctor": 6, "board.cli.items": 6,
    "board.cli.rig": 6, "board.cli.setup": 6, "board.cli.hook": 6, "board.cli.frame": 6, "board.cli.complete": 6,
    "board.cli.overview": 6, "board.cli.columns": 6, "board.cli.archive": 6,
}  # fmt: skip

INFER_FLOORS: dict[str, int] = {
    # 0: no wl_infer imports beyond these (board.api only)
    "wl_infer": 0, "wl_infer.plugins": 0, "wl_infer.outcomes": 0, "wl_infer.errors": 0, "wl_infer.merkle": 0,
    "wl_infer.signing": 0, "wl_infer.text": 0, "wl_infer.attestations": 0, "wl_infer.limit_keys": 0, "wl_infer.config_keys": 0,
    # 1: the board format of jobs and evidence
    "wl_infer.codec": 1,
    # 2: what a backend is
    "wl_infer.backends.base": 2, "wl_infer.backends._http": 2,
    # 3: the registry, the GGUF model cache
    "wl_infer.backends": 3, "wl_infer.backends.gguf": 3, "wl_infer.sampling": 3,
    # 2: a job's limits, GGUF header facts, bounded HTTP replies (what every engine is held to)
    "wl_infer.limits": 2, "wl_infer.gguf_meta": 2, "wl_infer.bounded_http": 2,
    # 4: the engines
    "wl_infer.backends.llama_cpp": 4, "wl_infer.backends.ollama": 4, "wl_infer.backends.openai": 4,
    "wl_infer.backends.vllm": 4, "wl_infer.backends.llama_fit": 4, "wl_infer.backends.llama_exact": 4, "wl_infer.backends.llama_engine": 4,
    # 5: settings, the model catalogue, the chain library
    "wl_infer.settings": 5, "wl_infer.catalog": 5, "wl_infer.rpc": 5, "wl_infer.chain_abi": 5, "wl_infer.chain": 5,
    "wl_infer.bounty": 5,
    # 6: posting and running jobs, anchoring
    "wl_infer.jobs": 6, "wl_infer.anchoring": 6, "wl_infer.preflight": 6, "wl_infer.bounty_board": 6,
    "wl_infer.bounty_settle": 6, "wl_infer.bounty_column": 6,
    # 7: verifying, the canary, what loops share
    "wl_infer.verify": 7, "wl_infer.canary": 7, "wl_infer.automation": 7,
    # 8: audits, the feeder, a worker's pieces
    "wl_infer.audit": 8, "wl_infer.feeder": 8, "wl_infer.interrupt": 8, "wl_infer.jobrun": 8, "wl_infer.saved": 8,
    # 9: the worker; the web app (wl serve) over the same domain functions
    "wl_infer.worker": 9, "wl_infer.web": 9, "wl_infer.web.data": 9, "wl_infer.web.charts": 9,
    "wl_infer.web.index": 9, "wl_infer.web.detail": 9, "wl_infer.web.app": 9, "wl_infer.web.pages": 9,
    "wl_infer.web.api": 9,
    # 10: the command line (the only place for click, rich and board.cli)
    "wl_infer.commands": 10, "wl_infer.commands.params": 10, "wl_infer.commands.events": 10,
    "wl_infer.commands.infer": 10, "wl_infer.commands.chain": 10, "wl_infer.commands.demo": 10,
    "wl_infer.commands.audit": 10, "wl_infer.commands.canary": 10, "wl_infer.commands.feed": 10,
    "wl_infer.commands.worker": 10, "wl_infer.commands.serve": 10, "wl_infer.commands.bounty": 10,
    "wl_infer.commands.progress": 10,
}  # fmt: skip

FLOORS = {**BOARD_FLOORS, **INFER_FLOORS}
UI_LIBRARIES = ("click", "rich")
# Imported only by chain code: the base install (board and default backends) works without them.
CHAIN_LIBRARIES = ("web3", "eth_account", "eth_utils", "eth_abi", "eth_tester", "tenacity")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("board", "wl_infer"):
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> list[str]:
    """Every absolute import target, `from a import b` counted as `a.b` where that is a module."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
            out.extend(subs or [node.module])
    return out


def test_every_module_has_a_floor() -> None:
    assert sorted(set(MODULES) - set(FLOORS)) == []
    assert sorted(set(FLOORS) - set(MODULES)) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_from_a_higher_floor(name: str) -> None:
    mine = FLOORS[name]
    upward = [t for t in _imports(MODULES[name]) if t in FLOORS and t != name and FLOORS[t] > mine
              and (t in BOARD_FLOORS) == (name in BOARD_FLOORS)]  # fmt: skip
    assert upward == [], f"{name} (floor {mine}) imports higher floors: {upward}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_packages_meet_only_through_declared_surfaces(name: str) -> None:
    targets = _imports(MODULES[name])
    if name.startswith("board"):
        assert [t for t in targets if t.split(".")[0] == "wl_infer"] == [], "board never imports wl_infer"
        return
    allowed = ("board.api",) + (("board.cli.main", "board.cli.output") if name.startswith("wl_infer.commands") else ())
    assert [t for t in targets if t.split(".")[0] == "board" and t not in allowed] == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("wl_infer")))
def test_only_commands_import_click_or_rich(name: str) -> None:
    if name.startswith("wl_infer.commands"):
        return
    assert [t for t in _imports(MODULES[name]) if t.split(".")[0] in UI_LIBRARIES] == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_the_chain_libraries_are_imported_only_by_chain_code() -> None:
    chain_code = {"wl_infer.chain", "wl_infer.chain_abi", "wl_infer.rpc", "wl_infer.merkle", "wl_infer.bounty"}
    users = {n for n in MODULES if any(t.split(".")[0] in CHAIN_LIBRARIES for t in _imports(MODULES[n]))}
    assert users <= chain_code, sorted(users - chain_code)


def test_the_base_path_loads_no_chain_library() -> None:
    """Importing every module outside the chain code (engines' own libraries aside) pulls in none of them."""
    skip = {"wl_infer.chain", "wl_infer.chain_abi", "wl_infer.rpc", "wl_infer.merkle", "wl_infer.bounty",
            "wl_infer.backends.vllm"}
    names = sorted(n for n in MODULES if n not in skip)
    code = (
        f"import importlib, sys\nfor n in {names!r}: importlib.import_module(n)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {CHAIN_LIBRARIES!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_board_api_declares_what_it_serves_and_loads_it_lazily() -> None:
    code = (
        "import sys, board.api as api\n"
        "assert 'dulwich' not in sys.modules and 'board.service' not in sys.modules\n"
        "missing = [n for n in api.__all__ if getattr(api, n, None) is None]\n"
        "print(missing); sys.exit(1 if missing or 'board.service' not in sys.modules else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
