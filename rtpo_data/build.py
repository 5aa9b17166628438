"""``build(config)``: source rows in, a complete curriculum directory out (or nothing at all).

Per batch of source rows (in this process, or in ``num_proc`` worker processes)::

    validate + map columns -> split the answer off the trace -> render prompt parts
      -> tokenize traces once (offsets) and prompts -> allowed boundaries -> cut per stage
      -> Arrow record batches (rows, cuts)

The main process only reads the source and writes shards, in source order, with a bounded number
of batches in flight, so memory does not grow with the number of rows.

The shard plan is fixed by the source alone: shard i holds the rows kept of source rows
``[i * shard_rows, (i + 1) * shard_rows)``, processed in batches of ``batch_size`` rows from the
shard's first row (:func:`plan_batches`), and is written by :func:`write_shard`. The Ray engine
(:mod:`rtpo_data.ray_build`, ``engine="ray"``) builds the same shards with the same function on a
cluster, so both engines write the same bytes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import gc
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rtpo_data import __version__
from rtpo_data.artifact import (
    FORMAT_VERSION,
    ROW_COLUMNS,
    Manifest,
    ShardInfo,
    ShardWriter,
    abort_writers,
    cuts_schema,
    exclusive_build,
    publish,
    shard_infos_to_json,
    shard_name,
    write_manifest,
)
from rtpo_data.checks import answer_statement, drifted, leaks_answer
from rtpo_data.config import BuildConfig
from rtpo_data.cuts import CutUnit, batch_cuts
from rtpo_data.errors import RtpoDataError
from rtpo_data.prompts import THINK_OPEN, PromptRenderer
from rtpo_data.render import PromptTable, kept_fraction
from rtpo_data.schedule import stage_fractions
from rtpo_data.sources import (
    ColumnMap,
    InvalidRow,
    SourceSpec,
    count_rows,
    iter_batches,
    resolve_columns,
    source_columns,
    source_fingerprint,
    validate_row,
)
from rtpo_data.tokenizer import TokenizerFacts, load_tokenizer, tokenizer_facts
from rtpo_data.traces import split_answer

log = logging.getLogger("rtpo_data")


@dataclass
class BuildResult:
    path: Path
    manifest: Manifest
    seconds: float

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest.stats


# ---------------------------------------------------------------------------------------------
# Per-batch work (runs in workers)
# ---------------------------------------------------------------------------------------------


@dataclass
class BatchOut:
    rows: pa.RecordBatch | None
    cuts: pa.RecordBatch | None
    read: int
    position: int = 0  # the source position of the batch's first row
    dropped: collections.Counter = field(default_factory=collections.Counter)
    split_formats: collections.Counter = field(default_factory=collections.Counter)
    answers_derived: int = 0
    trace_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    prompt_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    hint_token_sums: np.ndarray | None = None
    kept_fraction_sums: np.ndarray | None = None
    checked_rows: int = 0
    leak_trimmed: int = 0  # rows whose trace --on-leak trim ended before the statement of the answer
    drift: np.ndarray | None = None  # per stage: checked prompts that drifted
    drift_checked: np.ndarray | None = None  # per stage: prompts checked for drift (one per sampled row)
    leaks: np.ndarray | None = None  # per stage: checked rows whose hint leaks the answer


class BatchProcessor:
    """Everything a worker needs, built once per process (tokenizer loading is the slow part)."""

    def __init__(self, config: BuildConfig, cmap: ColumnMap, source_name: str) -> None:
        self.config = config
        self.cmap = cmap
        self.source_name = source_name
        self.tok = load_tokenizer(config.tokenizer)
        self.backend = self.tok.backend_tokenizer
        self.facts = tokenizer_facts(self.tok, config.tokenizer)
        self.renderer = PromptRenderer(
            self.tok,
            placement=config.placement,
            system_prompt=config.system_prompt,
            think=config.think,
            hint_label=config.hint_label,
            tokenizer_name=config.tokenizer,
        )
        self.unit = CutUnit.parse(config.unit)
        self.fractions = stage_fractions(config.schedule_config(), config.stages)
        self.num_stages = len(self.fractions)
        self._suffix_cache: dict[str, list[int]] = {}
        self._opener_cache: dict[str, list[int] | None] = {}
        # Added tokens the tokenizer splits out before the model sees the text, leaving the text to
        # their left as it is (an lstrip token would swallow the whitespace before it).
        self._splitting_tokens = tuple(
            t.content for t in getattr(self.tok, "added_tokens_decoder", {}).values()
            if t.content and not t.lstrip and not t.single_word
        )
        bos = self.facts.bos_token
        self._strip_bos = bos if (bos and self.facts.special_prefix_ids) else None

    def _text(self, text: str) -> str:
        return unicodedata.normalize("NFC", text) if self.facts.nfc else text

    def _prompt_text(self, text: str) -> str:
        # The trainer's tokenizer adds BOS itself: a BOS rendered by the template would be a second one.
        if self._strip_bos and text.startswith(self._strip_bos):
            return text[len(self._strip_bos):]
        return text

    def process(self, rows: list[dict[str, Any]], first_position: int, checked_before: int) -> BatchOut:
        # A batch makes millions of small objects (token ids, offset pairs) that hold no reference
        # cycles and die together at its end; the cyclic collector's passes over them are pure cost.
        with _gc_paused():
            return self._process(rows, first_position, checked_before)

    def _process(self, rows: list[dict[str, Any]], first_position: int, checked_before: int) -> BatchOut:
        out = BatchOut(rows=None, cuts=None, read=len(rows), position=first_position)
        keep: list[Any] = []
        parts = []
        traces: list[str] = []
        answers: list[str | None] = []
        for offset, raw in enumerate(rows):
            position = first_position + offset
            try:
                if raw is None:  # marked by the main process: its id repeats an earlier row's
                    raise InvalidRow(
                        "duplicate_id",
                        f"{self.source_name} row {position}: id column {self.cmap.id!r} repeats an earlier row's id",
                    )
                valid = validate_row(raw, self.cmap, position, self.source_name)
                split = split_answer(self._text(valid.trace), self.config.answer_format, self.config.answer_pattern)
                if not split.trace:
                    raise InvalidRow(
                        "trace_only_answer",
                        f"{self.source_name} row {position}: the trace is empty once its final answer is split off",
                    )
            except InvalidRow as exc:
                if self.config.on_invalid == "error":
                    raise RtpoDataError(f"{exc} (use --on-invalid skip to drop such rows)") from None
                out.dropped[exc.reason] += 1
                continue
            answer = valid.answer if valid.answer is not None else split.answer
            trace = split.trace
            if self.config.on_leak != "keep":
                cut = answer_statement(trace, answer)
                if cut is not None:
                    trace = trace[:cut].rstrip()
                    if self.config.on_leak == "drop" or not trace:
                        # drop; or trim, with nothing left before the statement of the answer
                        out.dropped["answer_leak" if self.config.on_leak == "drop" else "answer_leak_no_trace"] += 1
                        continue
                    out.leak_trimmed += 1
            prompt = valid.prompt if not isinstance(valid.prompt, str) else self._text(valid.prompt)
            parts.append(self.renderer.render(prompt, row=position))
            out.split_formats[split.format] += 1
            if valid.answer is None and split.answer is not None:
                out.answers_derived += 1
            traces.append(trace)
            answers.append(answer)
            keep.append(valid)
        n = len(keep)
        if n == 0:
            return out

        # Tokenize every trace exactly once, with offsets; prompts are short and tokenized as wholes.
        # Each Encoding's ids and offsets are converted to Python once (every access converts again).
        encs = self.backend.encode_batch(traces, add_special_tokens=False)
        trace_ids = [e.ids for e in encs]
        lens = np.fromiter(map(len, trace_ids), dtype=np.int64, count=n)
        total = int(lens.sum())
        flat_ids = np.fromiter(chain.from_iterable(trace_ids), dtype=np.int32, count=total)
        offsets = np.fromiter(
            chain.from_iterable(chain.from_iterable(e.offsets for e in encs)), dtype=np.int64, count=2 * total
        ).reshape(-1, 2)
        del encs, trace_ids
        cuts = batch_cuts(traces, offsets[:, 0], offsets[:, 1], lens, self.unit, self.fractions, self.config.measure)

        special = list(self.facts.special_prefix_ids)
        bare_texts = [self._prompt_text(p.bare) for p in parts]
        prefix_texts = [self._prompt_text(p.prefix) for p in parts]
        # Prompts need no offsets: encode_batch_fast gives the same ids without computing them.
        bare_ids = [special + e.ids for e in self.backend.encode_batch_fast(bare_texts, add_special_tokens=False)]
        prefix_ids = self._prefix_ids(bare_texts, prefix_texts, bare_ids, special)
        suffix_ids = [self._suffix_ids(p.suffix) for p in parts]

        def list_array(values: np.ndarray, row_offsets: np.ndarray) -> pa.Array:
            return pa.ListArray.from_arrays(pa.array(row_offsets.astype(np.int32)), pa.array(values, pa.int32()))

        tok_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=tok_offsets[1:])
        columns: dict[str, pa.Array] = {
            "row_id": pa.array([v.row_id for v in keep], pa.string()),
            "messages": pa.array([json.dumps(p.messages, ensure_ascii=False) for p in parts], pa.string()),
            "bare": pa.array(bare_texts, pa.string()),
            "prefix": pa.array(prefix_texts, pa.string()),
            "suffix": pa.array([p.suffix for p in parts], pa.string()),
            "bare_ids": pa.array(bare_ids, pa.list_(pa.int32())),
            "prefix_ids": pa.array(prefix_ids, pa.list_(pa.int32())),
            "suffix_ids": pa.array(suffix_ids, pa.list_(pa.int32())),
            "trace": pa.array(traces, pa.string()),
            "trace_ids": list_array(flat_ids, tok_offsets),
            "boundaries": list_array(cuts.boundaries, cuts.bound_offsets),
            "boundary_chars": list_array(cuts.boundary_chars, cuts.bound_offsets),
            "answer": pa.array(answers, pa.string()),
        }
        for name in self.cmap.keep:
            if name not in columns:
                columns[name] = _kept_column(name, [v.keep.get(name) for v in keep], self.source_name, first_position)
        out.rows = pa.RecordBatch.from_pydict(columns)
        k_stages = self.num_stages
        out.cuts = pa.RecordBatch.from_arrays(
            [
                pa.FixedSizeListArray.from_arrays(pa.array(cuts.hint_tokens.reshape(-1), pa.int32()), k_stages),
                pa.FixedSizeListArray.from_arrays(pa.array(cuts.hint_chars.reshape(-1), pa.int32()), k_stages),
            ],
            schema=cuts_schema(k_stages),
        )

        out.trace_tokens = lens.astype(np.int32)
        out.prompt_tokens = np.fromiter((len(x) for x in bare_ids), dtype=np.int32, count=n)
        out.hint_token_sums = cuts.hint_tokens.sum(axis=0, dtype=np.int64)
        out.kept_fraction_sums = kept_fraction_sums(cuts.hint_tokens, lens)

        budget = max(0, self.config.check_sample - checked_before)
        if budget:
            self._check(out, cuts, min(budget, n))
        return out

    def _prefix_ids(self, bare_texts: list[str], prefix_texts: list[str], bare_ids: list[list[int]],
                    special: list[int]) -> list[list[int]]:
        """Token ids of each prefix, derived from the bare prompt's where that is exact, else tokenized.

        With the assistant placement a prefix is the bare prompt itself (R1 templates end in
        ``<think>\n``) or the bare prompt plus a fixed opener (Qwen3: ``<think>\n``). When the opener
        starts with an added token that strips nothing to its left, the tokenizer splits the text at
        that token before anything else, so ``ids(bare + opener) == ids(bare) + ids(opener)`` and the
        prompt need not be tokenized twice. Each opener is checked on the first rows it is seen with.
        """
        out: list[list[int] | None] = [None] * len(bare_texts)
        todo = []
        for r, (bare, prefix) in enumerate(zip(bare_texts, prefix_texts)):
            opener = prefix[len(bare):] if prefix.startswith(bare) else None
            ext = None if opener is None else self._opener_ids(opener, bare_texts[:4], bare_ids[:4], special)
            if ext is None:
                todo.append(r)
            else:
                out[r] = bare_ids[r] + ext
        if todo:
            encs = self.backend.encode_batch_fast([prefix_texts[r] for r in todo], add_special_tokens=False)
            for r, e in zip(todo, encs):
                out[r] = special + e.ids
        return out  # type: ignore[return-value]

    def _opener_ids(self, opener: str, bares: list[str], bare_ids: list[list[int]], special: list[int]) -> list[int] | None:
        if opener in self._opener_cache:
            return self._opener_cache[opener]
        ids: list[int] | None = None
        if not opener:
            ids = []
        elif any(opener.startswith(t) for t in self._splitting_tokens):
            ids = self.backend.encode(opener, add_special_tokens=False).ids
            whole = self.backend.encode_batch_fast([b + opener for b in bares], add_special_tokens=False)
            if any(special + w.ids != b + ids for w, b in zip(whole, bare_ids)):
                ids = None
        if len(self._opener_cache) < 64:
            self._opener_cache[opener] = ids
        return ids

    def _suffix_ids(self, suffix: str) -> list[int]:
        ids = self._suffix_cache.get(suffix)
        if ids is None:
            ids = self.backend.encode(suffix, add_special_tokens=False).ids if suffix else []
            if len(self._suffix_cache) < 64:
                self._suffix_cache[suffix] = ids
        return ids

    def _check(self, out: BatchOut, cuts: Any, count: int) -> None:
        """The build's sample checks on the first ``count`` rows of this batch (see :func:`sample_checks`),
        rendered from the batch about to be written."""
        table = PromptTable(pa.Table.from_batches([out.rows]), [cuts.hint_tokens], [cuts.hint_chars], self.num_stages,
                            self.config.placement, self.config.hint_label)
        out.drift, out.drift_checked, out.leaks = sample_checks(table, count, self.backend)
        out.checked_rows = count


def sample_checks(table: PromptTable, count: int, backend: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leaks on every stage of rows ``0..count-1`` of ``table``; drift on one prompt of each.
    Returns ``(drifted, checked for drift, leaking)`` per stage.

    Drift needs each checked prompt tokenized again: on long traces, every stage of 256 rows is
    several times the tokenizing of the whole build. So the sample checks one prompt per row, the one
    with the row's shortest non-empty hint (the whole prompt when no stage has a hint): the template's
    junction with the trace and one cut, which is where drift arises, for a fraction of a full
    prompt's tokens. ``inspect --verify`` checks every row and stage. Leaks need no tokenizing and are
    checked on every stage.

    The prompts are rendered by :class:`~rtpo_data.render.PromptTable`, the code every trainer's
    prompts come from, so what is checked is what trainers get.
    """
    k_stages = table.num_stages
    rows = np.arange(count)
    hint_tokens = np.stack([table.cuts(rows, s)[0] for s in range(k_stages)], axis=1).reshape(count, k_stages)
    hint_chars = np.stack([table.cuts(rows, s)[1] for s in range(k_stages)], axis=1).reshape(count, k_stages)
    leaks = np.zeros(k_stages, dtype=np.int64)
    for r in range(count):
        trace, answer = table.trace(r), table.answer(r)
        for s in range(k_stages):
            if hint_tokens[r, s]:
                leaks[s] += leaks_answer(trace[: int(hint_chars[r, s])], answer)
    hinted = np.where(hint_tokens > 0, hint_tokens, np.iinfo(np.int64).max)
    where = hinted.argmin(axis=1)  # the first stage with the fewest hint tokens (any, if none has)
    bad = np.asarray(drifted(backend, table.render(rows, where), table.render(rows, where, "ids")), dtype=bool)
    return (np.bincount(where[bad], minlength=k_stages), np.bincount(where, minlength=k_stages), leaks)


# Kept fractions are summed in fixed point (units of 1e-9), so the per-stage mean does not depend on
# how rows were grouped into batches: a rescheduled curriculum's stats equal a build's.
KEPT_SCALE = 10**9


def kept_fraction_sums(hint_tokens: np.ndarray, trace_tokens: np.ndarray) -> np.ndarray:
    """Per stage, the sum over rows of the kept fraction, in units of ``1 / KEPT_SCALE`` (exact ints)."""
    fixed = np.rint(kept_fraction(hint_tokens, np.asarray(trace_tokens)[:, None]) * KEPT_SCALE).astype(np.int64)
    return fixed.sum(axis=0)


def stage_means(hint_sums: np.ndarray, kept_sums: np.ndarray, rows: int) -> dict[str, list[float]]:
    """The manifest's per-stage means, from integer sums over every row."""
    return {
        "hint_tokens_mean": [round(float(x) / rows, 2) for x in hint_sums],
        "kept_fraction_mean": [round(float(x) / KEPT_SCALE / rows, 4) for x in kept_sums],
    }


def checks_section(checked: int, drift: np.ndarray, drift_checked: np.ndarray, leaks: np.ndarray) -> dict[str, Any]:
    """The manifest's ``checks``: what the build's sample checks found."""
    return {
        "sample_rows": checked,
        "sample_prompts": int(drift_checked.sum()),  # drift: one prompt per sampled row
        "drift_rate": round(float(drift.sum()) / max(int(drift_checked.sum()), 1), 6),
        "drift_per_stage": drift.tolist(),
        "leak_rate": round(float(leaks.sum()) / max(checked * len(leaks), 1), 6),
        "leaks_per_stage": leaks.tolist(),
    }


def schedule_section(config: BuildConfig) -> dict[str, Any]:
    """The manifest's ``schedule``: the schedule as configured, its horizon and stage fractions."""
    schedule = config.schedule_config()
    return {
        **schedule.to_dict(),
        "total_steps": config.total_steps,
        "stage_fractions": list(stage_fractions(schedule, config.stages)),
        "warnings": schedule.warnings(),
    }


@contextlib.contextmanager
def building(out: Path, overwrite: bool) -> Iterator[Path]:
    """Hold the build lock of ``out`` and give a fresh ``<out>.incomplete/`` to write into; when the
    block ends, publish it at ``out`` (the manifest must be written last, inside the block). On any
    error, Ctrl-C included, whatever was written is removed, so nothing half-built is ever left."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_build(out):
        tmp = out.with_name(out.name + ".incomplete")
        if tmp.exists():
            log.warning("Removing %s, left over by a build that did not finish.", tmp)
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            yield tmp
            publish(tmp, out, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector; the caller that found it running turns it back on (with
    two batches on threads the collector may resume before the other batch ends, which only costs
    that batch some of the speed-up)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _kept_column(name: str, values: list[Any], source_name: str, first_position: int) -> pa.Array:
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise RtpoDataError(
            f"Column {name!r} of {source_name} mixes value types in rows {first_position}-"
            f"{first_position + len(values) - 1} ({exc}). Make the column one type, or do not keep it."
        ) from None
    # A batch of only nulls says nothing about the type; strings are the common case for metadata.
    return array.cast(pa.string()) if pa.types.is_null(array.type) else array


_WORKER: BatchProcessor | None = None  # one per worker process, set by the pool initializer


def _init_worker(config: BuildConfig, cmap: ColumnMap, source_name: str) -> None:
    global _WORKER
    # Each worker is one of num_proc processes: the tokenizer's own thread pool would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER = BatchProcessor(config, cmap, source_name)


def _work(rows: list[dict[str, Any]], first_position: int, checked_before: int) -> BatchOut:
    assert _WORKER is not None  # set by _init_worker in this process
    return _WORKER.process(rows, first_position, checked_before)


# ---------------------------------------------------------------------------------------------
# The shard plan: which source rows each shard and each batch holds
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardJob:
    """Shard ``index`` of a build: the rows it keeps of source rows ``start`` to ``stop - 1``."""

    index: int
    start: int
    stop: int

    def __str__(self) -> str:
        return f"shard {self.index} (source rows {self.start}-{self.stop - 1})"


def plan_shards(rows: int, shard_rows: int) -> list[ShardJob]:
    """The shards of a source of ``rows`` rows: fixed ranges of ``shard_rows`` source rows."""
    return [ShardJob(i, start, min(start + shard_rows, rows)) for i, start in enumerate(range(0, rows, shard_rows))]


def plan_batches(row_batches: Iterable[list[dict]], start: int, stop: int | None, shard_rows: int,
                 batch_size: int) -> Iterator[tuple[list[dict], int]]:
    """Source rows from position ``start`` (up to ``stop``) as the build's batches, with their first
    positions: ``batch_size`` rows at a time from the start of each shard, the last batch of a shard
    shorter, so no batch spans two shards. Both engines cut batches this way, so a shard's batches,
    and with them its bytes, do not depend on which engine reads it or from where."""
    position, pending = start, []

    def end_of(first: int) -> int:
        end = min(first + batch_size, (first // shard_rows + 1) * shard_rows)
        return end if stop is None else min(end, stop)

    end = end_of(position)
    if end <= position:
        return
    for rows in row_batches:
        taken = 0
        while taken < len(rows):
            take = min(len(rows) - taken, end - position - len(pending))
            pending.extend(rows[taken:taken + take])
            taken += take
            if position + len(pending) == end:
                yield pending, position
                position, pending = end, []
                end = end_of(position)
                if end <= position:
                    return
    if pending:
        yield pending, position


def id_key(value: Any) -> int:
    """A row id as 8 bytes of hash, the same in every process (``hash`` of a string is not)."""
    digest = hashlib.blake2b(repr(value).encode("utf-8", "backslashreplace"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def mark_duplicates(batches: Iterable[tuple[list, int]], id_column: str | None, seen: set[int],
                    also: frozenset[int] = frozenset(),
                    first_seen: list[tuple[int, int]] | None = None) -> Iterator[tuple[list, int]]:
    """Batches in which a row whose id was ``seen`` before (or whose position is in ``also``) is
    replaced by None, which the batch processor counts as ``duplicate_id``. Ids are remembered in
    ``seen`` as :func:`id_key`; ``first_seen`` collects ``(key, position)`` of each id seen first here.

    Ids are remembered as 8-byte hashes: a 10-million-row source costs several hundred MB here.
    """
    for rows, position in batches:
        if id_column is None:
            yield rows, position
            continue
        marked: list[dict | None] = []
        for offset, row in enumerate(rows):
            value = row.get(id_column)
            key = None if value is None else id_key(value)
            if key is not None and (key in seen or position + offset in also):
                marked.append(None)
                seen.add(key)
                continue
            if key is not None:
                seen.add(key)
                if first_seen is not None:
                    first_seen.append((key, position + offset))
            marked.append(row)
        yield marked, position


def process_in_order(config, cmap, source_name, batches, processor: BatchProcessor) -> Iterator[BatchOut]:
    """Process batches in order with at most ``2 * num_proc`` of them in flight (bounded memory).

    With ``num_proc=1`` two batches are in flight on threads of this process: the tokenizer releases
    the GIL while it encodes, so one batch's tokenization overlaps the other's Python work (reading,
    answer splitting, Arrow conversion) instead of waiting for it.
    """
    # Check-sample rows come from the first batches; every batch samples from its own start, within
    # what the source rows before it left of the sample (the same for any engine: a pure function of
    # the batch's position).
    jobs = ((rows, position, min(config.check_sample, position)) for rows, position in batches)
    if config.num_proc == 1:
        with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="rtpo-build") as threads:
            yield from _in_order((threads.submit(processor.process, *job) for job in jobs), 2, lambda f: f.result())
        return
    # spawn, not fork: the parent has already used the Rust tokenizer, and forking it can deadlock.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(config.num_proc, initializer=_init_worker, initargs=(config, cmap, source_name)) as pool:
        yield from _in_order((pool.apply_async(_work, job) for job in jobs), 2 * config.num_proc, lambda r: r.get())


def _in_order(submitted: Iterator[Any], in_flight: int, result: Any) -> Iterator[BatchOut]:
    """Results of the submitted jobs in submission order, keeping at most ``in_flight`` submitted."""
    pending: collections.deque = collections.deque()
    for job in submitted:
        pending.append(job)
        if len(pending) >= in_flight:
            yield result(pending.popleft())
    while pending:
        yield result(pending.popleft())


# ---------------------------------------------------------------------------------------------
# One shard: its batches written as rows-/cuts- files, and its part of the build's stats
# ---------------------------------------------------------------------------------------------


@dataclass
class ShardOut:
    """A built shard: its files (in their own folder until the build commits them) and its part of
    the build's stats, all exact sums, so the stats of a build do not depend on where its shards were
    built. Small and picklable: it is what a Ray worker hands back to the driver."""

    index: int
    start: int
    folder: str
    num_stages: int
    read: int = 0
    rows: ShardInfo | None = None  # the rows file (None: the shard kept no row)
    cuts: ShardInfo | None = None
    schema: pa.Schema | None = None  # of the rows table
    dropped: collections.Counter = field(default_factory=collections.Counter)
    split_formats: collections.Counter = field(default_factory=collections.Counter)
    answers_derived: int = 0
    leak_trimmed: int = 0
    trace_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    prompt_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    hint_sums: np.ndarray | None = None
    kept_sums: np.ndarray | None = None
    checked: int = 0
    drift: np.ndarray | None = None
    drift_checked: np.ndarray | None = None
    leaks: np.ndarray | None = None
    # Set by the Ray engine: the ids seen first in this shard, as (id_key, source position) columns.
    first_ids: np.ndarray | None = None
    first_id_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        zeros = functools.partial(np.zeros, self.num_stages, dtype=np.int64)
        for name in ("hint_sums", "kept_sums", "drift", "drift_checked", "leaks"):
            if getattr(self, name) is None:
                setattr(self, name, zeros())

    @property
    def kept(self) -> int:
        return len(self.trace_tokens)

    def add(self, out: BatchOut) -> None:
        """Count a batch in (its token counts are gathered by :func:`write_shard`)."""
        self.read += out.read
        self.dropped.update(out.dropped)
        self.leak_trimmed += out.leak_trimmed
        if out.rows is None:
            return
        self.split_formats.update(out.split_formats)
        self.answers_derived += out.answers_derived
        self.hint_sums += out.hint_token_sums
        self.kept_sums += out.kept_fraction_sums
        if out.checked_rows:
            self.checked += out.checked_rows
            self.drift += out.drift
            self.drift_checked += out.drift_checked
            self.leaks += out.leaks


def write_shard(folder: Path, job: ShardJob, outs: Iterable[BatchOut], num_stages: int, source_name: str,
                schema: pa.Schema | None = None, on_batch: Callable[[BatchOut], None] | None = None) -> ShardOut:
    """Build one shard from its processed batches, in order: make ``folder``, write the rows and cuts
    the batches kept (``rows-00000-of-00001.arrow``, ``cuts-...``; none if they kept no row) with
    :class:`~rtpo_data.artifact.ShardWriter`, and sum the shard's stats. Both engines build every
    shard with it, which is what makes their artifacts the same bytes.

    ``schema`` is the rows table's schema, once an earlier shard has set it: kept columns are typed by
    the build's first kept batch, and later batches are cast to it (else the first batch here sets it).
    """
    folder.mkdir()
    shard = ShardOut(index=job.index, start=job.start, folder=str(folder), num_stages=num_stages)
    rows_writer: ShardWriter | None = None
    cuts_writer = ShardWriter(folder, "cuts", cuts_schema(num_stages), job.stop - job.start)
    trace_tokens, prompt_tokens = [shard.trace_tokens], [shard.prompt_tokens]
    try:
        for out in outs:
            shard.add(out)
            if out.rows is not None:
                trace_tokens.append(out.trace_tokens)
                prompt_tokens.append(out.prompt_tokens)
                if rows_writer is None:
                    rows_writer = ShardWriter(folder, "rows", schema or out.rows.schema, job.stop - job.start)
                rows_writer.write(_conform(out.rows, rows_writer.schema, source_name, out.position + out.read))
                cuts_writer.write(out.cuts)
            if on_batch is not None:
                on_batch(out)
        rows_infos = rows_writer.finish() if rows_writer is not None else []
        cuts_infos = cuts_writer.finish()
    except BaseException:
        abort_writers(rows_writer, cuts_writer)
        raise
    shard.trace_tokens, shard.prompt_tokens = np.concatenate(trace_tokens), np.concatenate(prompt_tokens)
    if rows_infos:
        shard.rows, shard.cuts, shard.schema = rows_infos[0], cuts_infos[0], rows_writer.schema
    return shard


def commit_shards(directory: Path, shards: list[ShardOut]) -> dict[str, list[dict[str, Any]]]:
    """Move the files of the shards that kept rows into ``directory`` under their final names, in
    shard order (``rows-00002-of-00005.arrow``): the manifest's ``shards``."""
    kept = [s for s in shards if s.rows is not None]
    infos: dict[str, list[ShardInfo]] = {"rows": [], "cuts": []}
    for i, shard in enumerate(kept):
        for table, info in (("rows", shard.rows), ("cuts", shard.cuts)):
            name = shard_name(table, i, len(kept))
            os.rename(Path(shard.folder) / info.name, directory / name)
            infos[table].append(dataclasses.replace(info, name=name))
    return {table: shard_infos_to_json(v) for table, v in infos.items()}


def percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    p = np.percentile(values, [50, 90, 95, 99])
    return {
        "mean": round(float(values.mean()), 2),
        "p50": float(p[0]),
        "p90": float(p[1]),
        "p95": float(p[2]),
        "p99": float(p[3]),
        "max": int(values.max()),
        "total": int(values.sum(dtype=np.int64)),
    }


def progress_bar(enabled: bool | None, total: int | None):
    """The build's progress bar on stderr (rows, tokens/s, elapsed, ETA), on a terminal by default;
    ``update(bar, rows, tokens, started)`` moves it."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]building"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    progress.add_task("build", total=total, rate="")
    return progress


def update_progress(bar: Any, rows: int, tokens: int, started: float) -> None:
    rate = tokens / max(time.perf_counter() - started, 1e-9)
    bar.update(bar.task_ids[0], completed=rows, rate=f"{rate:,.0f} tok/s")


# ---------------------------------------------------------------------------------------------
# The build (main process)
# ---------------------------------------------------------------------------------------------


def build(config: BuildConfig, *, progress: bool | None = None) -> BuildResult:
    """Build a curriculum as configured; see :class:`BuildConfig` for every option.

    Nothing appears at ``config.out`` unless the whole build succeeds; an existing curriculum there
    is replaced only with ``overwrite=True``, and only once the new one is complete.
    """
    started = time.perf_counter()
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise RtpoDataError(f"Output {out} already exists. Pass --overwrite to replace it, or choose another --out.")
    if config.engine == "ray":
        from rtpo_data import ray_build

        ray_build.import_ray()  # before anything is read: a missing Ray is named at once
    spec = SourceSpec(path=config.source, split=config.split, subset=config.subset, format=config.source_format)
    source_name = Path(config.source).name if os.path.exists(config.source) else config.source
    available = source_columns(spec)
    cmap = resolve_columns(
        available,
        prompt=config.prompt_column,
        trace=config.trace_column,
        answer=config.answer_column,
        keep=config.keep_columns,
        source_name=source_name,
    )
    reserved = sorted(set(cmap.keep) & (set(ROW_COLUMNS) - {"answer"}))
    if reserved:
        raise RtpoDataError(
            f"--keep-column {', '.join(reserved)}: these names are used by the curriculum itself. "
            "Rename the column in the source, or do not keep it."
        )
    # Fail on tokenizer/template problems before reading any data.
    probe = BatchProcessor(config, cmap, source_name)
    with building(out, config.overwrite) as tmp:
        # Shards are built in folders of their own under a name no other build uses, then moved.
        work = tmp / f".shards-{uuid.uuid4().hex[:12]}"
        work.mkdir()
        if config.engine == "ray":
            shards = ray_build.build_shards(config, spec, cmap, source_name, probe, work, progress)
        else:
            shards = _build_shards(config, spec, cmap, source_name, probe, work, progress)
        written = _summary(config, spec, cmap, source_name, probe, shards)
        written["shards"] = commit_shards(tmp, shards)
        shutil.rmtree(work)
        manifest = Manifest.from_dict({
            **written,
            "schedule": schedule_section(config),
            "build_seconds": round(time.perf_counter() - started, 3),
        })
        write_manifest(tmp, manifest)
    return BuildResult(path=out, manifest=manifest, seconds=time.perf_counter() - started)


def _build_shards(config, spec, cmap, source_name, probe: BatchProcessor, work: Path, progress) -> list[ShardOut]:
    """The local engine: one pass over the source; batches processed in this process (two threads)
    or in ``num_proc`` worker processes, in flight across shard boundaries; each shard written by
    :func:`write_shard` as its batches come back, in order."""
    total = count_rows(spec)
    if config.limit is not None:
        total = min(total, config.limit) if total is not None else config.limit
    batches = mark_duplicates(
        plan_batches(iter_batches(spec, config.batch_size), 0, config.limit, config.shard_rows, config.batch_size),
        cmap.id, set())
    shards: list[ShardOut] = []
    schema: pa.Schema | None = None
    done = {"rows": 0, "tokens": 0}
    t0 = time.perf_counter()
    with progress_bar(progress, total) as bar:

        def advance(out: BatchOut) -> None:
            done["rows"] += out.read
            done["tokens"] += int(out.trace_tokens.sum(dtype=np.int64))
            update_progress(bar, done["rows"], done["tokens"], t0)

        outs = process_in_order(config, cmap, source_name, batches, probe)
        try:
            for index, group in itertools.groupby(outs, key=lambda o: o.position // config.shard_rows):
                start = index * config.shard_rows
                job = ShardJob(index, start, start + config.shard_rows)
                shard = write_shard(work / f"{index:05d}", job, group, probe.num_stages, source_name, schema,
                                    advance if bar is not None else None)
                schema = schema or shard.schema
                shards.append(shard)
        finally:
            outs.close()  # stops the worker processes at once if a shard failed
    return shards


def _summary(config, spec, cmap, source_name, probe: BatchProcessor, shards: list[ShardOut]) -> dict[str, Any]:
    """The manifest's sections (but ``shards`` and ``schedule``) from the built shards, in order."""
    k_stages = probe.num_stages
    read = sum(s.read for s in shards)
    dropped: collections.Counter = sum((s.dropped for s in shards), collections.Counter())
    kept = sum(s.kept for s in shards)
    if kept == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in dropped.most_common()) or "the source has no rows"
        raise RtpoDataError(
            f"Every row of {source_name} is invalid ({read} read; {reasons}). Check --prompt-column "
            f"{cmap.prompt!r} and --trace-column {cmap.trace!r}."
        )

    def total(name: str) -> np.ndarray:
        return sum((getattr(s, name) for s in shards), np.zeros(k_stages, dtype=np.int64))

    formats: collections.Counter = sum((s.split_formats for s in shards), collections.Counter())
    schema = next(s.schema for s in shards if s.schema is not None)
    facts: TokenizerFacts = probe.facts
    sample_prefix = probe.renderer.render("Q")
    return {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_rows": kept,
        "config": config.to_dict(),
        "source": {
            "path": config.source,
            "split": config.split,
            "subset": config.subset,
            "fingerprint": source_fingerprint(spec),
            "columns": {
                "prompt": cmap.prompt,
                "trace": cmap.trace,
                "answer": cmap.answer,
                "id": cmap.id,
                "keep": list(cmap.keep),
                "detected": dict(cmap.detected),
            },
        },
        "tokenizer": facts.to_dict(),
        "prompt": {
            "placement": config.placement,
            "think_opened": sample_prefix.prefix.endswith(THINK_OPEN) and not sample_prefix.bare.endswith(THINK_OPEN),
            "hint_label": config.hint_label if config.placement == "user" else None,
            "system_prompt": config.system_prompt,
        },
        "unit": config.unit,
        "measure": config.measure,
        "keep_columns": [c for c in schema.names if c not in ROW_COLUMNS],
        "stats": {
            "rows_read": read,
            "rows_kept": kept,
            "rows_dropped": dict(dropped.most_common()),
            "answer_split": dict(formats.most_common()),
            "answers_derived": sum(s.answers_derived for s in shards),
            "trace_tokens": percentiles(np.concatenate([s.trace_tokens for s in shards])),
            "prompt_tokens": percentiles(np.concatenate([s.prompt_tokens for s in shards])),
            **stage_means(total("hint_sums"), total("kept_sums"), kept),
            # --on-leak: what happened to rows whose trace states the gold answer before its end
            "leaks": {
                "on_leak": config.on_leak,
                "rows_trimmed": sum(s.leak_trimmed for s in shards),
                "rows_dropped": int(dropped["answer_leak"] + dropped["answer_leak_no_trace"]),
            },
        },
        "checks": checks_section(sum(s.checked for s in shards), total("drift"), total("drift_checked"), total("leaks")),
    }


def _conform(batch: pa.RecordBatch, schema: pa.Schema, source_name: str, rows_read: int) -> pa.RecordBatch:
    """Cast a batch to the first batch's schema (kept columns are typed by their first values)."""
    if batch.schema.equals(schema):
        return batch
    arrays = []
    for name, target in zip(schema.names, schema.types):
        column = batch.column(name)
        if column.type == target:
            arrays.append(column)
            continue
        try:
            arrays.append(column.cast(target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise RtpoDataError(
                f"Column {name!r} of {source_name} changes type near row {rows_read}: {target} before, "
                f"{column.type} here. Make the column's values one type."
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
