"""Reading a source dataset in bounded-memory batches, mapping its columns, validating rows.

Sources: ``.jsonl``/``.ndjson`` (optionally ``.gz``), ``.json`` (a list of objects, or JSON lines),
``.parquet``, ``.csv``, a single ``.arrow`` file (IPC stream or file format), a
``datasets.save_to_disk`` folder (a ``DatasetDict`` folder needs ``--split``), a folder of such
shards, or a hub dataset name (streamed through ``datasets``). Every reader yields lists of row
dicts in source order, one batch at a time, so memory does not grow with the source.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator
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
_SUPPORTED = ".jsonl, .json, .parquet, .csv or .arrow file, a datasets.save_to_disk folder, or a hub dataset name"


@dataclass(frozen=True)
class SourceSpec:
    path: str
    split: str | None = None
    subset: str | None = None
    format: str | None = None


def _suffixes(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def detect_format(spec: SourceSpec) -> str:
    if spec.format:
        if spec.format not in FORMATS:
            raise SourceError(f"--format {spec.format!r}: unknown; use one of {', '.join(FORMATS)}.")
        return spec.format
    path = Path(spec.path)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return "disk"
        return "folder"
    if path.is_file():
        name = _suffixes(path)
        for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".parquet", "parquet"),
                         (".csv", "csv"), (".arrow", "arrow")):
            if name.endswith(ext):
                return fmt
        raise SourceError(f"Unknown source format: {path.name}. Pass a {_SUPPORTED}, or name the format with --format.")
    if "/" in spec.path and not spec.path.startswith((".", "/")) and spec.path.count("/") == 1:
        return "hub"
    raise SourceError(f"Source not found: {spec.path}. Pass a {_SUPPORTED}.")


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline=None)


def _iter_jsonl(path: Path, batch_size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    f = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    with f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SourceError(
                    f"{path.name} line {number}: invalid UTF-8 ({exc.reason} at byte {exc.start}). "
                    "Re-encode the file as UTF-8 or remove the line."
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path.name} line {number}: invalid JSON ({exc.msg}). Fix or remove the line.") from None
            if not isinstance(row, dict):
                raise SourceError(f"{path.name} line {number}: expected a JSON object, got {type(row).__name__}.")
            batch.append(row)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def _iter_json(path: Path, batch_size: int) -> Iterator[list[dict]]:
    with _open_text(path) as f:
        head = f.read(1 << 16).lstrip()
    if not head.startswith("["):
        yield from _iter_jsonl(path, batch_size)  # JSON lines in a .json file
        return
    # A JSON array is loaded whole: such files are small in practice; big data comes as jsonl/parquet.
    try:
        with _open_text(path) as f:
            rows = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path.name}: invalid JSON ({exc}). Fix the file or convert it to jsonl.") from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SourceError(f"{path.name} item {i}: expected a JSON object, got {type(row).__name__}.")
    for i in range(0, len(rows), batch_size):
        yield rows[i: i + batch_size]


def _iter_table_batches(batches: Iterator[pa.RecordBatch], batch_size: int) -> Iterator[list[dict]]:
    pending: list[dict] = []
    for rb in batches:
        pending.extend(rb.to_pylist())
        while len(pending) >= batch_size:
            yield pending[:batch_size]
            pending = pending[batch_size:]
    if pending:
        yield pending


def _arrow_reader(path: Path) -> Iterator[pa.RecordBatch]:
    source = pa.memory_map(str(path), "r")
    try:
        reader = pa.ipc.open_stream(source)
        yield from reader
        return
    except pa.ArrowInvalid:
        pass
    try:
        reader = pa.ipc.open_file(source)
    except pa.ArrowInvalid as exc:
        raise SourceError(f"{path.name}: not an Arrow IPC file ({exc}).") from None
    for i in range(reader.num_record_batches):
        yield reader.get_batch(i)


def _arrow_schema(path: Path) -> pa.Schema:
    source = pa.memory_map(str(path), "r")
    try:
        return pa.ipc.open_stream(source).schema
    except pa.ArrowInvalid:
        try:
            return pa.ipc.open_file(source).schema
        except pa.ArrowInvalid as exc:
            raise SourceError(f"{path.name}: not an Arrow IPC file ({exc}).") from None


def _disk_files(spec: SourceSpec) -> list[Path]:
    root = Path(spec.path)
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        split = spec.split or ("train" if "train" in splits else None)
        if split not in splits:
            raise SourceError(f"{root} holds the splits {', '.join(splits)}: choose one with --split.")
        root = root / split
    state = root / "state.json"
    if state.is_file():
        return [root / f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
    return sorted(root.glob("*.arrow"))


def _folder_files(path: Path) -> tuple[str, list[Path]]:
    for fmt, patterns in (("parquet", ("*.parquet",)), ("arrow", ("*.arrow",)), ("jsonl", ("*.jsonl", "*.jsonl.gz"))):
        files = sorted(f for p in patterns for f in path.glob(p))
        if files:
            return fmt, files
    raise SourceError(f"{path} holds no .parquet, .arrow or .jsonl shards. Pass a {_SUPPORTED}.")


def _hub(spec: SourceSpec) -> Any:
    try:
        import datasets

        return datasets.load_dataset(spec.path, spec.subset, split=spec.split or "train", streaming=True)
    except Exception as exc:  # connection errors come in many types (requests, httpx, hub errors)
        raise SourceError(
            f"Cannot load hub dataset {spec.path!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). "
            "If the hub is unreachable from here, download the data elsewhere and pass a local file "
            "(jsonl, parquet, csv, arrow) or a save_to_disk folder instead."
        ) from None


def _file_batches(fmt: str, path: Path, batch_size: int) -> Iterator[list[dict]]:
    if fmt == "jsonl":
        yield from _iter_jsonl(path, batch_size)
    elif fmt == "json":
        yield from _iter_json(path, batch_size)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        yield from _iter_table_batches(pq.ParquetFile(path).iter_batches(batch_size=batch_size), batch_size)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        try:
            reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 22))
            yield from _iter_table_batches(iter(reader), batch_size)
        except pa.ArrowInvalid as exc:
            raise SourceError(f"{path.name}: cannot parse CSV ({exc}).") from None
    elif fmt == "arrow":
        yield from _iter_table_batches(_arrow_reader(path), batch_size)


def iter_batches(spec: SourceSpec, batch_size: int = 1024) -> Iterator[list[dict]]:
    """Rows as dicts, in source order, ``batch_size`` at a time."""
    fmt = detect_format(spec)
    path = Path(spec.path)
    if fmt == "hub":
        batch: list[dict] = []
        for row in _hub(spec):
            batch.append(row)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
    elif fmt == "disk":
        yield from _iter_table_batches((rb for f in _disk_files(spec) for rb in _arrow_reader(f)), batch_size)
    elif fmt == "folder":
        sub, files = _folder_files(path)
        for f in files:
            yield from _file_batches(sub, f, batch_size)
    else:
        yield from _file_batches(fmt, path, batch_size)


def source_columns(spec: SourceSpec) -> list[str]:
    """Column names, from metadata where the format has it, else from the first rows."""
    fmt = detect_format(spec)
    path = Path(spec.path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    if fmt == "arrow":
        return list(_arrow_schema(path).names)
    if fmt == "disk":
        files = _disk_files(spec)
        if not files:
            raise SourceError(f"{path} holds no Arrow files.")
        return list(_arrow_schema(files[0]).names)
    if fmt == "hub":
        ds = _hub(spec)
        names = getattr(ds, "column_names", None)
        if names:
            return list(names)
    names: dict[str, None] = {}
    for batch in iter_batches(spec, 64):
        for row in batch:
            names.update(dict.fromkeys(row))
        break
    return list(names)


def count_rows(spec: SourceSpec) -> int | None:
    """The number of rows when it is cheap to know (for the progress bar's ETA)."""
    fmt = detect_format(spec)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(spec.path).metadata.num_rows
        if fmt == "disk":
            return sum(sum(rb.num_rows for rb in _arrow_reader(f)) for f in _disk_files(spec))
    except (OSError, pa.ArrowInvalid):
        return None
    return None


def source_fingerprint(spec: SourceSpec) -> dict[str, Any]:
    """Cheap, stable identity of the source: size, mtime and a hash of (at most) 2 MiB of content."""
    path = Path(spec.path)
    if not path.exists():
        return {"kind": "hub", "path": spec.path, "split": spec.split, "subset": spec.subset}
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    size = 0
    for f in files:
        n = f.stat().st_size
        size += n
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{n}".encode())
        with open(f, "rb") as fh:
            if n <= 64 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(n - (1 << 20))
                h.update(fh.read(1 << 20))
    return {"kind": "local", "path": os.path.abspath(spec.path), "bytes": size, "files": len(files), "sha256": h.hexdigest()}


# ---------------------------------------------------------------------------------------------
# Columns and rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnMap:
    prompt: str
    trace: str
    answer: str | None
    id: str | None
    keep: tuple[str, ...]
    detected: dict[str, bool]


def resolve_columns(
    available: list[str],
    *,
    prompt: str | None = None,
    trace: str | None = None,
    answer: str | None = None,
    keep: tuple[str, ...] | list[str] = (),
    source_name: str = "the source",
) -> ColumnMap:
    listing = ", ".join(available) or "(none)"
    lower = {c.lower(): c for c in available}

    def pick(given: str | None, names: tuple[str, ...], flag: str, required: bool) -> tuple[str | None, bool]:
        if given is not None:
            if given not in available:
                raise SourceError(f"Column {given!r} ({flag}) not found in {source_name}. Available columns: {listing}.")
            return given, False
        for n in names:
            if n in lower:
                return lower[n], True
        if required:
            raise SourceError(
                f"No {flag[2:-7]} column found in {source_name} (looked for {', '.join(names)}). "
                f"Available columns: {listing}. Name it with {flag}."
            )
        return None, False

    p, p_auto = pick(prompt, PROMPT_NAMES, "--prompt-column", True)
    t, t_auto = pick(trace, TRACE_NAMES, "--trace-column", True)
    a, a_auto = pick(answer, ANSWER_NAMES, "--answer-column", False)
    if p == t:
        raise SourceError(f"The prompt and trace columns are both {p!r}; name them with --prompt-column and --trace-column.")
    for k in keep:
        if k not in available:
            raise SourceError(f"Column {k!r} (--keep-column) not found in {source_name}. Available columns: {listing}.")
    id_col = next((lower[n] for n in ID_NAMES if n in lower), None)
    return ColumnMap(
        prompt=p, trace=t, answer=a, id=id_col, keep=tuple(dict.fromkeys(keep)),
        detected={"prompt": p_auto, "trace": t_auto, "answer": a_auto},
    )


class InvalidRow(Exception):
    """A row that cannot be used; ``reason`` is a short key counted in the manifest."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ValidRow:
    row_id: str
    prompt: str | list[dict[str, str]]
    trace: str
    answer: str | None
    keep: dict[str, Any]


def normalize_prompt(value: Any, *, row: int, column: str, source_name: str) -> str | list[dict[str, str]]:
    where = f"{source_name} row {row}, column {column!r}"
    if value is None:
        raise InvalidRow("null_prompt", f"{where}: the prompt is null")
    if isinstance(value, str):
        if not value.strip():
            raise InvalidRow("empty_prompt", f"{where}: the prompt is empty")
        return value
    if isinstance(value, list):
        messages = []
        for j, m in enumerate(value):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise InvalidRow("bad_messages", f"{where}: message {j} needs 'role' and 'content'")
            if not isinstance(m["role"], str) or not isinstance(m["content"], str):
                raise InvalidRow("bad_messages", f"{where}: message {j} has a non-text role or content")
            messages.append({"role": m["role"], "content": m["content"]})
        if not any(m["role"] == "user" for m in messages):
            raise InvalidRow("bad_messages", f"{where}: the messages have no user message")
        return messages
    raise InvalidRow("non_text_prompt", f"{where}: expected text or chat messages, got {type(value).__name__}")


def validate_row(row: dict[str, Any], cmap: ColumnMap, position: int, source_name: str) -> ValidRow:
    prompt = normalize_prompt(row.get(cmap.prompt), row=position, column=cmap.prompt, source_name=source_name)
    trace = row.get(cmap.trace)
    where = f"{source_name} row {position}, column {cmap.trace!r}"
    if trace is None:
        raise InvalidRow("null_trace", f"{where}: the trace is null")
    if not isinstance(trace, str):
        raise InvalidRow("non_text_trace", f"{where}: expected text, got {type(trace).__name__}")
    if not trace.strip():
        raise InvalidRow("empty_trace", f"{where}: the trace is empty")
    answer = row.get(cmap.answer) if cmap.answer else None
    if answer is not None and not isinstance(answer, str):
        answer = json.dumps(answer) if isinstance(answer, (list, dict)) else str(answer)
    rid = row.get(cmap.id) if cmap.id else None
    return ValidRow(
        row_id=str(position) if rid is None else str(rid),
        prompt=prompt,
        trace=trace,
        answer=answer,
        keep={k: row.get(k) for k in cmap.keep},
    )
