"""``--engine ray``: a build's shards made by actors on a Ray cluster, the local build's bytes exactly.

The driver (the process running ``rtpo-data build``)::

    count the source's rows (parquet footers, Arrow batch headers, one pass over jsonl lines)
      -> shard i = the rows kept of source rows [i * shard_rows, (i + 1) * shard_rows), as locally
      -> one actor per worker loads the tokenizer once and builds whole shards: it reads its rows
         straight from the source, processes them in the local engine's batches
         (build.BatchProcessor) and writes them with build.write_shard, the function the local
         engine writes every shard with, into a folder of its own for this attempt under
         <out>.incomplete/
      -> the driver takes shards in order; one that an earlier shard changes (a row whose id an
         earlier shard holds, kept columns typed by the build's first kept rows) is built again,
         knowing it, so it comes out as the local engine writes it
      -> the build's commit: the accepted attempts renamed to rows-/cuts-i-of-N, manifest.json
         last, <out>.incomplete renamed to <out> (build.build)

Failures. An error of the build (an invalid row with ``--on-invalid error``, an unreadable source
line) stops it with the message, which names the row, prefixed with the shard. A worker that dies
(killed, out of memory, its node lost) is replaced and its shard built again from its first row, up
to MAX_ATTEMPTS times, then the build stops naming the shard and the last row the worker had
finished. Each attempt writes its own folder and only the accepted one is committed, so a retried
shard never appears twice. A driver that dies leaves only <out>.incomplete/, which the next build
removes; Ray ends the actors of a dead driver, and one still writing finds its folder gone.

Only Ray Core is used (remote classes, ``ray.wait``, ``ray.get``, ``ray.kill``), the same in Ray 2.55
(the version OpenRLHF pins) and 2.60. Ray Data's streaming writes are not: the shard boundaries they
give follow Ray's block sizes, which change with the Ray version and the source format.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rtpo_data.build import (
    BatchOut,
    BatchProcessor,
    ShardJob,
    ShardOut,
    mark_duplicates,
    plan_batches,
    plan_shards,
    process_in_order,
    progress_bar,
    update_progress,
    write_shard,
)
from rtpo_data.config import BuildConfig
from rtpo_data.errors import RtpoDataError
from rtpo_data.sources import ColumnMap, RowIndex, SourceSpec, index_rows, read_rows

log = logging.getLogger("rtpo_data")

MAX_ATTEMPTS = 3  # builds of one shard whose worker died, before the build gives up
# Tests only: the path of a JSON file {"shard": i, "after_batches": n, "times": k} makes the worker
# building shard i end its process (as a kill would) after its n-th batch, k times.
CRASH_FILE_ENV = "RTPO_DATA_RAY_TEST_CRASH"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RtpoDataError("--engine ray needs Ray, which is not installed here: pip install 'rtpo-data[ray]'") from None
    return ray


class ShardWorker:
    """One Ray actor: loads the tokenizer once, then builds whole shards, one call each."""

    def __init__(self, config: BuildConfig, cmap: ColumnMap, source_name: str, spec: SourceSpec, index: RowIndex,
                 work: str, tracker: Any) -> None:
        # One CPU per worker: the tokenizer's own thread pool would take every core of the node.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self.config, self.cmap, self.source_name, self.spec, self.index = config, cmap, source_name, spec, index
        self.work, self.tracker = Path(work), tracker
        self.error: str | None = None
        try:
            self.processor = BatchProcessor(config, cmap, source_name)
        except RtpoDataError as exc:  # reported by ready(): an actor that fails to start says little
            self.error = str(exc)

    def ready(self) -> str | None:
        """None once the tokenizer is loaded; else why it could not be."""
        return self.error

    def build(self, job: ShardJob, attempt: int, duplicates: frozenset[int], schema: pa.Schema | None) -> ShardOut | str:
        """Build ``job`` into its own folder for this attempt; the built shard, or the error's message.

        ``duplicates``: positions of rows whose id an earlier shard holds; ``schema``: the rows table's,
        when an earlier shard has set it."""
        config = self.config
        first_seen: list[tuple[int, int]] = []
        done = {"batches": 0, "rows": 0, "tokens": 0}

        def report(out: BatchOut) -> None:
            done["batches"] += 1
            done["rows"] += out.read
            done["tokens"] += int(out.trace_tokens.sum(dtype=np.int64))
            reported = self.tracker.report.remote(job.index, attempt, done["rows"], done["tokens"],
                                                  out.position + out.read - 1)
            _crash_if_asked(job.index, done["batches"], reported)

        try:
            rows = read_rows(self.spec, self.index, job.start, job.stop, config.batch_size)
            batches = mark_duplicates(plan_batches(rows, job.start, job.stop, config.shard_rows, config.batch_size),
                                      self.cmap.id, set(), duplicates, first_seen)
            outs = process_in_order(config, self.cmap, self.source_name, batches, self.processor)
            try:
                shard = write_shard(self.work / f"{job.index:05d}-{attempt}", job, outs, self.processor.num_stages,
                                    self.source_name, schema, report)
            finally:
                outs.close()
        except RtpoDataError as exc:
            return str(exc)
        shard.first_ids = np.array([key for key, _ in first_seen], dtype=np.uint64)
        shard.first_id_rows = np.array([row for _, row in first_seen], dtype=np.int64)
        return shard


class ProgressTracker:
    """A Ray actor the workers tell, after every batch, how far their shard has got."""

    def __init__(self) -> None:
        self.shards: dict[int, tuple[int, int, int, int]] = {}  # shard -> (attempt, rows, tokens, last row)

    def report(self, shard: int, attempt: int, rows: int, tokens: int, last_row: int) -> None:
        if self.shards.get(shard, (0,))[0] <= attempt:
            self.shards[shard] = (attempt, rows, tokens, last_row)

    def snapshot(self) -> dict[int, tuple[int, int, int, int]]:
        return self.shards


def _crash_if_asked(shard: int, batches: int, reported: Any) -> None:
    """Tests only (see CRASH_FILE_ENV): end the process, once the batch's progress is reported."""
    path = os.environ.get(CRASH_FILE_ENV)
    if not path:
        return
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return
    if plan.get("shard") == shard and plan.get("after_batches") == batches:
        times = int(plan.get("times", 1)) - 1
        if times > 0:
            Path(path).write_text(json.dumps({**plan, "times": times}))
        else:
            Path(path).unlink()
        import ray

        ray.get(reported)
        os._exit(1)


def build_shards(config: BuildConfig, spec: SourceSpec, cmap: ColumnMap, source_name: str,
                 probe: BatchProcessor, work: Path, progress: bool | None) -> list[ShardOut]:
    """Every shard of the build, built by Ray actors, in shard order (see the module docstring)."""
    ray = import_ray()
    index = index_rows(spec, config.shard_rows, config.limit)
    jobs = plan_shards(index.rows, config.shard_rows)
    if not jobs:
        return []
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=config.ray_address, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    try:
        return _Driver(ray, config, spec, cmap, source_name, index, jobs, work).run(progress)
    finally:
        if started_here:
            ray.shutdown()


class _Driver:
    """Hands shards to idle workers, replaces dead ones, and takes the built shards in order."""

    def __init__(self, ray: Any, config: BuildConfig, spec: SourceSpec, cmap: ColumnMap, source_name: str,
                 index: RowIndex, jobs: list[ShardJob], work: Path) -> None:
        self.ray, self.config, self.jobs, self.index = ray, config, jobs, index
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.workers = min(config.workers or max(cpus, 1), len(jobs))
        if config.workers and config.workers > cpus:
            log.warning("--workers %d: the Ray cluster has %d CPUs now; workers wait for a free CPU to start.",
                        config.workers, cpus)
        self.tracker = ray.remote(num_cpus=0)(ProgressTracker).remote()
        remote = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(ShardWorker)
        self.new_worker = lambda: remote.remote(config, cmap, source_name, spec, index, str(work), self.tracker)
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor
        self.idle: list[Any] = []
        self.running: dict[Any, tuple[Any, ShardJob, frozenset[int]]] = {}  # build() ref -> (actor, job, duplicates)
        self.queue: collections.deque[tuple[ShardJob, frozenset[int]]] = collections.deque(
            (job, frozenset()) for job in jobs)
        self.attempts: collections.Counter = collections.Counter()  # builds of each shard started
        self.deaths: collections.Counter = collections.Counter()
        self.built: dict[int, tuple[ShardOut, frozenset[int]]] = {}  # out of order, not yet taken
        self.accepted: list[ShardOut] = []
        self.seen: set[int] = set()  # id keys of the accepted shards
        self.schema: pa.Schema | None = None  # the rows table's, from the first accepted shard with rows

    def run(self, progress: bool | None) -> list[ShardOut]:
        try:
            for _ in range(self.workers):
                self._start_worker()
            t0 = time.perf_counter()
            with progress_bar(progress, self.index.rows) as bar:
                while len(self.accepted) < len(self.jobs):
                    self._hand_out()
                    waiting = [*self.starting, *self.running]
                    ready = self.ray.wait(waiting, num_returns=1, timeout=0.5)[0] if waiting else []
                    for ref in ready:
                        self._collect(ref)
                    self._take_in_order()
                    if bar is not None:
                        shards = self._snapshot().values()
                        if shards:
                            update_progress(bar, sum(s[1] for s in shards), sum(s[2] for s in shards), t0)
                        else:
                            bar.update(bar.task_ids[0], rate=f"starting {self.workers} Ray workers")
            return self.accepted
        finally:
            for actor in [*self.starting.values(), *self.idle, *(a for a, _, _ in self.running.values()), self.tracker]:
                with contextlib.suppress(Exception):
                    self.ray.kill(actor)

    def _start_worker(self) -> None:
        actor = self.new_worker()
        self.starting[actor.ready.remote()] = actor

    def _hand_out(self) -> None:
        while self.idle and self.queue:
            job, duplicates = self.queue.popleft()
            actor = self.idle.pop()
            self.attempts[job.index] += 1
            ref = actor.build.remote(job, self.attempts[job.index], duplicates, self.schema)
            self.running[ref] = (actor, job, duplicates)

    def _collect(self, ref: Any) -> None:
        ray = self.ray
        if ref in self.starting:
            actor = self.starting.pop(ref)
            try:
                error = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                raise RtpoDataError(f"A Ray worker could not start: {_reason(exc)}") from None
            if error:
                raise RtpoDataError(
                    f"A Ray worker could not load the tokenizer: {error} Every worker loads "
                    f"{self.config.tokenizer!r} itself: it must be installed or reachable on every node.")
            self.idle.append(actor)
            return
        actor, job, duplicates = self.running.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # the worker's process or node is gone
            self.deaths[job.index] += 1
            last = self._snapshot().get(job.index, (0, 0, 0, None))
            where = (f"after source row {last[3]}" if last[0] == self.attempts[job.index] and last[3] is not None
                     else "before it finished its first batch")
            if self.deaths[job.index] >= MAX_ATTEMPTS:
                raise RtpoDataError(
                    f"{job}: its Ray worker died {MAX_ATTEMPTS} times, the last time {where} ({_reason(exc)}). "
                    "A worker running out of memory is the usual cause: lower --batch-size, or give workers "
                    "more memory.") from None
            log.warning("%s: its Ray worker died %s; building the shard again on a new worker.", job, where)
            with contextlib.suppress(Exception):
                ray.kill(actor)
            self._start_worker()
            self.queue.appendleft((job, duplicates))
            return
        except ray.exceptions.RayTaskError as exc:
            raise RtpoDataError(f"{job}: its Ray worker failed: {_reason(exc)}") from None
        if isinstance(result, str):
            raise RtpoDataError(f"{job}: {result}")
        self.idle.append(actor)
        self.built[job.index] = (result, duplicates)

    def _take_in_order(self) -> None:
        """Accept the built shards that come next in order, or queue one again (first in line) with
        what the shards before it decided."""
        while len(self.accepted) in self.built:
            shard, duplicates = self.built.pop(len(self.accepted))
            job = self.jobs[shard.index]
            if shard.read != job.stop - job.start:
                raise RtpoDataError(
                    f"{job}: its worker read {shard.read} rows. Did the source change during the build? Build again.")
            clash = frozenset(row for key, row in zip(shard.first_ids.tolist(), shard.first_id_rows.tolist())
                              if key in self.seen)
            retyped = self.schema is not None and shard.schema is not None and not shard.schema.equals(self.schema)
            if clash or retyped:
                self.queue.appendleft((job, duplicates | clash))
                return
            self.seen.update(shard.first_ids.tolist())
            shard.first_ids = shard.first_id_rows = None  # the driver keeps the ids in self.seen only
            self.schema = self.schema or shard.schema
            self.accepted.append(shard)

    def _snapshot(self) -> dict[int, tuple[int, int, int, int]]:
        try:
            return self.ray.get(self.tracker.snapshot.remote(), timeout=10)
        except Exception:  # progress is best effort: a slow or lost tracker never stops the build
            return {}


def _reason(exc: BaseException) -> str:
    """What a Ray error says went wrong, in a line: the worker's own exception where Ray carries it
    (its traceback's last line), else the first line of Ray's message."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(exc)):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    raised = [line for line in lines if ("Error: " in line or "Exception: " in line) and not line.startswith("ray::")]
    return raised[-1] if raised else lines[0]
