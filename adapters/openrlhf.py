"""RTPO in OpenRLHF 0.11.2: step-aware hint prompts inside OpenRLHF's Ray trainer, launched with its own CLI.

Where prompts are made (OpenRLHF 0.11.2, synchronous trainer)::

    PPOTrainer.fit()                       one actor process, the single controller
      global_step = g                      0, or the checkpoint's global_step on resume
      loop:
        SamplesGenerator.generate_samples()            (RTPOSamplesGenerator)
          next(dataloader) x rollout.batch_size        -> dataset[i] is rendered NOW, for step g, at
                                                          stage policy.select(state, [i], g)
          one vLLM request per prompt, n_samples_per_prompt completions of the same text
          each response -> an Experience with its label and reward   -> recorded, per (row, step)
          dynamic filtering: a rejected group -> next(dataloader) again, still step g
          the call returns                             -> every group held for step g
        no sample kept (all groups dropped)            -> generate again, still step g, same stages
        train_step(samples, g) -> g + 1                -> state = policy.update(state, step g's groups)
                                                          RTPOPPOTrainer sets dataset.step = g + 1
        checkpoint client_states {global_step: g + 1, data_loader_state_dict, rtpo_policy, ...}

So the dataset renders (step, row) when the dataloader hands the row out, and the trainer subclass
moves the step after each training step and restores it (and the hint policy's state) from
OpenRLHF's own checkpoint state (``init_checkpoint_states``). With
``--data.dataloader_num_workers 0`` (required) the dataloader fetches exactly when ``next()`` is
called, never ahead. Rendering depends on (step, row, policy state) and not on the row's position,
so OpenRLHF's hard-coded shuffle is harmless. The policy (``global``, the default: the schedule;
``mixed``; ``frontier``) sees every group a step generates, the ones dynamic filtering drops
included (:class:`RTPOSamplesGenerator`).

Worked example: ``--rollout.batch_size 2 --rollout.n_samples_per_prompt 4``, a curriculum built with
``--total-steps 4 --stages 4`` (``stage_at(g) = min(3, g * 4 // 4)``)::

    step g   rows drawn (shuffled)           stage   hint
    0        r7, r2 (+ replacements)         0       whole trace       4 completions per row, same text
    1        r5, r0                          1       2/3 of the trace
    2        r3, r6                          2       1/3
    3        ...                             3       none
    4, 5...  ...                             3       none (the schedule's horizon is past)

The schedule's clock is the training step and its horizon is the curriculum's ``total_steps`` (with
dynamic filtering OpenRLHF cannot know its number of steps in advance), or an explicit
``--rtpo.total_steps`` / ``RTPO_DATA_TOTAL_STEPS``; the policy is ``--rtpo.policy`` /
``RTPO_DATA_POLICY``. Evaluation prompts never carry a hint.

Two ways to launch, both running OpenRLHF's CLI module unchanged:

- ``RAY_RUNTIME_ENV_HOOK=rtpo_data.adapters.openrlhf.runtime_env_hook python -m openrlhf.cli.train_ppo_ray
  ... --data.prompt_dataset CURRICULUM``: Ray calls :func:`runtime_env_hook` inside the CLI's own
  ``ray.init``, before ``train()`` imports the trainer class; the hook swaps in :class:`RTPOPPOTrainer`.
- ``python -m rtpo_data.adapters.openrlhf --curriculum DIR -- <openrlhf flags>`` (:func:`main`): checks
  the flags first, installs the same hook, and runs ``openrlhf.cli.train_ppo_ray`` with ``runpy``.

The trainer class must be a module-level class importable on every node: Ray imports actor classes
by (module, name) on the worker, and a class made inside a function would be shipped by value and
lose the patch's module.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtpo_data.adapters import run_as_main
from rtpo_data.adapters.openrlhf_prompt import CurriculumTokenizer, PolicyCheckpoint, PromptText
from rtpo_data.curriculum import Curriculum
from rtpo_data.errors import ConfigError, RtpoDataError
from rtpo_data.policies import (
    POLICIES,
    GlobalSchedule,
    HintPolicy,
    Observations,
    PendingObservations,
    PolicyState,
    make_policy,
    policy_learns,
    step_metrics,
)
from rtpo_data.render import kept_fraction
from rtpo_data.schedule import resolve_horizon
from rtpo_data.tokenizer import check_tokenizer, trainer_tokenizer

try:
    import ray
    import torch.utils.data
    from openrlhf.trainer import ppo_trainer as _ppo
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"rtpo_data.adapters.openrlhf needs OpenRLHF 0.11.2 and its GPU stack ({exc}): "
        "pip install 'rtpo-data[openrlhf]' 'openrlhf[vllm]==0.11.2' (see docs/openrlhf.md)."
    ) from exc

logger = logging.getLogger(__name__)

CLI_MODULE = "openrlhf.cli.train_ppo_ray"
HOOK = "rtpo_data.adapters.openrlhf.runtime_env_hook"
TOTAL_STEPS_ENV = "RTPO_DATA_TOTAL_STEPS"
POLICY_ENV = "RTPO_DATA_POLICY"
SUCCESS_THRESHOLD_ENV = "RTPO_DATA_SUCCESS_THRESHOLD"
# The key of the hint policy's state in OpenRLHF's checkpoint client_states.
CHECKPOINT_KEY = "rtpo_policy"
ALLOW_TOKENIZER_ENV = "RTPO_DATA_ALLOW_TOKENIZER_MISMATCH"
TOKENIZER_OVERRIDE = (f"pass --rtpo.allow_tokenizer_mismatch to rtpo-data train openrlhf (or set "
                      f"{ALLOW_TOKENIZER_ENV}=1 with the hook)")
REWARD_FILE = str(Path(__file__).with_name("openrlhf_reward.py"))
# OpenRLHF's own class, kept before install() replaces the module attribute.
STOCK_PPO_TRAINER = _ppo.PPOTrainer


# ---------------------------------------------------------------------------------------------
# Curriculum, horizon and the settings this adapter can serve exactly
# ---------------------------------------------------------------------------------------------


def is_curriculum(path: str | os.PathLike[str] | None) -> bool:
    return bool(path) and (Path(path) / "manifest.json").is_file()


def open_curriculum(path: str | None, flag: str = "--data.prompt_dataset") -> Curriculum:
    """The curriculum named by an OpenRLHF dataset flag, or an error that says what to pass."""
    if not path:
        raise RtpoDataError(f"{flag} is not set: pass the curriculum directory written by `rtpo-data build`.")
    if "," in str(path):
        raise RtpoDataError(
            f"{flag} {path!r} names several datasets; rtpo-data serves one curriculum per run. Build one "
            "curriculum from all sources (rtpo-data build takes several files) and pass its directory."
        )
    if not is_curriculum(path):
        raise RtpoDataError(
            f"{flag} {path!r} is not an rtpo-data curriculum (no manifest.json in it): pass the directory "
            "written by `rtpo-data build`, or launch without the rtpo-data hook for ordinary OpenRLHF datasets."
        )
    return Curriculum.open(path)


def resolve_total_steps(cur: Curriculum, override: int | str | None = None) -> int:
    """The schedule's horizon: ``override``, else ``$RTPO_DATA_TOTAL_STEPS``, else the curriculum's
    ``total_steps`` (:func:`rtpo_data.schedule.resolve_horizon`; OpenRLHF cannot say in advance how
    many steps it will train, since dynamic filtering changes that, so there is no trainer's count)."""
    value = override if override is not None else os.environ.get(TOTAL_STEPS_ENV) or None
    if value is not None:
        try:
            total = int(value)
        except ValueError:
            total = 0
        if total <= 0:
            raise RtpoDataError(f"--rtpo.total_steps / {TOTAL_STEPS_ENV} = {value!r}: give a positive number of training steps.")
        return resolve_horizon(total, built=cur.total_steps, trainer=None)
    return resolve_horizon("auto", built=cur.total_steps, trainer=None, curriculum=str(cur.path),
                           trainer_steps=f"--rtpo.total_steps (or {TOTAL_STEPS_ENV})")


def resolve_policy(name: str | HintPolicy | None = None) -> HintPolicy:
    """The hint policy: ``name`` (or a policy object), else ``$RTPO_DATA_POLICY``, else ``global``
    (:func:`rtpo_data.policies.make_policy`)."""
    value = name if name is not None else (os.environ.get(POLICY_ENV) or "").strip() or None
    if isinstance(value, str) and value not in POLICIES:
        raise RtpoDataError(f"--rtpo.policy / {POLICY_ENV} = {value!r}: use one of {', '.join(POLICIES)}.")
    return make_policy(value)


def resolve_success_threshold(value: float | str | None = None) -> float:
    """The reward at or above which a completion counts as a success for the policy: ``value``, else
    ``$RTPO_DATA_SUCCESS_THRESHOLD``, else 0.5."""
    raw = value if value is not None else (os.environ.get(SUCCESS_THRESHOLD_ENV) or "").strip() or 0.5
    try:
        threshold = float(raw)
    except ValueError:
        threshold = float("nan")
    if not np.isfinite(threshold):
        raise RtpoDataError(f"--rtpo.success_threshold / {SUCCESS_THRESHOLD_ENV} = {raw!r}: give a number (a "
                            "completion whose reward is at least this counts as a success).")
    return threshold


def longest_prompt(cur: Curriculum, num_rows: int | None = None) -> tuple[int, int]:
    """``(tokens, row)`` of the longest prompt any stage renders (stage 0 for a schedule going down).

    From list offsets and the cut table only: nothing is tokenized.
    """
    n = len(cur) if num_rows is None else max(0, min(int(num_rows), len(cur)))
    if n == 0:
        return 0, 0
    total = cur.longest_prompt_tokens()[:n]
    row = int(np.argmax(total))
    return int(total[row]), row


def check_openrlhf_args(args: Any, cur: Curriculum, policy: HintPolicy | None = None,
                        total_steps: int | None = None) -> None:
    """Refuse OpenRLHF settings under which the prompts could not follow the training step exactly,
    or the hint ``policy`` could not see every group it must learn from.

    ``args`` is OpenRLHF's hierarchical namespace (``args.data.max_len`` ...). Every problem is
    reported at once, each with what to change.
    """
    problems = []
    policy = policy or GlobalSchedule()
    if not isinstance(policy, GlobalSchedule):
        try:
            total = resolve_total_steps(cur, total_steps)
        except RtpoDataError:
            total = None  # reported where the horizon is resolved
        if total is not None:
            try:
                policy.init_state(cur, cur.clock(total), int(getattr(args.train, "seed", 0) or 0))
            except RtpoDataError as exc:
                problems.append(str(exc))
    if policy_learns(policy):
        remote = getattr(args.reward, "remote_url", None)
        if not remote and not getattr(args.train, "agent_func_path", None):
            problems.append(
                f"--reward.model_name_or_path without --reward.remote_url: a reward model scores the samples after "
                f"generation, but the {policy.name!r} hint policy learns from each group's rewards as the group comes "
                "back from the engines (before dynamic filtering). Give a reward function with --reward.remote_url "
                "(rtpo-data's reward file is the default of rtpo-data train openrlhf), or use --rtpo.policy global or mixed."
            )
        problem = observation_hook_problem()
        if problem:
            problems.append(f"--rtpo.policy {policy.name}: {problem}")
    generate = getattr(args.rollout, "vllm_generate_batch_size", None)
    batch = getattr(args.rollout, "batch_size", None)
    if generate and batch and int(generate) > int(batch):
        problems.append(
            f"--rollout.vllm_generate_batch_size {generate} > --rollout.batch_size {batch}: the samples generated for "
            "one step would be kept and trained at later steps, with the hint of the step they were drawn at. "
            "Leave --rollout.vllm_generate_batch_size unset (or equal to --rollout.batch_size)."
        )
    if getattr(args.train, "async_enable", False):
        problems.append(
            "--train.async_enable: the async trainer generates the next rollouts while the current step trains, "
            "so a prompt cannot be rendered for the step it trains. Remove --train.async_enable."
        )
    workers = int(getattr(args.data, "dataloader_num_workers", 0) or 0)
    if workers > 0:
        problems.append(
            f"--data.dataloader_num_workers {workers}: worker processes fetch rows ahead of time from their own copy "
            "of the dataset and never learn the training step. Set --data.dataloader_num_workers 0 (rendering a "
            "prompt is a string slice; workers gain nothing)."
        )
    if getattr(args.data, "prompt_probs", None):
        problems.append("--data.prompt_probs: rtpo-data serves one curriculum per run. Remove --data.prompt_probs.")
    max_len = int(args.data.max_len)
    max_new = getattr(args.rollout, "max_new_tokens", None)
    room = max_len - (int(max_new) if max_new else 1)
    longest, row = longest_prompt(cur, getattr(args.data, "max_samples", None))
    if longest > room:
        need = longest + (int(max_new) if max_new else 1)
        budget = f"--data.max_len {max_len} minus --rollout.max_new_tokens {max_new}" if max_new else f"--data.max_len {max_len}"
        problems.append(
            f"--data.max_len {max_len}: the longest prompt of {cur.path} is {longest} tokens (row {cur.row_id(row)!r} "
            f"with its whole trace), more than {budget} leaves for it ({room}); OpenRLHF would cut it from the left "
            f"and drop the question. Set --data.max_len to at least {need}"
            + (" or lower --rollout.max_new_tokens." if max_new else ".")
        )
    if problems:
        raise ConfigError(problems, what="OpenRLHF settings for an rtpo-data curriculum")


def tokenizer_mismatch_allowed() -> bool:
    return os.environ.get(ALLOW_TOKENIZER_ENV, "").strip().lower() in ("1", "true", "yes")


def check_policy_tokenizer(tokenizer: Any, curricula: Sequence[Curriculum]) -> None:
    """Refuse a policy tokenizer (or chat template) that is not the one the curricula were built with,
    unless ``$RTPO_DATA_ALLOW_TOKENIZER_MISMATCH`` says to go on."""
    if tokenizer_mismatch_allowed():
        return
    for cur in curricula:
        check_tokenizer(cur.manifest, tokenizer, curriculum=str(cur.path), override=TOKENIZER_OVERRIDE)


def check_policy_tokenizer_early(pretrain: str | None, curricula: Sequence[Curriculum]) -> None:
    """:func:`check_policy_tokenizer` in the driver, before Ray starts any model, when the policy's
    tokenizer loads there (the trainer actor checks again, with the tokenizer OpenRLHF loads)."""
    tokenizer = None if tokenizer_mismatch_allowed() else trainer_tokenizer(pretrain)
    if tokenizer is not None:
        check_policy_tokenizer(tokenizer, curricula)


# ---------------------------------------------------------------------------------------------
# The dataset: OpenRLHF PromptDataset's item contract, rendered at the current training step
# ---------------------------------------------------------------------------------------------


def special_prefix_text(cur: Curriculum) -> str:
    """The text of what the curriculum's tokenizer puts in front of every prompt (its BOS), or "".

    The build leaves it out of the prompt texts (a trainer that tokenizes with special tokens adds
    it) and keeps it in the ids; OpenRLHF tokenizes without special tokens, so its text comes first.
    """
    facts = cur.manifest.tokenizer
    prefix, bos = facts.get("special_prefix_ids") or [], facts.get("bos_token")
    return bos if len(prefix) == 1 and bos else ""


class CurriculumPromptDataset(torch.utils.data.Dataset):
    """Rows of a curriculum with the item contract of OpenRLHF's ``PromptDataset``.

    ``dataset[i]`` is ``(datasource, prompt, label, images)``, rendered when it is fetched: ``prompt``
    is the curriculum's text for row ``i`` at the stage the hint policy gives it at ``self.step``
    (``policy.select(policy_state, [i], step)``; the default policy, ``global``, is the curriculum's
    schedule) with the chat template already applied (so OpenRLHF's ``--data.apply_chat_template`` /
    ``--data.input_template`` do not apply to it), preceded by the tokenizer's BOS when it adds one,
    as a :class:`~rtpo_data.adapters.openrlhf_prompt.PromptText` carrying ``prompt_ids(i, stage)``
    (what the engine generates from, see that module), and ``label`` is a dict
    ``{"answer", "row_id", "index", "step", "stage", "kept_fraction"}`` (``index`` = the curriculum row
    ``i``, which the policy works on; ``stage`` = the stage used; ``kept_fraction`` = hint tokens /
    trace tokens) that OpenRLHF passes untouched to the reward function and back with every sample.
    With ``hint=False`` every prompt is the no-hint prompt (evaluation) and the label has no step.
    ``datasource`` is the kept column ``datasource`` if the curriculum has one, else ``"default"``.
    Nothing is tokenized or decoded.

    The policy's state is held in ``policy_state``; :class:`RTPOPPOTrainer` owns it: it restores it from
    a checkpoint and replaces it after every update.
    """

    def __init__(self, curriculum: str | Path | Curriculum, total_steps: int | None = None, *, hint: bool = True,
                 max_samples: int | None = None, policy: str | HintPolicy | None = None, seed: int = 0) -> None:
        super().__init__()
        self.curriculum = curriculum if isinstance(curriculum, Curriculum) else Curriculum.open(curriculum)
        self.hint = hint
        self.clock = self.curriculum.clock(resolve_total_steps(self.curriculum, total_steps)) if hint else None
        self.total_steps = self.clock.total_steps if self.clock else None
        self.policy: HintPolicy | None = make_policy(policy) if hint else None
        self.policy_state: PolicyState | None = (self.policy.init_state(self.curriculum, self.clock, int(seed))
                                                 if self.policy is not None else None)
        n = len(self.curriculum)
        self.num_rows = n if max_samples is None else max(0, min(int(max_samples), n))
        self.step = 0
        self._datasource = "datasource" in self.curriculum.kept_columns
        self._bos_text = special_prefix_text(self.curriculum)

    def set_step(self, step: int) -> None:
        """The training step prompts are rendered for from now on (0-based)."""
        step = int(step)
        if step < 0:
            raise RtpoDataError(f"step {step}: training steps count from 0.")
        self.step = step

    @property
    def stage(self) -> int | None:
        """The schedule's stage at ``self.step`` (what the ``global`` policy gives every row; None without hint)."""
        return self.clock.stage_at(self.step) if self.clock else None

    def stage_of(self, i: int) -> int | None:
        """The stage row ``i`` is rendered at now: the policy's choice at ``self.step`` (None without hint)."""
        if self.policy is None:
            return None
        return int(self.policy.select(self.policy_state, np.asarray([i], dtype=np.int64), self.step)[0])

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, idx: int) -> tuple[str, PromptText, dict[str, Any], None]:
        i = int(idx)
        if not 0 <= i < self.num_rows:
            raise IndexError(f"row {i} out of range for a dataset of {self.num_rows} rows")
        cur = self.curriculum
        label: dict[str, Any] = {"answer": cur.answer(i), "row_id": cur.row_id(i)}
        stage = self.stage_of(i)
        prompt = PromptText(self._bos_text + cur.prompt(i, stage), cur.prompt_ids(i, stage))
        if stage is None:
            label["kept_fraction"] = 0.0
        else:
            kept = kept_fraction(cur.cut(i, stage)[0], cur.trace_tokens([i])[0])
            label.update(index=i, step=self.step, stage=stage, kept_fraction=float(kept))
        datasource = cur.value("datasource", i) if self._datasource else "default"
        return datasource, prompt, label, None

    def collate_fn(self, item_list: list[tuple[Any, ...]]) -> tuple[list[Any], list[str], list[Any], list[Any]]:
        """As ``PromptDataset.collate_fn``: four parallel lists."""
        datasources, prompts, labels, images = [], [], [], []
        for datasource, prompt, label, image in item_list:
            datasources.append(datasource)
            prompts.append(prompt)
            labels.append(label)
            images.append(image)
        return datasources, prompts, labels, images


# ---------------------------------------------------------------------------------------------
# Every group seen before dynamic filtering: the sample generator
# ---------------------------------------------------------------------------------------------


def observation_hook_problem() -> str | None:
    """Why :class:`RTPOSamplesGenerator` could not see every group in the installed OpenRLHF, or None.

    It relies on ``SamplesGenerator._generate_vllm`` turning each response into an ``Experience``
    (``_process_response_into_experience``) before dynamic filtering reads the group's scores, as
    OpenRLHF 0.11.2 does; read from the installed source.
    """
    gen = _ppo.SamplesGenerator
    missing = [name for name in ("generate_samples", "_generate_vllm", "_process_response_into_experience")
               if not callable(getattr(gen, name, None))]
    if missing:
        return (f"the installed OpenRLHF's SamplesGenerator has no {', '.join(missing)}, where rtpo-data observes each "
                "group before dynamic filtering. Use OpenRLHF 0.11.2.")
    try:
        source = inspect.getsource(gen._generate_vllm)
        calls = "self._generate_vllm(" in inspect.getsource(gen.generate_samples)
    except (OSError, TypeError):
        return ("the installed OpenRLHF's sample generator has no readable source, so rtpo-data cannot check that it "
                "sees each group before dynamic filtering. Use OpenRLHF 0.11.2 installed from its wheel.")
    made = source.find("self._process_response_into_experience(")
    filtered = source.find("if dynamic_filtering")
    if not calls or made < 0 or filtered < 0 or made > filtered:
        return ("in the installed OpenRLHF, SamplesGenerator._generate_vllm does not make every response into an "
                "experience before dynamic filtering drops groups (OpenRLHF 0.11.2 does), so the hint policy would see "
                "only the groups filtering keeps. Use OpenRLHF 0.11.2.")
    return None


class RTPOSamplesGenerator(_ppo.SamplesGenerator):
    """OpenRLHF's ``SamplesGenerator`` that reports every training group, with its rewards, before
    dynamic filtering can drop it.

    In OpenRLHF 0.11.2 ``_generate_vllm`` sends one request per prompt (``n_samples_per_prompt``
    completions), and as each request returns it makes each response into an ``Experience``
    (``_process_response_into_experience``, which carries the sample's label and reward); only then
    does dynamic filtering drop the group when its mean score is outside the range, and draw a
    replacement prompt. This class records each experience as it is made (row index, step and stage
    from the curriculum's label; the reward), so every group dispatched is seen, dropped or kept, and
    the same with dynamic filtering off. At the end of each ``_generate_vllm`` call made by
    ``generate_samples`` (training; evaluation is not observed) it checks that it saw one group per
    prompt the call consumed, and hands the groups to ``observe``: a list of
    ``{"index", "step", "stage", "rewards"}`` (``rewards``: one float per sample, None for a sample
    without reward).
    """

    def __init__(self, *args: Any, observe: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rtpo_observe = observe
        self._rtpo_training = False
        self._rtpo_groups: dict[tuple[int, int], dict[str, Any]] | None = None

    def generate_samples(self, **generate_kwargs: Any) -> Any:
        self._rtpo_training = True
        try:
            return super().generate_samples(**generate_kwargs)
        finally:
            self._rtpo_training = False

    def _generate_vllm(self, *args: Any, **kwargs: Any) -> Any:
        if not self._rtpo_training:
            return super()._generate_vllm(*args, **kwargs)
        self._rtpo_groups = groups = {}
        try:
            experiences, consumed, exhausted = super()._generate_vllm(*args, **kwargs)
        finally:
            self._rtpo_groups = None
        if len(groups) != consumed:
            raise RtpoDataError(
                f"rtpo-data saw {len(groups)} groups of the {consumed} prompts OpenRLHF's sample generator sent to the "
                "engines: the hint policy must see every group (before dynamic filtering), and this OpenRLHF version "
                "does not make every response into an experience as 0.11.2 does. Use OpenRLHF 0.11.2."
            )
        self._rtpo_observe(list(groups.values()))
        return experiences, consumed, exhausted

    def _process_response_into_experience(self, response: Any, **generate_kwargs: Any) -> Any:
        experience = super()._process_response_into_experience(response, **generate_kwargs)
        groups = self._rtpo_groups
        label = experience.labels[0] if groups is not None and experience.labels else None
        if isinstance(label, dict) and "index" in label and "step" in label:
            key = (int(label["index"]), int(label["step"]))
            group = groups.setdefault(key, {"index": key[0], "step": key[1], "stage": int(label["stage"]),
                                            "rewards": []})
            reward = experience.rewards
            group["rewards"].append(None if reward is None else float(reward.flatten()[0]))
        return experience


# ---------------------------------------------------------------------------------------------
# The trainer: OpenRLHF's PPOTrainer actor with the curriculum dataset and the step kept in sync
# ---------------------------------------------------------------------------------------------

_IGNORED_DATA_FLAGS = (
    ("--data.apply_chat_template", "apply_chat_template"),
    ("--data.input_template", "input_template"),
    ("--data.label_key", "label_key"),
)


@ray.remote
class RTPOPPOTrainer(STOCK_PPO_TRAINER.__ray_actor_class__):
    """OpenRLHF's synchronous ``PPOTrainer`` (a Ray actor) whose prompts follow an rtpo-data curriculum.

    Differences from the stock trainer, and nothing else:

    - ``__init__`` builds :class:`CurriculumPromptDataset` from ``--data.prompt_dataset`` (a
      curriculum directory) instead of OpenRLHF's ``PromptDataset``, after checking the settings
      (:func:`check_openrlhf_args`). An ``--eval.dataset`` that is a curriculum is served without
      hint; any other eval dataset goes through OpenRLHF's own ``PromptDataset``.
    - It refuses a policy tokenizer or chat template that is not the curriculum's
      (:func:`check_policy_tokenizer`), and gives the sample generator a
      :class:`~rtpo_data.adapters.openrlhf_prompt.CurriculumTokenizer`, so that the engines generate
      from the curriculum's ``prompt_ids`` exactly.
    - Each row's stage comes from a hint policy (:mod:`rtpo_data.policies`; ``$RTPO_DATA_POLICY``:
      ``global``, the default, is the curriculum's schedule; ``mixed``; ``frontier``), whose state
      lives here and in the dataset (``rtpo_dataset.policy_state``). Its seed is ``--train.seed``.
    - The sample generator is a :class:`RTPOSamplesGenerator`: every group of a training step, the
      ones dynamic filtering drops included, is held as its generation call returns, and updates the
      policy (``policy.update``, once for the step's groups) when the step trains. A step may take
      several calls (OpenRLHF generates again at the same step when a call kept no sample), and its
      stages stay those of the step's start throughout. A completion succeeds when its reward is at
      least ``$RTPO_DATA_SUCCESS_THRESHOLD`` (default 0.5).
    - ``init_checkpoint_states`` sets the dataset's step to the checkpoint's ``global_step`` and
      restores the policy's state from the checkpoint (``client_states["rtpo_policy"]``, refused for
      another curriculum, policy or horizon); ``save_logs_and_checkpoints`` puts it there.
    - ``train_step`` moves the dataset's step to the next global step, and adds to OpenRLHF's step
      logs ``rtpo/stage``, ``rtpo/kept_fraction`` (means over the trained prompts) and, over every
      group generated for the step (filtered ones included), ``rtpo/stage_share/K``,
      ``rtpo/all_fail_groups``, ``rtpo/all_succeed_groups``, ``rtpo/hint_tokens`` and ``rtpo/groups``.
    """

    def __init__(self, pretrain: str, strategy: Any, actor_model_group: Any, critic_model_group: Any,
                 reward_model_group: Any, reference_model_group: Any, vllm_engines: Any, **generate_kwargs: Any) -> None:
        # Mirrors PPOTrainer.__init__ of OpenRLHF 0.11.2; only the datasets differ (_prepare_datasets).
        args = strategy.args
        self.curriculum = open_curriculum(args.data.prompt_dataset)
        self.rtpo_total_steps = resolve_total_steps(self.curriculum)
        self.rtpo_policy = resolve_policy()
        self.rtpo_success_threshold = resolve_success_threshold()
        self.rtpo_seed = int(getattr(args.train, "seed", 0) or 0)
        check_openrlhf_args(args, self.curriculum, self.rtpo_policy)
        self._rtpo_start_step = 0
        self._rtpo_pending = PendingObservations()
        if args.eval.steps == -1:
            args.eval.steps = float("inf")
        if args.ckpt.save_steps == -1:
            args.ckpt.save_steps = float("inf")
        tokenizer = _ppo.get_tokenizer(pretrain, None, "left", strategy, use_fast=not args.data.disable_fast_tokenizer)
        eval_path = getattr(args.eval, "dataset", None)
        eval_curricula = [open_curriculum(eval_path, "--eval.dataset")] if is_curriculum(eval_path) else []
        check_policy_tokenizer(tokenizer, [self.curriculum, *eval_curricula])
        self.prompts_dataloader, self.eval_dataloader, self.max_steps = self._prepare_datasets(strategy, tokenizer)
        self.generate_kwargs = generate_kwargs
        generator: dict[str, Any] = {"observe": self._rtpo_observe}
        problem = observation_hook_problem()
        if problem:  # only a policy that does not learn gets here (check_openrlhf_args refuses the others)
            logger.warning("rtpo-data: %s The rtpo/ group figures are not logged.", problem)
        self.samples_generator = (_ppo.SamplesGenerator if problem else RTPOSamplesGenerator)(
            strategy=strategy,
            prompts_dataloader=self.prompts_dataloader,
            eval_dataloader=self.eval_dataloader,
            tokenizer=CurriculumTokenizer(tokenizer),
            vllm_engines=vllm_engines,
            **({} if problem else generator),
        )
        _ppo.BasePPOTrainer.__init__(self, strategy, actor_model_group, critic_model_group, reward_model_group,
                                     reference_model_group, vllm_engines, tokenizer)

    def _prepare_datasets(self, strategy: Any, tokenizer: Any) -> tuple[Any, Any, int]:
        args = strategy.args
        ignored = [flag for flag, attr in _IGNORED_DATA_FLAGS if getattr(args.data, attr, None)]
        if ignored:
            logger.warning("rtpo-data: %s ignored for the curriculum: its prompts already have the chat template "
                           "applied and labels are built from its answers.", ", ".join(ignored))
        self.rtpo_dataset = CurriculumPromptDataset(self.curriculum, self.rtpo_total_steps, max_samples=args.data.max_samples,
                                                    policy=self.rtpo_policy, seed=self.rtpo_seed)
        loader = strategy.setup_dataloader(self.rtpo_dataset, 1, True, True, self.rtpo_dataset.collate_fn,
                                           num_workers=args.data.dataloader_num_workers)
        eval_loader = None
        if getattr(args.eval, "dataset", None):
            if is_curriculum(args.eval.dataset):
                eval_dataset = CurriculumPromptDataset(open_curriculum(args.eval.dataset, "--eval.dataset"), hint=False,
                                                       max_samples=args.data.max_samples)
            else:
                data = _ppo.blending_datasets(args.eval.dataset, None, strategy, dataset_split=args.eval.split)
                data = data.select(range(min(args.data.max_samples, len(data))))
                eval_dataset = _ppo.PromptDataset(data, tokenizer, strategy, input_template=args.data.input_template)
            eval_loader = strategy.setup_dataloader(eval_dataset, 1, True, False, eval_dataset.collate_fn,
                                                    num_workers=args.data.dataloader_num_workers)
        max_steps = (len(self.rtpo_dataset) * args.rollout.n_samples_per_prompt // args.train.batch_size
                     * args.train.num_episodes * args.train.max_epochs)
        if max_steps < self.rtpo_total_steps:
            logger.warning("rtpo-data: the schedule spans %d steps but this run plans at most %d; the hint will not "
                           "reach its last stage.", self.rtpo_total_steps, max_steps)
        return loader, eval_loader, max_steps

    def fit(self, global_step: int = 0) -> None:
        self._rtpo_start_step = int(global_step)
        return super().fit(global_step)

    def init_checkpoint_states(self) -> dict[str, Any]:
        states = super().init_checkpoint_states()
        # fit() continues from the checkpoint's global_step when it is > 0, else from its argument.
        self.rtpo_dataset.set_step(int(states.get("global_step") or 0) or self._rtpo_start_step)
        self.rtpo_dataset.policy_state = restore_policy_state(
            states, self.rtpo_policy, self.curriculum, self.rtpo_dataset.clock, self.rtpo_seed,
            where=f"the checkpoint of global step {int(states.get('global_step') or 0)} in --ckpt.path {self.args.ckpt.path}",
        )
        self._rtpo_pending = PendingObservations()
        return states

    def _rtpo_observe(self, groups: list[dict[str, Any]]) -> None:
        """Hold the groups of one generation call (:class:`RTPOSamplesGenerator`) until their step trains."""
        scored = [(g, [r for r in g["rewards"] if r is not None]) for g in groups]
        scored = [(g, rewards) for g, rewards in scored if rewards]  # a group without any reward shows nothing
        for step in sorted({g["step"] for g, _ in scored}):
            part = [(g, rewards) for g, rewards in scored if g["step"] == step]
            observations = Observations(
                rows=np.asarray([g["index"] for g, _ in part], dtype=np.int64),
                stages=np.asarray([g["stage"] for g, _ in part], dtype=np.int64),
                successes=np.asarray([sum(r >= self.rtpo_success_threshold for r in rewards) for _, rewards in part],
                                     dtype=np.int64),
                samples=np.asarray([len(rewards) for _, rewards in part], dtype=np.int64),
                step=int(step),
            )
            self._rtpo_pending.add(observations)

    def _rtpo_end_step(self) -> list[Observations]:
        """Update the policy, once, with every group held for the step that trains now; returns them."""
        dataset = self.rtpo_dataset
        if dataset.policy_state is None:
            return []
        dataset.policy_state, observed = self._rtpo_pending.apply(self.rtpo_policy, dataset.policy_state)
        return observed

    def save_logs_and_checkpoints(self, global_step: int, logs_dict: Any = None, client_states: Any = None) -> None:
        if client_states is not None and self.rtpo_dataset.policy_state is not None:
            # the same dict goes on to the best-metric checkpoint (save_best_checkpoint) after evaluation
            client_states[CHECKPOINT_KEY] = PolicyCheckpoint.of(self.rtpo_dataset.policy_state)
        return super().save_logs_and_checkpoints(global_step, logs_dict, client_states)

    def train_step(self, rollout_samples: Any, global_step: int) -> tuple[dict[str, Any], int]:
        labels = [lab for s in rollout_samples for lab in s.labels if isinstance(lab, dict)]
        kept = [lab["kept_fraction"] for lab in labels if "kept_fraction" in lab]
        stages = [lab["stage"] for lab in labels if "stage" in lab]
        observed = self._rtpo_end_step()
        status, next_step = super().train_step(rollout_samples, global_step)
        if stages:
            status["rtpo/stage"] = float(np.mean(stages))
        if kept:
            status["rtpo/kept_fraction"] = float(np.mean(kept))
        status.update(group_metrics(self.rtpo_dataset.policy_state, self.curriculum, observed))
        self.rtpo_dataset.set_step(next_step)
        return status, next_step

    def rtpo_state(self) -> dict[str, Any]:
        """Where the curriculum stands (for logs and tests): step, the schedule's stage, horizon, policy."""
        return {"step": self.rtpo_dataset.step, "stage": self.rtpo_dataset.stage, "total_steps": self.rtpo_total_steps,
                "curriculum": str(self.curriculum.path), "policy": self.rtpo_policy.name}


def restore_policy_state(states: dict[str, Any], policy: HintPolicy, cur: Curriculum, clock: Any, seed: int,
                         where: str = "the checkpoint") -> PolicyState:
    """The policy state a run starts from, given OpenRLHF's checkpoint ``states``
    (``init_checkpoint_states``): the saved one, checked by :meth:`PolicyState.load` against a fresh
    state of this run's policy, curriculum, horizon and seed (another one is refused with a message);
    a fresh one for a new run. A resumed checkpoint without a state is refused for a policy that
    keeps one (``frontier``): it could not go on where it stopped. The ``global`` policy (the
    schedule) keeps nothing, so it resumes from any checkpoint, as before policies existed."""
    fresh = policy.init_state(cur, clock, int(seed))
    saved = states.get(CHECKPOINT_KEY)
    if isinstance(policy, GlobalSchedule):
        return fresh
    if saved is not None:
        if not isinstance(saved, PolicyCheckpoint):
            raise RtpoDataError(f"{where} holds {CHECKPOINT_KEY}={type(saved).__name__}, not a hint-policy state "
                                "saved by rtpo-data. Resume from a checkpoint of this run, or start a new run.")
        return saved.load(fresh, where)
    if int(states.get("global_step") or 0) > 0 and fresh.arrays:
        raise RtpoDataError(
            f"{where} has no hint-policy state, so the {policy.name!r} policy cannot go on where it stopped. Resume "
            "from a checkpoint of a run with this policy, or start a new run."
        )
    return fresh


def group_metrics(state: PolicyState | None, cur: Curriculum, observed: Sequence[Observations]) -> dict[str, float]:
    """``rtpo/*`` figures over the groups observed for one step (:func:`rtpo_data.policies.step_metrics`,
    with ``hint_tokens_mean`` as ``rtpo/hint_tokens``), and ``rtpo/groups``, their number; {} when none."""
    if state is None or not observed or not sum(len(o.rows) for o in observed):
        return {}
    joined = Observations(*(np.concatenate([getattr(o, name) for o in observed])
                            for name in ("rows", "stages", "successes", "samples")), step=observed[-1].step)
    out = {("rtpo/hint_tokens" if name == "hint_tokens_mean" else f"rtpo/{name}"): value
           for name, value in step_metrics(state, cur, joined).items()}
    out["rtpo/groups"] = float(len(joined.rows))
    return out


# ---------------------------------------------------------------------------------------------
# Installing it into the stock CLI: the Ray runtime-env hook, and the runpy wrapper
# ---------------------------------------------------------------------------------------------


def install() -> None:
    """Make OpenRLHF's ``train()`` build :class:`RTPOPPOTrainer` in this (driver) process.

    ``train()`` runs ``from openrlhf.trainer.ppo_trainer import PPOTrainer`` after ``ray.init``, so
    replacing the module attribute before then is enough; the actor itself is created on a worker
    from ``rtpo_data.adapters.openrlhf.RTPOPPOTrainer``.
    """
    _ppo.PPOTrainer = RTPOPPOTrainer


def _cli_args() -> Any:
    """OpenRLHF's parsed arguments, when the CLI runs as ``__main__`` (they are a global there)."""
    args = getattr(sys.modules.get("__main__"), "args", None)
    data = getattr(args, "data", None)
    return args if data is not None and hasattr(data, "prompt_dataset") else None


def runtime_env_hook(runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    """``RAY_RUNTIME_ENV_HOOK`` target: Ray calls it in the driver, inside the CLI's ``ray.init``.

    Installs the trainer (:func:`install`), checks the CLI's settings, the hint policy and the policy
    model's tokenizer against the curriculum (so a refused setting stops the run before any model
    loads) and passes ``RTPO_DATA_TOTAL_STEPS``, ``RTPO_DATA_POLICY``, ``RTPO_DATA_SUCCESS_THRESHOLD``
    and ``RTPO_DATA_ALLOW_TOKENIZER_MISMATCH`` on to every worker of the job (the trainer actor reads
    them there). Ray calls the hook once per job, at its ``ray.init``.
    """
    install()
    policy = resolve_policy()
    resolve_success_threshold()
    args = _cli_args()
    if args is not None:
        cur = open_curriculum(args.data.prompt_dataset)
        resolve_total_steps(cur)
        check_openrlhf_args(args, cur, policy)
        eval_path = getattr(args.eval, "dataset", None)
        eval_curricula = [open_curriculum(eval_path, "--eval.dataset")] if is_curriculum(eval_path) else []
        check_policy_tokenizer_early(args.actor.model_name_or_path, [cur, *eval_curricula])
    env = dict(runtime_env or {})
    for name in (TOTAL_STEPS_ENV, POLICY_ENV, SUCCESS_THRESHOLD_ENV, ALLOW_TOKENIZER_ENV):
        if os.environ.get(name):
            env["env_vars"] = {**(env.get("env_vars") or {}), name: os.environ[name]}
    return env


def _flag_parser() -> argparse.ArgumentParser:
    """The few OpenRLHF flags the launcher checks before starting, with OpenRLHF 0.11.2's defaults.

    OpenRLHF builds its parser inside ``if __name__ == "__main__"``, so it cannot be reused here;
    the trainer checks the real parsed arguments again.
    """
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--actor.model_name_or_path", default=None)
    p.add_argument("--eval.dataset", default=None)
    p.add_argument("--data.prompt_dataset", default=None)
    p.add_argument("--data.prompt_probs", default=None)
    p.add_argument("--data.max_len", type=int, default=2048)
    p.add_argument("--data.max_samples", type=int, default=int(1e8))
    p.add_argument("--data.dataloader_num_workers", type=int, default=0)
    p.add_argument("--rollout.max_new_tokens", type=int, default=None)
    p.add_argument("--rollout.batch_size", type=int, default=1024)
    p.add_argument("--rollout.vllm_generate_batch_size", type=int, default=None)
    p.add_argument("--train.seed", type=int, default=42)
    p.add_argument("--train.async_enable", action="store_true", default=False)
    p.add_argument("--train.agent_func_path", default=None)
    p.add_argument("--reward.remote_url", default=None)
    p.add_argument("--reward.model_name_or_path", default=None)
    return p


def _hierarchize(ns: argparse.Namespace) -> Any:
    from openrlhf.utils.config import hierarchize

    return hierarchize(ns)


def parse_launcher_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Split ``--curriculum DIR [--rtpo.total_steps N] [--rtpo.policy NAME] [--rtpo.success_threshold X]
    [--rtpo.allow_tokenizer_mismatch] -- <openrlhf flags>`` into ours and OpenRLHF's."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        ours, theirs = argv[:cut], argv[cut + 1:]
    else:
        ours, theirs = argv, []
    p = argparse.ArgumentParser(
        prog="rtpo-data train openrlhf", allow_abbrev=False,
        usage="%(prog)s --curriculum DIR [--rtpo.total_steps N] [--rtpo.policy {global,mixed,frontier}] "
              "[--rtpo.success_threshold X] [--rtpo.allow_tokenizer_mismatch] -- <openrlhf.cli.train_ppo_ray flags>",
        description="Run OpenRLHF's own CLI (openrlhf.cli.train_ppo_ray) with prompts from an rtpo-data curriculum.",
    )
    p.add_argument("--curriculum", help="Curriculum directory built by rtpo-data build (becomes --data.prompt_dataset).")
    p.add_argument("--rtpo.total_steps", dest="total_steps", type=int, default=None,
                   help="Schedule horizon in training steps (default: the curriculum's --total-steps).")
    p.add_argument("--rtpo.policy", dest="policy", choices=POLICIES, default=None,
                   help="Hint policy: global (the curriculum's schedule, the default), mixed (stages drawn per row "
                        "and step) or frontier (per row, the least hint that earns reward); see docs/policies.md.")
    p.add_argument("--rtpo.success_threshold", dest="success_threshold", type=float, default=None,
                   help="Reward at or above which a completion counts as a success for the hint policy (default 0.5).")
    p.add_argument("--rtpo.allow_tokenizer_mismatch", dest="allow_tokenizer_mismatch", action="store_true",
                   help="Train even though the policy's tokenizer or chat template is not the curriculum's.")
    known, rest = p.parse_known_args(ours)
    return known, [*rest, *theirs]


def main(argv: Sequence[str] | None = None) -> None:
    """``rtpo-data train openrlhf`` / ``python -m rtpo_data.adapters.openrlhf``.

    Checks the OpenRLHF flags and the hint policy against the curriculum (raising
    :class:`RtpoDataError` before anything starts), sets ``--data.prompt_dataset`` to the curriculum,
    uses rtpo-data's reward file when no reward is given, passes the horizon, policy and success
    threshold to the trainer actor (through the environment the Ray hook hands every worker),
    installs the trainer and the Ray hook, and runs ``openrlhf.cli.train_ppo_ray``.
    """
    ours, flags = parse_launcher_args(sys.argv[1:] if argv is None else argv)
    pre, _ = _flag_parser().parse_known_args(flags)
    dataset = getattr(pre, "data.prompt_dataset")
    if ours.curriculum and dataset and Path(dataset).resolve() != Path(ours.curriculum).resolve():
        raise RtpoDataError(f"--curriculum {ours.curriculum!r} and --data.prompt_dataset {dataset!r} differ: give one of them.")
    path = ours.curriculum or dataset
    if not path:
        raise RtpoDataError("--curriculum is required: the directory built by rtpo-data build.")
    if not dataset:
        flags = [*flags, "--data.prompt_dataset", str(path)]
        setattr(pre, "data.prompt_dataset", str(path))
    cur = open_curriculum(str(path), "--curriculum")
    total = resolve_total_steps(cur, ours.total_steps)
    policy = resolve_policy(ours.policy)
    threshold = resolve_success_threshold(ours.success_threshold)
    if not (getattr(pre, "reward.remote_url") or getattr(pre, "reward.model_name_or_path")
            or getattr(pre, "train.agent_func_path")):
        flags = [*flags, "--reward.remote_url", REWARD_FILE]
        setattr(pre, "reward.remote_url", REWARD_FILE)
    check_openrlhf_args(_hierarchize(pre), cur, policy, total)
    if ours.allow_tokenizer_mismatch:
        os.environ[ALLOW_TOKENIZER_ENV] = "1"
    eval_path = getattr(pre, "eval.dataset")
    eval_curricula = [open_curriculum(eval_path, "--eval.dataset")] if is_curriculum(eval_path) else []
    check_policy_tokenizer_early(getattr(pre, "actor.model_name_or_path"), [cur, *eval_curricula])
    hook = os.environ.get("RAY_RUNTIME_ENV_HOOK")
    if hook and hook != HOOK:
        raise RtpoDataError(f"RAY_RUNTIME_ENV_HOOK is already set to {hook!r}; unset it (rtpo-data installs {HOOK}).")
    os.environ["RAY_RUNTIME_ENV_HOOK"] = HOOK
    os.environ[TOTAL_STEPS_ENV] = str(total)
    os.environ[POLICY_ENV] = policy.name
    os.environ[SUCCESS_THRESHOLD_ENV] = repr(threshold)
    install()
    run_as_main(CLI_MODULE, flags)


if __name__ == "__main__":
    # Import by the module's real name, so the trainer class Ray ships is
    # rtpo_data.adapters.openrlhf.RTPOPPOTrainer and not a copy defined in __main__.
    from rtpo_data.adapters.openrlhf import main as _main

    try:
        _main()
    except RtpoDataError as exc:
        sys.exit(f"rtpo-data: {exc}")
