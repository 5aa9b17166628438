"""``BuildConfig``: every input of a build, validated in one place.

The CLI flags, the recipe YAML keys and the Python API are the same names (a flag ``--trace-column``
is the field ``trace_column``). Every problem is collected and reported together.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from rtpo_data.cuts import MEASURES, CutUnit
from rtpo_data.errors import ConfigError
from rtpo_data.prompts import DEFAULT_HINT_LABEL, PLACEMENTS, THINK_MODES
from rtpo_data.schedule import ScheduleConfig, stage_fractions
from rtpo_data.traces import ANSWER_FORMATS

ENGINES = ("local", "ray")
ON_INVALID = ("skip", "error")
ON_LEAK = ("keep", "trim", "drop")

# Schedule fields of BuildConfig that map 1:1 onto ScheduleConfig (None = the schedule's default).
SCHEDULE_FIELDS = ("direction", "start", "end", "rate", "value", "milestones", "values", "fractions")
# What ``rtpo-data reschedule`` may change: the schedule's options (replaced together), the horizon,
# the unit and the measure. Every other option decides the row shards.
SCHEDULE_OPTIONS = ("schedule", "stages", *SCHEDULE_FIELDS)
RESCHEDULE_OPTIONS = (*SCHEDULE_OPTIONS, "total_steps", "unit", "measure")


def _flag(name: str) -> str:
    """How the command line spells a BuildConfig field."""
    if name == "source":
        return "SOURCE"
    flags = next(f for f in dataclasses.fields(BuildConfig) if f.name == name).metadata.get("flags")
    return flags[0] if flags else f"--{name.replace('_', '-')}"


def _help(text: str, *flags: str) -> dict[str, Any]:
    """A field's help, and its command-line flags where they are not ``--field-name``."""
    return {"help": text, "flags": flags}


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides what a curriculum contains. Paths are kept as given.

    The single source of the build's options: their defaults, their help, and the command line's
    ``rtpo-data build`` flags and recipe keys are made from these fields (see :meth:`from_options`).
    """

    source: str = field(default="", metadata=_help(
        "A .jsonl/.json/.parquet/.csv/.arrow file, a save_to_disk folder, or a hub dataset name."))
    out: str = field(default="", metadata=_help("Output curriculum directory.", "--out", "-o"))
    tokenizer: str = field(default="", metadata=_help(
        "Tokenizer folder or hub name (fast tokenizers only), or offline:NAME (e.g. offline:qwen3).", "--tokenizer", "-t"))
    split: str | None = field(default=None, metadata=_help("Split of a hub dataset or a DatasetDict folder."))
    subset: str | None = field(default=None, metadata=_help("Config (subset) name of a hub dataset."))
    source_format: str | None = field(default=None, metadata=_help(
        "Force the source format: jsonl, json, parquet, csv, arrow, disk, hub.", "--format"))
    prompt_column: str | None = field(default=None, metadata=_help(
        "Column with the problem, text or chat messages (auto: prompt, question or problem)."))
    trace_column: str | None = field(default=None, metadata=_help(
        "Column with the reference reasoning (auto: solution, reasoning, cot, trace or generation)."))
    answer_column: str | None = field(default=None, metadata=_help(
        "Column with the gold answer (auto: answer or final_answer; else taken from the trace)."))
    keep_columns: tuple[str, ...] = field(default=(), metadata=_help(
        "Extra source column to keep (repeatable).", "--keep-column"))
    answer_format: str = field(default="auto", metadata=_help("How the final answer is split off the trace: auto, gsm8k, boxed, think, none."))
    answer_pattern: str | None = field(default=None, metadata=_help("Regex whose last match starts the answer (overrides --answer-format)."))
    system_prompt: str | None = field(default=None, metadata=_help("System message added to every prompt."))
    placement: str = field(default="assistant", metadata=_help("Where the hint goes: assistant, user, none."))
    think: str = field(default="auto", metadata=_help("Open a <think> block before an assistant hint: auto, on, off."))
    hint_label: str = field(default=DEFAULT_HINT_LABEL, metadata=_help("Text before the hint with --placement user."))
    schedule: str = field(default="linear", metadata=_help("Schedule kind: linear, cosine, exponential, piecewise, constant, staged."))
    direction: str | None = field(default=None, metadata=_help("down (full trace -> empty, RTPO) or up."))
    stages: int | None = field(default=None, metadata=_help("Number of stages K the schedule is quantized into (default 8; staged: its list)."))
    total_steps: int | None = field(default=None, metadata=_help("Training step at which the schedule ends (can be given at train time instead)."))
    start: float | None = field(default=None, metadata=_help("Kept fraction at the start (curve kinds)."))
    end: float | None = field(default=None, metadata=_help("Kept fraction at the end (curve kinds)."))
    rate: float | None = field(default=None, metadata=_help("Exponential steepness."))
    value: float | None = field(default=None, metadata=_help("Constant kept fraction."))
    milestones: tuple[float, ...] | None = field(default=None, metadata=_help("Piecewise: progress points, first 0."))
    values: tuple[float, ...] | None = field(default=None, metadata=_help("Piecewise: fraction from each milestone on."))
    fractions: tuple[float, ...] | None = field(default=None, metadata=_help("Staged: explicit per-stage fractions, e.g. 1,0.5,0.25,0."))
    unit: str = field(default="word", metadata=_help("Where a cut may fall: token, word, line, sentence, paragraph, regex:PATTERN."))
    measure: str = field(default="tokens", metadata=_help("What the fraction counts: tokens (RTPO) or units (R^3)."))
    on_invalid: str = field(default="skip", metadata=_help("Rows with an empty or non-text prompt/trace: skip (counted) or error."))
    on_leak: str = field(default="keep", metadata=_help(
        "Rows whose trace states the gold answer before its end (a line with an answer marker and the answer): "
        "keep (counted in the leak checks), trim (end the trace before that statement) or drop (counted)."))
    engine: str = field(default="local", metadata=_help(
        "Where the build runs: local (this machine, --num-proc processes) or ray (actors on a Ray cluster, "
        "the same curriculum byte for byte; needs Ray, the ray extra of rtpo-data)."))
    ray_address: str | None = field(default=None, metadata=_help(
        "With --engine ray: the cluster to connect to (default: RAY_ADDRESS, else the Ray last started on this "
        "machine, else a new one here)."))
    workers: int | None = field(default=None, metadata=_help(
        "With --engine ray: actors building shards, each on one CPU (default: one per CPU of the cluster)."))
    num_proc: int = field(default=1, metadata=_help("Processes for tokenization (local engine)."))
    batch_size: int = field(default=512, metadata=_help("Rows per tokenization batch."))
    shard_rows: int = field(default=100_000, metadata=_help("Rows per shard."))
    check_sample: int = field(default=256, metadata=_help("Rows checked during the build: every stage for leaks, the shortest hint for drift."))
    limit: int | None = field(default=None, metadata=_help("Read only the first N source rows."))
    overwrite: bool = field(default=False, metadata=_help("Replace an existing curriculum (only once the new one is complete)."))

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("keep_columns", "milestones", "values", "fractions"):
            value = getattr(self, name)
            if isinstance(value, (list, str)):
                items = [x for x in value.split(",") if x.strip()] if isinstance(value, str) else value
                if name != "keep_columns":
                    try:
                        items = [float(x) for x in items]
                    except (TypeError, ValueError):
                        problems.append(f"{name}={value!r}: expected numbers, e.g. 1,0.5,0.25,0")
                        items = []
                object.__setattr__(self, name, tuple(items))

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, name) not in allowed:
                problems.append(f"{name}={getattr(self, name)!r}: use one of {', '.join(allowed)}")

        for name in ("source", "out", "tokenizer"):
            if not getattr(self, name):
                problems.append(f"{name} is required: give {_flag(name)} on the command line, or {name}: in a recipe")
        choice("placement", PLACEMENTS)
        choice("think", THINK_MODES)
        choice("measure", MEASURES)
        choice("on_invalid", ON_INVALID)
        choice("on_leak", ON_LEAK)
        choice("answer_format", ANSWER_FORMATS)
        choice("engine", ENGINES)
        try:
            CutUnit.parse(self.unit)
        except ConfigError as exc:
            problems.extend(exc.problems)
        if self.answer_pattern is not None:
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                problems.append(f"answer_pattern={self.answer_pattern!r}: invalid regex ({exc}); fix the pattern")
        for name, low in (("num_proc", 1), ("batch_size", 1), ("shard_rows", 1), ("check_sample", 0)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                problems.append(f"{name}={getattr(self, name)!r}: must be an integer >= {low}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            problems.append(f"workers={self.workers!r}: must be an integer >= 1, or omitted (one per CPU of the cluster)")
        if self.engine == "local":
            for name in ("ray_address", "workers"):
                if getattr(self, name) is not None:
                    problems.append(f"{name}={getattr(self, name)!r}: applies to --engine ray only; add --engine ray, "
                                    f"or drop {_flag(name)}")
        elif self.engine == "ray" and self.num_proc != 1:
            problems.append(f"num_proc={self.num_proc!r}: applies to --engine local only; with --engine ray each "
                            "worker is one process, so give --workers instead")
        if self.stages is not None and (not isinstance(self.stages, int) or self.stages < 2):
            problems.append(f"stages={self.stages!r}: need at least 2 stages (the full trace and the end); use e.g. --stages 8")
        if self.total_steps is not None and (not isinstance(self.total_steps, int) or self.total_steps <= 0):
            problems.append(f"total_steps={self.total_steps!r}: must be a positive number of training steps, or omitted")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit <= 0):
            problems.append(f"limit={self.limit!r}: must be a positive number of rows, or omitted")
        if not problems or self.stages is None or (isinstance(self.stages, int) and self.stages >= 2):
            try:
                stage_fractions(self.schedule_config(), self.stages)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems, what="build configuration")

    def schedule_config(self) -> ScheduleConfig:
        kwargs: dict[str, Any] = {"kind": self.schedule}
        for name in SCHEDULE_FIELDS:
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return ScheduleConfig(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}

    @classmethod
    def from_options(cls, recipe: dict[str, Any] | None = None, flags: dict[str, Any] | None = None) -> BuildConfig:
        """A recipe's keys (hyphens or underscores), overridden by the flags given (``None`` or an
        empty list: not given). Lists may be lists or comma-separated text; every problem with the
        result is reported at once."""
        merged = {k.replace("-", "_"): v for k, v in (recipe or {}).items()}
        merged.update({k: v for k, v in (flags or {}).items() if v is not None and v != [] and v != ()})
        return cls.from_dict(merged)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        normalized = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(normalized) - names)
        if unknown:
            raise ConfigError(
                [f"unknown key {k!r}; valid keys: {', '.join(sorted(names))}" for k in unknown],
                what="build configuration",
            )
        return cls(**normalized)
