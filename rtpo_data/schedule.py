"""Hint schedules: how much of the reference trace the model is shown as training goes on.

Words used throughout
---------------------
progress
    How far training has come, a number ``p`` in ``[0, 1]``: 0 at the first step, 1 at the end.
kept fraction
    The share of the reference trace shown as a hint: 1.0 is the whole trace, 0.0 is no hint at all.
    A schedule is a function ``f(p)`` from progress to kept fraction (:func:`keep_fraction`).
direction
    ``down`` is RTPO: start with the full trace and cut the hint shorter until nothing is left, so the
    model ends up reasoning on its own. ``up`` is the reverse curriculum (empty hint -> full trace).
    Along a down schedule the hint never grows; along an up schedule it never shrinks.
stage
    A curriculum cannot precompute a cut for every real number, so the schedule is quantized into
    ``K`` stages. Stage ``k`` keeps ``f(k / (K - 1))``: stage 0 is the start of the schedule and stage
    ``K - 1`` is its end, so both endpoints (full trace, empty hint) are always present.
    Training is split into ``K`` equal intervals of steps, and interval ``k`` uses stage ``k``.

A worked example: a linear down schedule with ``K = 4`` stages keeps ``1, 2/3, 1/3, 0`` of the trace
(:func:`stage_fractions`). With ``total_steps = 100``, :func:`stage_at` puts steps 0-24 in stage 0
(full trace), 25-49 in stage 1, 50-74 in stage 2 and 75-99 in stage 3 (no hint); any step past the
end stays in stage 3.

Everything here is a pure function of its arguments: the same configuration and step give the same
stage on every machine, in every process, which is what lets a trainer resume mid-curriculum.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from bisect import bisect_right
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from rtpo_data.errors import ConfigError

Kind = Literal["linear", "cosine", "exponential", "piecewise", "constant", "staged"]
Direction = Literal["down", "up"]

KINDS: tuple[str, ...] = ("linear", "cosine", "exponential", "piecewise", "constant", "staged")
CURVE_KINDS: tuple[str, ...] = ("linear", "cosine", "exponential")
DIRECTIONS: tuple[str, ...] = ("down", "up")
DEFAULT_STAGES = 8

# The kinds that read each optional field. Setting a field that the chosen kind ignores is an error,
# because it is almost always a typo in the kind or a leftover from another recipe.
_USED_BY: dict[str, tuple[str, ...]] = {
    "start": CURVE_KINDS,
    "end": CURVE_KINDS,
    "rate": ("exponential",),
    "value": ("constant",),
    "milestones": ("piecewise",),
    "values": ("piecewise",),
    "fractions": ("staged",),
}
_SEQUENCES = ("milestones", "values", "fractions")
_EXAMPLES = {
    "start": "start=1.0",
    "end": "end=0.0",
    "value": "value=0.5",
    "milestones": "milestones=(0, 0.5, 0.8)",
    "values": "values=(1, 0.5, 0)",
    "fractions": "fractions=(1, 0.5, 0.25, 0)",
}


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _is_number(x: object) -> bool:
    # bool is an int to Python, but `start=True` is a mistake, not a fraction.
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _fmt(xs: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{x:g}" if _is_number(x) else repr(x) for x in xs) + ")"


def _monotone(xs: tuple[float, ...], direction: str) -> bool:
    pairs = zip(xs, xs[1:])
    return all(a >= b for a, b in pairs) if direction == "down" else all(a <= b for a, b in pairs)


@dataclass(frozen=True)
class ScheduleConfig:
    """A validated hint schedule. Construct it and every mistake is reported at once."""

    kind: str = field(
        default="linear",
        metadata=_help("Schedule kind: linear, cosine, exponential, piecewise, constant, staged."),
    )
    direction: str = field(
        default="down",
        metadata=_help("down: full trace -> empty hint (RTPO); up: empty hint -> full trace."),
    )
    start: float | None = field(
        default=None,
        metadata=_help("Kept fraction at the start of training (curve kinds; default 1 down, 0 up)."),
    )
    end: float | None = field(
        default=None,
        metadata=_help("Kept fraction at the end of training (curve kinds; default 0 down, 1 up)."),
    )
    rate: float = field(
        default=5.0,
        metadata=_help("Exponential steepness, > 0: larger cuts the hint faster early on."),
    )
    value: float = field(
        default=0.5,
        metadata=_help("Constant: the kept fraction used throughout (default half the trace)."),
    )
    milestones: tuple[float, ...] = field(
        default=(),
        metadata=_help("Piecewise: progress points in [0, 1], strictly increasing, the first 0."),
    )
    values: tuple[float, ...] = field(
        default=(),
        metadata=_help("Piecewise: kept fraction held from each milestone until the next."),
    )
    fractions: tuple[float, ...] = field(
        default=(),
        metadata=_help("Staged: explicit kept fraction of each stage, e.g. 1,0.5,0.25,0."),
    )

    def __post_init__(self) -> None:
        problems: list[str] = []
        bad: set[str] = set()  # fields already reported, so structural checks do not pile on
        not_lists: set[str] = set()

        for name in _SEQUENCES:
            raw = getattr(self, name)
            if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__"):
                problems.append(f"{name}={raw!r}: expected a list of numbers, e.g. {_EXAMPLES[name]}")
                bad.add(name)
                not_lists.add(name)
                continue
            items = tuple(float(x) if _is_number(x) else x for x in raw)
            object.__setattr__(self, name, items)
        for name in ("start", "end", "rate", "value"):
            raw = getattr(self, name)
            if _is_number(raw):
                object.__setattr__(self, name, float(raw))

        kind, direction = self.kind, self.direction
        kind_ok = isinstance(kind, str) and kind in KINDS
        direction_ok = isinstance(direction, str) and direction in DIRECTIONS
        if not kind_ok:
            problems.append(f"kind={kind!r}: unknown schedule kind; use one of {', '.join(KINDS)}")
        if not direction_ok:
            problems.append(
                f"direction={direction!r}: use down (full trace -> empty hint, RTPO) or up (empty -> full)"
            )

        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, users in _USED_BY.items():
            if name in bad:
                continue
            raw = getattr(self, name)
            if kind_ok and kind not in users:
                if raw != defaults[name]:
                    problems.append(
                        f"{name}={raw!r} does not apply to kind={kind!r} (only {', '.join(users)} "
                        f"use{'s' if len(users) == 1 else ''} it); remove it or change the kind"
                    )
                continue
            if name == "rate":
                if not _is_number(raw) or not math.isfinite(raw) or raw <= 0:
                    problems.append(
                        f"rate={raw!r}: exponential rate must be a finite number > 0; use e.g. rate=5"
                    )
                    bad.add(name)
            elif name in _SEQUENCES:
                what = "progress point" if name == "milestones" else "kept fraction"
                for i, x in enumerate(raw):
                    problem = _fraction_problem(x, what)
                    if problem:
                        problems.append(f"{name}[{i}]={x!r}: {problem}")
                        bad.add(name)
            elif raw is not None or name == "value":  # start/end None means "the direction's default"
                problem = _fraction_problem(raw, "kept fraction")
                if problem:
                    problems.append(f"{name}={raw!r}: {problem}; use e.g. {_EXAMPLES[name]}")
                    bad.add(name)

        if kind_ok:
            problems.extend(self._shape_problems(bad, not_lists, direction if direction_ok else None))
        if problems:
            raise ConfigError(problems, what="schedule")

    def _shape_problems(self, bad: set[str], not_lists: set[str], direction: str | None) -> list[str]:
        """Checks on how the numbers fit together, once each number is known to be sane on its own."""
        problems: list[str] = []
        grow = "grow" if direction == "down" else "shrink"
        along = "a down" if direction == "down" else "an up"
        other = "up" if direction == "down" else "down"
        order = "non-increasing" if direction == "down" else "non-decreasing"
        if self.kind in CURVE_KINDS and direction and not bad & {"start", "end"}:
            s, e = self._curve_ends()
            if (direction == "down" and s < e) or (direction == "up" and s > e):
                problems.append(
                    f"start={s:g}, end={e:g}: the hint would {grow} along {along} schedule; "
                    f"swap them or use direction={other!r}"
                )
        elif self.kind == "piecewise":
            ms, vs = self.milestones, self.values
            if not ms and not vs:
                problems.append(
                    "piecewise needs milestones and values, one value per milestone; "
                    "e.g. milestones=(0, 0.5), values=(1, 0)"
                )
            elif len(ms) != len(vs) and not not_lists & {"milestones", "values"}:
                problems.append(
                    f"milestones has {len(ms)} entries but values has {len(vs)}: piecewise needs one "
                    "value per milestone; e.g. milestones=(0, 0.5), values=(1, 0)"
                )
            if ms and "milestones" not in bad:
                if ms[0] != 0.0:
                    problems.append(
                        f"milestones[0]={ms[0]!r}: the first milestone must be 0.0 so the schedule is "
                        "defined from the first step; prepend 0 (and a value for it)"
                    )
                if any(a >= b for a, b in zip(ms, ms[1:])):
                    problems.append(
                        f"milestones={_fmt(ms)}: must be strictly increasing; sort them and drop duplicates"
                    )
            if direction and vs and "values" not in bad and not _monotone(vs, direction):
                problems.append(
                    f"values={_fmt(vs)}: the hint would {grow} along {along} schedule; values "
                    f"must be {order}, or use direction={other!r}"
                )
        elif self.kind == "staged" and "fractions" not in bad:
            fr = self.fractions
            if len(fr) < 2:
                problems.append(
                    f"fractions={_fmt(fr)}: staged needs at least 2 fractions (the first and the last "
                    "stage); e.g. fractions=(1, 0.5, 0.25, 0)"
                )
            elif direction and not _monotone(fr, direction):
                problems.append(
                    f"fractions={_fmt(fr)}: the hint would {grow} along {along} schedule; "
                    f"fractions must be {order}, or use direction={other!r}"
                )
        return problems

    def _curve_ends(self) -> tuple[float, float]:
        up = self.direction == "up"
        s = self.start if self.start is not None else (0.0 if up else 1.0)
        e = self.end if self.end is not None else (1.0 if up else 0.0)
        return s, e

    def endpoints(self) -> tuple[float, float]:
        """``(f(0), f(1))``: the kept fraction at the first step and at the end of training."""
        return keep_fraction(self, 0.0), keep_fraction(self, 1.0)

    def warnings(self) -> list[str]:
        """Valid but unusual choices, in words: a down schedule that does not run from the full trace
        to an empty hint (or an up schedule that does not run from empty to full)."""
        first, last = self.endpoints()
        full = "the full trace (1.0)"
        empty = "an empty hint (0.0)"
        want_first, want_last = (1.0, 0.0) if self.direction == "down" else (0.0, 1.0)
        out: list[str] = []
        if first != want_first:
            what, why = (
                (full, "part of the reasoning is hidden from the very first step")
                if self.direction == "down"
                else (empty, "the model never starts without help")
            )
            out.append(f"the {self.kind} {self.direction} schedule starts at {first:g}, not {what}: {why}")
        if last != want_last:
            what, why = (
                (empty, "the model is never trained to solve problems without a hint")
                if self.direction == "down"
                else (full, "the model never sees the whole trace")
            )
            out.append(f"the {self.kind} {self.direction} schedule ends at {last:g}, not {what}: {why}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; ``ScheduleConfig.from_dict(c.to_dict()) == c``."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScheduleConfig:
        if not isinstance(data, dict):
            raise ConfigError(
                f"expected a mapping of schedule fields, got {type(data).__name__}", what="schedule"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise ConfigError(
                [f"unknown key {k!r}; valid keys: {', '.join(names)}" for k in unknown], what="schedule"
            )
        return cls(**data)


def _fraction_problem(x: object, what: str) -> str | None:
    if not _is_number(x):
        return f"expected a number, a {what} in [0, 1]"
    if not math.isfinite(x):  # type: ignore[arg-type]
        return f"a {what} must be a finite number in [0, 1]"
    if not 0.0 <= x <= 1.0:  # type: ignore[operator]
        if what == "kept fraction":
            return "a kept fraction must be between 0 (no hint) and 1 (the full trace)"
        return f"a {what} must be between 0 (first step) and 1 (end of training)"
    return None


def _unit_curve(kind: str, p: float, rate: float) -> float:
    """The shape of each curve kind, falling from 1 at p=0 to 0 at p=1."""
    if kind == "linear":
        return 1.0 - p
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    # expm1 keeps both tiny rates (where 1 - exp(-r) cancels) and huge ones (where exp(-r) underflows)
    # accurate, and gives exactly 1 at p=0 and exactly 0 at p=1.
    return (math.expm1(-rate * p) - math.expm1(-rate)) / -math.expm1(-rate)


def keep_fraction(config: ScheduleConfig, progress: float) -> float:
    """The kept fraction of the trace at training ``progress`` (clipped to ``[0, 1]``)."""
    if not _is_number(progress) or math.isnan(progress):
        raise ConfigError(f"progress={progress!r}: must be a number in [0, 1]", what="schedule")
    p = min(1.0, max(0.0, float(progress)))
    kind = config.kind
    if kind == "constant":
        return config.value
    if kind == "piecewise":
        return config.values[bisect_right(config.milestones, p) - 1]
    if kind == "staged":
        n = len(config.fractions)
        # Exact rational product: a float p*n can round up across a stage boundary.
        return config.fractions[min(n - 1, math.floor(Fraction(p) * n))]
    s, e = config._curve_ends()
    # Exact endpoints: e + (s - e) * 1 need not round to s, and hint lengths are compared to 1 and 0.
    if p == 0.0:
        return s
    if p == 1.0:
        return e
    f = e + (s - e) * _unit_curve(kind, p, config.rate)
    # Clamping to the segment (not just [0, 1]) keeps rounding from overshooting either endpoint,
    # which would break monotonicity right next to p=0 or p=1.
    return min(max(f, min(s, e)), max(s, e))


def _count(value: object, name: str, low: int, hint: str) -> int:
    """An integer argument, rejecting floats (a step 2.5 is a bug upstream, not something to round)."""
    problem = f"{name}={value!r}: must be an integer >= {low}; {hint}"
    if isinstance(value, bool):
        raise ConfigError(problem, what="schedule")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(problem, what="schedule") from None
    if n < low:
        raise ConfigError(problem, what="schedule")
    return n


def stage_fractions(config: ScheduleConfig, num_stages: int | None = None) -> tuple[float, ...]:
    """The schedule quantized into ``K`` stages: stage ``k`` keeps ``f(k / (K - 1))``.

    ``num_stages=None`` means 8 stages, or for ``staged`` the length of its list (which is returned
    unchanged).
    """
    if num_stages is not None:
        if isinstance(num_stages, bool) or not isinstance(num_stages, numbers.Integral) or num_stages < 2:
            raise ConfigError(
                f"stages={num_stages!r}: need at least 2 stages (the full trace and the end); "
                f"use e.g. stages={DEFAULT_STAGES}",
                what="schedule",
            )
        num_stages = int(num_stages)
    if config.kind == "staged":
        fr = config.fractions
        if num_stages is not None and num_stages != len(fr):
            raise ConfigError(
                f"stages={num_stages}: the staged schedule lists {len(fr)} fractions {_fmt(fr)}, one per "
                f"stage; leave stages unset or set stages={len(fr)}",
                what="schedule",
            )
        return fr
    k = num_stages if num_stages is not None else DEFAULT_STAGES
    # i / (k - 1) is exactly 0.0 and 1.0 at the ends, so the first and last stages are the endpoints.
    return tuple(keep_fraction(config, i / (k - 1)) for i in range(k))


def stage_at(step: int, total_steps: int, num_stages: int) -> int:
    """The stage in force at training ``step`` (0-based): ``min(K - 1, step * K // total_steps)``.

    Integer arithmetic only, so every process agrees on the stage boundary exactly. Steps at or past
    ``total_steps`` stay in the last stage.
    """
    step = _count(step, "step", 0, "training steps count from 0")
    total = _count(total_steps, "total_steps", 1, "the number of training steps the schedule spans")
    k = _count(num_stages, "num_stages", 1, f"e.g. num_stages={DEFAULT_STAGES}")
    return min(k - 1, step * k // total)


# -- the clock: which stage a training step gets, over which horizon --------------------------------

HORIZONS: tuple[str, ...] = ("auto", "curriculum", "trainer")


@dataclass(frozen=True)
class Clock:
    """A curriculum's stages laid out over training steps: the one place that says which stage, and
    so which kept fraction, a step gets.

    ``fractions[k]`` is stage ``k``'s kept fraction (:func:`stage_fractions`); ``total_steps`` is the
    horizon, the step count the stages are spread over (:func:`resolve_horizon` chooses it).
    """

    fractions: tuple[float, ...]
    total_steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        if not self.fractions:
            raise ConfigError("a clock needs at least one stage", what="schedule")
        object.__setattr__(self, "total_steps", _count(
            self.total_steps, "total_steps", 1, "the number of training steps the schedule spans"))

    @property
    def num_stages(self) -> int:
        return len(self.fractions)

    def stage_at(self, step: int) -> int:
        """The stage in force at training ``step`` (see :func:`stage_at`)."""
        return stage_at(step, self.total_steps, self.num_stages)

    def fraction_at(self, step: int) -> float:
        """The kept fraction in force at training ``step``."""
        return self.fractions[self.stage_at(step)]

    def steps_of(self, stage: int) -> tuple[int, int | None]:
        """The inverse of :meth:`stage_at`: ``(first, last)``, the steps that get ``stage``.

        ``last`` is ``None`` for the last stage, which holds from its first step on. With fewer steps
        than stages some stages get no step at all; for them ``last < first``.
        """
        k = self.num_stages
        stage = _count(stage, "stage", 0, f"stages count from 0 to {k - 1}")
        if stage >= k:
            raise ConfigError(f"stage={stage}: this schedule has stages 0..{k - 1}", what="schedule")
        total = self.total_steps
        first = -(-stage * total // k)  # the smallest step s with s * k // total >= stage
        return first, None if stage == k - 1 else -(-(stage + 1) * total // k) - 1


def resolve_horizon(mode: str | int, *, built: int | None, trainer: int | None, curriculum: str = "the curriculum",
                    trainer_steps: str = "max_steps", choose: str = "horizon=") -> int:
    """The step count a schedule runs over. One rule for every trainer:

    - an integer: that many steps, whatever the build and the trainer say;
    - ``"curriculum"``: the ``--total-steps`` the curriculum was built with;
    - ``"trainer"``: the steps this run trains for (``trainer``; ``None`` where the trainer cannot
      say in advance);
    - ``"auto"``: whichever of the two is known; both known and different is an error, since one
      of them is then a mistake.

    ``curriculum``, ``trainer_steps`` and ``choose`` name the curriculum, the trainer's setting
    and how a user picks a mode (``choose + mode``), so that errors speak the caller's terms.
    """
    def named(m: str) -> str:
        return f"{choose}{m!r}" if choose.endswith("=") else f"{choose}{m}"

    if not isinstance(mode, str):
        return _count(mode, "total_steps", 1, "the number of training steps the schedule spans")
    if mode not in HORIZONS:
        raise ConfigError(f"{named(mode)}: use one of {', '.join(HORIZONS)}, or a number of steps",
                          what="schedule horizon")
    if mode == "curriculum" or (mode == "auto" and trainer is None and built is not None):
        if built is None:
            raise ConfigError(
                f"{named(mode)}, but {curriculum} was built without --total-steps. Rebuild it with --total-steps, "
                f"or use {named('trainer')} to run the schedule over {trainer_steps}.", what="schedule horizon")
        return built
    if mode == "trainer" or built is None:
        if trainer is None:
            problem = (f"{curriculum} was built without --total-steps and {trainer_steps} is not set" if mode == "auto"
                       else f"{named(mode)}, but {trainer_steps} is not set")
            raise ConfigError(f"the schedule's horizon is unknown: {problem}. Set {trainer_steps}, or rebuild "
                              "with --total-steps.", what="schedule horizon")
        return trainer
    if built != trainer:
        raise ConfigError(
            f"{curriculum} was built for total_steps={built}, but this run trains for {trainer_steps}={trainer}. "
            f"Make them agree, or choose: {named('curriculum')} (the build's steps) or {named('trainer')} "
            "(stretch the schedule over this run).", what="schedule horizon")
    return built
