"""Tests for rtpo_data.schedule: the curve shapes, their quantization into stages, the step clock, and
a schedule that never empties warned in the manifest."""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtpo_data.errors import ConfigError
from rtpo_data.schedule import (
    CURVE_KINDS,
    DEFAULT_STAGES,
    KINDS,
    Clock,
    ScheduleConfig,
    keep_fraction,
    resolve_horizon,
    stage_at,
    stage_fractions,
)

from helpers import build_rows

# A per-test setting rather than a global profile, so other test modules keep their own.
fast = settings(deadline=None, max_examples=50)

# -- strategies ----------------------------------------------------------------------------------------

fraction = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
directions = st.sampled_from(["down", "up"])
rates = st.floats(min_value=1e-9, max_value=1e3, allow_nan=False, allow_infinity=False)
# Progress values, including some outside [0, 1] that keep_fraction must clip.
progress = st.floats(min_value=-0.5, max_value=1.5, allow_nan=False)


def ordered(direction: str, xs: list[float]) -> list[float]:
    """Arrange fractions so the hint never grows along a down schedule (never shrinks along up)."""
    return sorted(xs, reverse=direction == "down")


@st.composite
def curve_configs(draw) -> ScheduleConfig:
    kind = draw(st.sampled_from(CURVE_KINDS))
    direction = draw(directions)
    kwargs = {"kind": kind, "direction": direction}
    if draw(st.booleans()):
        s, e = ordered(direction, [draw(fraction), draw(fraction)])
        kwargs.update(start=s, end=e)
    if kind == "exponential":
        kwargs["rate"] = draw(rates)
    return ScheduleConfig(**kwargs)


@st.composite
def piecewise_configs(draw) -> ScheduleConfig:
    direction = draw(directions)
    later = draw(st.lists(st.floats(min_value=1e-6, max_value=1.0), max_size=5, unique=True))
    milestones = [0.0] + sorted(later)
    values = ordered(direction, draw(st.lists(fraction, min_size=len(milestones), max_size=len(milestones))))
    return ScheduleConfig(kind="piecewise", direction=direction, milestones=milestones, values=values)


@st.composite
def staged_configs(draw) -> ScheduleConfig:
    direction = draw(directions)
    fractions = ordered(direction, draw(st.lists(fraction, min_size=2, max_size=10)))
    return ScheduleConfig(kind="staged", direction=direction, fractions=fractions)


constant_configs = st.builds(ScheduleConfig, kind=st.just("constant"), direction=directions, value=fraction)
any_config = st.one_of(curve_configs(), piecewise_configs(), staged_configs(), constant_configs)


def is_monotone(xs, direction: str) -> bool:
    pairs = list(zip(xs, xs[1:]))
    return all(a >= b for a, b in pairs) if direction == "down" else all(a <= b for a, b in pairs)


def expected_ends(c: ScheduleConfig) -> tuple[float, float]:
    up = c.direction == "up"
    return (
        c.start if c.start is not None else (0.0 if up else 1.0),
        c.end if c.end is not None else (1.0 if up else 0.0),
    )


# -- the curve kinds -----------------------------------------------------------------------------------


@fast
@given(curve_configs(), st.lists(progress, min_size=2, max_size=40))
def test_curves_hit_their_endpoints_exactly_stay_in_range_and_are_monotone(c, ps):
    s, e = expected_ends(c)
    assert keep_fraction(c, 0.0) == s
    assert keep_fraction(c, 1.0) == e
    grid = sorted(ps + [0.0, 1.0] + [i / 64 for i in range(65)])
    ys = [keep_fraction(c, p) for p in grid]
    assert all(0.0 <= y <= 1.0 for y in ys)
    assert all(min(s, e) <= y <= max(s, e) for y in ys)
    assert is_monotone(ys, c.direction), list(zip(grid, ys))


@pytest.mark.parametrize("kind", CURVE_KINDS)
@pytest.mark.parametrize(("direction", "first", "last"), [("down", 1.0, 0.0), ("up", 0.0, 1.0)])
def test_default_curves_run_from_full_trace_to_empty_hint(kind, direction, first, last):
    c = ScheduleConfig(kind=kind, direction=direction)
    # Exact, not approximately: a cut of 1e-17 of a trace is not an empty hint to `==`.
    assert keep_fraction(c, 0) == first
    assert keep_fraction(c, 1) == last
    assert c.endpoints() == (first, last)
    assert c.warnings() == []


@fast
@given(st.floats(min_value=0.0, max_value=1.0), fraction, fraction, st.floats(min_value=0.01, max_value=50))
def test_curves_follow_their_formulas(p, a, b, r):
    s, e = max(a, b), min(a, b)
    formulas = {
        "linear": e + (s - e) * (1 - p),
        "cosine": e + (s - e) * 0.5 * (1 + math.cos(math.pi * p)),
        "exponential": e + (s - e) * (math.exp(-r * p) - math.exp(-r)) / (1 - math.exp(-r)),
    }
    for kind, want in formulas.items():
        extra = {"rate": r} if kind == "exponential" else {}
        got = keep_fraction(ScheduleConfig(kind=kind, start=s, end=e, **extra), p)
        assert got == pytest.approx(want, abs=1e-9), kind


def test_up_curves_rise():
    c = ScheduleConfig(kind="linear", direction="up")
    assert keep_fraction(c, 0.25) == pytest.approx(0.25)
    assert keep_fraction(ScheduleConfig(kind="cosine", direction="up"), 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("rate", [1e-12, 1e-6, 0.5, 5.0, 50.0, 745.0, 1e6])
def test_exponential_reaches_an_empty_hint(rate):
    # Regression: exp(-r*p) alone never reaches 0, so the last stage always kept part of the trace.
    c = ScheduleConfig(kind="exponential", rate=rate)
    assert keep_fraction(c, 1.0) == 0.0
    assert stage_fractions(c)[-1] == 0.0
    assert stage_fractions(c)[0] == 1.0
    assert 0.0 <= keep_fraction(c, 0.5) <= 1.0


def test_exponential_drops_faster_than_linear_early_on():
    fast = ScheduleConfig(kind="exponential", rate=5.0)
    assert keep_fraction(fast, 0.2) == pytest.approx((math.exp(-1) - math.exp(-5)) / (1 - math.exp(-5)))
    assert keep_fraction(fast, 0.2) < keep_fraction(ScheduleConfig(kind="linear"), 0.2)


def test_progress_outside_unit_interval_is_clipped_and_nan_is_rejected():
    c = ScheduleConfig(kind="linear", start=0.9, end=0.1)
    assert keep_fraction(c, -3.0) == 0.9
    assert keep_fraction(c, 7.0) == 0.1
    with pytest.raises(ConfigError, match="progress"):
        keep_fraction(c, float("nan"))
    with pytest.raises(ConfigError, match="progress"):
        keep_fraction(c, "0.5")  # type: ignore[arg-type]


# -- constant, piecewise, staged -----------------------------------------------------------------------


def test_constant_defaults_to_half_the_trace_not_to_no_hint():
    c = ScheduleConfig(kind="constant")
    assert c.value == 0.5
    assert {keep_fraction(c, p) for p in (0.0, 0.3, 1.0)} == {0.5}
    assert stage_fractions(c, 3) == (0.5, 0.5, 0.5)
    warnings = c.warnings()
    assert len(warnings) == 2
    assert "full trace" in warnings[0] and "empty hint" in warnings[1]


def test_piecewise_holds_each_value_from_its_milestone_on():
    c = ScheduleConfig(kind="piecewise", milestones=[0.0, 0.25, 0.75], values=[1.0, 0.5, 0.0])
    assert keep_fraction(c, 0.0) == 1.0  # values[0] == 1: the full trace at the start
    assert keep_fraction(c, 0.2499) == 1.0
    assert keep_fraction(c, 0.25) == 0.5
    assert keep_fraction(c, 0.74) == 0.5
    assert keep_fraction(c, 0.75) == 0.0
    assert keep_fraction(c, 1.0) == 0.0
    assert stage_fractions(c, 5) == (1.0, 0.5, 0.5, 0.0, 0.0)
    assert c.warnings() == []


@fast
@given(piecewise_configs(), st.lists(progress, min_size=2, max_size=30))
def test_piecewise_is_monotone_and_starts_at_its_first_value(c, ps):
    assert keep_fraction(c, 0.0) == c.values[0]
    assert keep_fraction(c, 1.0) == c.values[-1]
    ys = [keep_fraction(c, p) for p in sorted(ps)]
    assert set(ys) <= set(c.values)
    assert is_monotone(ys, c.direction)


def test_piecewise_must_start_at_milestone_zero():
    with pytest.raises(ConfigError, match=r"milestones\[0\]=0\.2.*must be 0\.0"):
        ScheduleConfig(kind="piecewise", milestones=[0.2, 0.6], values=[1.0, 0.0])


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"milestones": [0.0, 0.5, 0.5], "values": [1, 0.5, 0]}, "strictly increasing"),
        ({"milestones": [0.0, 0.5], "values": [1.0]}, "one value per milestone"),
        ({}, "piecewise needs milestones and values"),
        ({"milestones": [0.0, 0.5], "values": [0.5, 1.0]}, "would grow along a down schedule"),
        ({"milestones": [0.0, 1.5], "values": [1.0, 0.0]}, r"milestones\[1\]=1\.5"),
        ({"milestones": [0.0, 0.5], "values": [1.0, -0.1]}, r"values\[1\]=-0\.1"),
    ],
)
def test_piecewise_mistakes_are_explained(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        ScheduleConfig(kind="piecewise", **kwargs)


def test_piecewise_up_must_not_shrink():
    ScheduleConfig(kind="piecewise", direction="up", milestones=[0, 0.5], values=[0, 1])
    with pytest.raises(ConfigError, match="would shrink along an up schedule"):
        ScheduleConfig(kind="piecewise", direction="up", milestones=[0, 0.5], values=[1, 0])


@fast
@given(staged_configs())
def test_staged_returns_its_fractions(c):
    assert stage_fractions(c) == c.fractions
    assert stage_fractions(c, len(c.fractions)) == c.fractions
    assert keep_fraction(c, 0.0) == c.fractions[0]
    assert keep_fraction(c, 1.0) == c.fractions[-1]


def test_staged_gives_each_fraction_an_equal_share_of_progress():
    c = ScheduleConfig(kind="staged", fractions=(1, 0.5, 0.25, 0))
    got = [keep_fraction(c, p) for p in (0.0, 0.249, 0.25, 0.49, 0.5, 0.75, 0.99, 1.0)]
    assert got == [1.0, 1.0, 0.5, 0.5, 0.25, 0.0, 0.0, 0.0]


def test_staged_with_a_different_stage_count_is_an_error():
    c = ScheduleConfig(kind="staged", fractions=[1, 0.5, 0])
    with pytest.raises(ConfigError, match="stages=5: the staged schedule lists 3 fractions"):
        stage_fractions(c, 5)


@pytest.mark.parametrize(
    ("fractions", "needle"),
    [([1.0], "at least 2 fractions"), ([0.2, 0.8], "would grow"), ([1.0, 1.2], r"fractions\[1\]=1\.2")],
)
def test_staged_mistakes_are_explained(fractions, needle):
    with pytest.raises(ConfigError, match=needle):
        ScheduleConfig(kind="staged", fractions=fractions)


# -- quantization into stages --------------------------------------------------------------------------


def test_worked_example_from_the_docstring():
    assert stage_fractions(ScheduleConfig(), 4) == pytest.approx((1, 2 / 3, 1 / 3, 0))
    assert [stage_at(s, 100, 4) for s in (0, 24, 25, 49, 50, 74, 75, 99)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_default_stage_count():
    assert len(stage_fractions(ScheduleConfig(kind="cosine"))) == DEFAULT_STAGES == 8


@fast
@given(
    st.one_of(curve_configs(), piecewise_configs(), constant_configs),
    st.integers(min_value=2, max_value=64),
)
def test_stage_fractions_quantize_the_curve(c, k):
    fr = stage_fractions(c, k)
    assert len(fr) == k
    assert fr[0] == keep_fraction(c, 0.0)
    assert fr[-1] == keep_fraction(c, 1.0)
    assert fr == tuple(keep_fraction(c, i / (k - 1)) for i in range(k))
    assert is_monotone(fr, c.direction)
    assert all(0.0 <= x <= 1.0 for x in fr)


@pytest.mark.parametrize("bad", [1, 0, -3, True, 2.5, "8"])
def test_fewer_than_two_stages_or_non_integers_are_rejected(bad):
    with pytest.raises(ConfigError, match=rf"stages={bad!r}: need at least 2 stages"):
        stage_fractions(ScheduleConfig(), bad)  # type: ignore[arg-type]


# -- the step clock ------------------------------------------------------------------------------------

totals = st.integers(min_value=1, max_value=2000)
stage_counts = st.integers(min_value=1, max_value=64)


@fast
@given(totals, stage_counts)
def test_stage_at_boundaries(total, k):
    assert stage_at(0, total, k) == 0
    assert stage_at(total, total, k) == k - 1
    assert stage_at(total + 17, total, k) == k - 1
    # The last training step reaches the last stage only when there are at least as many steps as stages.
    assert (stage_at(total - 1, total, k) == k - 1) == (total >= k or k == 1)


@fast
@given(totals, stage_counts)
def test_stage_at_is_monotone_and_splits_steps_evenly(total, k):
    stages = [stage_at(s, total, k) for s in range(total + 3)]
    assert all(a <= b for a, b in zip(stages, stages[1:]))
    if total >= k:
        assert all(b - a <= 1 for a, b in zip(stages, stages[1:]))  # with enough steps, no stage is skipped
        counts = [stages[:total].count(i) for i in range(k)]
        assert set(counts) <= {total // k, -(-total // k)}
        assert max(counts) - min(counts) <= 1
        assert sum(counts) == total


@fast
@given(st.integers(min_value=0, max_value=10**30), st.integers(min_value=1, max_value=10**30), stage_counts)
def test_stage_at_is_exact_for_huge_integers(step, total, k):
    want = min(k - 1, math.floor(Fraction(step * k, total)))
    assert stage_at(step, total, k) == want


def test_stage_at_uses_no_floating_point():
    # In floats, 10**17 * 3 / (3 * 10**17 + 1) rounds up to 1.0 and would start stage 1 a step early.
    total = 3 * (10**17) + 1
    assert stage_at(10**17, total, 3) == 0
    assert stage_at(10**17 + 1, total, 3) == 1


@pytest.mark.parametrize(
    ("step", "total", "k", "needle"),
    [
        (-1, 10, 4, "step=-1"),
        (0, 0, 4, "total_steps=0"),
        (0, -5, 4, "total_steps=-5"),
        (1.5, 10, 4, "step=1.5"),
        (True, 10, 4, "step=True"),
        (0, 10, 0, "num_stages=0"),
    ],
)
def test_stage_at_rejects_bad_input(step, total, k, needle):
    with pytest.raises(ConfigError, match=needle):
        stage_at(step, total, k)


@fast
@given(totals, stage_counts)
def test_steps_of_lists_exactly_the_steps_at_each_stage(total, k):
    clock = Clock(tuple(1 - i / k for i in range(k)), total)
    for stage in range(k):
        first, last = clock.steps_of(stage)
        at = [s for s in range(total + 3) if clock.stage_at(s) == stage]
        if last is None:  # the last stage: every step from its first on
            assert stage == k - 1 and at == list(range(first, total + 3))
        else:
            assert at == list(range(first, last + 1))  # empty (last < first) for a stage no step reaches
    assert clock.fraction_at(total) == clock.fractions[-1] and clock.fraction_at(0) == clock.fractions[0]


def test_worked_example_of_the_module_docstring():
    clock = Clock((1, 2 / 3, 1 / 3, 0), 100)
    assert [clock.steps_of(s) for s in range(4)] == [(0, 24), (25, 49), (50, 74), (75, None)]
    assert clock.fraction_at(60) == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="stage=4: this schedule has stages 0..3"):
        clock.steps_of(4)
    with pytest.raises(ConfigError, match="total_steps=0"):
        Clock((1, 0), 0)


@pytest.mark.parametrize(
    ("mode", "built", "trainer", "want"),
    [
        ("auto", 100, None, 100),
        ("auto", None, 60, 60),
        ("auto", 100, 100, 100),
        ("auto", 100, 60, "built for total_steps=100, but this run trains for max_steps=60"),
        ("auto", None, None, "built without --total-steps and max_steps is not set"),
        ("curriculum", 100, 60, 100),
        ("curriculum", None, 60, "horizon='curriculum', but the curriculum was built without --total-steps"),
        ("trainer", 100, 60, 60),
        ("trainer", 100, None, "horizon='trainer', but max_steps is not set"),
        (40, 100, 60, 40),
        (0, 100, 60, "total_steps=0"),
        ("longest", 100, 60, "horizon='longest': use one of auto, curriculum, trainer"),
    ],
)
def test_resolve_horizon_gives_each_mode_one_meaning(mode, built, trainer, want):
    if isinstance(want, int):
        assert resolve_horizon(mode, built=built, trainer=trainer) == want
    else:
        with pytest.raises(ConfigError, match=want):
            resolve_horizon(mode, built=built, trainer=trainer)


def test_resolve_horizon_speaks_the_callers_terms():
    with pytest.raises(ConfigError, match=r"cur/x was built for total_steps=9, .* the config's max_steps=4\. .*"
                                          r"--horizon curriculum .* --horizon trainer"):
        resolve_horizon("auto", built=9, trainer=4, curriculum="cur/x", trainer_steps="the config's max_steps",
                        choose="--horizon ")


# -- validation ----------------------------------------------------------------------------------------


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        ScheduleConfig(kind="exponential", direction="sideways", rate=-1.0, start=1.5)
    message = str(info.value)
    assert len(info.value.problems) == 3
    assert "3 problems" in message
    assert "direction='sideways'" in message and "down" in message and "up" in message
    assert "rate=-1.0: exponential rate must be a finite number > 0; use e.g. rate=5" in message
    assert "start=1.5" in message and "between 0" in message


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        ScheduleConfig(kind="cosin")
    assert all(k in str(info.value) for k in KINDS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "linear", "milestones": [0.0, 0.5]},
        {"kind": "cosine", "rate": 3.0},
        {"kind": "linear", "value": 0.2},
        {"kind": "constant", "start": 1.0},
        {"kind": "staged", "fractions": [1, 0], "values": [1, 0]},
        {"kind": "piecewise", "milestones": [0], "values": [1], "fractions": [1, 0]},
    ],
)
def test_fields_the_kind_ignores_are_an_error(kwargs):
    with pytest.raises(ConfigError, match="does not apply to kind"):
        ScheduleConfig(**kwargs)


def test_fields_left_at_their_default_are_fine_for_any_kind():
    ScheduleConfig(kind="linear", rate=5.0, value=0.5, milestones=(), values=[], fractions=())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": float("nan")},
        {"end": float("inf")},
        {"start": -0.1},
        {"start": True},
        {"end": "0"},
        {"kind": "exponential", "rate": float("inf")},
        {"kind": "exponential", "rate": 0},
        {"kind": "constant", "value": 1.01},
        {"kind": "constant", "value": None},
        {"kind": "exponential", "rate": None},
        {"kind": "linear", "start": 0.2, "end": 0.6},
        {"kind": "linear", "direction": "up", "start": 0.6, "end": 0.2},
        {"kind": "staged", "fractions": "1,0"},
    ],
)
def test_invalid_values_are_rejected(kwargs):
    with pytest.raises(ConfigError):
        ScheduleConfig(**kwargs)


def test_lists_become_tuples_and_ints_become_floats():
    c = ScheduleConfig(kind="piecewise", milestones=[0, 0.5], values=[1, 0])
    assert c.milestones == (0.0, 0.5) and isinstance(c.milestones, tuple)
    assert all(type(x) is float for x in c.milestones + c.values)
    hash(c)  # frozen and hashable


def test_every_field_has_help_text():
    for f in dataclasses.fields(ScheduleConfig):
        assert f.metadata.get("help"), f.name


# -- warnings ------------------------------------------------------------------------------------------


def test_explicit_partial_endpoints_are_allowed_but_warned_about():
    c = ScheduleConfig(kind="linear", start=0.8)
    assert keep_fraction(c, 0) == 0.8
    (warning,) = c.warnings()
    assert "0.8" in warning and "full trace" in warning

    up = ScheduleConfig(kind="cosine", direction="up", end=0.6)
    (warning,) = up.warnings()
    assert "0.6" in warning and "full trace" in warning

    assert len(ScheduleConfig(kind="staged", fractions=[0.9, 0.1]).warnings()) == 2
    assert ScheduleConfig(kind="staged", fractions=[1, 0]).warnings() == []


# -- serialization -------------------------------------------------------------------------------------


@fast
@given(any_config)
def test_to_dict_from_dict_round_trips_through_json(c):
    d = json.loads(json.dumps(c.to_dict()))
    assert set(d) == {f.name for f in dataclasses.fields(ScheduleConfig)}
    again = ScheduleConfig.from_dict(d)
    assert again == c
    assert stage_fractions(again, 5 if c.kind != "staged" else None) == stage_fractions(
        c, 5 if c.kind != "staged" else None
    )


def test_from_dict_names_unknown_keys():
    with pytest.raises(ConfigError) as info:
        ScheduleConfig.from_dict({"kind": "linear", "rates": 3, "stat": 1})
    assert "'rates'" in str(info.value) and "'stat'" in str(info.value)
    assert len(info.value.problems) == 2


def test_schedule_that_never_empties_is_warned(tmp_path: Path) -> None:
    res = build_rows(tmp_path, [{"question": "q?", "solution": "A b c d. #### 1"}], schedule="constant", value=0.5)
    assert res.manifest["schedule"]["warnings"] and "ends at 0.5" in " ".join(res.manifest["schedule"]["warnings"])
