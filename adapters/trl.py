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

import json
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
    table = cur.table(columns).rename_columns(["prompt", "answer", *cur.kept_columns])
    table = table.append_column(INDEX_COLUMN, pa.array(np.arange(len(cur), dtype=np.int64)))
    # Explicit fingerprint: datasets would otherwise hash every row (and fails to on some pyarrow versions).
    return datasets.Dataset(table, fingerprint=f"{cur.fingerprint}-trl")


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
        lengths = self.curriculum.longest_prompt_tokens()
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
                hint_tokens = cur.hint_tokens_at(index, stage)
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


def geometry_of(args: GRPOConfig, num_processes: int, generation_batch_size: int | None = None) -> Geometry:
    """The geometry on ``num_processes`` processes (GRPOConfig resolved its own for the process it ran in).

    ``generation_batch_size`` is the value the user wrote, if any; otherwise rounds hold
    ``steps_per_generation`` global batches, as TRL computes it.
    """
    if not args.max_steps or args.max_steps <= 0:
        raise RtpoDataError("The export needs max_steps > 0 in the config: rows are written for exactly that many steps.")
    global_batch = args.per_device_train_batch_size * num_processes
    if generation_batch_size is not None:
        if generation_batch_size % global_batch:
            raise RtpoDataError(
                f"generation_batch_size={generation_batch_size} is not a multiple of per_device_train_batch_size x "
                f"processes = {global_batch}."
            )
        spg = generation_batch_size // global_batch
    else:
        spg = args.steps_per_generation
    gbs = global_batch * spg
    if gbs % args.num_generations:
        raise RtpoDataError(f"The generation batch ({gbs}) is not divisible by num_generations={args.num_generations}.")
    return Geometry(args.per_device_train_batch_size, num_processes, args.gradient_accumulation_steps, spg,
                    args.num_generations, args.num_iterations, gbs, int(args.max_steps))


def export(curriculum: str | Path | Curriculum, config: str | Path, out: str | Path, *, num_processes: int = 1,
           horizon: str = "auto", overrides: list[str] | None = None) -> Path:
    """Write ``out/train.parquet`` in TRL's consumption order (shuffling off) and ``out/grpo.yaml``.

    Row ``j`` is generated in round ``j // B`` at ``generation_step(j // B)``; its prompt is rendered
    for that step, and ``rtpo_step`` records it for :func:`step_guard`. Rows cycle through the
    curriculum (a seeded permutation per pass) until ``max_steps`` is covered, so no second epoch of
    the file is ever needed.
    """
    import pyarrow.parquet as pq
    import yaml
    from trl.scripts.grpo import make_parser

    cur = curriculum if isinstance(curriculum, Curriculum) else Curriculum.open(curriculum)
    config = Path(config)
    script, args, _model, _data = make_parser().parse_args_and_config(
        args=["--config", str(config), *(overrides or [])], fail_with_unknown_args=False)[:4]
    recipe = yaml.safe_load(config.read_text()) or {}
    explicit = recipe.get("generation_batch_size")
    if overrides and "--generation_batch_size" in overrides:
        explicit = int(overrides[overrides.index("--generation_batch_size") + 1])
    geo = geometry_of(args, num_processes, explicit)
    built = cur.total_steps
    if horizon == "curriculum" or (horizon == "auto" and built is not None and built == geo.max_steps):
        total = built or geo.max_steps
    elif horizon == "trainer" or built is None:
        total = geo.max_steps
    else:
        raise RtpoDataError(
            f"The curriculum was built for total_steps={built}, the config trains max_steps={geo.max_steps}. "
            "Make them agree, or pass --horizon curriculum / --horizon trainer."
        )
    b = geo.prompts_per_round
    n_rows = geo.rounds * b
    rng = np.random.default_rng(args.seed)
    order = np.concatenate([rng.permutation(len(cur)) for _ in range(-(-n_rows // len(cur)))])[:n_rows]
    steps = np.asarray([geo.generation_step(j // b) for j in range(n_rows)], dtype=np.int64)
    stages = np.asarray([cur.stage_at(int(s), total) for s in steps])
    prompts = cur.prompts(order, stages)
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
    recipe.update({
        "datasets": [{"path": "parquet", "data_files": str((out / "train.parquet").resolve()), "split": "train"}],
        "shuffle_dataset": False,
        "max_steps": geo.max_steps,
        "reward_funcs": [GUARD, *[r for r in rewards if r != GUARD]],
    })
    recipe.pop("dataset_name", None)
    (out / "grpo.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (out / "export.json").write_text(json.dumps({"curriculum": str(cur.path), "horizon": total, "rows": n_rows,
                                                 "geometry": geo.to_dict()}, indent=2))
    return out


def step_guard(completions: list[Any], trainer_state: Any = None, **kwargs: Any) -> list[float]:
    """A reward of 0 that stops the run when a row is used at another step than it was written for.

    ``trl grpo`` with an export: the rows carry ``rtpo_step``, the step their hint was rendered for.
    A different batch geometry, a second epoch or a resume inside a generation round puts rows at
    other steps; the hint would then be wrong, so training stops with what to do.
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
    return [0.0] * len(completions)


if __name__ == "__main__":
    main()
