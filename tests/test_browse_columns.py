"""Plugin columns in `wl browse` (entry point group `wl.browse_columns`), through a real installed
distribution: a real `wl` process finds the plugins by importlib.metadata on its path. A column with hostile
text is sanitised and cut short; a column that raises is one warning line and the listing goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WL = str(Path(sys.executable).with_name("wl"))
PLUGIN = '''
def loud(items):
    return {i.id: "\\x1b[31mred\\x1b[0m " + "x" * 100 for i in items}

def broken(items):
    raise RuntimeError("this column is broken")

def quiet(items):
    return {}
'''


def _install(site: Path) -> None:
    (site / "colplugin.py").write_text(PLUGIN, encoding="utf-8")
    info = site / "colplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: colplugin\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "[wl.browse_columns]\nloud = colplugin:loud\nbroken = colplugin:broken\nquiet = colplugin:quiet\n",
        encoding="utf-8",
    )


def _wl(home: Path, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([WL, "--home", str(home), *args], env=env, capture_output=True, text=True, timeout=120)


def test_plugin_columns_are_shown_sanitised_and_a_broken_one_is_a_warning(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install(site)
    home = tmp_path / "home"
    commons = tmp_path / "commons.git"
    assert _wl(tmp_path, site, "create", str(commons), "--name", "cols").returncode == 0
    assert _wl(home, site, "join", str(commons), "--handle", "alice").returncode == 0
    posted = _wl(home, site, "--json", "post", "--title", "one item")
    assert posted.returncode == 0, posted.stderr
    iid = json.loads(posted.stdout)["id"]

    listed = _wl(home, site, "--json", "browse")
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert [i["id"] for i in doc["items"]] == [iid]
    assert set(doc["columns"]) == {"loud"}  # the broken one is left out, the quiet one has nothing to say
    assert len(doc["columns"]["loud"][iid]) == 40
    assert listed.stderr.count("\n") == 1
    assert listed.stderr.startswith("wl: warning: browse column broken failed: RuntimeError: this column is broken")

    human = _wl(home, site, "browse")
    assert human.returncode == 0 and "LOUD" in human.stdout and "QUIET" not in human.stdout
    assert "\x1b" not in human.stdout and "1 of 1 item(s)" in human.stdout
