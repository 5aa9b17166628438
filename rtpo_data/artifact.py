"""The curriculum directory: Arrow IPC stream shards plus ``manifest.json``, written last.

::

    my-curriculum/
      manifest.json                     format version, config, fingerprints, schedule, stats, shards
      rows-00000-of-00002.arrow         one row per problem (see ROW_COLUMNS)
      rows-00001-of-00002.arrow
      cuts-00000-of-00002.arrow         per row: the cut at every stage, row-aligned with rows-*
      cuts-00001-of-00002.arrow

Shards are in the Arrow IPC *stream* format, so ``datasets.Dataset.from_file`` and
``pyarrow.memory_map`` open them without copying. ``rows-i`` and ``cuts-i`` always hold the same
rows in the same order. A build writes into ``<out>.incomplete/`` and renames it to ``<out>`` after
the manifest is on disk, so a directory with a manifest is always complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from rtpo_data.errors import ArtifactError, RtpoDataError

FORMAT_VERSION = 2  # 2: num_stages and total_steps are stored once, in "schedule"
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
TABLES = ("rows", "cuts")

# Columns of the rows table, in order; kept source columns follow them.
ROW_COLUMNS: dict[str, pa.DataType] = {
    "row_id": pa.string(),
    "messages": pa.string(),  # JSON: the conversation without hint (system prompt included)
    "bare": pa.string(),  # the prompt with no hint
    "prefix": pa.string(),  # the prompt text before the hint
    "suffix": pa.string(),  # the prompt text after the hint
    "bare_ids": pa.list_(pa.int32()),
    "prefix_ids": pa.list_(pa.int32()),
    "suffix_ids": pa.list_(pa.int32()),
    "trace": pa.string(),
    "trace_ids": pa.list_(pa.int32()),
    "boundaries": pa.list_(pa.int32()),  # allowed hint lengths in tokens, 0 ... len(trace_ids)
    "boundary_chars": pa.list_(pa.int32()),  # the matching character offsets into trace
    "answer": pa.string(),
}


def cuts_schema(num_stages: int) -> pa.Schema:
    return pa.schema(
        [
            ("hint_tokens", pa.list_(pa.int32(), num_stages)),
            ("hint_chars", pa.list_(pa.int32(), num_stages)),
        ]
    )


def shard_name(table: str, index: int, count: int) -> str:
    return f"{table}-{index:05d}-of-{count:05d}.arrow"


@dataclass(frozen=True)
class ShardInfo:
    name: str
    rows: int
    bytes: int
    sha256: str


class HashingFile:
    """A write-only file that hashes what passes through, so shards are never read back to hash."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 (closed by close(), which the writer always calls)
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.bytes += view.nbytes
        return self._f.write(view)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self.closed = True


# Rows are gathered into record batches of about this many bytes before they are written. Readers
# pay per record batch when they open a shard (a stream file has no index), so few large batches keep
# opening cheap; the cap bounds what the writer holds in memory.
RECORD_BATCH_BYTES = 64 << 20


class ShardWriter:
    """Writes one table as a sequence of stream shards, starting a new shard every ``shard_rows`` rows
    or at :meth:`end_shard`.

    Incoming batches are gathered into record batches of about ``RECORD_BATCH_BYTES``. Shards get
    their final ``-of-N`` names in :meth:`finish`, once N is known. A table of fixed-width rows (the
    cut table) is cut into record batches at fixed row counts, so its bytes depend on its rows alone,
    not on how they were handed in: a rescheduled curriculum's cut shards equal a build's.
    """

    def __init__(self, directory: Path, table: str, schema: pa.Schema, shard_rows: int) -> None:
        self.directory = directory
        self.table = table
        self.schema = schema
        self.shard_rows = shard_rows
        self._shards: list[tuple[Path, ShardInfo]] = []
        self._file: HashingFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._rows = 0  # rows written to the open shard
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        width = _fixed_row_bytes(schema)
        self._batch_rows = max(1, RECORD_BATCH_BYTES // width) if width else None

    def write(self, batch: pa.RecordBatch) -> None:
        offset = 0
        while offset < batch.num_rows:
            take = min(batch.num_rows - offset, self.shard_rows - self._rows - self._pending_rows)
            if self._batch_rows is not None:
                take = min(take, self._batch_rows - self._pending_rows)
            piece = batch.slice(offset, take)
            size = piece.nbytes
            if self._batch_rows is None and self._pending and self._pending_bytes + size > RECORD_BATCH_BYTES:
                self._flush()  # never combine past the cap (string offsets are 32-bit)
            self._pending.append(piece)
            self._pending_rows += take
            self._pending_bytes += size
            offset += take
            full = (self._pending_rows >= self._batch_rows if self._batch_rows is not None
                    else self._pending_bytes >= RECORD_BATCH_BYTES)
            if full or self._rows + self._pending_rows >= self.shard_rows:
                self._flush()
            if self._rows >= self.shard_rows:
                self._close()

    def end_shard(self) -> None:
        """End the open shard here, whatever its row count: the next rows start a new shard."""
        self._flush()
        if self._writer is not None:
            self._close()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            self._open()
        # Written as one compact record batch: pyarrow writes a slice that starts at 0 with its
        # whole values buffer, so the bytes would depend on how the rows were handed in.
        combined = _concat_batches(self._pending, self.schema)
        self._writer.write_batch(combined)
        self._rows += self._pending_rows
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0

    def _open(self) -> None:
        path = self.directory / f".{self.table}-{len(self._shards):05d}.partial"
        self._file = HashingFile(path)
        self._writer = pa.ipc.new_stream(self._file, self.schema)
        self._rows = 0
        self._path = path

    def _close(self) -> None:
        assert self._writer is not None and self._file is not None  # internal state, not user data
        self._writer.close()
        self._file.close()
        info = ShardInfo(name="", rows=self._rows, bytes=self._file.bytes, sha256=self._file.sha.hexdigest())
        self._shards.append((self._path, info))
        self._writer = self._file = None
        self._rows = 0

    def finish(self) -> list[ShardInfo]:
        self._flush()
        if self._writer is not None:
            self._close()
        count = len(self._shards)
        infos = []
        for i, (path, info) in enumerate(self._shards):
            name = shard_name(self.table, i, count)
            path.rename(self.directory / name)
            infos.append(ShardInfo(name=name, rows=info.rows, bytes=info.bytes, sha256=info.sha256))
        return infos

    def abort(self) -> None:
        self._pending = []
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._file.close()


def abort_writers(*writers: ShardWriter | None) -> None:
    """Close the open files of ``writers`` (None: not started) after a failure; their temporary
    folder is left to the caller to remove."""
    for writer in writers:
        if writer is not None:
            writer.abort()


def _concat_batches(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    concat = getattr(pa, "concat_batches", None)  # pyarrow >= 19
    if concat is not None:
        return concat(batches)
    return pa.Table.from_batches(batches, schema).combine_chunks().to_batches()[0]


def _fixed_row_bytes(schema: pa.Schema) -> int | None:
    """Bytes per row of a table whose columns are all fixed-width (numbers, fixed-size lists of
    numbers, no nulls); ``None`` otherwise."""
    total = 0
    for t in schema.types:
        size = 1
        while pa.types.is_fixed_size_list(t):
            size *= t.list_size
            t = t.value_type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            return None
        total += size * t.bit_width // 8
    return total


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about a curriculum, each fact once.

    The sections (``config``, ``source``, ``tokenizer``, ``prompt``, ``stats``, ``checks``,
    ``shards``, ``schedule``) are plain JSON objects, documented in docs/format.md. ``config`` records
    the build's options as given; the facts are read from their own fields and sections: the stage
    count and the horizon from ``schedule`` (:attr:`num_stages`, :attr:`total_steps`).

    ``manifest["key"]`` and ``manifest.get("key")`` read it as the JSON object it is written as
    (and, for code written against format 1, ``"num_stages"`` and ``"total_steps"`` too).
    """

    format_version: int
    package_version: str
    created_at: str
    num_rows: int
    config: dict[str, Any]
    source: dict[str, Any]
    tokenizer: dict[str, Any]
    prompt: dict[str, Any]
    unit: str
    measure: str
    keep_columns: list[str]
    stats: dict[str, Any]
    checks: dict[str, Any]
    shards: dict[str, list[dict[str, Any]]]
    schedule: dict[str, Any]
    build_seconds: float | None = None
    # Set by reschedule: the curriculum whose row shards this one reuses (see docs/format.md).
    parent: dict[str, Any] | None = None

    @property
    def num_stages(self) -> int:
        return len(self.schedule["stage_fractions"])

    @property
    def total_steps(self) -> int | None:
        return self.schedule.get("total_steps")

    @property
    def stage_fractions(self) -> list[float]:
        return list(self.schedule["stage_fractions"])

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json`` (``parent`` only where there is one)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["parent"] is None:
            del out["parent"]
        return out

    def shard_path(self, directory: Path, info: dict[str, Any]) -> Path:
        """Where a shard of the curriculum at ``directory`` lies: beside the manifest, or, for row
        shards a rescheduled curriculum refers to, in its parent (``info["path"]``)."""
        return Path(info["path"]) if info.get("path") else directory / info["name"]

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "the manifest") -> Manifest:
        """Read a format 1 or 2 manifest object; format 1 stored the stage count and the horizon
        three times, and they must agree to be read."""
        data = dict(data)
        if data.get("format_version") == 1:
            schedule = dict(data.get("schedule") or {})
            stages, total = data.pop("num_stages", None), data.pop("total_steps", None)
            if stages != len(schedule.get("stage_fractions", ())) or schedule.pop("num_stages", stages) != stages or (
                    schedule.get("total_steps") != total):
                raise ArtifactError(f"{where} is damaged: its stage count or horizon disagree with its schedule. "
                                    "Rebuild the curriculum.")
            data["schedule"] = schedule
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data and n not in ("build_seconds", "parent")]
        if missing or "stage_fractions" not in (data.get("schedule") or {}):
            keys = ", ".join(repr(k) for k in missing) or "'schedule.stage_fractions'"
            raise ArtifactError(f"{where} is damaged: {keys} missing. Rebuild the curriculum.")
        return cls(**{n: data[n] for n in names if n in data})

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self else default

    def __contains__(self, key: object) -> bool:
        return key in _MANIFEST_KEYS


_MANIFEST_KEYS = frozenset({f.name for f in dataclasses.fields(Manifest)} | {"num_stages", "total_steps"})


def write_manifest(directory: Path, manifest: Manifest | dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically (temp file, fsync, rename); it must be the last file written."""
    tmp = directory / f".{MANIFEST}.tmp"
    if isinstance(manifest, Manifest):
        manifest = manifest.to_dict()
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)


def shard_infos_to_json(infos: list[ShardInfo]) -> list[dict[str, Any]]:
    return [asdict(i) for i in infos]


def read_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Read and sanity-check a manifest; every failure says which file and what to do."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.exists():
        incomplete = directory.with_name(directory.name + ".incomplete")
        extra = (
            f" A build into it did not finish ({incomplete} is left over): rerun rtpo-data build."
            if incomplete.exists()
            else ""
        )
        raise ArtifactError(f"Curriculum not found: {directory}.{extra}")
    if not path.is_file():
        raise ArtifactError(
            f"{directory} is not a curriculum: it has no {MANIFEST}. Build one with rtpo-data build."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is damaged (not valid JSON: {exc}). Rebuild the curriculum.") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} is damaged (not a JSON object). Rebuild the curriculum.")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise ArtifactError(
            f"Unsupported curriculum format version {version!r} in {path}: this rtpo-data reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}. "
            + ("Upgrade rtpo-data to read it." if newer else "Rebuild it with this version of rtpo-data.")
        )
    return Manifest.from_dict(manifest, where=str(path))


def open_shard(path: Path, expected_bytes: int | None = None) -> pa.Table:
    """Memory-map one stream shard as a Table (no copy). Cheap size check, no hashing."""
    if not path.is_file():
        raise ArtifactError(f"Shard {path.name} is missing from {path.parent}. Rebuild the curriculum.")
    size = path.stat().st_size
    if expected_bytes is not None and size != expected_bytes:
        raise ArtifactError(
            f"Shard {path.name} in {path.parent} is damaged: {size} bytes on disk, the manifest says "
            f"{expected_bytes}. Rebuild the curriculum (or restore the file)."
        )
    try:
        source = pa.memory_map(str(path), "r")
        return pa.ipc.open_stream(source).read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise ArtifactError(
            f"Shard {path.name} in {path.parent} is damaged ({exc}). Rebuild the curriculum."
        ) from None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- publishing a finished build ----------------------------------------------------------------


@contextlib.contextmanager
def exclusive_build(out: Path) -> Iterator[None]:
    """Hold ``<out>.lock`` so two builds never write the same output; the loser fails at once."""
    lock_path = out.with_name(out.name + ".lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RtpoDataError(
                    f"Another build is writing {out} right now (it holds {lock_path}). "
                    "Wait for it to finish, or build into another --out."
                ) from None
            raise
        # The previous holder may have unlinked the file between our open and our lock: retry then.
        try:
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def swap_dirs(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    ok = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    return ok


def publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Make the finished build visible at ``out`` in one step.

    Replacing an old curriculum swaps the two directories atomically where the OS can, so a crash
    at any moment leaves either the old or the new curriculum at ``out``, never neither.
    """
    if not out.exists():
        os.rename(tmp, out)
        return
    if not overwrite:
        raise RtpoDataError(f"Output {out} appeared during the build. Pass --overwrite to replace it.")
    if swap_dirs(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old curriculum
        return
    # Fallback without RENAME_EXCHANGE: two renames, with a short window where out is missing; the
    # old curriculum is then at <out>.old-<pid>, which read_manifest points to.
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
