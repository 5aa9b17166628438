"""RTPO in verl 0.9 (the V1 trainer, sync mode): step-aware hint prompts through verl's own command line.

No fork and no trainer subclass: three classes that verl loads by name from its Hydra config.

- :class:`RTPODataset` (``data.custom_cls``): one item per curriculum row, the same at every step, so
  verl's dataloader may prefetch and use worker processes. An item names the row and the curriculum
  and the ``rtpo`` agent loop; its ``raw_prompt`` (the bare question) is for verl's logs only.
- :class:`RTPOAgentLoopManager` (``actor_rollout_ref.rollout.agent.agent_loop_manager_class``): verl's
  own TransferQueue manager, which first checks the whole run's config against the curriculum (every
  refusal below, before any prompt is generated) and then, for every batch it dispatches, stamps each
  row's stage: ``policy.select(state, rows, global_steps - 1)`` for training, no hint for validation.
- :class:`RTPOAgentLoop` (agent loop ``rtpo``, registered by ``verl_agent_loop.yaml``): sends the
  curriculum's token ids for (row, stage) to the rollout server, exact by construction, and returns
  them as the prompt. The hint is part of the prompt, so verl's ``response_mask`` keeps it out of the
  loss.

Where the step comes from (verl 0.9.1, ``trainer/ppo/v1/trainer_base.py``)::

    fit():  global_steps = 1, 2, ...                 (from the checkpoint folder on resume)
      prepare_step -> _next_train_batch()             dataloader rows, stamped global_steps = g
        agent_loop_manager.generate_sequences(batch)  -> RTPOAgentLoopManager: rtpo_stage per row
          AgentLoopWorkerTQ (Ray actors)              one RTPOAgentLoop.run per sample (rollout.n)
            server.generate(prompt_ids = cur.prompt_ids(row, stage))
      train on the samples; save global_step_g/ (data.pt: the dataloader's position)
      validate: batches stamped validate=True        -> rtpo_stage = -1: the bare prompt

Worked example: ``data.train_batch_size=2 actor_rollout_ref.rollout.n=4`` and a curriculum built with
``--total-steps 4 --stages 4`` (``stage_at(s) = min(3, s * 4 // 4)`` for the 0-based step
``s = global_steps - 1``)::

    global_steps   rows (the sampler's order)   stage   hint
    1              r7, r2                       0       whole trace     4 samples of one prompt each
    2              r5, r0                       1       2/3 of the trace
    3              r3, r6                       2       1/3
    4              r1, r4                       3       none
    validation     every val row                -       none

Every sample of a row gets the same prompt (the stage is stamped once per row, before verl fans out
``rollout.n`` sessions). Resuming from ``global_step_g`` reproduces the uninterrupted run: verl sets
``global_steps`` from the folder and restores the dataloader from ``data.pt``; the stage is a function
of (row, step) for the ``global`` and ``mixed`` policies, and of (row, step, saved state) for
``frontier``, whose state :class:`RTPOCheckpointCallback` writes into every checkpoint folder.

A policy that learns from rewards (``frontier``) sees every training sample verl scores:
:class:`RTPOAgentLoopWorker` records (row, stage, step, reward) once verl's reward workers have scored
a sample, and the manager applies them all before it stamps the next step.

Launch with ``rtpo-data train verl --curriculum DIR -- <verl's Hydra overrides>`` (:func:`main`), or
with ``python -m verl.trainer.main_ppo`` and the overrides :func:`overrides` lists (``rtpo-data train
verl --curriculum DIR --print-overrides`` prints them). See docs/verl.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtpo_data.adapters import run_as_main
from rtpo_data.curriculum import Curriculum
from rtpo_data.errors import ConfigError, RtpoDataError
from rtpo_data.policies import (
    POLICIES,
    HintPolicy,
    Observations,
    PendingObservations,
    PolicyState,
    make_policy,
    policy_learns,
)
from rtpo_data.rewards import format_ok, score
from rtpo_data.schedule import resolve_horizon
from rtpo_data.tokenizer import check_tokenizer, trainer_tokenizer

try:
    import ray
    import torch
    from omegaconf import DictConfig, OmegaConf
    from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput
    from verl.trainer.ppo.checkpoint_callback import CheckpointCallback
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ
    from verl.utils.dataset.rl_dataset import RLHFDataset
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"rtpo_data.adapters.verl needs verl 0.9 ({exc}): pip install 'rtpo-data[verl]' 'verl[vllm]==0.9.1' "
        "(see docs/verl.md)."
    ) from exc

AGENT_LOOP = "rtpo"
AGENT_LOOP_CONFIG = str(Path(__file__).with_name("verl_agent_loop.yaml"))
MODULE = "rtpo_data.adapters.verl"
MANAGER = f"{MODULE}.RTPOAgentLoopManager"
CHECKPOINT_CALLBACK = f"{MODULE}.RTPOCheckpointCallback"
MAIN_MODULE = "verl.trainer.main_ppo"
# A stage that means "no hint" in the batch (validation); tensors cannot hold None.
NO_HINT = -1
# Where rtpo-data's own settings live in verl's config (new keys: given as +rtpo.policy=mixed).
SETTINGS = "rtpo"
ALLOW_TOKENIZER_KEY = "rtpo_allow_tokenizer_mismatch"  # in verl's data config
ALLOW_TOKENIZER = f"data.{ALLOW_TOKENIZER_KEY}"
TOKENIZER_OVERRIDE = f"pass +{ALLOW_TOKENIZER}=true"


# ---------------------------------------------------------------------------------------------
# The curriculum, and verl's settings this adapter can serve exactly
# ---------------------------------------------------------------------------------------------


def is_curriculum(path: Any) -> bool:
    return isinstance(path, (str, os.PathLike)) and (Path(path) / "manifest.json").is_file()


def curriculum_path(files: Any, key: str = "data.train_files") -> str | None:
    """The curriculum directory ``files`` (verl's ``data.train_files`` / ``val_files``: a path or a
    list of paths) names, or None where it names ordinary data files."""
    paths = [files] if isinstance(files, (str, os.PathLike)) else list(files or [])
    found = [str(p) for p in paths if is_curriculum(p)]
    if not found:
        return None
    if len(paths) > 1:
        raise RtpoDataError(
            f"{key}={[str(p) for p in paths]} mixes an rtpo-data curriculum with other files; rtpo-data serves "
            "one curriculum per dataset. Build one curriculum from all sources (rtpo-data build takes several "
            "files) and pass its directory alone.")
    return found[0]


@functools.lru_cache(maxsize=8)
def open_curriculum(path: str) -> Curriculum:
    """One memory-mapped :class:`Curriculum` per process and path (every agent loop of a worker
    shares it)."""
    return Curriculum.open(path)


def _get(config: Any, dotted: str, default: Any = None) -> Any:
    """``dotted`` of a verl config (``OmegaConf.select``), ``default`` where it is missing or null."""
    value = OmegaConf.select(config, dotted, default=None)
    return default if value is None else value


# rtpo-data's settings in verl's config (the ``rtpo`` block) and their defaults.
SETTING_DEFAULTS = {"horizon": "auto", "policy": "global", "policy_seed": 0, "success_threshold": 0.5}


def settings(config: Any) -> dict[str, Any]:
    """rtpo-data's settings in verl's config (``+rtpo.horizon``, ``+rtpo.policy``, ``+rtpo.policy_seed``,
    ``+rtpo.success_threshold``); a key it does not know is refused, not ignored."""
    block = _get(config, SETTINGS)
    if block is None:
        return dict(SETTING_DEFAULTS)
    unknown = sorted(set(block) - set(SETTING_DEFAULTS))
    if unknown:
        raise ConfigError(f"+{SETTINGS}.{unknown[0]}: rtpo-data has no such setting; use "
                          f"{', '.join(f'+{SETTINGS}.{k}' for k in SETTING_DEFAULTS)}.",
                          what="verl settings for an rtpo-data curriculum")
    return {key: _get(block, key, default) for key, default in SETTING_DEFAULTS.items()}


def verl_total_steps(config: Any, cur: Curriculum) -> int:
    """The number of steps verl will train: ``trainer.total_training_steps`` when set, else its epochs
    of ``len(dataset) // data.train_batch_size`` steps (``PPOTrainer._init_dataloader``)."""
    explicit = _get(config, "trainer.total_training_steps")
    if explicit is not None:
        return int(explicit)
    rows = len(cur)
    limit = int(_get(config, "data.train_max_samples", -1))
    if limit > 0:
        rows = min(rows, limit)
    return rows // int(_get(config, "data.train_batch_size")) * int(_get(config, "trainer.total_epochs", 1))


def resolve_policy(name: Any) -> HintPolicy:
    if isinstance(name, str) and name not in POLICIES:
        raise RtpoDataError(f"+{SETTINGS}.policy={name!r}: use one of {', '.join(POLICIES)}.")
    return make_policy(name)


class RunPlan:
    """What the manager needs for a run: the training curriculum, the horizon, the policy and its
    state. Made by :func:`check_config`, which refuses what the adapter cannot serve exactly."""

    def __init__(self, cur: Curriculum, total_steps: int, policy: HintPolicy, state: PolicyState,
                 success_threshold: float = 0.5) -> None:
        self.cur, self.total_steps, self.policy, self.state = cur, total_steps, policy, state
        self.success_threshold = success_threshold

    @property
    def learns(self) -> bool:
        """Whether the policy's choices depend on the rewards it observes (``frontier``)."""
        return policy_learns(self.policy)

    def stages(self, rows: Sequence[int], global_steps: int) -> np.ndarray:
        """The stage of each of ``rows`` at verl's ``global_steps`` (1-based; step ``global_steps - 1``
        of the schedule)."""
        step = max(0, int(global_steps) - 1)
        return np.asarray(self.policy.select(self.state, np.asarray(rows, dtype=np.int64), step), dtype=np.int64)


def _trainer_problems(config: Any) -> list[str]:
    """verl trainers and datasets under which no prompt could follow the step."""
    problems = []
    if not _get(config, "trainer.use_v1", True):
        problems.append(
            "trainer.use_v1=false: the legacy trainer does not pass the training step to agent loops, so no prompt "
            "could follow the schedule. Use verl's V1 trainer (trainer.use_v1=true, the default).")
    mode = _get(config, "trainer.v1.trainer_mode", "sync")
    if mode != "sync":
        problems.append(
            f"trainer.v1.trainer_mode={mode}: the asynchronous trainers generate ahead of training (warm-up batches, "
            "off-policy samples), so a prompt would carry the hint of the step it was dispatched at, not the step it "
            "trains at. Use trainer.v1.trainer_mode=sync.")
    if _get(config, "data.custom_cls.name") != "RTPODataset":
        problems.append(
            "data.custom_cls is not rtpo-data's dataset: set data.custom_cls.path=pkg://rtpo_data.adapters.verl "
            "data.custom_cls.name=RTPODataset (rtpo-data train verl sets it).")
    return problems


def resolve_total_steps(config: Any, cur: Curriculum) -> int:
    """The schedule's horizon: ``+rtpo.horizon`` (``auto`` by default) between the curriculum's
    ``--total-steps`` and verl's step count (:func:`rtpo_data.schedule.resolve_horizon`)."""
    horizon = settings(config)["horizon"]
    mode = int(horizon) if str(horizon).lstrip("-").isdigit() else str(horizon)
    counted = ("trainer.total_training_steps" if _get(config, "trainer.total_training_steps") is not None
               else "trainer.total_epochs x (rows // data.train_batch_size)")
    return resolve_horizon(mode, built=cur.total_steps, trainer=verl_total_steps(config, cur), curriculum=str(cur.path),
                           trainer_steps=counted, choose=f"+{SETTINGS}.horizon=")


def _learning_problems(config: Any, policy: HintPolicy) -> list[str]:
    """What a policy that learns from rewards needs of verl: rewards while the rollout runs, and its
    state saved with checkpoints."""
    problems = []
    if _get(config, "reward.reward_model.enable", False) and not _get(config, "reward.reward_model.enable_resource_pool",
                                                                       False):
        problems.append(
            f"+{SETTINGS}.policy={policy.name} with a colocated reward model: the policy learns from each sample's "
            "reward as its group comes back from the rollout, and this reward is computed later, in the trainer. "
            "Use reward.reward_model.enable_resource_pool=true or a reward function, or +rtpo.policy=global or mixed.")
    callback = _get(config, "trainer.checkpoint_callback_class")
    if int(_get(config, "trainer.save_freq", -1)) > 0 and callback != CHECKPOINT_CALLBACK:
        problems.append(
            f"trainer.checkpoint_callback_class={callback}: the {policy.name} policy's per-row state must be saved "
            f"with every checkpoint, or a resume would choose other hints. Set trainer.checkpoint_callback_class="
            f"{CHECKPOINT_CALLBACK} (rtpo-data train verl sets it; to run a callback of your own too, subclass "
            "RTPOCheckpointCallback).")
    return problems


def prompt_budget_problem(cur: Curriculum, num_rows: int, key: str, budget: int) -> str | None:
    """Why ``key=budget`` tokens cannot hold the longest prompt of the first ``num_rows`` rows at any
    stage, or None: verl would cut the start of the prompt, the question, with only a warning."""
    longest = cur.longest_prompt_tokens()[:num_rows]
    if not len(longest) or int(longest.max()) <= budget:
        return None
    row = int(np.argmax(longest))
    need = int(longest[row])
    return (f"{key}={budget}: the longest prompt of {cur.path} is {need} tokens (row {cur.row_id(row)!r} with its whole "
            f"trace); verl would cut the start of the prompt, the question, with only a warning. Set {key}={need} or "
            "more.")


def _length_problems(config: Any, cur: Curriculum, train: str) -> list[str]:
    """Prompt budgets shorter than the longest prompt (:func:`prompt_budget_problem`)."""
    room = int(_get(config, "data.max_prompt_length", 512))
    budgets = {"data.max_prompt_length": room}
    rollout_room = int(_get(config, "actor_rollout_ref.rollout.prompt_length", room))
    if rollout_room != room:
        budgets["actor_rollout_ref.rollout.prompt_length"] = rollout_room
    limit = int(_get(config, "data.train_max_samples", -1))
    rows = min(len(cur), limit) if limit > 0 else len(cur)
    problems = [p for key, have in budgets.items() if (p := prompt_budget_problem(cur, rows, key, have))]
    try:
        val = curriculum_path(_get(config, "data.val_files"), "data.val_files")
    except RtpoDataError as exc:
        return [*problems, str(exc)]
    if val is not None and val != train:
        bare = int(open_curriculum(val).lengths("bare_ids").max(initial=0))
        if bare > room:
            problems.append(f"data.max_prompt_length={room}: the longest validation prompt of {val} is {bare} tokens. "
                            f"Set data.max_prompt_length={bare} or more.")
    return problems


def check_config(config: Any) -> RunPlan:
    """Refuse verl settings under which prompts could not follow the training step exactly, listing
    every problem with what to change; return the run's plan otherwise."""
    train = curriculum_path(_get(config, "data.train_files"))
    if train is None:
        raise ConfigError(
            f"data.train_files={_get(config, 'data.train_files')!r} is not an rtpo-data curriculum (no manifest.json "
            "in it): pass the directory written by `rtpo-data build`, or remove rtpo-data's agent-loop manager "
            "(actor_rollout_ref.rollout.agent.agent_loop_manager_class) for ordinary verl datasets.",
            what="verl settings for an rtpo-data curriculum")
    cur = open_curriculum(train)
    opts = settings(config)
    problems = _trainer_problems(config) + _length_problems(config, cur, train)
    total = policy = None
    try:
        total = resolve_total_steps(config, cur)
    except RtpoDataError as exc:
        problems.append(str(exc))
    try:
        policy = resolve_policy(opts["policy"])
    except RtpoDataError as exc:
        problems.append(str(exc))
    numbers = {}
    for key, kind in (("success_threshold", float), ("policy_seed", int)):
        try:
            numbers[key] = kind(opts[key])
        except (TypeError, ValueError):
            problems.append(f"+{SETTINGS}.{key}={opts[key]!r}: give a number.")
    if policy is not None and policy_learns(policy):
        problems += _learning_problems(config, policy)
    if problems:
        raise ConfigError(problems, what="verl settings for an rtpo-data curriculum")
    try:
        state = policy.init_state(cur, cur.clock(total), numbers["policy_seed"])
    except RtpoDataError as exc:
        raise ConfigError(str(exc), what="verl settings for an rtpo-data curriculum") from None
    return RunPlan(cur, total, policy, state, numbers["success_threshold"])


def _calling_trainer_config() -> Any:
    """The whole run's config, from the verl trainer that is creating the dataset (verl hands a
    dataset ``data`` alone: ``PPOTrainer._init_dataloader`` -> ``create_rl_dataset``), or None."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        config = getattr(owner, "config", None)
        if isinstance(config, DictConfig) and _get(config, "actor_rollout_ref") is not None:
            return config
        frame = frame.f_back
    return None


def check_manager(config: Any) -> None:
    """Refuse a run whose agent-loop manager is not rtpo-data's: without it no row gets a stage, and
    verl would log each failed prompt and go on."""
    if config is None:
        return
    manager = _get(config, "actor_rollout_ref.rollout.agent.agent_loop_manager_class")
    if manager != MANAGER:
        raise ConfigError(
            f"actor_rollout_ref.rollout.agent.agent_loop_manager_class={manager}: rtpo-data's manager chooses each "
            f"row's stage at every step. Add +actor_rollout_ref.rollout.agent.agent_loop_manager_class={MANAGER} "
            "(rtpo-data train verl sets it; --print-overrides lists every override).",
            what="verl settings for an rtpo-data curriculum")


# ---------------------------------------------------------------------------------------------
# The dataset (data.custom_cls): step-independent items
# ---------------------------------------------------------------------------------------------


class RTPODataset(torch.utils.data.Dataset):
    """verl's ``data.custom_cls`` for rtpo-data curricula: item ``i`` names row ``i``, the curriculum
    and the ``rtpo`` agent loop, and carries the gold answer for the reward. The prompt itself is
    rendered when the row is dispatched (:class:`RTPOAgentLoop`), so items do not depend on the step.

    Data files that are not a curriculum (a parquet validation set, say) get verl's own
    ``RLHFDataset``.
    """

    def __new__(cls, data_files: Any = None, tokenizer: Any = None, config: Any = None, processor: Any = None,
                max_samples: int = -1, **kwargs: Any) -> Any:
        if curriculum_path(data_files) is None:
            return RLHFDataset(data_files=data_files, tokenizer=tokenizer, config=config, processor=processor,
                               max_samples=max_samples, **kwargs)
        return super().__new__(cls)

    def __init__(self, data_files: Any, tokenizer: Any, config: Any, processor: Any = None, max_samples: int = -1,
                 **kwargs: Any) -> None:
        self.path = curriculum_path(data_files)
        self.cur = open_curriculum(self.path)
        self.num_rows = len(self.cur) if max_samples is None or max_samples < 0 else min(len(self.cur), max_samples)
        if tokenizer is not None and not _get(config, ALLOW_TOKENIZER_KEY, False):
            check_tokenizer(self.cur.manifest, tokenizer, curriculum=self.path, override=TOKENIZER_OVERRIDE)
        room = _get(config, "max_prompt_length")
        problem = None if room is None else prompt_budget_problem(self.cur, self.num_rows, "data.max_prompt_length",
                                                                  int(room))
        if problem:
            raise ConfigError(problem, what="verl settings for an rtpo-data curriculum")
        self.data_source = f"rtpo:{Path(self.path).name}"
        check_manager(_calling_trainer_config())

    # verl's stock agent loops call these on the configured dataset class for multimodal models (rows of
    # a parquet validation set, say); curriculum rows never reach them.
    process_multi_modal_info = RLHFDataset.process_multi_modal_info
    process_vision_info = RLHFDataset.process_vision_info

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {i} of {self.num_rows}")
        return {
            "raw_prompt": self.cur.render([i], None, "messages")[0],
            "dummy_tensor": torch.tensor([0], dtype=torch.uint8),
            "data_source": self.data_source,
            "reward_model": {"style": "rule", "ground_truth": self.cur.answer(i)},
            "extra_info": {"index": i, "rtpo_row": i, "row_id": self.cur.row_id(i)},
            "index": i,
            "agent_name": AGENT_LOOP,
            "rtpo_curriculum": self.path,
            "rtpo_row": i,
            "tools_kwargs": {},
            "interaction_kwargs": {},
        }

    def __getstate__(self) -> dict[str, Any]:  # dataloader workers reopen the memory map
        return {k: v for k, v in self.__dict__.items() if k != "cur"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.cur = open_curriculum(self.path)


# ---------------------------------------------------------------------------------------------
# The manager: checks the run, then stamps each row's stage on every batch it dispatches
# ---------------------------------------------------------------------------------------------


def _flag(batch: Any, key: str) -> bool:
    if key not in batch:
        return False
    value = batch[key]
    return bool(value.item() if isinstance(value, torch.Tensor) else getattr(value, "data", value))


def _ints(values: Any) -> list[int]:
    if isinstance(values, torch.Tensor):
        return [int(v) for v in values.reshape(-1).tolist()]
    return [int(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


class RTPOAgentLoopWorker(AgentLoopWorkerTQ.__ray_actor_class__):
    """verl's TransferQueue agent-loop worker, which also records each training sample's (row, stage,
    step, reward) for a hint policy that learns. A sample is recorded once verl has scored it and
    before its group is marked finished, so every record of a step is here before the trainer samples
    that step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rtpo_records: list[tuple[int, int, int, float]] = []

    async def _agent_loop_postprocess(self, output: Any, validate: Any, **kwargs: Any) -> None:
        await super()._agent_loop_postprocess(output, validate, **kwargs)
        final = output[-1] if isinstance(output, list) else output
        if validate or "rtpo_stage" not in kwargs or final is None or final.reward_score is None:
            return
        self.rtpo_records.append((int(kwargs["rtpo_row"]), int(kwargs["rtpo_stage"]), int(kwargs["global_steps"]) - 1,
                                  float(final.reward_score)))

    def rtpo_drain(self) -> list[tuple[int, int, int, float]]:
        """The records since the last call: (row, stage, 0-based step, reward) per sample."""
        records, self.rtpo_records = self.rtpo_records, []
        return records


RTPOAgentLoopWorkerActor = ray.remote(RTPOAgentLoopWorker)


class RTPOAgentLoopManager(AgentLoopManagerTQ):
    """verl's TransferQueue agent-loop manager, for rtpo-data curricula: refuses the run's config at
    creation when the prompts could not follow the step (:func:`check_config`), then stamps
    ``rtpo_stage`` on every row of every batch: the policy's stage at ``global_steps - 1`` for
    training, :data:`NO_HINT` for validation. Rows of other datasets pass through unstamped.

    A policy that learns (``frontier``) is updated, before each training step's first batch, with
    the rewards of every sample of the steps before (:meth:`observe`), once per step: a step's
    later batches (DAPO's refills) keep the stages of its first, and their samples reach the policy
    with the rest of the step's. Its state is saved into every checkpoint by
    :class:`RTPOCheckpointCallback` and read back when a resumed run dispatches its first batch.
    """

    rtpo_started = False  # whether a training batch was stamped yet (a resumed run loads state then)

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        self.rtpo = check_config(config)
        self.rtpo_pending = PendingObservations()
        super().__init__(config, *args, **kwargs)
        self.agent_loop_workers_class = RTPOAgentLoopWorkerActor

    def observe(self, before: int | None = None) -> None:
        """Update the policy's state with the samples the workers scored, those of every step below
        ``before`` (0-based; all, when None); a later step's wait for it to end."""
        if not self.rtpo.learns:
            return
        records = [r for batch in ray.get([w.rtpo_drain.remote() for w in self.agent_loop_workers]) for r in batch]
        if records:
            rows, stages, steps = np.array([r[:3] for r in records], dtype=np.int64).T
            success = (np.array([r[3] for r in records]) >= self.rtpo.success_threshold).astype(np.int64)
            for step in np.unique(steps).tolist():
                at = steps == step
                self.rtpo_pending.add(Observations(rows=rows[at], stages=stages[at], successes=success[at],
                                                   samples=np.ones(int(at.sum()), np.int64), step=step))
        self.rtpo.state, _ = self.rtpo_pending.apply(self.rtpo.policy, self.rtpo.state, before)

    def save_policy(self, checkpoint_dir: str | os.PathLike[str]) -> None:
        """Write the hint policy's state into ``checkpoint_dir`` (a policy that learns only)."""
        if self.rtpo.learns:
            self.observe()
            Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
            self.rtpo.state.save(checkpoint_dir)

    def _resume(self, global_steps: int) -> None:
        """On a run's first training batch: a run that starts past step 1 resumed from the checkpoint
        of step ``global_steps - 1``; a policy that learns reads its state back from there."""
        self.rtpo_started = True
        if global_steps <= 1 or not self.rtpo.learns:
            return
        trainer = self.config.trainer
        if _get(trainer, "resume_mode") == "resume_path":
            folder = Path(str(_get(trainer, "resume_from_path")))
        else:
            folder = Path(str(_get(trainer, "default_local_dir"))) / f"global_step_{global_steps - 1}"
        if not folder.is_absolute():
            folder = Path.cwd() / folder
        self.rtpo.state = PolicyState.load(folder, self.rtpo.state)  # checked against the fresh state

    def stamp(self, batch: Any) -> None:
        """Add ``rtpo_stage`` (one int per row) to ``batch``, a verl TensorDict of prompts."""
        if "rtpo_row" not in batch:
            return
        rows = _ints(batch["rtpo_row"])
        if _flag(batch, "validate"):
            stages = np.full(len(rows), NO_HINT, dtype=np.int64)
        else:
            if "global_steps" not in batch:
                raise RtpoDataError("a training batch reached rtpo-data's agent-loop manager without global_steps: "
                                    "this verl trainer does not stamp the step; use verl 0.9's V1 sync trainer.")
            steps = batch["global_steps"]
            step = int(steps.item() if isinstance(steps, torch.Tensor) else getattr(steps, "data", steps))
            if not self.rtpo_started:
                self._resume(step)
            self.observe(before=step - 1)  # verl's global_steps is 1-based
            stages = self.rtpo.stages(rows, step)
        batch["rtpo_stage"] = torch.as_tensor(stages, dtype=torch.int64)

    def generate_sequences(self, prompts: Any) -> None:
        self.stamp(prompts)
        return super().generate_sequences(prompts)


class RTPOCheckpointCallback(CheckpointCallback):
    """verl's ``trainer.checkpoint_callback_class``: after verl saves ``global_step_N``, the hint
    policy's state (a policy that learns) goes into the same folder (``rtpo_policy.npz`` and
    ``rtpo_policy.json``)."""

    def on_save(self, trainer: Any, global_step: int, checkpoint_dir: str, async_save: bool = False,
                **kwargs: Any) -> None:
        manager = getattr(trainer, "agent_loop_manager", None)
        if isinstance(manager, RTPOAgentLoopManager):
            manager.save_policy(checkpoint_dir)


# ---------------------------------------------------------------------------------------------
# The agent loop: exact token ids to the rollout server
# ---------------------------------------------------------------------------------------------


def hinted_prompt(curriculum: str, row: int, stage: int) -> tuple[list[int], dict[str, Any]]:
    """The token ids ``row`` of ``curriculum`` gets at ``stage`` (:data:`NO_HINT`: none) and the fields
    the reward logs: ``rtpo_stage``, ``rtpo_hint_tokens``, ``rtpo_kept_fraction``."""
    cur = open_curriculum(curriculum)
    at = None if stage == NO_HINT else stage
    hint = 0 if at is None else cur.cut(row, at)[0]
    fraction = float(cur.kept_fractions([row], at if at is None else [at])[0])
    return cur.prompt_ids(row, at), {"rtpo_stage": int(stage), "rtpo_hint_tokens": int(hint),
                                     "rtpo_kept_fraction": fraction}


class RTPOAgentLoop(AgentLoopBase):
    """Agent loop ``rtpo``: one completion of the curriculum's prompt for (row, stage).

    The prompt's token ids are the curriculum's, sent as they are (no chat template is applied
    here: the build applied it, with the hint placed where the build placed it). A prompt longer than
    ``rollout.prompt_length`` raises rather than being cut from the left.
    """

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        if "rtpo_stage" not in kwargs:
            raise RtpoDataError(
                "the rtpo agent loop got a row without rtpo_stage: set actor_rollout_ref.rollout.agent."
                "agent_loop_manager_class=rtpo_data.adapters.verl.RTPOAgentLoopManager (rtpo-data train verl sets it).")
        prompt_ids, fields = hinted_prompt(str(kwargs["rtpo_curriculum"]), int(kwargs["rtpo_row"]),
                                           int(kwargs["rtpo_stage"]))
        room = int(self.rollout_config.prompt_length)
        if len(prompt_ids) > room:
            raise RtpoDataError(f"row {int(kwargs['rtpo_row'])} of {kwargs['rtpo_curriculum']}: a prompt of "
                                f"{len(prompt_ids)} tokens exceeds rollout.prompt_length={room}.")
        metrics: dict[str, Any] = {}
        output = await self.server_manager.generate(
            request_id=uuid.uuid4().hex, prompt_ids=prompt_ids, sampling_params=sampling_params)
        length = int(self.rollout_config.response_length)
        response = list(output.token_ids)[:length]
        logprobs = list(output.log_probs)[:length] if output.log_probs else None
        metrics["num_preempted"] = output.num_preempted if output.num_preempted is not None else -1
        extra = dict(output.extra_fields or {})
        extra.update(fields, turn_scores=[], tool_rewards=[])
        return AgentLoopOutput(prompt_ids=prompt_ids, response_ids=response, response_mask=[1] * len(response),
                               response_logprobs=logprobs, num_turns=2, metrics=metrics, extra_fields=extra)


# ---------------------------------------------------------------------------------------------
# The reward (reward.custom_reward_function)
# ---------------------------------------------------------------------------------------------


def compute_score(data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                  extra_info: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """verl's custom reward: ``score`` = ``acc`` = 1.0 when the response's final answer equals the gold
    (:func:`rtpo_data.rewards.score`), else 0.0; ``format`` (:func:`rtpo_data.rewards.format_ok`);
    and the row's ``rtpo_stage`` (-1: no hint), ``rtpo_hint_tokens`` and ``rtpo_kept_fraction``, so
    verl logs them per step. ``solution_str`` is the response only (verl decodes it alone)."""
    acc = float(score(solution_str, ground_truth) or 0.0)
    info = extra_info or {}
    out = {"score": acc, "acc": acc, "format": 1.0 if format_ok(solution_str) else 0.0}
    for key, default in (("rtpo_stage", NO_HINT), ("rtpo_hint_tokens", 0), ("rtpo_kept_fraction", 0.0)):
        value = info.get(key, default)
        out[key] = float(value) if value is not None else float(default)
    return out


# ---------------------------------------------------------------------------------------------
# Launching: rtpo-data train verl --curriculum DIR -- <Hydra overrides>
# ---------------------------------------------------------------------------------------------


def overrides(curriculum: str | os.PathLike[str], given: Sequence[str] = ()) -> list[str]:
    """The Hydra overrides that put rtpo-data into ``verl.trainer.main_ppo``, less those ``given``
    already sets: the curriculum as train (and, unless given, validation) files, the dataset class,
    the agent loop and its manager, the checkpoint callback, the reward function, and (when neither
    ``trainer.total_training_steps`` nor ``trainer.total_epochs`` is given) the curriculum's
    ``--total-steps`` as verl's step count."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in given}
    path = str(Path(curriculum).resolve())
    ours = {
        "data.train_files": path,
        "data.val_files": path,
        "data.custom_cls.path": f"pkg://{MODULE}",
        "data.custom_cls.name": "RTPODataset",
        "actor_rollout_ref.rollout.agent.agent_loop_config_path": AGENT_LOOP_CONFIG,
        "+actor_rollout_ref.rollout.agent.agent_loop_manager_class": MANAGER,
        "trainer.checkpoint_callback_class": CHECKPOINT_CALLBACK,
    }
    if not keys & {"trainer.total_training_steps", "trainer.total_epochs"}:
        # verl's default is 30 epochs; a curriculum built for N steps trains N steps unless told otherwise
        built = Curriculum.open(path).total_steps if is_curriculum(path) else None
        if built is not None:
            ours["trainer.total_training_steps"] = str(built)
    if "reward.custom_reward_function.path" not in keys:
        ours["reward.custom_reward_function.path"] = f"pkg://{MODULE}"
        ours["reward.custom_reward_function.name"] = "compute_score"
    return [f"{k}={v}" for k, v in ours.items() if k.lstrip("+") not in keys]


def compose(overrides_: Sequence[str]) -> Any:
    """verl's ``ppo_trainer`` config with ``overrides_``, as ``main_ppo`` composes it."""
    import verl.trainer
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    config_dir = str(Path(verl.trainer.__file__).parent / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=list(overrides_))


def check_tokenizer_early(config: Any, cur: Curriculum) -> None:
    """The model's tokenizer against the curriculum's, before Ray starts, when it loads here (the
    dataset checks again with the tokenizer verl loads)."""
    path = _get(config, "actor_rollout_ref.model.tokenizer_path") or _get(config, "actor_rollout_ref.model.path")
    tokenizer = None if _get(config, ALLOW_TOKENIZER, False) else trainer_tokenizer(path)
    if tokenizer is not None:
        check_tokenizer(cur.manifest, tokenizer, curriculum=str(cur.path), override=TOKENIZER_OVERRIDE)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtpo-data train verl",
        description="Run verl's own trainer (verl.trainer.main_ppo) with prompts from an rtpo-data curriculum, "
                    "rendered for each training step. Everything after -- goes to verl as Hydra overrides.")
    p.add_argument("--curriculum", required=True, help="The directory written by rtpo-data build.")
    p.add_argument("--horizon", default=None,
                   help="The schedule's horizon: auto (default), curriculum, trainer, or a number of steps.")
    p.add_argument("--policy", default=None, choices=list(POLICIES),
                   help="Hint policy: global (default: the schedule), mixed or frontier (docs/policies.md).")
    p.add_argument("--policy-seed", type=int, default=None, help="Seed of the policy's (row, step) hash.")
    p.add_argument("--success-threshold", type=float, default=None,
                   help="Reward at or above which a sample counts as a success for the hint policy (default 0.5).")
    p.add_argument("--print-overrides", action="store_true",
                   help="Print the Hydra overrides for `python -m verl.trainer.main_ppo` and exit.")
    return p


def parse_launcher_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """rtpo-data's options, and verl's Hydra overrides: what follows ``--``, or (where a caller such as
    Typer dropped the ``--``) every argument that is not an option."""
    args = list(argv)
    if "--" in args:
        split = args.index("--")
        return _parser().parse_args(args[:split]), args[split + 1:]
    ours, rest = _parser().parse_known_args(args)
    flags = [a for a in rest if a.startswith("-")]
    if flags:
        raise RtpoDataError(f"unknown option {flags[0]!r} (verl takes Hydra overrides, key=value, after --): "
                            "see rtpo-data train verl --help.")
    return ours, rest


def main(argv: Sequence[str] | None = None) -> None:
    """``rtpo-data train verl`` / ``python -m rtpo_data.adapters.verl``: compose verl's config with the
    user's overrides and rtpo-data's, refuse what cannot be served exactly (:func:`check_config`, the
    tokenizer), then run ``verl.trainer.main_ppo`` unchanged."""
    ours, given = parse_launcher_args(sys.argv[1:] if argv is None else argv)
    if not is_curriculum(ours.curriculum):
        raise RtpoDataError(f"--curriculum {ours.curriculum!r} is not an rtpo-data curriculum (no manifest.json in "
                            "it): pass the directory written by rtpo-data build.")
    train = next((o.split("=", 1)[1] for o in given if o.split("=", 1)[0] == "data.train_files"), None)
    if train is not None and Path(train).resolve() != Path(ours.curriculum).resolve():
        raise RtpoDataError(f"--curriculum {ours.curriculum!r} and data.train_files={train!r} differ: give one of them.")
    extra = overrides(ours.curriculum, given)
    for key, value in (("horizon", ours.horizon), ("policy", ours.policy), ("policy_seed", ours.policy_seed),
                       ("success_threshold", ours.success_threshold)):
        if value is not None:
            extra.append(f"+{SETTINGS}.{key}={value}")
    full = [*given, *extra]
    if ours.print_overrides:
        print(" \\\n  ".join(["python -m verl.trainer.main_ppo", *full]))
        return
    config = compose(full)
    plan = check_config(config)
    check_tokenizer_early(config, plan.cur)
    run_as_main(MAIN_MODULE, full)


if __name__ == "__main__":
    try:
        main()
    except RtpoDataError as exc:
        sys.exit(f"rtpo-data: {exc}")
