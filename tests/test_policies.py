"""Hint policies: pure choices per (row, step), adaptive updates, and their saved state."""

from __future__ import annotations

import numpy as np
import pytest

from rtpo_data import Curriculum
from rtpo_data.errors import RtpoDataError
from rtpo_data.policies import (
    Frontier,
    GlobalSchedule,
    Mixed,
    Observations,
    PendingObservations,
    PolicyState,
    floor_stage,
    make_policy,
    step_metrics,
    uniform,
)
from rtpo_data.schedule import Clock

T = 100


@pytest.fixture(scope="module")
def cur(gsm8k_curriculum) -> Curriculum:
    return gsm8k_curriculum


def clock(cur: Curriculum, total: int = T) -> Clock:
    return cur.clock(total)


def test_global_is_the_schedule_for_every_row_and_step(cur: Curriculum) -> None:
    policy = GlobalSchedule()
    state = policy.init_state(cur, clock(cur), seed=1)
    rows = np.arange(len(cur))
    for step in range(0, T + 10):
        assert (policy.select(state, rows, step) == cur.stage_at(step, T)).all()
    assert policy.update(state, Observations(rows[:2], np.zeros(2, int), np.zeros(2, int), np.ones(2, int), 0)) is state


@pytest.mark.parametrize("policy", [Mixed(), Mixed(mode="binomial"), Frontier()], ids=["uniform", "binomial", "frontier"])
def test_choices_are_pure_in_row_and_step(cur: Curriculum, policy) -> None:
    """Any batch order, any split over processes, any seed of the process RNG: the same stage per row."""
    state = policy.init_state(cur, clock(cur), seed=3)
    rows = np.arange(len(cur))
    for step in (0, 7, 40, 77):
        whole = policy.select(state, rows, step)
        order = np.random.default_rng(step).permutation(len(rows))
        assert (policy.select(state, rows[order], step) == whole[order]).all()
        halves = np.concatenate([policy.select(state, rows[::2], step), policy.select(state, rows[1::2], step)])
        assert (halves == np.concatenate([whole[::2], whole[1::2]])).all()
        np.random.seed(step)  # a global RNG has no say
        assert (policy.select(state, rows, step) == whole).all()


def test_mixed_holds_several_stages_in_a_batch_above_the_floor(cur: Curriculum) -> None:
    last = cur.num_stages - 1
    for policy in (Mixed(), Mixed(mode="binomial")):
        state = policy.init_state(cur, clock(cur), seed=0)
        rows = np.arange(len(cur))
        early = policy.select(state, rows, 10)
        assert len(set(early.tolist())) >= 3  # one batch, several hint levels
        for step in range(0, T + 5, 5):
            stages = policy.select(state, rows, step)
            floor = floor_stage(state, step, policy.floor_start)
            assert stages.min() >= floor and stages.max() <= last
        assert (policy.select(state, rows, T) == last).all()  # no hint at the horizon
        assert (policy.select(state, rows, 10) != policy.select(policy.init_state(cur, clock(cur), seed=1), rows, 10)).any()


def test_binomial_mix_follows_its_cosine(cur: Curriculum) -> None:
    """Stage = (K - 1) - Binomial(K - 1, q): its mean over rows is (K - 1)(1 - q)."""
    policy = Mixed(mode="binomial", floor_start=0.99)
    state = policy.init_state(cur, clock(cur), seed=5)
    rows = np.arange(len(cur))
    k = cur.num_stages - 1
    for step, q in ((0, 0.95), (50, 0.5), (90, 0.05 + 0.9 * (1 + np.cos(np.pi * 0.9)) / 2)):
        mean = policy.select(state, rows, step).mean()
        assert mean == pytest.approx(k * (1 - q), abs=4 * np.sqrt(k * q * (1 - q) / len(rows)) + 0.05)


def test_uniform_hash_is_uniform_and_keyed() -> None:
    u = uniform(7, np.arange(20_000), step=3)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert not np.array_equal(u, uniform(7, np.arange(20_000), step=4))
    assert not np.array_equal(u, uniform(8, np.arange(20_000), step=3))
    assert not np.array_equal(u, uniform(7, np.arange(20_000), step=3, stream=1))


def _obs(rows, stages, successes, step, samples=4) -> Observations:
    rows = np.asarray(rows)
    return Observations(rows, np.asarray(stages), np.asarray(successes), np.full(len(rows), samples), step)


def test_frontier_steps_back_on_failure_and_forward_on_success(cur: Curriculum) -> None:
    policy = Frontier(floor_start=0.5)
    state = policy.init_state(cur, clock(cur), seed=0)
    last = cur.num_stages - 1
    assert (policy.select(state, [0, 1, 2], 0) == 0).all()  # the whole trace to start
    state = policy.update(state, _obs([0, 1], [0, 0], [3, 0], step=0))
    assert policy.select(state, [0, 1, 2], 1).tolist() == [1, 0, 0]  # 0 earned reward; 1 failed at the full trace
    state = policy.update(state, _obs([0], [1], [0], step=2))
    assert policy.select(state, [0], 3).tolist() == [0]  # failed at stage 1: more hint
    for step in range(4, 4 + 2 * last, 2):
        stage = int(policy.select(state, [0], step)[0])
        state = policy.update(state, _obs([0], [stage], [1], step=step))
    assert policy.select(state, [0], 30).tolist() == [last]  # kept succeeding: no hint
    # The floor: a row that always fails still reaches no hint by the horizon.
    assert policy.select(state, [1], 75).tolist() == [floor_stage(state, 75, 0.5)] and floor_stage(state, 75, 0.5) > 0
    assert policy.select(state, [1], T).tolist() == [last]


def test_frontier_counts_a_step_once(cur: Curriculum) -> None:
    policy = Frontier()
    state = policy.init_state(cur, clock(cur), seed=0)
    state = policy.update(state, _obs([5], [0], [2], step=4))
    again = policy.update(state, _obs([5], [1], [2], step=4))  # a resume replays step 4
    assert again is state
    # Two groups of one row in one step add up: one success between them is a success.
    both = policy.update(policy.init_state(cur, clock(cur), seed=0), _obs([6, 6], [0, 0], [0, 1], step=0))
    assert policy.select(both, [6], 1).tolist() == [1]


def test_observations_from_completions_check_groups() -> None:
    obs = Observations.from_completions([3, 3, 4, 4], [1, 1, 0, 0], [True, False, False, False], 9, 2)
    assert obs.rows.tolist() == [3, 4] and obs.successes.tolist() == [1, 0] and obs.samples.tolist() == [2, 2]
    with pytest.raises(RtpoDataError, match="mixes rows or stages"):
        Observations.from_completions([3, 4], [1, 1], [True, True], 9, 2)
    with pytest.raises(RtpoDataError, match="mixes rows or stages"):
        Observations.from_completions([3, 3], [1, 2], [True, True], 9, 2)


def test_state_round_trips_and_is_refused_for_another_run(cur: Curriculum, tmp_path, gsm8k_file) -> None:
    from rtpo_data import BuildConfig, build

    policy = Frontier()
    state = policy.update(policy.init_state(cur, clock(cur), seed=2), _obs([0, 1], [0, 0], [1, 0], step=0))
    state.save(tmp_path)
    fresh = policy.init_state(cur, clock(cur), seed=2)
    loaded = PolicyState.load(tmp_path, fresh)
    assert all(np.array_equal(loaded.arrays[k], state.arrays[k]) for k in state.arrays)
    assert loaded.meta() == state.meta()
    other = tmp_path / "other"
    build(BuildConfig(source=str(gsm8k_file), out=str(other), tokenizer="offline:qwen3", total_steps=T, limit=50))
    other_cur = Curriculum.open(other)
    with pytest.raises(RtpoDataError, match="belongs to another run .*curriculum: saved"):
        PolicyState.load(tmp_path, policy.init_state(other_cur, clock(other_cur), seed=2))
    with pytest.raises(RtpoDataError, match="policy: saved 'frontier', now 'mixed'"):
        PolicyState.load(tmp_path, Mixed().init_state(cur, clock(cur), seed=2))
    with pytest.raises(RtpoDataError, match="horizon: saved 100, now 50"):
        PolicyState.load(tmp_path, policy.init_state(cur, clock(cur, 50), seed=2))
    with pytest.raises(RtpoDataError, match="was not saved with a hint policy"):
        PolicyState.load(tmp_path / "nowhere", fresh)


def test_adaptive_policies_need_a_schedule_going_down(tmp_path, gsm8k_file) -> None:
    from rtpo_data import BuildConfig, build

    up = tmp_path / "up"
    build(BuildConfig(source=str(gsm8k_file), out=str(up), tokenizer="offline:qwen3", total_steps=T, limit=20,
                      direction="up"))
    c = Curriculum.open(up)
    GlobalSchedule().init_state(c, clock(c), seed=0)
    with pytest.raises(RtpoDataError, match="needs a schedule going down"):
        Frontier().init_state(c, clock(c), seed=0)


def test_names_and_objects(cur: Curriculum) -> None:
    assert isinstance(make_policy(None), GlobalSchedule) and isinstance(make_policy("mixed"), Mixed)
    assert isinstance(make_policy("frontier"), Frontier)
    custom = Frontier(floor_start=0.2)
    assert make_policy(custom) is custom
    with pytest.raises(RtpoDataError, match="policy='adaptive': use one of global, mixed, frontier"):
        make_policy("adaptive")
    with pytest.raises(RtpoDataError, match="has no init_state"):
        make_policy(object())
    with pytest.raises(RtpoDataError, match="mode='cosine': use uniform or binomial"):
        Mixed(mode="cosine")


def test_step_metrics(cur: Curriculum) -> None:
    state = Frontier().init_state(cur, clock(cur), seed=0)
    obs = _obs([0, 1, 2, 3], [0, 0, 1, cur.num_stages - 1], [0, 4, 2, 0], step=0)
    m = step_metrics(state, cur, obs)
    assert m["all_fail_groups"] == 0.5 and m["all_succeed_groups"] == 0.25
    assert m["stage_share/0"] == 0.5 and m["stage_share/1"] == 0.25
    assert sum(v for k, v in m.items() if k.startswith("stage_share/")) == 1.0
    expected = np.mean([cur.cut(0, 0)[0], cur.cut(1, 0)[0], cur.cut(2, 1)[0], 0])
    assert m["hint_tokens_mean"] == pytest.approx(expected)


def test_pending_observations_apply_a_step_once_with_all_of_its_groups(cur: Curriculum) -> None:
    """A step generated in several calls (dynamic filtering drew row 7 again after its first group was
    dropped): applied call by call, the policy keeps only the first group of the step, and the row goes
    back although it succeeded in the step; held until the step ends, both groups count, and the row
    goes forward. Observations of a later step wait for it to end."""
    policy = Frontier()
    fresh = policy.init_state(cur, clock(cur), seed=0)
    failed, solved = _obs([7], [0], [0], step=3), _obs([7], [0], [2], step=3)
    by_call = policy.update(policy.update(fresh, failed), solved)
    assert policy.select(by_call, [7], 4).tolist() == [0]  # what the per-call update gave: the success lost
    pending = PendingObservations()
    for part in (failed, solved, _obs([8], [0], [1], step=4)):
        pending.add(part)
    state, applied = pending.apply(policy, fresh, before=4)
    assert policy.select(state, [7, 8], 4).tolist() == [1, 0]
    assert [(o.step, o.rows.tolist(), o.successes.tolist()) for o in applied] == [(3, [7, 7], [0, 2])]
    assert len(pending) == 1  # row 8's group of step 4, until step 4 ends
    state, applied = pending.apply(policy, state)
    assert policy.select(state, [7, 8], 5).tolist() == [1, 1] and [o.step for o in applied] == [4] and not len(pending)
    with pytest.raises(RtpoDataError, match="parts of steps \\[3, 4\\]"):
        Observations.join([failed, _obs([8], [0], [1], step=4)])
