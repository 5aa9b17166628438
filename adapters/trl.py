"""RTPO in TRL: ``RTPOTrainer``, a ``GRPOTrainer`` whose prompts follow a curriculum, step by step.

Why an override and not a callback: the Trainer fetches rows one optimizer step (or more, with
dataloader workers) before it uses them, so a callback that tells a dataset "the step is now k" is
stale. ``_generate_and_score_completions`` runs exactly when prompts become completions, with
``self.state.global_step`` equal on every process; the prompt is rendered there from the row's
curriculum index and that step, so shuffling, gradient accumulation, ``steps_per_generation``,
``num_iterations``, several processes and resuming from a checkpoint cannot put it out of step.
TRL then gets the curriculum's stored ids for those prompts from ``_tokenize_prompts`` (TRL 1.16
tokenizes text prompts there at every round, for HF generation and vLLM alike) instead of
tokenizing them again.

Row -> step arithmetic (TRL's ``RepeatSampler``)::

    B = generation_batch_size / num_generations       unique prompts per generation round
    round r generates at global_step r * steps_per_generation * num_iterations
    its completions feed steps_per_generation * num_iterations optimizer steps

    Example: per_device_train_batch_size=4, 2 processes, steps_per_generation=2, num_generations=4,
    num_iterations=1 -> generation_batch_size = 4 * 2 * 2 = 16, B = 4 prompts per round; round 0 is
    rendered at step 0 and trains steps 0-1, round 1 at step 2, ... All 4 copies of a prompt are in
    the same round, so they get the same hint.

The schedule's horizon is the curriculum's ``total_steps`` when it was built with one, else the
trainer's ``max_steps`` (``state.max_steps`` once training starts). If both are set and differ,
training stops before the first step and says so: pass ``horizon="curriculum"`` or
``horizon="trainer"`` to choose explicitly (:func:`rtpo_data.schedule.resolve_horizon`, the rule
every adapter uses).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rtpo_data.curriculum import Curriculum
from rtpo_data.errors import RtpoDataError
from rtpo_data.policies import POLICIES, HintPolicy, Observations, PolicyState, make_policy, step_metrics
from rtpo_data.schedule import HORIZONS, Clock, resolve_horizon
from rtpo_data.tokenizer import check_tokenizer

try:
    from trl import GRPOConfig, GRPOTrainer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("rtpo_data.adapters.trl needs TRL: pip install 'rtpo-data[trl]'") from exc

INDEX_COLUMN = "rtpo_index"
CURRICULUM_COLUMN = "rtpo_curriculum"
TOKENIZER_OVERRIDE = "pass allow_tokenizer_mismatch=True (--allow_tokenizer_mismatch true)"

logger = logging.getLogger(__name__)


def curriculum_dataset(cur: Curriculum, *, hint: bool = True) -> Any:
    """The rows as a ``datasets.Dataset`` for TRL, zero-copy over the curriculum's memory maps.

    ``prompt`` holds the no-hint prompt (what TRL sees if anything reads the dataset directly);
    ``RTPOTrainer`` replaces it with the step's prompt at generation time, found by ``rtpo_index``
    in the curriculum that ``rtpo_curriculum`` (its fingerprint) names. ``row_id``, ``answer`` and
    the kept columns reach reward functions as keyword lists. ``hint`` is accepted for symmetry:
    whether a row gets a hint is decided at generation time (training: the step's; evaluation: none).
    """
    import datasets

    kept = [c for c in cur.kept_columns if c not in ("row_id", "answer")]
    table = cur.table(["bare", "row_id", "answer", *kept])
    table = table.rename_columns(["prompt", "row_id", "answer", *kept])
    table = table.append_column(INDEX_COLUMN, pa.array(np.arange(len(cur), dtype=np.int64)))
    key = pa.scalar(cur.fingerprint, pa.string())
    table = table.append_column(CURRICULUM_COLUMN, pa.repeat(key, len(cur)))
    # Explicit fingerprint: datasets would otherwise hash every row (and fails to on some pyarrow versions).
    return datasets.Dataset(table, fingerprint=f"{cur.fingerprint}-trl")


def _is_curriculum_dir(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and (Path(value) / "manifest.json").is_file()


def _column_values(dataset: Any, column: str) -> set[Any]:
    """The distinct values of a column of a ``datasets.Dataset`` (from Arrow, without Python rows)."""
    data = getattr(dataset, "data", None)
    if data is not None and getattr(dataset, "_indices", None) is None:
        return set(data.column(column).unique().to_pylist())
    return set(dataset.unique(column))


class _IdLists:
    """Token id arrays as Python lists whose ints are taken from one table of int objects.

    ``array.tolist()`` makes a new int object for every id; gathering references from a table that
    holds each id once (``table.take(ids).tolist()``) is about a quarter faster, and freeing the
    lists frees no ints. The table grows to the largest id seen (a vocabulary: a few MB).
    """

    def __init__(self) -> None:
        self.table = np.empty(0, dtype=object)

    def __call__(self, arrays: list[np.ndarray]) -> list[list[int]]:
        top = max((int(a.max()) for a in arrays if len(a)), default=-1)
        if top >= len(self.table):
            self.table = np.arange(max(top + 1, 2 * len(self.table))).astype(object)
        return [self.table.take(a).tolist() for a in arrays]


class RTPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with a hint curriculum. Everything else is TRL's, unchanged.

    Args:
        curriculum: a curriculum directory or an open :class:`~rtpo_data.Curriculum`.
        horizon: which total step count the schedule runs over when both the curriculum and the
            trainer define one: ``"auto"`` (they must agree), ``"curriculum"`` or ``"trainer"``.
        train_dataset: defaults to every curriculum row (``curriculum_dataset``).
        eval_dataset: evaluation is always without hint. ``True``: every row of the training
            curriculum; a :class:`~rtpo_data.Curriculum` or a curriculum directory: every row of that
            curriculum (held-out data); a dataset made by :func:`curriculum_dataset`; a dict of any of
            these; or a dataset of your own prompts (no ``rtpo_index`` column), used as is.
        allow_tokenizer_mismatch: train even though the trainer's tokenizer or chat template is not
            the one the curriculum was built with (checked before the first step).
        policy: which stage each row gets (:mod:`rtpo_data.policies`): ``"global"`` (the build's
            schedule, the default), ``"mixed"``, ``"frontier"``, or a policy object. Each row's stage
            is chosen per generation round; all copies of a prompt share it.
        policy_seed: the seed of the policy's (row, step) hash (default: ``args.seed``).
        success_threshold: a completion counts as a success for the policy when its total reward
            (TRL's weighted sum over reward functions) is at least this (default 0.5: a 0/1 accuracy
            reward, with or without a small format reward).

    Logged per step: ``rtpo/stage``, ``rtpo/kept_fraction`` (hint tokens / trace tokens) and
    ``rtpo/hint_tokens`` (means over the whole generation batch, every process included); and from
    the policy's observations of the round: ``rtpo/stage_share/K`` (share of groups at each stage),
    ``rtpo/all_fail_groups``, ``rtpo/all_succeed_groups``.

    The policy's state is saved into every checkpoint (``rtpo_policy.npz``/``.json``) and restored
    from it on ``resume_from_checkpoint``; a state saved for another curriculum, policy or horizon is
    refused.

    The prompt ids TRL generates from are the curriculum's stored ``prompt_ids``, handed over in place
    of TRL's own tokenization (``_tokenize_prompts``): exact by construction, and no per-round
    tokenization of long hints.
    """

    def __init__(
        self,
        model: Any,
        reward_funcs: Any,
        args: GRPOConfig | None = None,
        *,
        curriculum: str | Path | Curriculum,
        horizon: str = "auto",
        train_dataset: Any = None,
        eval_dataset: Any = None,
        allow_tokenizer_mismatch: bool = False,
        policy: str | HintPolicy | None = None,
        policy_seed: int | None = None,
        success_threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if horizon not in HORIZONS:
            raise RtpoDataError(f"horizon={horizon!r}: use one of {', '.join(HORIZONS)}.")
        if args is not None and getattr(args, "remove_unused_columns", False):
            raise RtpoDataError(
                f"remove_unused_columns=True: TRL would drop the {INDEX_COLUMN!r} column, so prompts could not "
                "follow the curriculum (and reward functions would lose answer and row_id). Set "
                "remove_unused_columns=False (GRPO's default)."
            )
        self.curriculum = curriculum if isinstance(curriculum, Curriculum) else Curriculum.open(curriculum)
        self.rtpo_horizon = horizon
        self._rtpo_clock: Clock | None = None
        self._rtpo_curricula: dict[str, Curriculum] = {self.curriculum.fingerprint: self.curriculum}
        self._rtpo_pending: tuple[list[str], list[Any]] | None = None
        self._rtpo_lists = _IdLists()
        self._rtpo_eval_indexed = False
        self.rtpo_policy = make_policy(policy)
        self._rtpo_policy_seed = policy_seed
        self._rtpo_policy_state: PolicyState | None = None
        self._rtpo_resume: str | None = None
        self._rtpo_generation: tuple[int, np.ndarray, np.ndarray] | None = None
        self.rtpo_success_threshold = float(success_threshold)
        if train_dataset is None:
            train_dataset = curriculum_dataset(self.curriculum)
        eval_dataset = self._resolve_eval(eval_dataset)
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, **kwargs)
        self._check_train_dataset()
        if not allow_tokenizer_mismatch:
            for cur in self._rtpo_curricula.values():
                check_tokenizer(cur.manifest, self.processing_class, curriculum=str(cur.path),
                                override=TOKENIZER_OVERRIDE)
        self._check_lengths()

    # -- datasets -----------------------------------------------------------------------------------

    def _resolve_eval(self, value: Any, name: str = "eval_dataset") -> Any:
        """Turn what ``eval_dataset`` may be into TRL eval datasets whose rows name their curriculum."""
        if value is None:
            return None
        if value is True:
            return curriculum_dataset(self.curriculum)
        if isinstance(value, Curriculum) or _is_curriculum_dir(value):
            cur = value if isinstance(value, Curriculum) else Curriculum.open(value)
            self._rtpo_curricula.setdefault(cur.fingerprint, cur)
            return curriculum_dataset(cur)
        if isinstance(value, (str, os.PathLike)):
            raise RtpoDataError(
                f"{name}={str(value)!r} is not a curriculum directory (no manifest.json in it): pass the "
                "directory written by rtpo-data build, an open Curriculum, or a datasets.Dataset."
            )
        if isinstance(value, dict):
            return {key: self._resolve_eval(v, f"{name}[{key!r}]") for key, v in value.items()}
        columns = getattr(value, "column_names", None) or []
        if INDEX_COLUMN not in columns:
            return value  # the user's own prompts: TRL evaluates them as they are
        if CURRICULUM_COLUMN not in columns:
            raise RtpoDataError(
                f"{name} has an {INDEX_COLUMN!r} column but does not say which curriculum its rows index, so "
                "its prompts could be another curriculum's. Pass the curriculum itself (eval_dataset=DIR or a "
                "Curriculum, --eval_curriculum DIR), eval_dataset=True for the training curriculum's rows, or a "
                "dataset made by rtpo_data.adapters.trl.curriculum_dataset()."
            )
        unknown = _column_values(value, CURRICULUM_COLUMN) - set(self._rtpo_curricula)
        if unknown:
            raise RtpoDataError(
                f"{name} holds rows of a curriculum this trainer was not given (fingerprint "
                f"{', '.join(sorted(str(u) for u in unknown))}). Pass that curriculum itself: eval_dataset=DIR "
                "or eval_dataset=Curriculum.open(DIR) (--eval_curriculum DIR)."
            )
        return value

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        # Which eval dataset is about to be evaluated (a name of a dict of them, a dataset, or the default):
        # if it has the index column, the column must reach generation.
        dataset = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else (
            eval_dataset if eval_dataset is not None else self.eval_dataset)
        self._rtpo_eval_indexed = INDEX_COLUMN in (getattr(dataset, "column_names", None) or [])
        return super().get_eval_dataloader(eval_dataset)

    def _check_train_dataset(self) -> None:
        columns = self.train_dataset.column_names or []
        if INDEX_COLUMN not in columns:
            raise RtpoDataError(
                f"train_dataset has no {INDEX_COLUMN!r} column, so rows cannot be matched to the curriculum. "
                "Leave train_dataset unset, or build it with rtpo_data.adapters.trl.curriculum_dataset()."
            )
        if CURRICULUM_COLUMN in columns:
            other = _column_values(self.train_dataset, CURRICULUM_COLUMN) - {self.curriculum.fingerprint}
            if other:
                raise RtpoDataError(
                    f"train_dataset holds rows of another curriculum than {self.curriculum.path} "
                    f"(fingerprint {', '.join(sorted(str(o) for o in other))}). Build it with curriculum_dataset() of the "
                    "curriculum you pass as curriculum=, or leave train_dataset unset."
                )

    # -- checks -------------------------------------------------------------------------------------

    def _vllm_server_limit(self) -> tuple[int | None, str]:
        """The vLLM server's ``max_model_len`` as TRL's client reads it (main process), on every process."""
        payload: list[Any] = [(None, "")]
        if self.accelerator.is_main_process:
            try:
                info = self.vllm_generation.vllm_client.get_server_info()
                payload = [(int(info["model_config"]["max_model_len"]), "")]
            except Exception as exc:  # noqa: BLE001 - any failure to read the limit leads to the same warning
                first_line = str(exc).splitlines()[0][:200] if str(exc) else ""
                payload = [(None, f"{type(exc).__name__}: {first_line}")]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(payload, from_process=0)
        return payload[0]

    def _check_lengths(self) -> None:
        """Stop before training if the longest prompt plus the completion cannot fit the model."""
        limits = {}
        config = getattr(self.model, "config", None)
        if getattr(config, "max_position_embeddings", None):
            limits["the model's max_position_embeddings"] = int(config.max_position_embeddings)
        completion = int(self.args.max_completion_length or 0)
        lengths = {cur.fingerprint: cur.longest_prompt_tokens() for cur in self._rtpo_curricula.values()}
        longest = max((int(v.max()) for v in lengths.values() if len(v)), default=0)
        if getattr(self.args, "use_vllm", False):
            if self.args.vllm_mode == "server":
                server, reason = self._vllm_server_limit()
                if server is not None:
                    limits["the vLLM server's max_model_len"] = server
                else:
                    logger.warning(
                        "rtpo-data cannot read the vLLM server's max_model_len (%s), so it cannot check that "
                        "the longest prompt (%d tokens, stage 0) plus max_completion_length=%d fits it. Start the "
                        "server with --max-model-len %d or more (trl vllm-serve --max_model_len %d), and with "
                        "VLLM_SERVER_DEV_MODE=1 so that TRL's client can read the limit.",
                        reason, longest, completion, longest + completion, longest + completion,
                    )
            elif getattr(self.args, "vllm_max_model_length", None):
                limits["vllm_max_model_length"] = int(self.args.vllm_max_model_length)
        if not limits:
            return
        name, limit = min(limits.items(), key=lambda kv: kv[1])
        for cur in self._rtpo_curricula.values():
            prompt = lengths[cur.fingerprint]
            too_long = np.flatnonzero(prompt + completion > limit)
            if len(too_long):
                ids = [cur.row_id(int(i)) for i in too_long[:10]]
                raise RtpoDataError(
                    f"{len(too_long)} rows of {cur.path} do not fit: their stage-0 prompt (question + whole "
                    f"trace) plus max_completion_length={completion} exceeds {name}={limit} (longest prompt: "
                    f"{int(prompt.max())} tokens). Rows (row_id): {', '.join(ids)}"
                    f"{f' and {len(too_long) - 10} more' if len(too_long) > 10 else ''}. "
                    "Lower max_completion_length, raise the limit, or rebuild the curriculum without these "
                    "rows."
                )

    def rtpo_clock(self) -> Clock:
        """The schedule's clock, its horizon chosen by :func:`rtpo_data.schedule.resolve_horizon`
        from ``horizon``, the curriculum's ``total_steps`` and the trainer's ``max_steps``."""
        if self._rtpo_clock is None:
            trainer = int(self.state.max_steps) if getattr(self.state, "max_steps", 0) and self.state.max_steps > 0 else None
            if trainer is None and self.args.max_steps and self.args.max_steps > 0:
                trainer = int(self.args.max_steps)
            total = resolve_horizon(self.rtpo_horizon, built=self.curriculum.total_steps, trainer=trainer,
                                    curriculum=str(self.curriculum.path))
            self._rtpo_clock = self.curriculum.clock(total)
        return self._rtpo_clock

    def rtpo_total_steps(self) -> int:
        """The schedule's horizon (see :meth:`rtpo_clock`)."""
        return self.rtpo_clock().total_steps

    # -- rendering, at the moment prompts become generations ----------------------------------------

    def _render(self, cur: Curriculum, index: np.ndarray, stage: Any, *,
                lists: bool = True) -> tuple[list[str], list[Any]]:
        """Prompt texts and ids of rows ``index`` at ``stage`` (``None``: no hint; else a function
        from distinct rows to their stages), each distinct row rendered once and its text and ids
        shared by its copies (a generation batch holds each prompt ``num_generations`` times). The ids
        are lists, or with ``lists=False`` int64 arrays."""
        unique, inverse = np.unique(index, return_inverse=True)
        if stage is not None:
            stage = stage(unique)
        texts = cur.render(unique, stage)
        if stage is None:
            ids = cur.render(unique, None, "ids")
        elif lists:
            ids = self._rtpo_lists(cur.render(unique, stage, "arrays"))
        else:
            ids = [a.astype(np.int64) for a in cur.render(unique, stage, "arrays")]
        order = inverse.reshape(-1).tolist()
        return [texts[j] for j in order], [ids[j] for j in order]

    def _ids_as_lists(self) -> bool:
        """Whether the generation path needs the ids as lists. TRL 1.16's HF ``generate`` path only
        makes a tensor of each (``torch.tensor(ids)``, a copy from an array); vLLM (colocate: its
        ``prompt_token_ids``; server: JSON), continuous batching, tool calls (``ids + completion``)
        and a ``rollout_func`` need lists."""
        return bool(getattr(self, "use_vllm", False)
                    or getattr(self, "use_transformers_continuous_batching", False)
                    or getattr(self, "tools", None) or getattr(self, "rollout_func", None) is not None)

    def _log_hint(self, cur: Curriculum, index: np.ndarray, stages: np.ndarray) -> None:
        """``rtpo/*`` metrics: means over the generation batch of every process (a collective call)."""
        import torch

        hint = cur.cuts(index, stages)[0].astype(np.float64)
        kept = cur.kept_fractions(index, stages)
        local = torch.tensor([hint.sum(), kept.sum(), float(len(index)), float(np.sum(stages))], dtype=torch.float64,
                             device=self.accelerator.device)
        total = self.accelerator.gather(local).reshape(-1, 4).sum(dim=0).tolist()
        count = max(total[2], 1.0)
        metrics = self._metrics["train"]
        metrics["rtpo/stage"].append(total[3] / count)
        metrics["rtpo/hint_tokens"].append(total[0] / count)
        metrics["rtpo/kept_fraction"].append(total[1] / count)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        inputs = self.rtpo_render(inputs)
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._rtpo_pending = None

    def rtpo_render(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows with each ``prompt`` rendered for now (training: the step's stage; evaluation: no
        hint), their ids left for :meth:`_tokenize_prompts`, and the ``rtpo/*`` metrics logged.

        The step RTPOTrainer adds at the top of TRL's ``_generate_and_score_completions``; public for
        custom generation loops and for timing (benchmarks/trl_prompts.py)."""
        mode = "train" if self.model.training else "eval"
        if not inputs or INDEX_COLUMN not in inputs[0]:
            if mode == "train" or self._rtpo_eval_indexed:
                raise RtpoDataError(
                    f"The {INDEX_COLUMN!r} column did not reach generation ({mode}), so prompts cannot follow "
                    "the curriculum; training on no-hint prompts would go on silently. Keep "
                    "remove_unused_columns=False and give datasets made by "
                    "rtpo_data.adapters.trl.curriculum_dataset(); a TRL version that drops extra columns before "
                    "generation is not supported."
                )
            return inputs
        index = np.fromiter((int(x[INDEX_COLUMN]) for x in inputs), dtype=np.int64, count=len(inputs))
        keys = [x.get(CURRICULUM_COLUMN) for x in inputs]
        if mode == "train":
            cur = self.curriculum
            if any(k is not None and k != cur.fingerprint for k in keys):
                raise RtpoDataError(f"A training row comes from another curriculum than {cur.path}.")
            step = int(self.state.global_step)
            state = self.rtpo_policy_state()
            stages = np.asarray(self.rtpo_policy.select(state, index, step), dtype=np.int64)
            texts, ids = self._render(cur, index, lambda rows: self.rtpo_policy.select(state, rows, step),
                                      lists=self._ids_as_lists())
            self._log_hint(cur, index, stages)
            self._rtpo_generation = (step, index, stages)
        else:  # evaluation never shows a hint; rows may come from several curricula
            texts, ids = [""] * len(inputs), [None] * len(inputs)
            default = self.curriculum.fingerprint
            for key in dict.fromkeys(k or default for k in keys):
                positions = [j for j, k in enumerate(keys) if (k or default) == key]
                cur = self._rtpo_curricula.get(key)
                if cur is None:
                    raise RtpoDataError(f"Evaluation rows come from a curriculum this trainer was not given: {key}.")
                part_texts, part_ids = self._render(cur, index[positions], None)
                for j, text, row_ids in zip(positions, part_texts, part_ids):
                    texts[j], ids[j] = text, row_ids
        self._rtpo_pending = (texts, ids)
        return [{**x, "prompt": p} for x, p in zip(inputs, texts)]

    # -- the hint policy: state, observations, checkpoints --------------------------------------------

    def rtpo_policy_state(self) -> PolicyState:
        """The policy's state (made at the first generation round, when the horizon is known; restored
        from the checkpoint being resumed, after checking that it belongs to this run)."""
        if self._rtpo_policy_state is None:
            seed = self.args.seed if self._rtpo_policy_seed is None else self._rtpo_policy_seed
            fresh = self.rtpo_policy.init_state(self.curriculum, self.rtpo_clock(), int(seed))
            resume, self._rtpo_resume = self._rtpo_resume, None
            if resume is not None and (Path(resume) / "rtpo_policy.json").is_file():
                fresh = PolicyState.load(resume, fresh)
            elif resume is not None and fresh.arrays:
                raise RtpoDataError(
                    f"The checkpoint {resume} has no hint-policy state, so the {self.rtpo_policy.name!r} policy "
                    "cannot go on where it stopped. Resume from a checkpoint of a run with this policy, or start "
                    "a new run."
                )
            self._rtpo_policy_state = fresh
        return self._rtpo_policy_state

    def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> Any:
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        generation, self._rtpo_generation = self._rtpo_generation, None
        if generation is not None and self.model.training:
            self._rtpo_observe(generation, rewards_per_func)
        return rewards_per_func

    def _rtpo_observe(self, generation: tuple[int, np.ndarray, np.ndarray], rewards_per_func: Any) -> None:
        """Update the policy from the round's rewards, gathered from every process (TRL gathers the
        rewards; the rows and stages are gathered here, in the same process order)."""
        import torch
        from accelerate.utils import gather_object

        step, index, stages = generation
        pairs = gather_object(list(zip(index.tolist(), stages.tolist()))) if self.accelerator.num_processes > 1 else \
            list(zip(index.tolist(), stages.tolist()))
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        total = torch.nan_to_num(rewards_per_func * weights, nan=0.0).sum(dim=1).cpu().numpy()
        if len(pairs) != len(total):
            raise RtpoDataError(f"The hint policy got {len(pairs)} rows for {len(total)} rewards at step {step}.")
        rows, used = (np.asarray(x, dtype=np.int64) for x in zip(*pairs)) if pairs else (np.zeros(0, np.int64),) * 2
        observations = Observations.from_completions(rows, used, total >= self.rtpo_success_threshold, step,
                                                     self.num_generations)
        state = self.rtpo_policy_state()
        self._rtpo_policy_state = self.rtpo_policy.update(state, observations)
        metrics = self._metrics["train"]
        for name, value in step_metrics(state, self.curriculum, observations).items():
            if name != "hint_tokens_mean":  # rtpo/hint_tokens already says it
                metrics[f"rtpo/{name}"].append(value)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save and self._rtpo_policy_state is not None:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self._rtpo_policy_state.save(folder)

    def _load_optimizer_and_scheduler(self, checkpoint: Any) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            # Read when the state is first needed: the horizon it is checked against is known then.
            self._rtpo_resume, self._rtpo_policy_state = str(checkpoint), None

    def _tokenize_prompts(self, prompts: list[Any]) -> tuple[Any, Any, Any]:
        """The curriculum's ids for the prompts just rendered, instead of tokenizing them again.

        TRL 1.16 tokenizes text prompts here at every generation round (``processing_class(text=...)``)
        before both HF generation and vLLM (colocate and server); the stored ids are what that
        tokenization is meant to give, without its cost or any drift. Prompts changed on the way
        (an ``environment_factory`` appends observations) are tokenized by TRL as usual.
        """
        pending, self._rtpo_pending = self._rtpo_pending, None
        if pending is not None:
            texts, ids = pending
            if len(prompts) == len(texts) and all(p is t or p == t for p, t in zip(prompts, texts)):
                return ids, None, {}
            logger.warning("rtpo-data: prompts were changed after they were rendered; TRL tokenizes them itself.")
        return super()._tokenize_prompts(prompts)


# ---------------------------------------------------------------------------------------------
# Launcher: TRL's own argument parser, so every GRPOConfig / ModelConfig flag and YAML key works
# ---------------------------------------------------------------------------------------------

@dataclass
class RTPOScriptArguments:
    """The launcher's own arguments; everything else is TRL's (GRPOConfig, ModelConfig)."""

    curriculum: str = field(default="", metadata={"help": "Curriculum directory built by rtpo-data build."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["rtpo_data.rewards.accuracy_reward"],
        metadata={"help": "Reward functions as dotted import paths (default: rtpo_data.rewards.accuracy_reward)."},
    )
    horizon: str = field(default="auto", metadata={"help": "Schedule horizon when curriculum and max_steps differ: auto, curriculum, trainer."})
    eval_without_hint: bool = field(
        default=False,
        metadata={"help": "Evaluate on every row of --curriculum without hint (needs an eval strategy)."},
    )
    eval_curriculum: str = field(
        default="",
        metadata={"help": "Evaluate on every row of this curriculum (held-out data) without hint "
                          "(needs an eval strategy)."},
    )
    allow_tokenizer_mismatch: bool = field(
        default=False,
        metadata={"help": "Train even though the model's tokenizer or chat template is not the curriculum's."},
    )
    policy: str = field(default="global", metadata={
        "help": "Hint policy: global (the curriculum's schedule), mixed (stages drawn per row and step) or "
                "frontier (per row, the least hint that still earns reward). See docs/policies.md."})
    success_threshold: float = field(default=0.5, metadata={
        "help": "Total reward at or above which a completion counts as a success for the hint policy."})


def load_reward(path: str) -> Any:
    import importlib
    import os
    import sys

    if "." not in path:
        raise RtpoDataError(f"--reward_funcs {path!r}: give a dotted import path such as rtpo_data.rewards.accuracy_reward.")
    module_path, name = path.rsplit(".", 1)
    sys.path.insert(0, os.getcwd())  # as `trl grpo` does, so local reward modules import
    try:
        return getattr(importlib.import_module(module_path), name)
    except (ImportError, AttributeError) as exc:
        raise RtpoDataError(f"--reward_funcs {path!r}: cannot import it ({exc}).") from None


def parse_args(argv: list[str] | None = None) -> tuple[RTPOScriptArguments, GRPOConfig, Any]:
    from trl import ModelConfig, TrlParser

    parser = TrlParser((RTPOScriptArguments, GRPOConfig, ModelConfig), prog="rtpo-data train trl")
    script, training, model = parser.parse_args_and_config(args=argv)
    if not script.curriculum:
        raise RtpoDataError("--curriculum is required: the directory built by rtpo-data build.")
    if not model.model_name_or_path:
        raise RtpoDataError("--model_name_or_path is required (a local folder or hub name of the policy model).")
    if script.policy not in POLICIES:
        raise RtpoDataError(f"--policy {script.policy}: use one of {', '.join(POLICIES)}.")
    return script, training, model


def eval_dataset_of(script: RTPOScriptArguments, training: GRPOConfig) -> Any:
    """What ``--eval_without_hint`` / ``--eval_curriculum`` ask for, as ``RTPOTrainer``'s ``eval_dataset``."""
    if script.eval_without_hint and script.eval_curriculum:
        raise RtpoDataError(
            "--eval_without_hint evaluates on the training curriculum, --eval_curriculum on another one: give "
            "one of them."
        )
    wanted = script.eval_curriculum or (True if script.eval_without_hint else None)
    if wanted is None:
        return None
    flag = "--eval_curriculum" if script.eval_curriculum else "--eval_without_hint"
    if script.eval_curriculum and not _is_curriculum_dir(script.eval_curriculum):
        raise RtpoDataError(
            f"--eval_curriculum {script.eval_curriculum!r} is not a curriculum directory (no manifest.json in "
            "it): pass a directory written by rtpo-data build."
        )
    if getattr(training.eval_strategy, "value", training.eval_strategy) == "no":
        raise RtpoDataError(f"{flag} has no effect with eval_strategy 'no': add --eval_strategy steps "
                            "--eval_steps N.")
    return wanted


def main(argv: list[str] | None = None) -> RTPOTrainer:
    """``rtpo-data train trl`` / ``accelerate launch -m rtpo_data.adapters.trl``: parse, build, train.

    The model is loaded as ``trl grpo`` loads it: ``ModelConfig``'s revision, dtype and attention
    implementation, ``--load_in_4bit`` / ``--load_in_8bit`` (``get_quantization_config``) and
    ``--use_peft`` with the ``--lora_*`` flags (``get_peft_config``).
    """
    from trl import get_peft_config, get_quantization_config

    script, training, model_args = parse_args(argv)
    model_init_kwargs = {"revision": model_args.model_revision, "trust_remote_code": training.trust_remote_code,
                         "attn_implementation": model_args.attn_implementation,
                         "dtype": model_args.dtype}
    training.model_init_kwargs = {**model_init_kwargs, **(training.model_init_kwargs or {})}
    eval_dataset = eval_dataset_of(script, training)
    cur = Curriculum.open(script.curriculum)
    trainer = RTPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=[load_reward(p) for p in script.reward_funcs],
        args=training,
        curriculum=cur,
        horizon=script.horizon,
        eval_dataset=eval_dataset,
        allow_tokenizer_mismatch=script.allow_tokenizer_mismatch,
        policy=script.policy,
        success_threshold=script.success_threshold,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)
    trainer.save_model(training.output_dir)
    return trainer


# ---------------------------------------------------------------------------------------------
# The stock `trl grpo` path: rows written in the order TRL consumes them, plus a step guard
# ---------------------------------------------------------------------------------------------

STEP_COLUMN = "rtpo_step"
GUARD = "rtpo_data.adapters.trl.step_guard"


@dataclass(frozen=True)
class Geometry:
    """TRL's batch geometry, and where each row lands (see the module docstring's diagram)."""

    per_device_train_batch_size: int
    num_processes: int
    gradient_accumulation_steps: int
    steps_per_generation: int
    num_generations: int
    num_iterations: int
    generation_batch_size: int
    max_steps: int

    @property
    def prompts_per_round(self) -> int:
        return self.generation_batch_size // self.num_generations

    def generation_step(self, round_index: int) -> int:
        """The global_step at which round ``round_index`` is generated (rows are rendered for it)."""
        micro = round_index * self.steps_per_generation * self.num_iterations
        return micro // self.gradient_accumulation_steps

    @property
    def rounds(self) -> int:
        micro_per_round = self.steps_per_generation * self.num_iterations
        return -(-self.max_steps * self.gradient_accumulation_steps // micro_per_round)

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def geometry_of(args: GRPOConfig, num_processes: int) -> Geometry:
    """The geometry of ``args`` as resolved for ``num_processes`` processes (see :func:`parse_recipe`)."""
    if not args.max_steps or args.max_steps <= 0:
        raise RtpoDataError("The export needs max_steps > 0 in the config: rows are written for exactly that many steps.")
    global_batch = args.per_device_train_batch_size * num_processes
    spg = int(args.steps_per_generation)
    gbs = int(args.generation_batch_size)
    if gbs != global_batch * spg:
        raise RtpoDataError(
            f"generation_batch_size={gbs} is not per_device_train_batch_size x processes x "
            f"steps_per_generation = {args.per_device_train_batch_size} x {num_processes} x {spg}: parse the "
            f"config for {num_processes} processes (parse_recipe)."
        )
    return Geometry(args.per_device_train_batch_size, num_processes, args.gradient_accumulation_steps, spg,
                    args.num_generations, args.num_iterations, gbs, int(args.max_steps))


def parse_recipe(config: str | Path, num_processes: int,
                 overrides: list[str] | None = None) -> tuple[Any, GRPOConfig]:
    """``trl grpo``'s own parser on ``config``, with GRPOConfig resolved as in a run of ``num_processes``.

    GRPOConfig derives and checks the batch geometry (``generation_batch_size``,
    ``steps_per_generation``, divisibility by ``num_generations``) against the process count it sees;
    parsed here, in one process, a recipe valid on 8 GPUs would fail or resolve to a 1-GPU geometry.
    """
    from trl import DatasetMixtureConfig, ModelConfig, TrlParser
    from trl.scripts.grpo import GRPOScriptArguments

    if num_processes < 1:
        raise RtpoDataError(f"--num-processes {num_processes}: give the number of training processes "
                            "(1 or more).")
    # A subclass, not a patch: GRPOConfig.__post_init__ reads self.world_size (TRL 1.16).
    config_class = type("GRPOConfig", (GRPOConfig,), {"world_size": property(lambda self: num_processes)})
    parser = TrlParser((GRPOScriptArguments, config_class, ModelConfig, DatasetMixtureConfig))
    try:
        script, args, *_ = parser.parse_args_and_config(args=["--config", str(config), *(overrides or [])],
                                                        fail_with_unknown_args=False)
    except ValueError as exc:
        raise RtpoDataError(f"--config {config} on {num_processes} process(es): {exc}") from None
    return script, args


def export(curriculum: str | Path | Curriculum, config: str | Path, out: str | Path, *, num_processes: int = 1,
           horizon: str = "auto", overrides: list[str] | None = None) -> Path:
    """Write ``out/train.parquet`` in TRL's consumption order (shuffling off) and ``out/grpo.yaml``.

    Row ``j`` is generated in round ``j // B`` at ``generation_step(j // B)``; its prompt is rendered
    for that step, and ``rtpo_step`` records it for :func:`step_guard`. Rows cycle through the
    curriculum (a seeded permutation per pass) until ``max_steps`` is covered, so no second epoch of
    the file is ever needed. The config is read as ``num_processes`` processes will read it.
    """
    import pyarrow.parquet as pq
    import yaml

    cur = curriculum if isinstance(curriculum, Curriculum) else Curriculum.open(curriculum)
    config = Path(config)
    script, args = parse_recipe(config, num_processes, overrides)
    recipe = yaml.safe_load(config.read_text()) or {}
    geo = geometry_of(args, num_processes)
    clock = cur.clock(resolve_horizon(horizon, built=cur.total_steps, trainer=geo.max_steps, curriculum=str(cur.path),
                                      trainer_steps="the config's max_steps", choose="--horizon "))
    b = geo.prompts_per_round
    n_rows = geo.rounds * b
    rng = np.random.default_rng(args.seed)
    order = np.concatenate([rng.permutation(len(cur)) for _ in range(-(-n_rows // len(cur)))])[:n_rows]
    steps = np.asarray([geo.generation_step(j // b) for j in range(n_rows)], dtype=np.int64)
    stages = np.asarray([clock.stage_at(int(s)) for s in steps])
    prompts = cur.render(order, stages)
    rows = cur.table(["row_id", "answer", *cur.kept_columns]).take(pa.array(order))
    table = pa.table({
        "prompt": prompts,
        **{name: rows.column(name) for name in rows.column_names},
        STEP_COLUMN: steps,
        "rtpo_stage": stages,
    })
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "train.parquet")
    rewards = list(script.reward_funcs or ["rtpo_data.rewards.accuracy_reward"])
    weights = args.reward_weights
    if GUARD in rewards and weights is not None:  # a re-export of an exported recipe: drop the guard's weight
        weights = [w for r, w in zip(rewards, weights) if r != GUARD]
    rewards = [r for r in rewards if r != GUARD]
    n_models = 1 if script.reward_model_name_or_path else 0
    if weights is not None and len(weights) != n_models + len(rewards):
        raise RtpoDataError(
            f"reward_weights has {len(weights)} entries for {n_models + len(rewards)} rewards "
            f"({', '.join(([script.reward_model_name_or_path] if n_models else []) + rewards)}): give one "
            "weight each."
        )
    recipe.update({
        "datasets": [{"path": "parquet", "data_files": str((out / "train.parquet").resolve()), "split": "train"}],
        "shuffle_dataset": False,
        "max_steps": geo.max_steps,
        "reward_funcs": [GUARD, *rewards],
    })
    if weights is not None:
        # TRL orders reward models before reward functions; the guard is the first function. Its rewards are
        # all None, so its weight never counts.
        recipe["reward_weights"] = [*weights[:n_models], 0.0, *weights[n_models:]]
    recipe.pop("dataset_name", None)
    (out / "grpo.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (out / "export.json").write_text(json.dumps({"curriculum": str(cur.path), "horizon": clock.total_steps, "rows": n_rows,
                                                 "geometry": geo.to_dict()}, indent=2))
    return out


def step_guard(completions: list[Any], trainer_state: Any = None, **kwargs: Any) -> list[None]:
    """A reward that scores nothing, and stops the run when a row is used at another step than its own.

    ``trl grpo`` with an export: the rows carry ``rtpo_step``, the step their hint was rendered for.
    A different batch geometry, a second epoch or a resume inside a generation round puts rows at
    other steps; the hint would then be wrong, so training stops with what to do. It returns None
    for every completion, TRL's "no score": it changes neither the advantages nor TRL's rule that a
    row which no reward can score (no gold answer) is left out of the loss.
    """
    steps = kwargs.get(STEP_COLUMN)
    if steps is None:
        raise RtpoDataError(f"step_guard needs the {STEP_COLUMN!r} column: train on a dataset written by rtpo-data export trl.")
    if trainer_state is not None and getattr(trainer_state, "global_step", None) is not None:
        now = int(trainer_state.global_step)
        wrong = sorted({int(s) for s in steps if int(s) != now})
        if wrong:
            raise RtpoDataError(
                f"rtpo-data step guard: rows written for step(s) {wrong[:5]} are being used at step {now}. The batch "
                "geometry, max_steps or the resume point differ from what the export was written for. Re-run "
                "rtpo-data export trl with this run's config (and --num-processes), or resume from a checkpoint at "
                "the start of a generation round."
            )
    return [None] * len(completions)


if __name__ == "__main__":
    main()
