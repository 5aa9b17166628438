#!/usr/bin/env python
"""Every speed and memory goal of rtpo-data, in one place.

    python benchmarks/goals.py     # the list: name, bound, what it compares

docs/benchmarks.md states these goals and reports each figure next to its goal; the benchmark
scripts (build.py, render.py, scale.py, trl_prompts.py, answer_split.py) take their bounds from here
and print the verdict ("ok" or "MISSED") next to the measured figure. A goal without a bound is a
figure the project reports and watches but does not hold to a number.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    name: str
    compares: str  # what the figure is: which time or size over which
    bound: float | None = None  # None: reported, no bound
    at_most: bool = True  # the figure must be <= bound (False: >= bound)
    unit: str = ""
    shown: str = "{op} {bound:g}{unit}"  # how the report table prints the bound

    @property
    def label(self) -> str:
        """The goal as the report table's "goal" column shows it ("" for a reported figure)."""
        if self.bound is None:
            return ""
        return self.shown.format(op="<=" if self.at_most else ">=", bound=self.bound, unit=self.unit)

    def met(self, value: float) -> bool | None:
        """Whether ``value`` meets the goal (None: no bound)."""
        if self.bound is None:
            return None
        return value <= self.bound if self.at_most else value >= self.bound

    def verdict(self, value: float) -> str:
        """The report table's verdict column: "ok", "MISSED", or "" for a reported figure."""
        met = self.met(value)
        return "" if met is None else ("ok" if met else "MISSED")

    def describe(self) -> str:
        return f"{self.name}: {self.label or 'reported, no bound'} -- {self.compares}"


FLAT = "flat ({op} {bound:g}{unit})"  # a figure of the largest curriculum over the smallest (100x the rows)

BUILD_VS_BARE = Goal(
    "build vs bare tokenizer",
    "rtpo_data.build's time over the bare fast tokenizer's (traces with offsets, plus the prompts) on the "
    "same texts: steady state, end to end (fresh processes) and both on one core",
    1.1)
NUM_PROC = Goal(
    "num_proc=2 speed-up",
    "a build with num_proc=1 over the same build with num_proc=2 on 2 cores (steady, one core, end to end)",
    1.8, at_most=False, shown="{op} {bound:g} (2 cores)")
RENDER_VS_RETOKENIZE = Goal(
    "render vs re-tokenize",
    "encode + cut + decode per prompt (the old RTPO code) over Curriculum.render of the same 1,024 prompts, "
    "text and ids, GRPO batch and distinct rows",
    1000, at_most=False, unit="x")
PER_ROW_US = Goal(
    "per-row call",
    "microseconds of one prompt / prompt_ids / hint / render([i], s, 'messages')[0] call on typical rows "
    "(the built-in example, MATH test)",
    5, unit=" us")
PER_ROW_LONG_US = Goal(
    "per-row call, long rows",
    "the same on R1-style ~8k-token traces (prompt_ids makes a Python list of about 4k ints)")
OPEN_TIME = Goal(
    "open time",
    "Curriculum.open, cold (fresh process) and warm (second open), largest curriculum over smallest",
    2, unit="x", shown=FLAT)
OPEN_MEMORY = Goal(
    "open memory",
    "resident memory Curriculum.open adds, cold and warm, largest curriculum over smallest "
    "(deltas under RSS_NOISE_MB count as RSS_NOISE_MB)",
    2, unit="x", shown=FLAT)
RENDER_VS_ROWS = Goal(
    "render vs rows",
    "render of 1,024 prompts (text and ids), largest curriculum over smallest: independent of rows",
    2, unit="x", shown=FLAT)
BUILD_MEMORY = Goal(
    "build memory",
    "peak RSS of the build's whole process tree, largest source over smallest: bounded",
    2, unit="x", shown=FLAT)
DISK_PER_ROW = Goal(
    "bytes on disk per row",
    "curriculum bytes per row against 4 bytes per trace token")
TRL_PROMPTS = Goal(
    "TRL prompt preparation",
    "RTPOTrainer's per-round prompt preparation (render, rtpo/* metrics, stored ids; HF generate and vLLM) "
    "over the stock GRPOTrainer's (tokenizing the no-hint prompts): not slower, whatever the hint length",
    1.0, unit="x")
ANSWER_SPLIT = Goal(
    "answer split",
    "split_answer per row on GSM8K test and MATH test, one share of the build's per-row Python work")

RESCHEDULE = Goal(
    "reschedule vs build",
    "rtpo-data reschedule of a built curriculum over rtpo-data build of its source with the same new options "
    "(whole commands, fresh processes): a new schedule, and a new (narrower) unit",
    0.1, unit="x")

RSS_NOISE_MB = 5.0  # the allocator's noise: open's memory deltas under this count as this much

GOALS: dict[str, Goal] = {g.name: g for g in (
    BUILD_VS_BARE, NUM_PROC, RENDER_VS_RETOKENIZE, PER_ROW_US, PER_ROW_LONG_US, OPEN_TIME, OPEN_MEMORY,
    RENDER_VS_ROWS, BUILD_MEMORY, DISK_PER_ROW, TRL_PROMPTS, ANSWER_SPLIT, RESCHEDULE)}


if __name__ == "__main__":
    for goal in GOALS.values():
        print(goal.describe())
