"""Reading a source dataset in bounded-memory batches, mapping its columns, validating rows.

Sources (``--format`` overrides detection):

- ``jsonl``: ``.jsonl``/``.ndjson``, optionally gzipped (``.jsonl.gz``). Read line by line; empty
  lines are skipped; CRLF endings and a UTF-8 byte-order mark work. A bad line (invalid JSON or
  UTF-8, not an object) is an error that names the file and line.
- ``json``: ``.json``/``.json.gz`` holding a top-level list of objects (loaded whole: such files are
  small in practice; big data comes as jsonl or parquet), or JSON lines in a ``.json`` file.
- ``parquet``: record batches through ``pyarrow.parquet.ParquetFile.iter_batches``.
- ``csv``: ``.csv``/``.csv.gz`` through pyarrow's streaming CSV reader. Every column is read as text
  (CSV has no types, and per-block type inference breaks on the first ``3/4`` after ``18``s); quoted
  fields may span lines.
- ``arrow``: one Arrow IPC file, stream format (what ``datasets`` writes) or file format; memory-mapped.
- ``disk``: a ``datasets.save_to_disk`` folder (``state.json``/``dataset_info.json``), read file by
  file from its Arrow files; a ``DatasetDict`` folder (``dataset_dict.json``) needs a split
  (``--split``; ``train`` when it has one).
- a folder of shards of one format (``.parquet``, ``.arrow``, ``.jsonl``, ``.json``, ``.csv``,
  gzipped variants too), read in name order. :func:`detect_format` reports the shards' format.
- ``hub``: a dataset name (``owner/name``) that is not a local path, streamed with
  ``datasets.load_dataset(..., streaming=True)`` (split ``train`` unless ``--split``).

Every reader yields lists of row dicts (plain Python values) in source order, ``batch_size`` rows at a
time (the last batch may be shorter), so memory does not grow with the source.

Columns: :func:`resolve_columns` maps prompt/trace/answer/id columns, explicit or detected by name;
:func:`validate_row` turns a raw row into a :class:`ValidRow` or raises :class:`InvalidRow` with a
short ``reason`` key, so a build can count and skip bad rows.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from rtpo_data.errors import SourceError

FORMATS = ("jsonl", "json", "parquet", "csv", "arrow", "disk", "hub")
PROMPT_NAMES = ("prompt", "question", "problem", "query", "input", "instruction")
TRACE_NAMES = ("solution", "reasoning", "cot", "trace", "generation", "response", "rationale", "output")
ANSWER_NAMES = ("answer", "final_answer", "gold", "label", "target")
ID_NAMES = ("id", "row_id", "uid", "idx")
CHAT_ROLES = ("system", "user", "assistant")

_SUPPORTED = ".jsonl, .json, .parquet, .csv or .arrow file, a datasets.save_to_disk folder, or a hub dataset name"
_NOT_FOUND = "Source not found: {path}. Pass a " + _SUPPORTED + "."
# name suffix -> format; gzip is read transparently for the text formats
_EXTENSIONS = (
    (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".jsonl.gz", "jsonl"), (".ndjson.gz", "jsonl"),
    (".json", "json"), (".json.gz", "json"),
    (".parquet", "parquet"),
    (".csv", "csv"), (".csv.gz", "csv"),
    (".arrow", "arrow"),
)
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ARROW_FILE_MAGIC = b"ARROW1"
_WHOLE_HASH_LIMIT = 64 << 20
_EDGE = 1 << 20


@dataclass(frozen=True)
class SourceSpec:
    path: str  # a local file/folder, or a hub dataset name
    split: str | None = None  # hub / save_to_disk DatasetDict split
    subset: str | None = None  # hub config name
    format: str | None = None  # jsonl|json|parquet|csv|arrow|disk|hub; None = detect


# ---------------------------------------------------------------------------------------------
# Detection: what to read, and in which format
# ---------------------------------------------------------------------------------------------


def _format_of_name(name: str) -> str | None:
    lower = name.lower()
    for ext, fmt in sorted(_EXTENSIONS, key=lambda e: -len(e[0])):
        if lower.endswith(ext):
            return fmt
    return None


def _is_disk_folder(path: Path) -> bool:
    return any((path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _looks_like_hub(name: str) -> bool:
    return bool(_HUB_NAME.match(name)) and _format_of_name(name) is None


def detect_format(spec: SourceSpec) -> str:
    """The source's format: one of :data:`FORMATS` (a folder of shards reports the shards' format)."""
    return _resolve(spec)[0]


def _resolve(spec: SourceSpec) -> tuple[str, list[tuple[str, Path]]]:
    """``(format, [(file format, file), ...])``: the files to read in order (none for the hub)."""
    fmt = spec.format.lower() if spec.format else None
    if fmt is not None and fmt not in FORMATS:
        raise SourceError(f"--format {spec.format!r}: unknown format; use one of {', '.join(FORMATS)}.")
    if fmt == "hub":
        return "hub", []
    path = Path(spec.path).expanduser()
    if not path.exists():
        if fmt is None and _looks_like_hub(spec.path):
            return "hub", []
        raise SourceError(_NOT_FOUND.format(path=spec.path))
    if path.is_dir():
        if fmt == "disk" or (fmt is None and _is_disk_folder(path)):
            return "disk", [("arrow", f) for f in _disk_files(path, spec.split)]
        return _shards(path, fmt)
    if fmt == "disk":
        raise SourceError(f"--format disk: {spec.path} is a file; a datasets.save_to_disk source is a folder.")
    if fmt is None:
        fmt = _format_of_name(path.name)
        if fmt is None:
            raise SourceError(
                f"Unknown source format: {path.name}. Supported: .jsonl/.ndjson, .json, .parquet, .csv, .arrow "
                "(.gz for the text formats), a datasets.save_to_disk folder, a folder of shards, or a hub dataset "
                f"name. Name the format with --format ({', '.join(FORMATS)}) if the extension is misleading."
            )
    return fmt, [(fmt, path)]


def _shards(folder: Path, fmt: str | None) -> tuple[str, list[tuple[str, Path]]]:
    by_format: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir(), key=lambda p: p.name):
        if f.is_file() and not f.name.startswith("."):
            shard_fmt = _format_of_name(f.name)
            if shard_fmt is not None:
                by_format.setdefault(shard_fmt, []).append(f)
    if fmt is not None:
        by_format = {fmt: by_format.get(fmt, [])}
    found = {k: v for k, v in by_format.items() if v}
    if not found:
        what = f"{fmt} " if fmt else ""
        raise SourceError(
            f"{folder} holds no {what}data files (.jsonl, .json, .parquet, .csv, .arrow) and is not a "
            f"datasets.save_to_disk folder. Pass a {_SUPPORTED}."
        )
    if len(found) > 1:
        kinds = ", ".join(f"{len(v)} {k}" for k, v in found.items())
        raise SourceError(
            f"{folder} holds shards of several formats ({kinds}). Choose one with --format, or pass one file."
        )
    (shard_fmt, files), = found.items()
    return shard_fmt, [(shard_fmt, f) for f in files]


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot read ({exc}). Is the save_to_disk folder complete?") from None


def _disk_files(root: Path, split: str | None) -> list[Path]:
    """The Arrow files of a ``save_to_disk`` folder, in row order."""
    if (root / "dataset_dict.json").is_file():
        splits = list(_read_json_file(root / "dataset_dict.json").get("splits", []))
        chosen = split if split is not None else ("train" if "train" in splits else None)
        if chosen is None:
            raise SourceError(
                f"{root} is a DatasetDict with the splits {', '.join(splits) or '(none)'} and none is called "
                "train: choose one with --split."
            )
        if chosen not in splits:
            raise SourceError(
                f"--split {chosen!r}: {root} has no such split. Its splits: {', '.join(splits) or '(none)'}."
            )
        root = root / chosen
    state = root / "state.json"
    if state.is_file():
        names = [f["filename"] for f in _read_json_file(state).get("_data_files", [])]
        files = [root / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise SourceError(f"{root}: state.json lists files that are missing: {', '.join(missing)}.")
    else:
        files = sorted(root.glob("*.arrow"), key=lambda p: p.name)
    if not files:
        raise SourceError(f"{root} holds no Arrow files. Is the save_to_disk folder complete?")
    return files


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


def _open_binary(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _rebatch(rows: Iterable[dict], batch_size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _iter_jsonl_rows(path: Path, offset: int = 0, first_line: int = 1) -> Iterator[dict]:
    """The rows of a jsonl file; from byte ``offset``, which starts line ``first_line``, if given."""
    try:
        with _open_binary(path) as f:
            if offset:
                f.seek(offset)
            for number, raw in enumerate(f, start=first_line):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise SourceError(
                        f"{path} line {number}: invalid UTF-8 ({exc.reason} at byte {exc.start}). "
                        "Re-encode the file as UTF-8, or fix or remove the line."
                    ) from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(
                        f"{path} line {number}: invalid JSON ({exc.msg} at column {exc.colno}). Fix or remove the line."
                    ) from None
                if not isinstance(row, dict):
                    raise SourceError(
                        f"{path} line {number}: expected a JSON object (one row per line), got a "
                        f"{_json_type(row)}. Fix or remove the line."
                    )
                yield row
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise SourceError(f"{path}: cannot read ({type(exc).__name__}: {exc}). Is the file complete and not corrupt?") from None


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _iter_json_rows(path: Path) -> Iterator[dict]:
    try:
        with _open_binary(path) as f:
            head = f.read(1 << 16)
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise SourceError(f"{path}: cannot read ({type(exc).__name__}: {exc}).") from None
    start = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if start.startswith("{"):
        first = start.split("\n", 1)[0]
        try:
            json.loads(first)
            is_lines = True
        except json.JSONDecodeError:
            is_lines = False
        if is_lines:
            yield from _iter_jsonl_rows(path)  # JSON lines in a .json file
            return
    # A JSON document is loaded whole: such files are small in practice; big data comes as jsonl/parquet.
    try:
        with _open_binary(path) as f:
            data = json.loads(f.read().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: invalid UTF-8 ({exc.reason} at byte {exc.start}). Re-encode the file as UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{path} line {exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno}). Fix the file, "
            "or write it as JSON lines (.jsonl)."
        ) from None
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise SourceError(f"{path}: cannot read ({type(exc).__name__}: {exc}).") from None
    if isinstance(data, dict):
        keys = ", ".join(list(data)[:10])
        raise SourceError(
            f"{path} holds one JSON object (keys: {keys}), not a list of rows. Pass a file with a list of "
            "objects, or one object per line (.jsonl)."
        )
    if not isinstance(data, list):
        raise SourceError(f"{path} holds a JSON {_json_type(data)}, not a list of rows.")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise SourceError(f"{path} item {i}: expected a JSON object (one row), got a {_json_type(row)}. Fix or remove it.")
        yield row


def _iter_record_batch_rows(batches: Iterable[pa.RecordBatch], batch_size: int) -> Iterator[list[dict]]:
    """Re-chunk record batches into lists of ``batch_size`` row dicts, converting one slice at a time."""
    pending: list[dict] = []
    for rb in batches:
        offset = 0
        while offset < rb.num_rows:
            take = min(batch_size - len(pending), rb.num_rows - offset)
            pending.extend(rb.slice(offset, take).to_pylist())
            offset += take
            if len(pending) >= batch_size:
                yield pending
                pending = []
    if pending:
        yield pending


def _is_arrow_file_format(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(_ARROW_FILE_MAGIC)) == _ARROW_FILE_MAGIC


def _arrow_batches(path: Path) -> Iterator[pa.RecordBatch]:
    try:
        source = pa.memory_map(str(path), "r")
        if _is_arrow_file_format(path):
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        else:
            yield from pa.ipc.open_stream(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable Arrow IPC file (stream or file format): {exc}.") from None


def _arrow_schema(path: Path) -> pa.Schema:
    try:
        source = pa.memory_map(str(path), "r")
        if _is_arrow_file_format(path):
            return pa.ipc.open_file(source).schema
        return pa.ipc.open_stream(source).schema
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable Arrow IPC file (stream or file format): {exc}.") from None


def _arrow_rows(path: Path) -> int:
    try:
        source = pa.memory_map(str(path), "r")
        if _is_arrow_file_format(path):
            reader = pa.ipc.open_file(source)
            return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        return sum(rb.num_rows for rb in pa.ipc.open_stream(source))
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable Arrow IPC file (stream or file format): {exc}.") from None


def _parquet_file(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file ({exc}).") from None


def _parquet_batches(path: Path, batch_size: int) -> Iterator[pa.RecordBatch]:
    try:
        yield from _parquet_file(path).iter_batches(batch_size=batch_size)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: cannot read Parquet data ({exc}).") from None


def _csv_reader(path: Path, column_types: dict[str, pa.DataType] | None = None) -> Any:
    import pyarrow.csv as pcsv

    stream = pa.input_stream(str(path), compression="detect")
    return pcsv.open_csv(
        stream,
        read_options=pcsv.ReadOptions(block_size=1 << 22),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(column_types=column_types or {}),
    )


def _csv_columns(path: Path) -> list[str]:
    try:
        return list(_csv_reader(path).schema.names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: cannot parse CSV ({exc}). Check the header line, quoting and encoding (UTF-8).") from None


def _csv_batches(path: Path) -> Iterator[pa.RecordBatch]:
    names = _csv_columns(path)
    try:
        yield from _csv_reader(path, {n: pa.string() for n in names})
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: cannot parse CSV ({exc}). Check the quoting and encoding (UTF-8).") from None


def _file_batches(fmt: str, path: Path, batch_size: int) -> Iterator[list[dict]]:
    if fmt == "jsonl":
        yield from _rebatch(_iter_jsonl_rows(path), batch_size)
    elif fmt == "json":
        yield from _rebatch(_iter_json_rows(path), batch_size)
    elif fmt == "parquet":
        yield from _iter_record_batch_rows(_parquet_batches(path, batch_size), batch_size)
    elif fmt == "csv":
        yield from _iter_record_batch_rows(_csv_batches(path), batch_size)
    else:  # arrow
        yield from _iter_record_batch_rows(_arrow_batches(path), batch_size)


def _hub_error(spec: SourceSpec, exc: BaseException) -> SourceError:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or os.environ.get(
        "HF_DATASETS_OFFLINE", ""
    ).lower() in ("1", "true", "yes", "on")
    network = isinstance(exc, (ConnectionError, TimeoutError)) or any(
        word in f"{type(exc).__name__} {text}" for word in ("Offline", "offline", "reach", "Connection", "Timeout", "resolve host")
    )
    if offline or network:
        return SourceError(
            f"Cannot load {spec.path!r} from the Hugging Face hub: the hub is unreachable from here "
            f"({type(exc).__name__}: {text}). Download the data where the hub is reachable and pass a local "
            f"file (jsonl, parquet, csv, arrow) or a save_to_disk folder instead. (No local file or folder "
            f"{spec.path!r} exists either.)"
        )
    return SourceError(
        f"Cannot load hub dataset {spec.path!r} (subset {spec.subset!r}, split {spec.split or 'train'!r}): "
        f"{type(exc).__name__}: {text}. Check the name, --subset and --split, or pass a local file. (No local "
        f"file or folder {spec.path!r} exists either.)"
    )


def _hub_dataset(spec: SourceSpec) -> Any:
    try:
        import datasets

        return datasets.load_dataset(spec.path, spec.subset, split=spec.split or "train", streaming=True)
    except Exception as exc:  # connection and hub errors come in many types (httpx, hub, datasets)
        raise _hub_error(spec, exc) from None


def _hub_rows(spec: SourceSpec) -> Iterator[dict]:
    it = iter(_hub_dataset(spec))
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as exc:  # the stream reads lazily: network errors surface here too
            raise _hub_error(spec, exc) from None
        yield dict(row)


def iter_batches(spec: SourceSpec, batch_size: int = 1024) -> Iterator[list[dict]]:
    """Rows as dicts with plain Python values, in source order, ``batch_size`` at a time."""
    if batch_size < 1:
        raise SourceError(f"batch_size must be at least 1, got {batch_size}.")
    fmt, files = _resolve(spec)
    if fmt == "hub":
        yield from _rebatch(_hub_rows(spec), batch_size)
        return
    if fmt in ("parquet", "arrow", "disk"):
        # Record batches from several files are chained, so batches span file boundaries.
        def record_batches() -> Iterator[pa.RecordBatch]:
            for file_fmt, path in files:
                yield from (_parquet_batches(path, batch_size) if file_fmt == "parquet" else _arrow_batches(path))

        yield from _iter_record_batch_rows(record_batches(), batch_size)
        return

    def rows() -> Iterator[dict]:
        for file_fmt, path in files:
            for batch in _file_batches(file_fmt, path, batch_size):
                yield from batch

    yield from _rebatch(rows(), batch_size)


def source_columns(spec: SourceSpec) -> list[str]:
    """Column names, from metadata where the format has it (parquet, arrow, disk, csv), else from the
    first rows (jsonl, json: the keys of the first 64 rows, in order of appearance)."""
    fmt, files = _resolve(spec)
    if fmt == "hub":
        names = getattr(_hub_dataset(spec), "column_names", None)
        if names:
            return list(names)
    elif files:
        file_fmt, first = files[0]
        if file_fmt == "parquet":
            return list(_parquet_file(first).schema_arrow.names)
        if file_fmt == "arrow":
            return list(_arrow_schema(first).names)
        if file_fmt == "csv":
            return _csv_columns(first)
    names_seen: dict[str, None] = {}
    for batch in iter_batches(spec, 64):
        for row in batch:
            names_seen.update(dict.fromkeys(row))
        break
    if not names_seen:
        raise SourceError(f"{spec.path} holds no rows. Pass a source with data.")
    return list(names_seen)


def count_rows(spec: SourceSpec) -> int | None:
    """The number of rows when it is cheap to know (parquet metadata, Arrow files); else None."""
    try:
        fmt, files = _resolve(spec)
    except SourceError:
        return None
    if fmt == "hub" or not files or any(f not in ("parquet", "arrow") for f, _ in files):
        return None
    try:
        return sum(
            _parquet_file(path).metadata.num_rows if file_fmt == "parquet" else _arrow_rows(path)
            for file_fmt, path in files
        )
    except SourceError:
        return None


# ---------------------------------------------------------------------------------------------
# Reading a range of rows (the Ray engine's workers each read their own rows from the source)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowIndex:
    """How many rows a source has (up to a limit), and where every ``every``-th row starts.

    ``starts[k]`` is ``(file number, byte offset, line number)`` of row ``k * every`` of a jsonl
    source that is not gzipped, so a reader seeks straight to it. Parquet row groups and Arrow record
    batches know their row counts, so those need no starts; other sources are read from their start.
    """

    rows: int
    every: int
    starts: tuple[tuple[int, int, int], ...] = ()


def _seekable_jsonl(files: list[tuple[str, Path]]) -> bool:
    return bool(files) and all(f == "jsonl" and not p.name.lower().endswith(".gz") for f, p in files)


def index_rows(spec: SourceSpec, every: int, limit: int | None = None) -> RowIndex:
    """Count the source's rows (at most ``limit``): from parquet footers and Arrow record batch
    headers, in one pass over the lines of a jsonl source (noting where each ``every``-th row
    starts), else by reading the rows."""
    fmt, files = _resolve(spec)
    if fmt == "hub":
        raise SourceError(
            f"{spec.path} is a hub dataset, which is streamed from the network and cannot be read from a given "
            "row. Save it first (datasets' save_to_disk, or to_parquet) where every reader can reach it, and "
            "pass that path."
        )
    starts: tuple[tuple[int, int, int], ...] = ()
    if all(f in ("parquet", "arrow") for f, _ in files):
        rows = sum(_parquet_file(p).metadata.num_rows if f == "parquet" else _arrow_rows(p) for f, p in files)
    elif _seekable_jsonl(files):
        rows, starts = _index_jsonl([p for _, p in files], every, limit)
    else:
        rows = 0
        for batch in iter_batches(spec, 4096):
            rows += len(batch)
            if limit is not None and rows >= limit:
                break
    return RowIndex(rows=rows if limit is None else min(rows, limit), every=every, starts=starts)


def _index_jsonl(paths: list[Path], every: int, limit: int | None) -> tuple[int, tuple[tuple[int, int, int], ...]]:
    rows, starts = 0, []
    for number_of_file, path in enumerate(paths):
        try:
            with open(path, "rb") as f:
                offset = 0
                for line, raw in enumerate(f, start=1):
                    if not _blank_line(raw, line):
                        if limit is not None and rows >= limit:
                            return rows, tuple(starts)
                        if rows % every == 0:
                            starts.append((number_of_file, offset, line))
                        rows += 1
                    offset += len(raw)
        except OSError as exc:
            raise SourceError(f"{path}: cannot read ({type(exc).__name__}: {exc}).") from None
    return rows, tuple(starts)


def _blank_line(raw: bytes, line: int) -> bool:
    """Whether the jsonl reader skips this line: whitespace only, as ``str.strip`` sees whitespace."""
    stripped = raw.strip()
    if not stripped:
        return True
    if 0x20 < stripped[0] < 0x80:
        return False  # a printable ASCII character
    try:
        return not raw.decode("utf-8-sig" if line == 1 else "utf-8").strip()
    except UnicodeDecodeError:
        return False  # a row: reading it reports the bad line


def read_rows(spec: SourceSpec, index: RowIndex, start: int, stop: int, batch_size: int) -> Iterator[list[dict]]:
    """Rows ``start`` to ``stop - 1``, with the values :func:`iter_batches` gives them, ``batch_size``
    at a time: from the row groups or record batches that hold them, from the byte offset where a
    jsonl row starts (``index``), or, for the other formats, read from the start and skipped."""
    fmt, files = _resolve(spec)
    if files and all(f in ("parquet", "arrow") for f, _ in files):
        yield from _iter_record_batch_rows(_record_batches_between(files, start, stop, batch_size), batch_size)
        return
    if index.starts and _seekable_jsonl(files):
        k = start // index.every
        number_of_file, offset, line = index.starts[k]

        def rows() -> Iterator[dict]:
            yield from _iter_jsonl_rows(files[number_of_file][1], offset, line)
            for _, path in files[number_of_file + 1:]:
                yield from _iter_jsonl_rows(path)

        skip = start - k * index.every
        yield from _rebatch(itertools.islice(rows(), skip, skip + stop - start), batch_size)
        return
    every_row = (row for batch in iter_batches(spec, batch_size) for row in batch)
    yield from _rebatch(itertools.islice(every_row, start, stop), batch_size)


def _record_batches_between(files: list[tuple[str, Path]], start: int, stop: int,
                            batch_size: int) -> Iterator[pa.RecordBatch]:
    """Record batches holding exactly rows ``start`` to ``stop - 1`` of parquet and Arrow files read in
    order; parquet row groups and whole files before ``start`` are not read."""
    position = 0  # the source row of the file's first row
    for file_fmt, path in files:
        if position >= stop:
            return
        if file_fmt == "parquet":
            meta = _parquet_file(path).metadata
            if position + meta.num_rows <= start:
                position += meta.num_rows
                continue
            groups, at, first = [], position, None
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if at + n > start and at < stop:
                    groups.append(g)
                    first = at if first is None else first
                at += n
            batches, at, end = _parquet_groups(path, groups, batch_size), first, position + meta.num_rows
        else:
            batches, at, end = _arrow_batches(path), position, None
        for rb in batches:
            lo, hi = max(start - at, 0), min(stop - at, rb.num_rows)
            if hi > lo:
                yield rb.slice(lo, hi - lo)
            at += rb.num_rows
            if at >= stop:
                return
        position = end if end is not None else at


def _parquet_groups(path: Path, groups: list[int], batch_size: int) -> Iterator[pa.RecordBatch]:
    try:
        yield from _parquet_file(path).iter_batches(batch_size=batch_size, row_groups=groups)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: cannot read Parquet data ({exc}).") from None


def source_fingerprint(spec: SourceSpec) -> dict[str, Any]:
    """Cheap, stable identity of a source.

    Local: ``kind`` (the format), absolute ``path``, ``files`` (how many are read), total ``size``,
    newest ``mtime_ns``, and ``sha256`` over every read file's name and size plus its whole content
    when the source is under 64 MiB in all, else its first and last MiB (so a 50 GB source costs a few
    MiB of reading per file). Hub: ``kind``, ``path``, ``subset``, ``split``.
    """
    fmt, files = _resolve(spec)
    if fmt == "hub":
        return {"kind": "hub", "path": spec.path, "subset": spec.subset, "split": spec.split or "train"}
    root = Path(spec.path).expanduser()
    paths = [p for _, p in files]
    if fmt == "disk":  # the metadata next to the Arrow files belongs to the source too
        folders = {f.parent for f in paths} | {root}
        paths = sorted({*paths, *(meta for folder in folders for meta in folder.glob("*.json"))})
    stats = [p.stat() for p in paths]
    total = sum(s.st_size for s in stats)
    whole = total < _WHOLE_HASH_LIMIT
    h = hashlib.sha256()
    for p, st in zip(paths, stats):
        rel = p.relative_to(root).as_posix() if root.is_dir() else p.name
        h.update(f"{rel}\0{st.st_size}\0".encode())
        with open(p, "rb") as fh:
            if whole or st.st_size <= 2 * _EDGE:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(fh.read(_EDGE))
                fh.seek(st.st_size - _EDGE)
                h.update(fh.read(_EDGE))
    return {
        "kind": fmt,
        "path": str(root.resolve()),
        "files": len(paths),
        "size": total,
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
        "sha256": h.hexdigest(),
    }


# ---------------------------------------------------------------------------------------------
# Columns and rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnMap:
    prompt: str
    trace: str
    answer: str | None
    id: str | None
    keep: tuple[str, ...]  # columns carried through unchanged (the answer column included)
    detected: dict[str, bool]  # prompt/trace/answer: found by name rather than given


def resolve_columns(
    available: list[str],
    *,
    prompt: str | None = None,
    trace: str | None = None,
    answer: str | None = None,
    keep: tuple[str, ...] | list[str] = (),
    source_name: str = "the source",
) -> ColumnMap:
    """Map the prompt, trace, answer and id columns.

    Explicit names must exist exactly. Missing ones are detected case-insensitively from
    :data:`PROMPT_NAMES`, :data:`TRACE_NAMES`, :data:`ANSWER_NAMES`, :data:`ID_NAMES` in that order,
    never reusing a column already taken (GSM8K's ``answer`` column holds the solution: with
    ``--trace-column answer`` no answer column is detected, and the answer comes from the trace).
    Keep columns must exist; the answer column is kept too.
    """
    available = list(available)
    listing = ", ".join(available) or "(none)"
    lower: dict[str, str] = {}
    for c in available:
        lower.setdefault(c.lower(), c)
    taken: set[str] = set()

    def missing(name: str, flag: str) -> SourceError:
        close = [c for c in available if c.lower() == name.lower()]
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return SourceError(f"Column {name!r} ({flag}) not found in {source_name}. Available columns: {listing}.{hint}")

    def pick(given: str | None, names: tuple[str, ...], flag: str, what: str, required: bool) -> tuple[str | None, bool]:
        if given is not None:
            if given not in available:
                raise missing(given, flag)
            return given, False
        for n in names:
            col = lower.get(n)
            if col is not None and col not in taken:
                return col, True
        if required:
            raise SourceError(
                f"No {what} column found in {source_name} (looked for {', '.join(names)}, any case). "
                f"Available columns: {listing}. Name it with {flag}."
            )
        return None, False

    p, p_auto = pick(prompt, PROMPT_NAMES, "--prompt-column", "prompt", True)
    taken.add(p)
    t, t_auto = pick(trace, TRACE_NAMES, "--trace-column", "trace", True)
    if p == t:
        raise SourceError(
            f"The prompt and trace columns are both {p!r} in {source_name}; name them with --prompt-column "
            "and --trace-column."
        )
    taken.add(t)
    a, a_auto = pick(answer, ANSWER_NAMES, "--answer-column", "answer", False)
    if a is not None:
        taken.add(a)
    id_col = next((lower[n] for n in ID_NAMES if n in lower and lower[n] not in taken), None)
    for k in keep:
        if k not in available:
            raise missing(k, "--keep-column")
    kept = tuple(dict.fromkeys([*keep, *([a] if a is not None else [])]))
    return ColumnMap(
        prompt=p, trace=t, answer=a, id=id_col, keep=kept,
        detected={"prompt": p_auto, "trace": t_auto, "answer": a_auto},
    )


class InvalidRow(Exception):
    """A row that cannot be used; ``reason`` is a short key the build counts (and skips the row).

    Reasons: ``null_prompt``, ``empty_prompt``, ``non_text_prompt``, ``bad_messages``,
    ``null_trace``, ``empty_trace``, ``non_text_trace``.
    """

    def __init__(self, reason: str, message: str, *, row: int | None = None, column: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.row = row
        self.column = column


@dataclass(frozen=True)
class ValidRow:
    row_id: str
    prompt: str | list[dict[str, str]]
    trace: str
    answer: str | None
    keep: dict[str, Any]


def normalize_prompt(value: Any, *, row: int, column: str, source_name: str) -> str | list[dict[str, str]]:
    """A non-empty string, or chat messages ``[{"role", "content"}, ...]`` (roles system, user,
    assistant; at least one user message with text; extra keys are dropped). Raises
    :class:`InvalidRow` otherwise."""
    where = f"{source_name} row {row}, column {column!r}"

    def bad(reason: str, what: str) -> InvalidRow:
        return InvalidRow(reason, f"{where}: {what} ({reason})", row=row, column=column)

    if value is None:
        raise bad("null_prompt", "the prompt is null")
    if isinstance(value, str):
        if not value.strip():
            raise bad("empty_prompt", "the prompt is empty")
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            raise bad("bad_messages", "the prompt is an empty list of messages")
        messages = []
        for j, m in enumerate(value):
            if not isinstance(m, dict):
                raise bad("bad_messages", f"message {j} is a {type(m).__name__}, not a {{'role', 'content'}} object")
            if "role" not in m or "content" not in m:
                sharegpt = " (ShareGPT-style 'from'/'value' messages: convert them to 'role'/'content')" if "from" in m else ""
                raise bad("bad_messages", f"message {j} needs 'role' and 'content'{sharegpt}")
            role, content = m["role"], m["content"]
            if not isinstance(role, str) or role not in CHAT_ROLES:
                raise bad("bad_messages", f"message {j} has role {role!r}; use one of {', '.join(CHAT_ROLES)}")
            if not isinstance(content, str):
                raise bad("bad_messages", f"message {j} has non-text content ({type(content).__name__})")
            messages.append({"role": role, "content": content})
        users = [m for m in messages if m["role"] == "user"]
        if not users:
            raise bad("bad_messages", "the messages have no user message")
        if not any(m["content"].strip() for m in users):
            raise bad("empty_prompt", "every user message is empty")
        return messages
    raise bad("non_text_prompt", f"expected text or chat messages, got {type(value).__name__}")


def _answer_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def validate_row(row: dict[str, Any], cmap: ColumnMap, position: int, source_name: str) -> ValidRow:
    """A usable row, or :class:`InvalidRow`. ``position`` is the 0-based row number in the source;
    it is the row id when there is no id column (or the id is null). The answer is text (numbers
    stringified, ``18.0`` as ``18``; blank or NaN counts as missing)."""
    prompt = normalize_prompt(row.get(cmap.prompt), row=position, column=cmap.prompt, source_name=source_name)
    trace = row.get(cmap.trace)
    where = f"{source_name} row {position}, column {cmap.trace!r}"
    if trace is None:
        raise InvalidRow("null_trace", f"{where}: the trace is null (null_trace)", row=position, column=cmap.trace)
    if not isinstance(trace, str):
        raise InvalidRow(
            "non_text_trace", f"{where}: expected text, got {type(trace).__name__} (non_text_trace)",
            row=position, column=cmap.trace,
        )
    if not trace.strip():
        raise InvalidRow("empty_trace", f"{where}: the trace is empty (empty_trace)", row=position, column=cmap.trace)
    answer = _answer_text(row.get(cmap.answer)) if cmap.answer else None
    rid = row.get(cmap.id) if cmap.id else None
    return ValidRow(
        row_id=str(position) if rid is None else str(rid),
        prompt=prompt,
        trace=trace,
        answer=answer,
        keep={k: row.get(k) for k in cmap.keep},
    )
