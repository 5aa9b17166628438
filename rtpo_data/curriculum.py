"""``Curriculum``: the built artifact, opened for random access by (row, stage) or (row, step).

Opening memory-maps the shards (nothing is copied, whatever the number of rows); rendering a
prompt is string concatenation and slicing by stored offsets, never tokenizing or decoding::

    prompt(i, s)     = bare[i]                                        if hint_tokens[i, s] == 0
                     = prefix[i] + trace[i][:hint_chars[i, s]] + suffix[i]   otherwise
    prompt_ids(i, s) = bare_ids[i]                                    if hint_tokens[i, s] == 0
                     = prefix_ids[i] + trace_ids[i][:hint_tokens[i, s]] + suffix_ids[i]

A ``Curriculum`` pickles as its path and reopens its memory maps on the other side, so it can be
handed to dataloader workers, Ray actors and other processes.
"""

from __future__ import annotations

import bisect
import json
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from rtpo_data.artifact import TABLES, Manifest, open_shard, read_manifest
from rtpo_data.errors import ArtifactError, RtpoDataError
from rtpo_data.schedule import Clock

if TYPE_CHECKING:
    from rtpo_data.view import CurriculumView

OUTPUTS = ("text", "messages", "ids")


class _Located:
    """Where rows ``idx`` lie among chunks (chunk ``c`` holds rows ``starts[c]:starts[c + 1]``),
    computed once per batch and shared by every column with that chunk layout (all columns of the
    row table share one: their chunks are the shards' record batches).

    ``groups`` holds, per chunk touched, ``(chunk, positions in idx, rows within the chunk)``.
    """

    def __init__(self, starts: np.ndarray, idx: np.ndarray) -> None:
        self.idx = idx
        self.chunk = np.searchsorted(starts, idx, side="right") - 1
        order = np.argsort(self.chunk, kind="stable")
        ordered = self.chunk[order]
        bounds = (np.flatnonzero(np.diff(ordered)) + 1).tolist()
        self.groups: list[tuple[int, np.ndarray, np.ndarray]] = []
        if len(idx):
            for a, b in zip([0, *bounds], [*bounds, len(idx)]):
                c, positions = int(ordered[a]), order[a:b]
                self.groups.append((c, positions, idx[positions] - starts[c]))


class _Ragged:
    """One string or ``list<int32>`` column of the row shards, read row by row in O(rows asked).

    ``pyarrow.ChunkedArray.take`` concatenates every chunk before it gathers (pyarrow 26), which
    costs O(rows in the curriculum) per call on a curriculum of many record batches; this reads
    each row straight from the memory map by its offsets instead. Built on first use of a column.
    """

    def __init__(self, column: pa.ChunkedArray) -> None:
        chunks = column.chunks
        self.starts = np.cumsum([0, *(len(c) for c in chunks)]).astype(np.int64)
        self.is_text = pa.types.is_string(column.type)
        self.offsets: list[np.ndarray] = []
        self.data: list[Any] = []
        for c in chunks:
            if self.is_text:
                buffers = c.buffers()
                self.offsets.append(np.frombuffer(buffers[1], dtype=np.int32)[c.offset: c.offset + len(c) + 1])
                self.data.append(memoryview(buffers[2]) if buffers[2] is not None else memoryview(b""))
            else:
                self.offsets.append(c.offsets.to_numpy())
                self.data.append(c.values.to_numpy(zero_copy_only=True))

    def spans(self, loc: _Located) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: its chunk, and where its value begins and ends in that chunk's data."""
        begin = np.empty(len(loc.idx), dtype=np.int64)
        end = np.empty(len(loc.idx), dtype=np.int64)
        for c, m, local in loc.groups:
            begin[m], end[m] = self.offsets[c][local], self.offsets[c][local + 1]
        return loc.chunk, begin, end

    def texts(self, loc: _Located, max_chars: np.ndarray | None = None) -> list[str]:
        """The strings of rows ``loc.idx``; with ``max_chars``, only their first ``max_chars[r]`` characters.

        Only the bytes of the prefix asked for are decoded. The first ``c`` bytes decode to ``c``
        characters exactly when they are all ASCII (the common case); otherwise the first ``c``
        characters lie in the first ``4 * c`` bytes (a character is at most 4 bytes of UTF-8), which
        are decoded and sliced. ``"ignore"`` only ever drops a character split by the byte cut, and
        that character lies past the ones returned.
        """
        chunk, begin, end = self.spans(loc)
        data = self.data
        if max_chars is None:
            return [str(data[c][b:e], "utf-8") for c, b, e in zip(chunk.tolist(), begin.tolist(), end.tolist())]
        out = []
        for c, b, e, n in zip(chunk.tolist(), begin.tolist(), end.tolist(), np.asarray(max_chars).tolist()):
            text = str(data[c][b:min(e, b + n)], "utf-8", "ignore")
            if len(text) != n:
                text = str(data[c][b:min(e, b + 4 * n)], "utf-8", "ignore")[:n]
            out.append(text)
        return out

    def ids(self, loc: _Located) -> list[np.ndarray]:
        """The token ids of rows ``loc.idx``: read-only views over the memory map, no copy."""
        chunk, begin, end = self.spans(loc)
        return [self.data[c][b:e] for c, b, e in zip(chunk.tolist(), begin.tolist(), end.tolist())]

    # One row at a time, for the per-row methods: no NumPy arrays are built, only the two offsets
    # are read (``ndarray.item`` returns Python ints without making NumPy scalars).

    def text_one(self, c: int, local: int) -> str:
        o = self.offsets[c]
        return str(self.data[c][o.item(local): o.item(local + 1)], "utf-8")

    def prefix_one(self, c: int, local: int, n: int) -> str:
        """The first ``n`` characters of one row's text (see :meth:`texts`)."""
        o = self.offsets[c]
        b, e = o.item(local), o.item(local + 1)
        data = self.data[c]
        text = str(data[b:min(e, b + n)], "utf-8", "ignore")
        if len(text) != n:
            text = str(data[b:min(e, b + 4 * n)], "utf-8", "ignore")[:n]
        return text

    def ids_one(self, c: int, local: int) -> np.ndarray:
        o = self.offsets[c]
        return self.data[c][o.item(local): o.item(local + 1)]

    def lengths(self) -> np.ndarray:
        """Every row's length (characters' bytes for text, ids for lists), from the offsets alone."""
        if not self.offsets:
            return np.zeros(0, np.int64)
        return np.concatenate([np.diff(o) for o in self.offsets]).astype(np.int64)


class Curriculum:
    """A built curriculum, memory-mapped. See the module docstring for what each method renders."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path)
        self.num_stages: int = self.manifest.num_stages
        self.stage_fractions: list[float] = self.manifest.stage_fractions
        tables: dict[str, list[pa.Table]] = {}
        for name in TABLES:
            infos = self.manifest.shards.get(name, [])
            tables[name] = [open_shard(self.path / info["name"], info["bytes"]) for info in infos]
            for table, info in zip(tables[name], infos):
                if table.num_rows != info["rows"]:
                    raise ArtifactError(
                        f"Shard {info['name']} in {self.path} is damaged: {table.num_rows} rows, the manifest "
                        f"says {info['rows']}. Rebuild the curriculum."
                    )
        self._rows = pa.concat_tables(tables["rows"]) if tables["rows"] else None
        if self._rows is None or self._rows.num_rows != self.manifest.num_rows:
            raise ArtifactError(f"{self.path}: the row shards do not add up to num_rows. Rebuild the curriculum.")
        # The cut table as one (rows x stages) NumPy view per record batch, zero-copy over the memory map.
        self._cut_tokens = [self._fixed(c) for t in tables["cuts"] for c in t.column("hint_tokens").chunks]
        self._cut_chars = [self._fixed(c) for t in tables["cuts"] for c in t.column("hint_chars").chunks]
        sizes = [len(x) for x in self._cut_tokens]
        self._cut_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if self._cut_starts[-1] != len(self):
            raise ArtifactError(f"{self.path}: the cut shards do not add up to num_rows. Rebuild the curriculum.")
        self.kept_columns: list[str] = list(self.manifest.keep_columns)
        self._ragged: dict[str, _Ragged] = {}  # filled on first use; opening stays O(1)
        self._lengths: dict[str, np.ndarray] = {}
        # For the per-row methods: where each record batch starts, as Python lists for bisect (one
        # entry per record batch, not per row), and the row count as a plain int.
        self._n = int(self.manifest.num_rows)
        self._row_starts = np.cumsum([0, *(len(c) for c in self._rows.column(0).chunks)]).tolist()
        self._cut_starts_list = self._cut_starts.tolist()
        self._placement = self.manifest.prompt["placement"]
        self._hint_label = self.manifest.prompt.get("hint_label") or ""

    def _fixed(self, chunk: pa.FixedSizeListArray) -> np.ndarray:
        k = self.num_stages
        return chunk.values.to_numpy(zero_copy_only=True)[chunk.offset * k: (chunk.offset + len(chunk)) * k].reshape(-1, k)

    # -- construction & pickling ------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> Curriculum:
        return cls(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Curriculum, (str(self.path),))

    def __len__(self) -> int:
        return int(self.manifest.num_rows)

    def __repr__(self) -> str:
        return f"Curriculum({str(self.path)!r}, rows={len(self)}, stages={self.num_stages})"

    @property
    def fingerprint(self) -> str:
        """Identity of the content: a hash of the shards' sha256s from the manifest (no data is read)."""
        import hashlib

        shas = [s["sha256"] for table in TABLES for s in self.manifest.shards.get(table, [])]
        return hashlib.sha256("".join(shas).encode()).hexdigest()[:32]

    @property
    def total_steps(self) -> int | None:
        return self.manifest.total_steps

    # -- the schedule clock --------------------------------------------------------------------------

    def clock(self, total_steps: int | None = None) -> Clock:
        """The schedule's clock over ``total_steps`` steps (default: the build's ``--total-steps``).

        Trainers choose ``total_steps`` with :func:`rtpo_data.schedule.resolve_horizon`.
        """
        total = total_steps if total_steps is not None else self.total_steps
        if total is None:
            raise RtpoDataError(
                f"{self.path} was built without --total-steps, so the schedule's horizon is unknown: "
                "pass total_steps= (the number of training steps) or rebuild with --total-steps."
            )
        return Clock(tuple(self.stage_fractions), total)

    def stage_at(self, step: int, total_steps: int | None = None) -> int:
        """The stage in force at training ``step`` (0-based): ``self.clock(total_steps).stage_at(step)``."""
        return self.clock(total_steps).stage_at(step)

    # -- single rows ---------------------------------------------------------------------------------

    def _check_index(self, i: int) -> int:
        n = self._n
        i = operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for a curriculum of {n} rows")
        return i if i >= 0 else i + n

    def _check_stage(self, stage: int) -> int:
        stage = operator.index(stage)
        if not 0 <= stage < self.num_stages:
            raise RtpoDataError(f"stage {stage} out of range: this curriculum has stages 0..{self.num_stages - 1}.")
        return stage

    def _where(self, i: int) -> tuple[int, int]:
        """The record batch of the row table that holds row ``i`` (checked), and the row within it."""
        starts = self._row_starts
        c = bisect.bisect_right(starts, i) - 1
        return c, i - starts[c]

    def _cut_one(self, i: int, stage: int) -> tuple[int, int]:
        starts = self._cut_starts_list
        s = bisect.bisect_right(starts, i) - 1
        local = i - starts[s]
        return self._cut_tokens[s].item(local, stage), self._cut_chars[s].item(local, stage)

    def cut(self, i: int, stage: int) -> tuple[int, int]:
        """``(hint tokens, hint characters)`` of row ``i`` at ``stage``."""
        return self._cut_one(self._check_index(i), self._check_stage(stage))

    def hint_tokens_at(self, indices: Sequence[int], stage: int | Sequence[int]) -> np.ndarray:
        """Hint length in tokens of each row in ``indices`` at ``stage`` (one, or one per row)."""
        return self._prepare(indices, stage)[2]

    def cuts(self, indices: Sequence[int], stage: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(hint tokens, hint characters)`` of each row in ``indices`` at ``stage`` (one, or one per
        row): :meth:`cut` for a batch."""
        _, _, tokens, chars = self._prepare(indices, stage)
        return tokens, chars

    def table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The row table (or some of its columns), zero-copy over the memory maps."""
        return self._rows if columns is None else self._rows.select(list(columns))

    def value(self, column: str, i: int) -> Any:
        """Row ``i``'s value in any stored column (a kept column, ``answer``, ``trace_ids``...), as a
        Python object."""
        c, local = self._where(self._check_index(i))
        return self._rows.column(column).chunk(c)[local].as_py()

    def _text(self, column: str, i: int) -> str:
        return self._col(column).text_one(*self._where(self._check_index(i)))

    def row_id(self, i: int) -> str:
        return self._text("row_id", i)

    def trace(self, i: int) -> str:
        return self._text("trace", i)

    def answer(self, i: int) -> str | None:
        return self.value("answer", i)  # may be null: read through pyarrow

    def _locate(self, idx: np.ndarray) -> _Located:
        """Where rows ``idx`` lie in the row table's record batches (shared by all its columns)."""
        return _Located(self._col("row_id").starts, idx)

    def _col(self, name: str) -> _Ragged:
        col = self._ragged.get(name)
        if col is None:
            col = self._ragged[name] = _Ragged(self._rows.column(name))
        return col

    def lengths(self, column: str) -> np.ndarray:
        """Every row's number of ids in a token column (``trace_ids``, ``prefix_ids``, ``suffix_ids``,
        ``bare_ids``), from the list offsets alone: the ids are not read. Computed once per column."""
        if column not in {"trace_ids", "prefix_ids", "suffix_ids", "bare_ids"}:
            raise RtpoDataError(f"lengths({column!r}): use trace_ids, prefix_ids, suffix_ids or bare_ids.")
        out = self._lengths.get(column)
        if out is None:
            out = self._lengths[column] = self._col(column).lengths()
        return out

    def hint_tokens(self) -> np.ndarray:
        """The whole cut table: hint length in tokens per (row, stage), one (rows x stages) array."""
        if not self._cut_tokens:
            return np.zeros((0, self.num_stages), np.int32)
        return np.concatenate(self._cut_tokens)

    def longest_prompt_tokens(self) -> np.ndarray:
        """Every row's longest prompt over all stages, in tokens (stage 0 for a schedule going down),
        from list offsets and the cut table: nothing is tokenized."""
        kmax = self.hint_tokens().max(axis=1, initial=0).astype(np.int64)
        bare = self.lengths("bare_ids")
        hinted = self.lengths("prefix_ids") + kmax + self.lengths("suffix_ids")
        return np.where(kmax > 0, np.maximum(hinted, bare), bare)

    def trace_tokens(self, indices: Sequence[int]) -> np.ndarray:
        """Trace length in tokens of each row in ``indices`` (from list offsets, computed once)."""
        return self.lengths("trace_ids")[np.asarray(indices, dtype=np.int64)]

    # The per-row methods read one row straight from the memory maps (a few microseconds a call);
    # they give exactly what the batch methods give for that row.

    def hint(self, i: int, stage: int) -> str:
        """The hint row ``i`` gets at ``stage``: a prefix of its trace ("" when there is none)."""
        i, stage = self._check_index(i), self._check_stage(stage)
        chars = self._cut_one(i, stage)[1]
        return self._col("trace").prefix_one(*self._where(i), chars) if chars else ""

    def prompt(self, i: int, stage: int) -> str:
        """The prompt text row ``i`` gets at ``stage``."""
        i, stage = self._check_index(i), self._check_stage(stage)
        k, chars = self._cut_one(i, stage)
        c, local = self._where(i)
        if k == 0:
            return self._col("bare").text_one(c, local)
        return (self._col("prefix").text_one(c, local) + self._col("trace").prefix_one(c, local, chars)
                + self._col("suffix").text_one(c, local))

    def prompt_ids(self, i: int, stage: int) -> list[int]:
        """The prompt token ids row ``i`` gets at ``stage``."""
        i, stage = self._check_index(i), self._check_stage(stage)
        k = self._cut_one(i, stage)[0]
        c, local = self._where(i)
        if k == 0:
            return self._col("bare_ids").ids_one(c, local).tolist()
        return (self._col("prefix_ids").ids_one(c, local).tolist() + self._col("trace_ids").ids_one(c, local)[:k].tolist()
                + self._col("suffix_ids").ids_one(c, local).tolist())

    def messages(self, i: int, stage: int) -> list[dict[str, str]]:
        """The chat messages row ``i`` gets at ``stage`` (see :meth:`messages_batch`)."""
        i, stage = self._check_index(i), self._check_stage(stage)
        k, chars = self._cut_one(i, stage)
        c, local = self._where(i)
        messages = json.loads(self._col("messages").text_one(c, local))
        if k:
            self._place_hint(messages, self._col("trace").prefix_one(c, local, chars))
        return messages

    def _place_hint(self, messages: list[dict[str, str]], hint: str) -> None:
        if self._placement == "user":
            last = max(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[last]["content"] += self._hint_label + hint
        elif self._placement == "assistant":
            messages.append({"role": "assistant", "content": hint})
        else:
            messages[-1]["content"] += "\n" + hint

    # -- batches: O(batch), whatever the number of rows --------------------------------------------

    def _cuts_for(self, indices: np.ndarray, stages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.empty(len(indices), dtype=np.int64)
        chars = np.empty(len(indices), dtype=np.int64)
        for s, m, local in _Located(self._cut_starts, indices).groups:
            tokens[m], chars[m] = self._cut_tokens[s][local, stages[m]], self._cut_chars[s][local, stages[m]]
        return tokens, chars

    def _indices(self, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row indices must be in 0..{n - 1}")
        return idx

    def _prepare(self, indices: Sequence[int], stage: int | Sequence[int]) -> tuple[np.ndarray, ...]:
        """``(rows, stage per row, hint tokens, hint characters)``, checked."""
        idx = self._indices(indices)
        stages = np.broadcast_to(np.asarray(stage, dtype=np.int64), idx.shape)
        if len(stages) and (stages.min() < 0 or stages.max() >= self.num_stages):
            raise RtpoDataError(f"stages must be in 0..{self.num_stages - 1}.")
        tokens, chars = self._cuts_for(idx, stages)
        return idx, stages, tokens, chars

    def prompts(self, indices: Sequence[int], stage: int | Sequence[int]) -> list[str]:
        """Prompt texts of ``indices`` at ``stage`` (one stage for all, or one per row).

        Each distinct (row, stage) is rendered once and its string shared by every position that
        asks for it: a GRPO generation batch holds each prompt ``num_generations`` times.
        """
        idx, stages, tokens, chars = self._prepare(indices, stage)
        _, first, inverse = np.unique(idx * self.num_stages + stages, return_index=True, return_inverse=True)
        idx, tokens, chars = idx[first], tokens[first], chars[first]
        rendered: list[str] = [""] * len(idx)
        plain = np.flatnonzero(tokens == 0)
        for r, text in zip(plain.tolist(), self._col("bare").texts(self._locate(idx[plain]))):
            rendered[r] = text
        hinted = np.flatnonzero(tokens > 0)
        if len(hinted):
            loc = self._locate(idx[hinted])
            parts = zip(self._col("prefix").texts(loc), self._col("trace").texts(loc, chars[hinted]),
                        self._col("suffix").texts(loc))
            for r, (p, hint, s) in zip(hinted.tolist(), parts):
                rendered[r] = p + hint + s
        return [rendered[j] for j in inverse.reshape(-1).tolist()]

    def eval_prompts(self, indices: Sequence[int]) -> list[str]:
        """Prompt texts with no hint at all (evaluation)."""
        return self.render(indices, None)

    def prompt_ids_batch(self, indices: Sequence[int], stage: int | Sequence[int] | None) -> list[np.ndarray]:
        """Prompt token ids (int32 arrays the caller owns) of ``indices`` at ``stage``; ``stage=None``:
        with no hint at all."""
        if stage is None:
            return [ids.copy() for ids in self._col("bare_ids").ids(self._locate(self._indices(indices)))]
        idx, _, tokens, _ = self._prepare(indices, stage)
        loc = self._locate(idx)
        bare, prefix, trace, suffix = (self._col(c).ids(loc) for c in ("bare_ids", "prefix_ids", "trace_ids", "suffix_ids"))
        return [
            b.copy() if k == 0 else np.concatenate([p, t[:k], s])
            for b, p, t, s, k in zip(bare, prefix, trace, suffix, tokens.tolist())
        ]

    def messages_batch(self, indices: Sequence[int], stage: int | Sequence[int]) -> list[list[dict[str, str]]]:
        """Chat messages with the hint placed as the build's placement says, for trainers that apply
        the template themselves. Assistant placement ends with an assistant message holding the hint
        (the trainer must continue it rather than open a new turn)."""
        idx, _, tokens, chars = self._prepare(indices, stage)
        out = []
        loc = self._locate(idx)
        hints = self._col("trace").texts(loc, chars)
        for raw, hint, k in zip(self._col("messages").texts(loc), hints, tokens.tolist()):
            messages = json.loads(raw)
            if k:
                self._place_hint(messages, hint)
            out.append(messages)
        return out

    def render(self, indices: Sequence[int], stage: int | Sequence[int] | None, output: str = "text") -> list[Any]:
        """Prompts of ``indices`` at ``stage`` as ``output`` (text, ids as lists, or messages);
        ``stage=None`` renders them with no hint at all (evaluation)."""
        if output not in OUTPUTS:
            raise RtpoDataError(f"output={output!r}: use one of {', '.join(OUTPUTS)}")
        if stage is None:
            loc = self._locate(self._indices(indices))
            if output == "text":
                return self._col("bare").texts(loc)
            if output == "ids":
                return [ids.tolist() for ids in self._col("bare_ids").ids(loc)]
            return [json.loads(m) for m in self._col("messages").texts(loc)]
        if output == "text":
            return self.prompts(indices, stage)
        if output == "ids":
            return [x.tolist() for x in self.prompt_ids_batch(indices, stage)]
        return self.messages_batch(indices, stage)

    # -- datasets views ----------------------------------------------------------------------------

    def view(self, step: int, total_steps: int | None = None, output: str = "text") -> CurriculumView:
        """Every row as seen at training ``step``, as a ``datasets.Dataset`` (a :class:`CurriculumView`).

        Columns: ``row_id``, ``prompt`` (text, chat messages or token ids per ``output``), ``answer``
        and the kept columns. Making the view renders nothing; each access renders the rows it returns.
        """
        return self._dataset(self.stage_at(step, total_steps), output)

    def stage_view(self, stage: int, output: str = "text") -> CurriculumView:
        """Every row at ``stage``, as :meth:`view`."""
        return self._dataset(self._check_stage(stage), output)

    def eval_view(self, output: str = "text") -> CurriculumView:
        """Every row with no hint at all (the prompt the model gets when it reasons alone), as :meth:`view`."""
        return self._dataset(None, output)

    def _dataset(self, stage: int | None, output: str) -> CurriculumView:
        from rtpo_data.view import CurriculumView

        if output not in OUTPUTS:
            raise RtpoDataError(f"output={output!r}: use one of {', '.join(OUTPUTS)}")
        return CurriculumView.create(self, stage, output)
