"""RTPO in TRL: ``RTPOTrainer``, a ``GRPOTrainer`` whose prompts follow a curriculum, step by step.

Why an override and not a callback: the Trainer fetches rows one optimizer step (or more, with
dataloader workers) before it uses them, so a callback that tells a dataset "the step is now k" is
stale. ``_generate_and_score_completions`` runs exactly when prompts become completions, with
``self.state.global_step`` equal on every process; the prompt is rendered there from the row's
curriculum index and that step, so shuffling, gradient accumulation, ``steps_per_generation``,
``num_iterations``, several processes and resuming from a checkpoint cannot put it out of step.

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
``horizon="trainer"`` to choose explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rtpo_data.curriculum import Curriculum
from rtpo_data.errors import RtpoDataError

try:
    from trl import GRPOConfig, GRPOTrainer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("rtpo_data.adapters.trl needs TRL: pip install 'rtpo-data[trl]'") from exc

INDEX_COLUMN = "rtpo_index"
HORIZONS = ("auto", "curriculum", "trainer")


def curriculum_dataset(cur: Curriculum, *, hint: bool = True) -> Any:
    """The rows as a ``datasets.Dataset`` for TRL, zero-copy over the curriculum's memory maps.

    ``prompt`` holds the no-hint prompt (what TRL sees if anything reads the dataset directly);
    ``RTPOTrainer`` replaces it with the step's prompt at generation time, found by ``rtpo_index``.
    ``answer`` and the kept columns reach reward functions as keyword lists.
    """
    import datasets

    columns = ["bare", "answer", *cur.kept_columns]
    table = cur._rows.select(columns).rename_columns(["prompt", "answer", *cur.kept_columns])
    table = table.append_column(INDEX_COLUMN, pa.array(np.arange(len(cur), dtype=np.int64)))
    return datasets.Dataset(table)


def stage0_prompt_lengths(cur: Curriculum) -> np.ndarray:
    """Token length of every row's longest prompt (the whole trace as hint), from list offsets."""
    def lengths(column: str) -> np.ndarray:
        return np.concatenate([np.diff(c.offsets.to_numpy()) for c in cur._rows.column(column).chunks])

    return lengths("prefix_ids") + lengths("trace_ids") + lengths("suffix_ids")


class RTPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with a hint curriculum. Everything else is TRL's, unchanged.

    Args:
        curriculum: a curriculum directory or an open :class:`~rtpo_data.Curriculum`.
        horizon: which total step count the schedule runs over when both the curriculum and the
            trainer define one: ``"auto"`` (they must agree), ``"curriculum"`` or ``"trainer"``.
        train_dataset: defaults to every curriculum row (``curriculum_dataset``).
        eval_dataset: ``True`` evaluates on every curriculum row without hint; a dataset is used as is.

    Logged per step: ``rtpo/stage``, ``rtpo/kept_fraction`` (hint tokens / trace tokens) and
    ``rtpo/hint_tokens`` (mean over the generation batch).
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
        **kwargs: Any,
    ) -> None:
        if horizon not in HORIZONS:
            raise RtpoDataError(f"horizon={horizon!r}: use one of {', '.join(HORIZONS)}.")
        self.curriculum = curriculum if isinstance(curriculum, Curriculum) else Curriculum.open(curriculum)
        self.rtpo_horizon = horizon
        self._rtpo_total: int | None = None
        if train_dataset is None:
            train_dataset = curriculum_dataset(self.curriculum)
        if eval_dataset is True:
            eval_dataset = curriculum_dataset(self.curriculum, hint=False)
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, **kwargs)
        if INDEX_COLUMN not in self.train_dataset.column_names:
            raise RtpoDataError(
                f"train_dataset has no {INDEX_COLUMN!r} column, so rows cannot be matched to the curriculum. "
                "Leave train_dataset unset, or build it with rtpo_data.adapters.trl.curriculum_dataset()."
            )
        self._check_lengths()

    # -- checks -------------------------------------------------------------------------------------

    def _check_lengths(self) -> None:
        """Stop before training if the longest prompt plus the completion cannot fit the model."""
        limits = {}
        config = getattr(self.model, "config", None)
        if getattr(config, "max_position_embeddings", None):
            limits["the model's max_position_embeddings"] = int(config.max_position_embeddings)
        if getattr(self.args, "use_vllm", False) and getattr(self.args, "vllm_max_model_length", None):
            limits["vllm_max_model_length"] = int(self.args.vllm_max_model_length)
        if not limits:
            return
        completion = int(self.args.max_completion_length or 0)
        lengths = stage0_prompt_lengths(self.curriculum)
        name, limit = min(limits.items(), key=lambda kv: kv[1])
        too_long = np.flatnonzero(lengths + completion > limit)
        if len(too_long):
            ids = [self.curriculum.row_id(int(i)) for i in too_long[:10]]
            raise RtpoDataError(
                f"{len(too_long)} rows do not fit: their stage-0 prompt (question + whole trace) plus "
                f"max_completion_length={completion} exceeds {name}={limit} (longest prompt: "
                f"{int(lengths.max())} tokens). Rows (row_id): {', '.join(ids)}{' ...' if len(too_long) > 10 else ''}. "
                "Lower max_completion_length, raise the limit, or rebuild the curriculum without these rows."
            )

    def rtpo_total_steps(self) -> int:
        """The schedule's horizon (see the module docstring for how it is chosen)."""
        if self._rtpo_total is not None:
            return self._rtpo_total
        built = self.curriculum.total_steps
        trainer = int(self.state.max_steps) if getattr(self.state, "max_steps", 0) and self.state.max_steps > 0 else None
        if trainer is None and self.args.max_steps and self.args.max_steps > 0:
            trainer = int(self.args.max_steps)
        if self.rtpo_horizon == "curriculum" or (self.rtpo_horizon == "auto" and trainer is None):
            total = built
        elif self.rtpo_horizon == "trainer" or built is None:
            total = trainer
        elif built != trainer:
            raise RtpoDataError(
                f"The curriculum was built for total_steps={built}, but this run trains for max_steps={trainer}. "
                "Make them agree, or pass horizon='curriculum' (schedule over the build's steps) or "
                "horizon='trainer' (stretch it over this run)."
            )
        else:
            total = built
        if total is None:
            raise RtpoDataError(
                "The schedule's horizon is unknown: the curriculum was built without --total-steps and the "
                "trainer's max_steps is not set. Set max_steps, or rebuild with --total-steps."
            )
        self._rtpo_total = int(total)
        return self._rtpo_total

    # -- the one override -----------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        index = [int(x[INDEX_COLUMN]) for x in inputs] if inputs and INDEX_COLUMN in inputs[0] else None
        if index is not None:
            mode = "train" if self.model.training else "eval"
            cur = self.curriculum
            if mode == "train":
                stage = cur.stage_at(int(self.state.global_step), self.rtpo_total_steps())
            else:
                stage = None  # evaluation never shows a hint
            if stage is None:
                prompts = cur.eval_prompts(index)
            else:
                prompts = cur.prompts(index, stage)
                hint_tokens, _ = cur._cuts_for(np.asarray(index), np.full(len(index), stage))
                kept = hint_tokens / np.maximum(cur.trace_tokens(index), 1)
                self._metrics[mode]["rtpo/stage"].append(float(stage))
                self._metrics[mode]["rtpo/hint_tokens"].append(float(np.mean(hint_tokens)))
                self._metrics[mode]["rtpo/kept_fraction"].append(float(np.mean(kept)))
            inputs = [{**x, "prompt": p} for x, p in zip(inputs, prompts)]
        return super()._generate_and_score_completions(inputs)


# ---------------------------------------------------------------------------------------------
# Launcher: TRL's own argument parser, so every GRPOConfig / ModelConfig flag and YAML key works
# ---------------------------------------------------------------------------------------------

from dataclasses import dataclass, field  # noqa: E402


@dataclass
class RTPOScriptArguments:
    """The launcher's own arguments; everything else is TRL's (GRPOConfig, ModelConfig)."""

    curriculum: str = field(default="", metadata={"help": "Curriculum directory built by rtpo-data build."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["rtpo_data.rewards.accuracy_reward"],
        metadata={"help": "Reward functions as dotted import paths (default: rtpo_data.rewards.accuracy_reward)."},
    )
    horizon: str = field(default="auto", metadata={"help": "Schedule horizon when curriculum and max_steps differ: auto, curriculum, trainer."})
    eval_without_hint: bool = field(default=False, metadata={"help": "Evaluate on every curriculum row without hint (needs an eval strategy)."})


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
    return script, training, model


def main(argv: list[str] | None = None) -> RTPOTrainer:
    """``rtpo-data train trl`` / ``accelerate launch -m rtpo_data.adapters.trl``: parse, build, train."""
    script, training, model_args = parse_args(argv)
    model_init_kwargs = dict(revision=model_args.model_revision, trust_remote_code=training.trust_remote_code,
                             attn_implementation=model_args.attn_implementation, dtype=model_args.dtype)
    training.model_init_kwargs = {**model_init_kwargs, **(training.model_init_kwargs or {})}
    cur = Curriculum.open(script.curriculum)
    trainer = RTPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=[load_reward(p) for p in script.reward_funcs],
        args=training,
        curriculum=cur,
        horizon=script.horizon,
        eval_dataset=True if script.eval_without_hint else None,
    )
    trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)
    trainer.save_model(training.output_dir)
    return trainer


if __name__ == "__main__":
    main()
