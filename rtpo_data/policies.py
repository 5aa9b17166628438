"""Hint policies: which stage of the curriculum each row gets at a training step.

The schedule gives every row the same stage at a step. A policy may give rows different stages in one
batch (``Mixed``) or adapt each row's hint to how the model does on it (``Frontier``)::

    state  = policy.init_state(curriculum, clock, seed)     # per-row arrays + what they belong to
    stages = policy.select(state, rows, step)                # pure: one stage per row
    ... generate, score ...
    state  = policy.update(state, Observations(rows, stages, successes, samples, step))

``select`` is a pure function of (state, row, step): the same answer for any batch order, any
process and any number of processes, so the copies of a prompt in a GRPO group, split over
processes or not, get the same stage. Randomness comes from a hash of (seed, row, step), never from
a global RNG (TRL seeds every process differently). ``update`` is deterministic and applies each
(row, step) once: observations of a step a row has already seen are ignored, so a resume that
replays a step cannot count it twice. Every process that applies the same observations holds the
same state.

Stages follow the curriculum: stage 0 keeps the whole trace, the last stage keeps none (a schedule
going down). Every policy's choice passes through a **floor**, the least stage it may give at a
step, which reaches the last stage at the horizon: whatever a policy adapts, every row trains without
a hint by then. The floor is the global schedule delayed: 0 until ``floor_start`` of the horizon,
then rising linearly to the last stage at the horizon (``Mixed`` and ``Frontier``); ``GlobalSchedule``
is the schedule itself.

State arithmetic (per row ``r``, ``K`` stages, horizon ``T``, progress ``p = step / T``)::

    floor(step)      = K - 1                                       if p >= 1
                     = floor(max(0, p - floor_start) / (1 - floor_start) * (K - 1))   otherwise
    Global:  stage   = clock.stage_at(step)                        (the build's schedule)
    Mixed:   uniform:  stage = floor + floor(u(r, step) * (K - floor))        (R^3-style mix)
             binomial: q = q_end + (q_start - q_end) * (1 + cos(pi * p)) / 2   (UFT's cosine)
                       stage = max(floor, (K - 1) - #{j < K - 1 : u_j(r, step) < q})
    Frontier: stage  = max(floor, frontier[r]);   after a group of row r at stage s:
                       all completions fail   -> frontier[r] = max(s - 1, 0)     (more hint)
                       at least one succeeds  -> frontier[r] = min(s + 1, K - 1) (less hint)

Example (Frontier, K = 5, T = 100, floor_start = 0.5): a row starts at frontier 0 (the whole trace).
It succeeds at step 0 -> frontier 1; fails at stage 1 at step 8 -> 0; succeeds twice -> 2. At step 75
the floor is floor(0.5 * 4) = 2, so it gets at least stage 2; from step 100 on, stage 4 (no hint).

The state is saved beside a trainer checkpoint (``rtpo_policy.npz`` and ``rtpo_policy.json``) and
refused, with a message, for another curriculum, policy or horizon.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from rtpo_data.errors import RtpoDataError

if TYPE_CHECKING:
    from rtpo_data.curriculum import Curriculum
    from rtpo_data.schedule import Clock

STATE_ARRAYS = "rtpo_policy.npz"
STATE_META = "rtpo_policy.json"
POLICIES = ("global", "mixed", "frontier")


# -- deterministic randomness ------------------------------------------------------------------------

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return x ^ (x >> np.uint64(31))


def uniform(seed: int, rows: np.ndarray, step: int, stream: int = 0) -> np.ndarray:
    """One number in [0, 1) per row, a pure function of (seed, row, step, stream): the same on every
    process and in any batch order."""
    rows = np.asarray(rows, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.full(rows.shape, np.uint64(seed & 0xFFFFFFFFFFFFFFFF)))
        key = _splitmix64(key ^ np.uint64(step & 0xFFFFFFFFFFFFFFFF))
        key = _splitmix64(key ^ np.uint64(stream & 0xFFFFFFFFFFFFFFFF))
        x = _splitmix64(key ^ rows)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


# -- state and observations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Observations:
    """What one generation step showed, one entry per group (a row's completions at that step).

    ``successes`` counts the completions whose reward reached the trainer's success threshold, out of
    ``samples`` scored. The same row may appear more than once; its entries are added up.
    """

    rows: np.ndarray
    stages: np.ndarray
    successes: np.ndarray
    samples: np.ndarray
    step: int

    @classmethod
    def from_completions(cls, rows: Sequence[int], stages: Sequence[int], success: Sequence[bool], step: int,
                         group_size: int) -> Observations:
        """Groups of ``group_size`` consecutive completions (GRPO's layout), each of one row and stage."""
        rows, stages, success = (np.asarray(x) for x in (rows, stages, success))
        if len(rows) % group_size:
            raise RtpoDataError(f"{len(rows)} completions do not make groups of {group_size}.")
        groups = rows.reshape(-1, group_size)
        if (groups != groups[:, :1]).any() or (stages.reshape(-1, group_size) != stages.reshape(-1, group_size)[:, :1]).any():
            raise RtpoDataError("A group of completions mixes rows or stages: the copies of a prompt must be "
                                "consecutive and share one stage.")
        return cls(rows=groups[:, 0].astype(np.int64), stages=stages.reshape(-1, group_size)[:, 0].astype(np.int64),
                   successes=success.reshape(-1, group_size).sum(axis=1).astype(np.int64),
                   samples=np.full(len(groups), group_size, dtype=np.int64), step=int(step))

    @classmethod
    def join(cls, parts: Sequence[Observations]) -> Observations:
        """One step's observations made in several parts (generation calls, workers), as one."""
        steps = {int(p.step) for p in parts}
        if len(steps) != 1:
            raise RtpoDataError(f"Observations.join: parts of steps {sorted(steps)}; join the parts of one step.")
        return cls(*(np.concatenate([np.asarray(getattr(p, name), dtype=np.int64) for p in parts])
                     for name in ("rows", "stages", "successes", "samples")), step=steps.pop())


class PendingObservations:
    """Observations held until their step's generation is over, then applied once per step.

    A policy applies each (row, step) once (``Frontier.update`` ignores a step a row has already
    seen, so a resume that replays a step cannot count it twice). A trainer that generates one step's
    groups in several calls (dynamic filtering drawing more prompts; a call whose groups were all
    dropped, after which the trainer generates again at the same step) must hand ``update`` all of
    them together: :meth:`add` each call's observations, and :meth:`apply` the steps that are over
    before the next step selects its stages. Until then, the step's later prompts get the stages its
    first ones got, which is what the policies' contract says (a row's stage is fixed for a step).
    """

    def __init__(self) -> None:
        self._parts: list[Observations] = []

    def add(self, observations: Observations) -> None:
        if len(observations.rows):
            self._parts.append(observations)

    def __len__(self) -> int:
        """The number of groups held."""
        return sum(len(p.rows) for p in self._parts)

    def apply(self, policy: HintPolicy, state: PolicyState,
              before: int | None = None) -> tuple[PolicyState, list[Observations]]:
        """Update ``state`` with the observations of every step below ``before`` (all held, when
        None): one ``update`` per step, steps in order. Returns the new state and the observations
        applied, one per step; those of later steps stay held."""
        done = [p for p in self._parts if before is None or p.step < before]
        self._parts = [p for p in self._parts if not (before is None or p.step < before)]
        applied = []
        for step in sorted({int(p.step) for p in done}):
            joined = Observations.join([p for p in done if p.step == step])
            state = policy.update(state, joined)
            applied.append(joined)
        return state, applied


@dataclass
class PolicyState:
    """A policy's state: per-row arrays, and what they belong to (checked when loaded)."""

    policy: str
    params: dict[str, Any]
    fingerprint: str  # the curriculum's
    num_rows: int
    fractions: tuple[float, ...]
    total_steps: int
    seed: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {"policy": self.policy, "params": self.params, "fingerprint": self.fingerprint,
                "num_rows": self.num_rows, "fractions": list(self.fractions), "total_steps": self.total_steps,
                "seed": self.seed}

    @property
    def num_stages(self) -> int:
        return len(self.fractions)

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``rtpo_policy.npz`` and ``rtpo_policy.json`` into ``directory`` (each atomically)."""
        directory = Path(directory)
        tmp = directory / f".{STATE_ARRAYS}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **self.arrays)
        os.replace(tmp, directory / STATE_ARRAYS)
        tmp = directory / f".{STATE_META}.tmp"
        tmp.write_text(json.dumps(self.meta(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, directory / STATE_META)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], expected: PolicyState) -> PolicyState:
        """The state saved in ``directory``, refused unless it belongs to what ``expected`` (a fresh
        state of the running policy) describes: the same curriculum, policy, parameters and schedule."""
        directory = Path(directory)
        meta_path = directory / STATE_META
        if not meta_path.is_file():
            raise RtpoDataError(
                f"{directory} has no {STATE_META}: it was not saved with a hint policy. Resume from a checkpoint "
                "of this run, or start without resuming."
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        want = expected.meta()
        wrong = [key for key in ("fingerprint", "policy", "params", "num_rows", "fractions", "total_steps", "seed")
                 if meta.get(key) != want[key]]
        if wrong:
            what = {"fingerprint": "curriculum", "policy": "policy", "params": "policy parameters",
                    "num_rows": "row count", "fractions": "schedule", "total_steps": "horizon", "seed": "seed"}
            details = "; ".join(f"{what[k]}: saved {meta.get(k)!r}, now {want[k]!r}" for k in wrong)
            raise RtpoDataError(
                f"The hint-policy state in {directory} belongs to another run ({details}). Its per-row state "
                "would be applied to the wrong rows or rules: resume with the same curriculum, policy and "
                "horizon, or start a new run."
            )
        with np.load(directory / STATE_ARRAYS) as data:
            arrays = {name: data[name] for name in data.files}
        return cls(**{**{k: getattr(expected, k) for k in ("policy", "params", "fingerprint", "num_rows",
                                                          "fractions", "total_steps", "seed")}, "arrays": arrays})


class HintPolicy(Protocol):
    """What a trainer asks of a policy (see the module docstring)."""

    name: str

    def init_state(self, curriculum: Curriculum, clock: Clock, seed: int) -> PolicyState: ...

    def select(self, state: PolicyState, rows: np.ndarray, step: int) -> np.ndarray: ...

    def update(self, state: PolicyState, observations: Observations) -> PolicyState: ...


# -- the policies ----------------------------------------------------------------------------------


def _state(policy: Any, curriculum: Curriculum, clock: Clock, seed: int, arrays: dict[str, np.ndarray] | None = None,
           *, down: bool = True) -> PolicyState:
    fractions = tuple(float(f) for f in clock.fractions)
    if down and any(b > a for a, b in zip(fractions, fractions[1:])):
        raise RtpoDataError(
            f"The {policy.name!r} hint policy needs a schedule going down (stage 0 the whole trace, the last stage "
            f"none); {curriculum.path} has stage fractions {list(fractions)}. Use policy='global', or rebuild (or "
            "reschedule) with --direction down."
        )
    return PolicyState(policy=policy.name, params=policy.params(), fingerprint=curriculum.fingerprint,
                       num_rows=len(curriculum), fractions=fractions, total_steps=int(clock.total_steps),
                       seed=int(seed), arrays=arrays or {})


def floor_stage(state: PolicyState, step: int, start: float) -> int:
    """The least stage a policy may give at ``step``: 0 until ``start`` of the horizon, then rising
    linearly to the last stage, reached at the horizon."""
    last = state.num_stages - 1
    p = step / state.total_steps
    if p >= 1:
        return last
    return min(last, int(math.floor(max(0.0, p - start) / (1.0 - start) * last + 1e-9)))


def _rows(state: PolicyState, rows: Any) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) and (rows.min() < 0 or rows.max() >= state.num_rows):
        raise RtpoDataError(f"row indices must be in 0..{state.num_rows - 1}")
    return rows


@dataclass(frozen=True)
class GlobalSchedule:
    """The build's schedule: every row at ``clock.stage_at(step)`` (the default; stateless)."""

    name: str = "global"

    def params(self) -> dict[str, Any]:
        return {}

    def init_state(self, curriculum: Curriculum, clock: Clock, seed: int) -> PolicyState:
        return _state(self, curriculum, clock, seed, down=False)

    def select(self, state: PolicyState, rows: Any, step: int) -> np.ndarray:
        from rtpo_data.schedule import Clock

        stage = Clock(state.fractions, state.total_steps).stage_at(int(step))
        return np.full(len(_rows(state, rows)), stage, dtype=np.int64)

    def update(self, state: PolicyState, observations: Observations) -> PolicyState:
        return state


@dataclass(frozen=True)
class Mixed:
    """Stages drawn per (row, step), so one batch holds several hint levels (stateless).

    ``mode="uniform"``: uniform over the stages the floor allows (R^3's mix of stages).
    ``mode="binomial"``: UFT's cosine-binomial: each of the ``K - 1`` hint levels is kept with
    probability ``q`` falling from ``q_start`` to ``q_end`` along a cosine over the horizon.
    """

    mode: str = "uniform"
    floor_start: float = 0.5
    q_start: float = 0.95
    q_end: float = 0.05
    name: str = "mixed"

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in ("uniform", "binomial"):
            problems.append(f"mode={self.mode!r}: use uniform or binomial")
        if not 0 <= self.floor_start < 1:
            problems.append(f"floor_start={self.floor_start}: a fraction of the horizon in [0, 1)")
        if not (0 <= self.q_end <= 1 and 0 <= self.q_start <= 1):
            problems.append(f"q_start={self.q_start}, q_end={self.q_end}: probabilities in [0, 1]")
        if problems:
            raise RtpoDataError("Mixed hint policy: " + "; ".join(problems) + ".")

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "floor_start": self.floor_start, "q_start": self.q_start, "q_end": self.q_end}

    def init_state(self, curriculum: Curriculum, clock: Clock, seed: int) -> PolicyState:
        return _state(self, curriculum, clock, seed)

    def select(self, state: PolicyState, rows: Any, step: int) -> np.ndarray:
        rows = _rows(state, rows)
        last = state.num_stages - 1
        floor = floor_stage(state, int(step), self.floor_start)
        if self.mode == "uniform":
            u = uniform(state.seed, rows, int(step))
            return floor + np.minimum((u * (last + 1 - floor)).astype(np.int64), last - floor)
        p = min(1.0, int(step) / state.total_steps)
        q = self.q_end + (self.q_start - self.q_end) * (1 + math.cos(math.pi * p)) / 2
        kept = np.zeros(len(rows), dtype=np.int64)
        for level in range(last):
            kept += uniform(state.seed, rows, int(step), stream=1 + level) < q
        return np.maximum(floor, last - kept)

    def update(self, state: PolicyState, observations: Observations) -> PolicyState:
        return state


@dataclass(frozen=True)
class Frontier:
    """Per row, the least hint that still earns reward: a group that fails entirely steps the row
    back one stage (more hint), a group with a success steps it forward (less hint); never below the
    floor, so every row reaches no hint by the horizon. Rows start at ``start_stage`` (0: the whole
    trace, as RTPO starts)."""

    floor_start: float = 0.5
    start_stage: int = 0
    name: str = "frontier"

    def __post_init__(self) -> None:
        if not 0 <= self.floor_start < 1:
            raise RtpoDataError(f"Frontier hint policy: floor_start={self.floor_start}: a fraction of the horizon "
                                "in [0, 1).")

    def params(self) -> dict[str, Any]:
        return {"floor_start": self.floor_start, "start_stage": self.start_stage}

    def init_state(self, curriculum: Curriculum, clock: Clock, seed: int) -> PolicyState:
        n, k = len(curriculum), len(clock.fractions)
        if not 0 <= self.start_stage < k:
            raise RtpoDataError(f"Frontier hint policy: start_stage={self.start_stage}, but {curriculum.path} has "
                                f"stages 0..{k - 1}.")
        return _state(self, curriculum, clock, seed, {
            "frontier": np.full(n, self.start_stage, dtype=np.int16),
            "last_step": np.full(n, -1, dtype=np.int64),  # the last step observed: a replayed step is ignored
        })

    def select(self, state: PolicyState, rows: Any, step: int) -> np.ndarray:
        rows = _rows(state, rows)
        floor = floor_stage(state, int(step), self.floor_start)
        return np.maximum(state.arrays["frontier"][rows].astype(np.int64), floor)

    def update(self, state: PolicyState, observations: Observations) -> PolicyState:
        obs = observations
        rows = _rows(state, obs.rows)
        fresh = state.arrays["last_step"][rows] < obs.step
        if not fresh.any():
            return state
        rows, stages = rows[fresh], np.asarray(obs.stages, dtype=np.int64)[fresh]
        successes = np.asarray(obs.successes, dtype=np.int64)[fresh]
        # A row seen in several groups of the step: its groups add up (they share one stage).
        unique, inverse = np.unique(rows, return_inverse=True)
        won = np.bincount(inverse, weights=successes, minlength=len(unique)) > 0
        stage = np.zeros(len(unique), dtype=np.int64)
        stage[inverse] = stages
        last = state.num_stages - 1
        frontier = state.arrays["frontier"].copy()
        frontier[unique] = np.where(won, np.minimum(stage + 1, last), np.maximum(stage - 1, 0))
        last_step = state.arrays["last_step"].copy()
        last_step[unique] = obs.step
        return PolicyState(**{**state.__dict__, "arrays": {**state.arrays, "frontier": frontier,
                                                             "last_step": last_step}})


def policy_learns(policy: HintPolicy) -> bool:
    """Whether ``policy``'s choices depend on the rewards it observes (``frontier``; any policy but the
    stateless ``global`` and ``mixed``): a trainer must then show it every group's rewards and save its
    state with checkpoints."""
    return not isinstance(policy, (GlobalSchedule, Mixed))


def make_policy(policy: str | HintPolicy | None) -> HintPolicy:
    """A policy object from a name (``"global"``, ``"mixed"``, ``"frontier"``, with defaults) or as given."""
    if policy is None or policy == "global":
        return GlobalSchedule()
    if policy == "mixed":
        return Mixed()
    if policy == "frontier":
        return Frontier()
    if isinstance(policy, str):
        raise RtpoDataError(f"policy={policy!r}: use one of {', '.join(POLICIES)}, or pass a policy object.")
    for method in ("init_state", "select", "update"):
        if not callable(getattr(policy, method, None)):
            raise RtpoDataError(f"policy={policy!r} has no {method}(): a hint policy needs init_state, select and "
                                "update (see rtpo_data.policies.HintPolicy).")
    return policy


def step_metrics(state: PolicyState, curriculum: Curriculum, observations: Observations) -> dict[str, float]:
    """The per-step figures a trainer logs: the share of rows at each stage, of all-fail and
    all-succeed groups, and the mean hint tokens, over the step's groups."""
    obs = observations
    groups = max(len(obs.rows), 1)
    out = {f"stage_share/{s}": float(np.sum(obs.stages == s)) / groups for s in range(state.num_stages)}
    out["all_fail_groups"] = float(np.sum(obs.successes == 0)) / groups
    out["all_succeed_groups"] = float(np.sum(obs.successes == obs.samples)) / groups
    out["hint_tokens_mean"] = float(curriculum.cuts(obs.rows, obs.stages)[0].mean()) if len(obs.rows) else 0.0
    return out
