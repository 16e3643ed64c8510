"""The scale simulation (tests/benchmarks/scale_sim.py) computes what its model says: a lone worker's
throughput is its cycle time, contention on `main` grows with workers while lane claims do not contend,
and a server with too few cores becomes the limit."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))

from scale_sim import Config, Costs, simulate  # noqa: E402

FREE = Costs(**dict.fromkeys(Costs.__dataclass_fields__, 0.0))  # every CPU cost zero: only what a test sets


def test_a_lone_worker_runs_at_its_cycle_time() -> None:
    # 1 s jobs, 10 ms round trips: per job a fetch, a lane push and a main push (3 round trips) + 1 s
    row = simulate(Config(1, jobs=20, job_s=1.0, rtt=0.010, costs=FREE))
    assert row["jobs_per_min"] == pytest.approx(60 / 1.030, rel=0.01)
    assert row["pushes_per_landed"] == 1.0 and row["lost_per_claim"] == 0 and row["gave_up"] == 0


def test_a_batch_of_four_lands_five_commits_in_two_pushes() -> None:
    row = simulate(Config(1, jobs=40, batch=4, job_s=0.5, costs=FREE))
    assert row["pushes_per_landed"] == pytest.approx(2 / 5)  # one lane push (4 claims), one main commit


def test_main_contention_grows_with_workers_and_lanes_remove_it_from_claims() -> None:
    costs = replace(FREE, c_main=0.02, c_adv=0.005, c_fetch=0.005, c_lane=0.015, t_run=0.02)
    main = [simulate(Config(k, jobs=160, mode="main", server_cores=8, costs=costs))["pushes_per_landed"]
            for k in (1, 4, 16)]  # fmt: skip
    lanes = [simulate(Config(k, jobs=160, batch=4, server_cores=8, costs=costs))["pushes_per_landed"]
             for k in (1, 4, 16)]  # fmt: skip
    assert main[0] == 1.0 and main[0] < main[1] < main[2]
    assert all(x < y for x, y in zip(lanes, main, strict=True))


def test_a_one_core_server_is_the_limit_for_many_workers() -> None:
    costs = replace(FREE, c_lane=0.02, c_main=0.03, c_fetch=0.005, c_adv=0.005)
    one = simulate(Config(64, jobs=640, batch=4, job_s=2.0, server_cores=1, costs=costs))
    eight = simulate(Config(64, jobs=640, batch=4, job_s=2.0, server_cores=8, costs=costs))
    assert one["cpu_busy"] > 0.9
    assert eight["jobs_per_min"] > 1.5 * one["jobs_per_min"]
