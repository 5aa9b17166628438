"""``reschedule``: a new schedule on a built curriculum's rows, without tokenizing again.

A curriculum's row shards (prompts, traces, token ids, the allowed cut boundaries) do not depend on
the schedule; only its cut table does. Rescheduling writes a new cut table and manifest beside the
parent's row shards::

    parent/  rows-*.arrow  cuts-*.arrow  manifest.json
    child/   rows-*.arrow (hard links to the parent's)  cuts-*.arrow (new)  manifest.json (new, "parent")

What may change: the schedule (kind, direction, stages and the curve's parameters), the horizon
(``total_steps``), the measure, and the unit where the parent's stored boundaries hold every boundary
of the new one (:func:`rtpo_data.cuts.narrows`: any unit from ``token``; ``line``, ``sentence`` and
``paragraph`` from ``word``; ...). A new unit rewrites the row shards with the narrower boundaries
(their other columns copied as they are). Everything else (source, tokenizer, chat template,
placement, answer rule) decides the row shards, and is refused: build instead.

The result is the curriculum ``build`` makes with the same options: the same cut shards, byte for
byte, and the same manifest apart from its timings and ``parent`` (tested for schedules, stage counts
and units). Row shards are hard-linked where the filesystem allows; across filesystems the manifest
refers to the parent's files by path, with their sizes and checksums, so a parent moved, deleted or
changed is detected (on opening, and by ``inspect --verify``).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rtpo_data import __version__
from rtpo_data.artifact import (
    FORMAT_VERSION,
    Manifest,
    ShardWriter,
    abort_writers,
    cuts_schema,
    shard_infos_to_json,
    write_manifest,
)
from rtpo_data.build import (
    BuildResult,
    building,
    checks_section,
    kept_fraction_sums,
    percentiles,
    sample_checks,
    schedule_section,
    stage_means,
)
from rtpo_data.config import RESCHEDULE_OPTIONS, SCHEDULE_OPTIONS, BuildConfig
from rtpo_data.curriculum import Curriculum
from rtpo_data.cuts import CutUnit, cuts_from_boundaries, narrow_boundaries, narrows
from rtpo_data.errors import ConfigError, RtpoDataError
from rtpo_data.render import PromptTable
from rtpo_data.schedule import stage_fractions
from rtpo_data.tokenizer import load_tokenizer, remembered_backend, tokenizer_fingerprints


def reschedule(source: str | Path, out: str | Path, *, overwrite: bool = False, tokenizer: str | None = None,
               **changes: Any) -> BuildResult:
    """Write a curriculum at ``out`` with ``source``'s rows and a new schedule; see the module docstring.

    ``changes`` are :class:`~rtpo_data.config.BuildConfig` options from :data:`~rtpo_data.config.RESCHEDULE_OPTIONS`. Given any
    schedule option, the schedule is replaced as a whole (options not given take their defaults);
    given none, ``source``'s schedule is kept. ``tokenizer`` points to the curriculum's tokenizer where
    the name it was built with does not load here (the build's drift sample is checked again on the
    new cuts); it must be the same tokenizer.
    """
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    refused = sorted(set(changes) - set(RESCHEDULE_OPTIONS))
    if refused:
        raise ConfigError(
            [f"{name}: reschedule changes only the schedule, stages, horizon, unit and measure; {name} decides "
             "the row shards (tokenization, chat template or source), so build with it instead"
             for name in refused], what="reschedule")
    parent = Curriculum.open(source)
    config = _config(parent.manifest, out, overwrite, changes)
    old_unit, new_unit = CutUnit.parse(parent.manifest.unit), CutUnit.parse(config.unit)
    if not narrows(old_unit, new_unit):
        raise ConfigError(
            f"unit={config.unit!r}: {source} was cut on {parent.manifest.unit!r} boundaries, which do not hold "
            f"every {config.unit!r} boundary. Build with --unit {config.unit} instead (a curriculum built with "
            "--unit token can be rescheduled to any unit).", what="reschedule")
    if out.resolve() == source.resolve():
        raise RtpoDataError(f"reschedule {source} --out {out}: write the new curriculum to another folder.")
    if out.exists() and not overwrite:
        raise RtpoDataError(f"Output {out} exists. Pass --overwrite to replace it (only once the new one is complete).")
    backend = _backend(parent, tokenizer) if parent.manifest.checks.get("sample_rows") else None

    with building(out, overwrite) as tmp:
        written = _write(parent, config, old_unit != new_unit, backend, tmp)
        manifest = Manifest.from_dict({
            **written,
            "schedule": schedule_section(config),
            "build_seconds": round(time.perf_counter() - started, 3),
        })
        write_manifest(tmp, manifest)
    return BuildResult(path=out, manifest=manifest, seconds=time.perf_counter() - started)


def _config(manifest: Manifest, out: Path, overwrite: bool, changes: dict[str, Any]) -> BuildConfig:
    """The parent's build options with ``changes``; a new schedule replaces the old one whole."""
    options = dict(manifest.config)
    if any(name in changes for name in SCHEDULE_OPTIONS):
        defaults = {f.name: f.default for f in dataclasses.fields(BuildConfig)}
        options.update({name: defaults[name] for name in SCHEDULE_OPTIONS})
    options.update(changes, out=str(out), overwrite=overwrite)
    return BuildConfig.from_dict(options)


def _backend(parent: Curriculum, tokenizer: str | None) -> Any:
    """The curriculum's tokenizer (its Rust backend), for the drift sample; refused if it is another.

    A tokenizer this machine has loaded before is read back from rtpo-data's cache (a fraction of a
    second; its hash is the manifest's); otherwise it is loaded through transformers as the build
    loaded it (a few seconds, mostly the import).
    """
    built = parent.manifest.tokenizer
    name = tokenizer or built["name"]
    backend = remembered_backend(built.get("tokenizer_sha256") or "")
    if backend is not None:
        return backend
    try:
        tok = load_tokenizer(name)
    except RtpoDataError as exc:
        raise RtpoDataError(
            f"{exc} The drift sample of {parent.path} is checked again on the new cuts with the tokenizer it was "
            "built with: pass --tokenizer PATH to where it is on this machine."
        ) from None
    hashes, template = tokenizer_fingerprints(tok)
    if built.get("tokenizer_sha256") not in hashes or built.get("chat_template_sha256") != template:
        raise RtpoDataError(
            f"The tokenizer {name!r} is not the one {parent.path} was built with (its fingerprint or chat template "
            "differs). A curriculum for another tokenizer needs its traces tokenized again: build instead."
        )
    return tok.backend_tokenizer


def _write(parent: Curriculum, config: BuildConfig, new_unit: bool, backend: Any, tmp: Path) -> dict[str, Any]:
    manifest = parent.manifest
    fractions = stage_fractions(config.schedule_config(), config.stages)
    k_stages = len(fractions)
    unit = CutUnit.parse(config.unit)
    rows_table = parent.table()
    cuts_writer = ShardWriter(tmp, "cuts", cuts_schema(k_stages), config.shard_rows)
    rows_writer = ShardWriter(tmp, "rows", rows_table.schema, config.shard_rows) if new_unit else None
    sample = int(manifest.checks.get("sample_rows") or 0)
    sample_batches: list[pa.RecordBatch] = []
    sample_cuts: list[tuple[np.ndarray, np.ndarray]] = []
    hint_sums = np.zeros(k_stages, dtype=np.int64)
    kept_sums = np.zeros(k_stages, dtype=np.int64)
    done = 0
    # The new shards end where the parent's row shards do (their record batches never span two).
    ends = set(np.cumsum([info["rows"] for info in manifest.shards["rows"]]).tolist())
    try:
        for batch in rows_table.to_batches():
            n_tokens = _list_lengths(batch.column("trace_ids"))
            bounds, offsets = _ragged(batch.column("boundaries"))
            chars, _ = _ragged(batch.column("boundary_chars"))
            if new_unit:
                bounds, chars, offsets = narrow_boundaries(batch.column("trace").to_pylist(), bounds, chars, offsets, unit)
                batch = _with_boundaries(batch, bounds, chars, offsets)
                rows_writer.write(batch)
            tokens, hint_chars = cuts_from_boundaries(bounds, chars, offsets, n_tokens, fractions, config.measure)
            cuts_writer.write(pa.RecordBatch.from_arrays(
                [pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), pa.int32()), k_stages) for a in (tokens, hint_chars)],
                schema=cuts_schema(k_stages)))
            hint_sums += tokens.sum(axis=0, dtype=np.int64)
            kept_sums += kept_fraction_sums(tokens, n_tokens)
            if done < sample:
                sample_batches.append(batch)
                sample_cuts.append((tokens, hint_chars))
            done += batch.num_rows
            if done in ends:
                for writer in (rows_writer, cuts_writer):
                    if writer is not None:
                        writer.end_shard()
        rows_infos = shard_infos_to_json(rows_writer.finish()) if rows_writer else _reuse_rows(parent, tmp)
        cuts_infos = cuts_writer.finish()
    except BaseException:
        abort_writers(rows_writer, cuts_writer)
        raise

    checks = checks_section(0, *(np.zeros(k_stages, np.int64),) * 3)
    if sample:
        # The build checks the first check_sample rows it keeps: the same rows, at the new cuts.
        table = PromptTable(pa.Table.from_batches(sample_batches).slice(0, sample),
                            [np.concatenate([c[0] for c in sample_cuts])[:sample]],
                            [np.concatenate([c[1] for c in sample_cuts])[:sample]],
                            k_stages, config.placement, config.hint_label)
        checks = checks_section(sample, *sample_checks(table, sample, backend))
    stats = dict(manifest.stats)
    stats.update(
        trace_tokens=percentiles(parent.lengths("trace_ids").astype(np.int32)),
        prompt_tokens=percentiles(parent.lengths("bare_ids").astype(np.int32)),
        **stage_means(hint_sums, kept_sums, len(parent)),
    )
    return {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "num_rows": len(parent),
        "config": config.to_dict(),
        "source": manifest.source,
        "tokenizer": manifest.tokenizer,
        "prompt": manifest.prompt,
        "unit": config.unit,
        "measure": config.measure,
        "keep_columns": manifest.keep_columns,
        "stats": {key: stats[key] for key in manifest.stats},
        "checks": checks,
        "shards": {"rows": rows_infos, "cuts": shard_infos_to_json(cuts_infos)},
        "parent": {
            "path": str(parent.path.resolve()),
            "fingerprint": parent.fingerprint,
            "rows": "rewritten" if new_unit else ("linked" if all("path" not in i for i in rows_infos) else "referenced"),
        },
    }


def _reuse_rows(parent: Curriculum, tmp: Path) -> list[dict[str, Any]]:
    """Hard-link the parent's row shards into ``tmp``; where the filesystem cannot, refer to them."""
    infos = []
    for info in parent.manifest.shards["rows"]:
        path = parent.manifest.shard_path(parent.path, info).resolve()
        try:
            os.link(path, tmp / info["name"])
            infos.append({key: info[key] for key in ("name", "rows", "bytes", "sha256")})
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            infos.append({key: info[key] for key in ("name", "rows", "bytes", "sha256")} | {"path": str(path)})
    return infos


def _list_lengths(column: pa.ListArray) -> np.ndarray:
    offsets = column.offsets.to_numpy()
    return np.diff(offsets).astype(np.int64)


def _ragged(column: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (flat values, row offsets from 0)."""
    offsets = column.offsets.to_numpy().astype(np.int64)
    return column.flatten().to_numpy(), offsets - offsets[0]


def _with_boundaries(batch: pa.RecordBatch, bounds: np.ndarray, chars: np.ndarray, offsets: np.ndarray) -> pa.RecordBatch:
    def list_array(values: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, pa.int32()))

    columns = {name: batch.column(name) for name in batch.schema.names}
    columns["boundaries"], columns["boundary_chars"] = list_array(bounds), list_array(chars)
    return pa.RecordBatch.from_pydict(columns, schema=batch.schema)
