"""The scale simulation (tests/benchmarks/scale_sim.py) computes what its model says: a lone worker's
throughput is its cycle time, contention on `main` grows with workers while lane claims do not contend,
and a server with too few cores becomes the limit; with results on lanes (`--mode results`) a fold carries
the results of several workers, fewer `main` pushes land them, and none is lost when a fold gives up."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))

import scale_sim  # noqa: E402
from scale_sim import Config, Costs, Manners, simulate  # noqa: E402

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


# --mode results: results pushed onto their lanes, then folded into main by whoever wins the fold push

CONTENDED = replace(FREE, c_main=0.02, c_adv=0.005, c_fetch=0.005, c_lane=0.015, t_run=0.02)


def test_a_lone_worker_folds_each_batch_in_one_main_push_and_leaves_nothing_on_lanes() -> None:
    # per batch: a fetch, a lane claim, 4 jobs of 1 s, a lane push of the 4 results, one fold push of main
    row = simulate(Config(1, jobs=20, batch=4, job_s=1.0, rtt=0.010, mode="results", costs=FREE))
    assert row["jobs_per_min"] == pytest.approx(60 * 4 / 4.040, rel=0.01)
    assert row["folded"] == 20 and row["on_lanes"] == 0
    assert row["results_per_fold"] == 4 and row["main_pushes_per_result"] == pytest.approx(1 / 4)
    assert row["pushes_per_landed"] == pytest.approx(3 / 9)  # claim, results, fold: 4 + 4 lane commits + 1
    # lag: the lane push's answer (half a round trip), then the fold push reaches the server (the other half)
    assert row["lag_median"] == pytest.approx(0.010) and row["lag_p95"] == pytest.approx(0.010)
    assert row["gave_up"] == 0 and row["fold_gave_up"] == 0


@pytest.mark.parametrize("batch", [1, 4])
def test_at_200_workers_results_on_lanes_need_fewer_main_pushes_and_give_nothing_up(batch: int) -> None:
    cfg = Config(200, jobs=800, batch=batch, job_s=30.0, rtt=0.040, server_cores=8, seed=1)
    lanes = simulate(cfg)
    results = simulate(replace(cfg, mode="results"))
    assert results["main_pushes_per_result"] < lanes["main_pushes_per_result"]
    assert results["folded"] == 800 and results["on_lanes"] == 0 and results["gave_up"] == 0
    assert lanes["folded"] == 0 and lanes["lag_median"] != lanes["lag_median"]  # NaN: nothing was on a lane
    assert 0 < results["lag_median"] <= results["lag_p95"]


def test_a_fold_carries_the_results_of_several_workers_when_they_contend() -> None:
    cfg = Config(64, jobs=640, batch=1, rtt=0.010, server_cores=8, mode="results", costs=CONTENDED)
    alone = simulate(replace(cfg, workers=1, jobs=64))
    many = simulate(cfg)
    assert alone["results_per_fold"] == 1 and alone["main_pushes_per_result"] == 1
    assert many["results_per_fold"] > 2
    assert many["main_pushes_per_result"] < simulate(replace(cfg, mode="lanes"))["main_pushes_per_result"]


def test_a_fold_carries_at_most_fold_max_and_a_fold_that_gives_up_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scale_sim, "FOLD_MAX", 1)  # folds of one result each: main contends as before lanes
    row = simulate(Config(64, jobs=640, batch=1, rtt=0.010, server_cores=8, mode="results", costs=CONTENDED))
    assert row["results_per_fold"] == 1
    assert row["fold_gave_up"] > 0  # some folds ran out of attempts ...
    assert row["gave_up"] == 0 and row["folded"] == 640 and row["on_lanes"] == 0  # ... later folds took them


def test_lanes_mode_lands_a_batch_of_results_in_one_main_push() -> None:
    row = simulate(Config(1, jobs=40, batch=4, job_s=0.5, costs=FREE))
    assert row["main_pushes_per_result"] == pytest.approx(1 / 4)
    assert row["results_per_fold"] != row["results_per_fold"]  # NaN: no fold commits in lanes mode


def test_claims_on_main_in_batches_still_complete_every_item_exactly_once() -> None:
    # A batch's later items are checked against each refetch: one another worker took meanwhile is skipped,
    # not claimed a second time (simulate asserts every item completed exactly once, or raises).
    costs = replace(FREE, c_main=0.02, c_adv=0.005, c_fetch=0.005, t_run=0.02)
    for seed in range(3):
        row = simulate(Config(8, jobs=160, batch=4, mode="main", server_cores=8, costs=costs, seed=seed))
        assert row["gave_up"] == 0 and row["lost_per_claim"] > 0  # contended, and still exactly once


# --fold-quiet: the fold manners of board/folding.Courtesy (a worker defers its fold while main moved lately)

POLITE = Config(30, jobs=120, job_s=5.0, rtt=0.040, server_cores=8, mode="results", fold_quiet=1.0)
# what the simulation gave for this run before --fold-quiet existed (commit 7d813e7)
BEFORE_CFG = Config(20, jobs=80, batch=2, job_s=2.0, rtt=0.040, server_cores=8, mode="results", seed=3)
BEFORE = {"jobs_per_min": 376.48704803557126, "pushes_per_landed": 1.1657142857142857, "main_pushes_per_result": 1.2625,
          "results_per_fold": 5.333333333333333, "lag_median": 0.3829057683083512, "lag_p95": 0.5762224576395383,
          "fold_gave_up": 0, "on_lanes": 0, "folded": 80}  # fmt: skip


def test_without_manners_the_figures_are_those_of_the_model_before_them() -> None:
    row = simulate(replace(BEFORE_CFG, fold_quiet=0.0))
    assert {k: row[k] for k in BEFORE} == BEFORE
    assert simulate(BEFORE_CFG) == row  # 0 is the default


@pytest.mark.parametrize("seed", [1, 2])
def test_manners_need_fewer_main_pushes_and_still_complete_every_item_once(seed: int) -> None:
    plain = simulate(replace(POLITE, fold_quiet=0.0, seed=seed))
    polite = simulate(replace(POLITE, seed=seed))  # raises unless every item was completed exactly once
    assert polite["main_pushes_per_result"] < plain["main_pushes_per_result"] / 2
    assert polite["results_per_fold"] > 2 * plain["results_per_fold"]
    assert polite["folded"] == 120 and polite["on_lanes"] == 0
    assert polite["gave_up"] == 0 and polite["fold_gave_up"] == 0


def test_a_lone_worker_with_manners_folds_each_result_straight_onto_main() -> None:
    # it never sees anyone else move main: per job a fetch, a lane claim, 1 s, a fetch (before submitting)
    # and one push of main with a fold of the result, which goes onto no lane
    row = simulate(Config(1, jobs=20, job_s=1.0, rtt=0.010, mode="results", fold_quiet=1.0, costs=FREE))
    assert row["jobs_per_min"] == pytest.approx(60 / 1.040, rel=0.01)
    assert row["main_pushes_per_result"] == 1 and row["results_per_fold"] == 1
    assert row["pushes_per_landed"] == 1.0  # the claim and the fold: two pushes, two commits
    assert row["lag_median"] == 0 and row["lag_p95"] == 0


def test_with_short_jobs_workers_fold_once_main_has_been_quiet() -> None:
    # workers fetch every fraction of a second, so they see main quiet for the quiet time and fold then
    cfg = Config(16, jobs=320, job_s=0.2, rtt=0.040, server_cores=8, mode="results", costs=CONTENDED)
    plain, polite = simulate(cfg), simulate(replace(cfg, fold_quiet=0.5))
    assert polite["main_pushes_per_result"] < plain["main_pushes_per_result"] / 4
    assert polite["results_per_fold"] > 2 * plain["results_per_fold"]
    assert polite["lag_p95"] < 0.5 * 2 + 0.5  # a quiet time, times at most 2, and a cycle
    assert polite["folded"] == 320 and polite["on_lanes"] == 0


def test_a_move_is_dated_by_mains_last_commit_to_the_second_and_the_first_fetch_is_a_baseline() -> None:
    now = [3.0]
    manners = Manners(1.0, lambda: now[0], "t")
    manners.fetched(True, 2.5, 40)  # the first fetch: whatever it finds, no move
    assert manners.moved_at is None and manners.looked_at == 3.0 and not manners.defer([1])
    now[0] = 10.0
    manners.fetched(True, 0.5, 1)  # 9.5 s ago, less a second: 8.5 s, but only 7 s since its last look
    assert manners.moved_at == 3.0 and manners.gap == 0.0
    now[0] = 20.0
    manners.fetched(True, 18.0, 4)  # 2 s ago, less a second: 1 s; 4 commits in 16 s, 4 s each
    assert manners.moved_at == 19.0 and manners.gap == 2.0
    assert manners.defer([2])  # quiet for 1 s, under twice the gap times a factor from 1 to 2 ...
    now[0] = 28.0
    manners.fetched(False, 18.0, 0)
    assert not manners.defer([3])  # ... but not 9 s
    now[0] = 30.0
    manners.fetched(True, 29.6, 1)  # 0.4 s ago: just now, to the second
    assert manners.moved_at == 30.0 and manners.gap == 2.5  # (2 + 11) / 2, but MAX_DEFER quiet periods / 4
    now[0] = 31.0
    manners.moved(5.0)  # never earlier than a move it knew of
    assert manners.moved_at == 30.0 and manners.gap == 2.5
    manners.moved()  # a push of its own refused: a move just now
    assert manners.moved_at == 31.0 and manners.gap == 1.75


def test_workers_in_step_with_long_jobs_leave_their_results_about_one_job_on_lanes() -> None:
    # 5 s jobs each, all started together: they end their jobs within a second of each other, the first folds
    # and the others find main moved just now and defer; nobody fetches again until the next jobs end, so
    # their results wait a job for the next first one's fold, and no longer (not to the end of the run)
    job_s = 5.0
    row = simulate(Config(20, jobs=300, job_s=job_s, rtt=0.040, server_cores=8, mode="results", fold_quiet=0.5))  # fmt: skip
    assert 0.8 * job_s < row["lag_median"] <= row["lag_p95"] < 2 * job_s
    assert row["folded"] == 300 and row["on_lanes"] == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_out_of_step_workers_with_long_jobs_fold_once_main_was_quiet_well_within_a_job(seed: int) -> None:
    # jobs of 10 to 30 s: a worker ending one sees by main's last commit that the last fold was seconds ago,
    # and folds once that is the quiet time; dated by when it looked (a move found is "just now") nearly every
    # fold would be forced, after MAX_DEFER quiet periods of a result's wait: half the results wait over 4 s
    quiet, job_s = 1.0, 20.0
    row = simulate(Config(36, jobs=144, job_s=job_s, job_spread=0.5, rtt=0.040, server_cores=8,
                          mode="results", fold_quiet=quiet, seed=seed))  # fmt: skip
    assert row["lag_median"] < 0.15 * job_s
    assert row["lag_p95"] < quiet * scale_sim.MAX_DEFER + 1
    assert row["main_pushes_per_result"] < 0.5 and row["results_per_fold"] > 2
    assert row["folded"] == 144 and row["on_lanes"] == 0 and row["fold_gave_up"] == 0


def test_a_job_spread_of_0_keeps_every_figure() -> None:
    row = simulate(replace(BEFORE_CFG, job_spread=0.0))
    assert {k: row[k] for k in BEFORE} == BEFORE
    spread = simulate(replace(BEFORE_CFG, job_spread=0.5))
    assert spread["folded"] == 80 and spread["jobs_per_min"] != row["jobs_per_min"]


def test_a_result_nobody_carries_is_folded_after_max_defer_quiet_periods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # folds of one result each (their folder's own): main moves all the time and carries few of the others,
    # so those wait until their worker's manners force them onto main, MAX_DEFER quiet periods on
    monkeypatch.setattr(scale_sim, "FOLD_MAX", 1)
    quiet, job_s = 0.5, 1.0
    row = simulate(Config(8, jobs=80, job_s=job_s, rtt=0.040, server_cores=8, mode="results", fold_quiet=quiet))  # fmt: skip
    assert row["lag_median"] > quiet * scale_sim.MAX_DEFER / 2  # deferred ...
    assert row["lag_p95"] < quiet * scale_sim.MAX_DEFER + 2 * job_s + 1.5  # ... not for longer: 15 s without
    assert row["folded"] == 80 and row["on_lanes"] == 0


def test_a_stopping_worker_folds_what_is_left_whatever_main_does() -> None:
    # one job each: all fold at once on a board none has seen move, one wins, the others' results go onto
    # their lanes and wait (MAX_DEFER quiet periods would be 1,000 s) until the workers, out of work, stop
    row = simulate(Config(8, jobs=8, job_s=1.0, rtt=0.040, server_cores=8, mode="results", fold_quiet=100.0,
                          fold_idle=1.0))  # fmt: skip
    assert row["folded"] == 8 and row["on_lanes"] == 0
    assert 1.0 <= row["lag_p95"] < 3.0
    # 8 straight pushes (one lands; a refusal is a move: the 7 others do not retry), then folds on stopping
    assert row["main_pushes_per_result"] < 1.5
