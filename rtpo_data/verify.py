"""``verify(path)``: prove a curriculum is intact and every hint exact, row by row.

Checks, each reported separately with the first failing (row, stage) pairs:

- ``checksums``: every shard's sha256 equals the manifest's (names the damaged file);
- ``invariants``: boundaries run from 0 to the trace's length and increase; every cut is an allowed
  boundary with the matching character offset; hints never grow along a down schedule (never shrink
  along an up one); with the default endpoints, stage 0 is the whole trace and the last stage empty;
- ``token_exact``: decoding ``prompt_ids(i, s)`` gives ``prompt(i, s)`` (the special tokens the
  tokenizer adds by itself aside);
- ``drift``: tokenizing ``prompt(i, s)`` as a trainer does gives ``prompt_ids(i, s)``; a rate, not a
  failure, for the ``token`` unit, whose cuts inside words can re-merge;
- ``leaks``: hints whose final statement states the gold answer. A leak is a judgment about content
  made by a heuristic (it has false positives: docs/exactness.md), so it is reported as a rate with
  the rows it flags, and fails the run only above ``max_leak_rate`` (default
  :data:`DEFAULT_MAX_LEAK_RATE`, ``inspect --verify --max-leak-rate``). The other checks are facts:
  any failure fails the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtpo_data.artifact import TABLES, Manifest, sha256_file
from rtpo_data.checks import leaks_answer
from rtpo_data.curriculum import Curriculum
from rtpo_data.errors import RtpoDataError
from rtpo_data.tokenizer import load_tokenizer

MAX_EXAMPLES = 5
MAX_ROWS = 1000  # flagged row ids listed per check (the count is always exact)
DEFAULT_MAX_LEAK_RATE = 0.01  # leaking hints / hints checked above which --verify fails


@dataclass
class Check:
    name: str
    checked: int = 0
    failed: int = 0
    examples: list[str] = field(default_factory=list)
    fatal: bool = True  # a failure makes the curriculum invalid (drift on the token unit does not)
    note: str = ""
    max_rate: float | None = None  # fails only above this rate (None: any failure fails, if fatal)
    rows: list[str] = field(default_factory=list)  # ids of the rows with a failure (up to MAX_ROWS)
    rows_failed: int = 0
    _last_row: str | None = field(default=None, repr=False)  # rows are checked in order, stages together

    def fail(self, message: str, row_id: str | None = None) -> None:
        self.failed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(message)
        if row_id is not None and row_id != self._last_row:
            self.rows_failed += 1
            self._last_row = row_id
            if len(self.rows) < MAX_ROWS:
                self.rows.append(row_id)

    @property
    def ok(self) -> bool:
        if not self.fatal:
            return True
        return self.failed == 0 if self.max_rate is None else self.rate <= self.max_rate

    @property
    def rate(self) -> float:
        return self.failed / self.checked if self.checked else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "checked": self.checked,
            "failed": self.failed,
            "rate": round(self.rate, 6),
            "examples": self.examples,
            "note": self.note,
            **({"max_rate": self.max_rate, "rows_failed": self.rows_failed, "rows": self.rows}
               if self.max_rate is not None else {}),
        }


@dataclass
class VerifyReport:
    path: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


def verify_checksums(path: Path, manifest: Manifest) -> Check:
    check = Check("checksums")
    for table in TABLES:
        for info in manifest.shards.get(table, []):
            check.checked += 1
            shard = manifest.shard_path(path, info)
            if not shard.is_file():
                where = f" (in the parent curriculum {shard.parent}, moved or deleted)" if info.get("path") else ""
                check.fail(f"{info['name']}: missing{where}. Rebuild the curriculum or restore the file.")
            elif shard.stat().st_size != info["bytes"]:
                check.fail(f"{info['name']}: {shard.stat().st_size} bytes, the manifest says {info['bytes']} (truncated or replaced).")
            elif sha256_file(shard) != info["sha256"]:
                check.fail(f"{info['name']}: sha256 differs from the manifest (the file is damaged). Rebuild or restore it.")
    return check


def verify(path: str | Path, *, tokenizer: Any = None, batch_rows: int = 256,
           max_leak_rate: float = DEFAULT_MAX_LEAK_RATE) -> VerifyReport:
    """Run every check on every row. ``tokenizer`` defaults to the one the curriculum names; the
    leak check fails only when more than ``max_leak_rate`` of the hints leak."""
    if not 0 <= max_leak_rate <= 1:
        raise RtpoDataError(f"--max-leak-rate {max_leak_rate}: give a fraction of hints between 0 and 1, e.g. 0.01.")
    from rtpo_data.artifact import read_manifest

    path = Path(path)
    manifest = read_manifest(path)
    checksums = verify_checksums(path, manifest)
    if checksums.failed:
        return VerifyReport(str(path), [checksums])
    cur = Curriculum.open(path)
    tok = tokenizer if tokenizer is not None else load_tokenizer(manifest.tokenizer["name"])
    if manifest.tokenizer.get("tokenizer_sha256"):
        import hashlib

        actual = hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()
        if actual != manifest.tokenizer["tokenizer_sha256"]:
            raise RtpoDataError(
                f"The tokenizer {manifest.tokenizer['name']!r} differs from the one {path} was built with "
                "(its fingerprint changed). Verify with the same tokenizer, or rebuild."
            )
    backend = tok.backend_tokenizer
    special = list(manifest.tokenizer["special_prefix_ids"])
    k_stages = cur.num_stages
    direction = manifest.schedule.get("direction", "down")
    fractions = cur.stage_fractions
    full_first = fractions[0] == 1.0
    empty_last = fractions[-1] == 0.0

    invariants, exact = Check("invariants"), Check("token_exact")
    drift = Check("drift", fatal=manifest.unit != "token")
    if not drift.fatal:
        drift.note = "the token unit cuts inside words, where BPE merges can differ; reported as a rate"
    leaks = Check("leaks", max_rate=max_leak_rate, note=f"fails above {max_leak_rate:.2%}")
    rows = cur.table()
    for start in range(0, len(cur), batch_rows):
        idx = np.arange(start, min(start + batch_rows, len(cur)))
        t = rows.slice(start, len(idx))
        traces = t.column("trace").to_pylist()
        trace_ids = t.column("trace_ids").to_pylist()
        bounds = t.column("boundaries").to_pylist()
        bchars = t.column("boundary_chars").to_pylist()
        answers = t.column("answer").to_pylist()
        row_ids = t.column("row_id").to_pylist()
        tok_cut, char_cut = [], []
        for s in range(k_stages):
            tk, ch = cur.cuts(idx, s)
            tok_cut.append(tk)
            char_cut.append(ch)
        tok_cut, char_cut = np.stack(tok_cut, 1), np.stack(char_cut, 1)

        where: list[tuple[int, int, int]] = []
        for r in range(len(idx)):
            i, rid = int(idx[r]), row_ids[r]
            invariants.checked += 1
            b, bc, n = bounds[r], bchars[r], len(trace_ids[r])
            problems = []
            if not b or b[0] != 0 or b[-1] != n or any(x >= y for x, y in zip(b, b[1:])):
                problems.append("boundaries do not run strictly from 0 to the trace length")
            if not bc or bc[-1] != len(traces[r]) or any(x > y for x, y in zip(bc, bc[1:])):
                problems.append("boundary offsets do not run from 0 to the trace's end")
            allowed = dict(zip(b, bc))
            for s in range(k_stages):
                k, c = int(tok_cut[r, s]), int(char_cut[r, s])
                if allowed.get(k) != c:
                    problems.append(f"stage {s}: cut ({k} tokens, {c} chars) is not an allowed boundary")
            steps = np.diff(tok_cut[r])
            if (direction == "down" and (steps > 0).any()) or (direction == "up" and (steps < 0).any()):
                problems.append(f"hint length is not monotone along the schedule: {tok_cut[r].tolist()}")
            if full_first and tok_cut[r, 0] != n:
                problems.append(f"stage 0 keeps {tok_cut[r, 0]} of {n} tokens, not the whole trace")
            if empty_last and tok_cut[r, -1] != 0:
                problems.append(f"the last stage keeps {tok_cut[r, -1]} tokens, not an empty hint")
            for p in problems:
                invariants.fail(f"row {i} (id {rid}): {p}")
            if problems:
                continue
            # One check per distinct cut: stages that share a cut render the same prompt.
            for k in sorted(set(tok_cut[r].tolist())):
                s = int(np.flatnonzero(tok_cut[r] == k)[0])
                where.append((r, s, k))
        if where:
            pairs_idx = np.asarray([idx[r] for r, _, _ in where])
            pairs_stage = np.asarray([s for _, s, _ in where])
            prompts = cur.render(pairs_idx, pairs_stage)
            ids = cur.render(pairs_idx, pairs_stage, "arrays")
            encs = backend.encode_batch(prompts, add_special_tokens=True)
            for (r, s, k), prompt, pid, enc in zip(where, prompts, ids, encs):
                i, rid = int(idx[r]), row_ids[r]
                pid = pid.tolist()
                exact.checked += 1
                body = pid[len(special):] if special and pid[: len(special)] == special else pid
                decoded = tok.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
                if decoded != prompt:
                    exact.fail(f"row {i} (id {rid}) stage {s}: decoding prompt_ids does not give the prompt text")
                drift.checked += 1
                if list(enc.ids) != pid:
                    drift.fail(f"row {i} (id {rid}) stage {s} ({k} hint tokens): re-tokenized prompt differs")
                if k:
                    leaks.checked += 1
                    hint = traces[r][: int(char_cut[r, s])]
                    if leaks_answer(hint, answers[r]):
                        leaks.fail(f"row {i} (id {rid}) stage {s}: the hint ends by stating the answer {answers[r]!r}",
                                   row_id=rid)
    return VerifyReport(str(path), [checksums, invariants, exact, drift, leaks])
