"""Prompts from a row table and its cut table: the one place the prompt formula is written.

Every row stores its prompt as three texts and their token ids (see :mod:`rtpo_data.prompts`), the
trace, and per stage a cut (hint tokens ``k``, hint characters ``c``). The prompt of row ``i`` at a
stage is::

    prompt(i)     = bare[i]                                   if k == 0
                  = prefix[i] + trace[i][:c] + suffix[i]      otherwise
    prompt_ids(i) = bare_ids[i]                               if k == 0
                  = prefix_ids[i] + trace_ids[i][:k] + suffix_ids[i]   otherwise

:class:`PromptTable` renders it: per row (a few microseconds a call), for a batch (each distinct
(row, stage) once, O(batch) whatever the number of rows), as text, token ids or chat messages. A
:class:`~rtpo_data.curriculum.Curriculum` is a ``PromptTable`` over memory-mapped shards; the build
checks the batch it is about to write through a ``PromptTable`` over that batch, so what the build
checks is what the trainers get.
"""

from __future__ import annotations

import bisect
import json
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from rtpo_data.errors import RtpoDataError

OUTPUTS = ("text", "ids", "arrays", "messages")
ID_COLUMNS = ("trace_ids", "prefix_ids", "suffix_ids", "bare_ids")
_TEXT = ("bare", "prefix", "trace", "suffix")  # the formula's parts, in order, as text ...
_IDS = ("bare_ids", "prefix_ids", "trace_ids", "suffix_ids")  # ... and as token ids

Stages = int | Sequence[int] | np.ndarray | None


def kept_fraction(hint_tokens: Any, trace_tokens: Any) -> np.ndarray:
    """The share of each trace its hint keeps, in tokens (0 for an empty trace, whose hint is empty).

    The build's per-stage stats, ``inspect`` and the trainers' ``rtpo/kept_fraction`` all use this.
    """
    return np.asarray(hint_tokens, dtype=np.float64) / np.maximum(np.asarray(trace_tokens, dtype=np.float64), 1)


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
        # one(c, local): one row's value; head(c, local, n): its first n characters or ids. Bound once
        # per column, so a per-row call pays no type test.
        self.one = self._text_one if self.is_text else self._ids_one
        self.head = self._text_head if self.is_text else self._ids_head
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
    # are read (``ndarray.item`` returns Python ints without making NumPy scalars). ``one`` and
    # ``head`` return a ``str`` for a text column and a ``list`` of ints for an ids column, so one
    # formula (``prefix + head + suffix``) assembles either.

    def _text_one(self, c: int, local: int) -> str:
        o = self.offsets[c]
        return str(self.data[c][o.item(local): o.item(local + 1)], "utf-8")

    def _ids_one(self, c: int, local: int) -> list[int]:
        o = self.offsets[c]
        return self.data[c][o.item(local): o.item(local + 1)].tolist()

    def _text_head(self, c: int, local: int, n: int) -> str:
        """The first ``n`` characters of one row's text (see :meth:`texts`)."""
        o = self.offsets[c]
        b, e = o.item(local), o.item(local + 1)
        data = self.data[c]
        text = str(data[b:min(e, b + n)], "utf-8", "ignore")
        if len(text) != n:
            text = str(data[b:min(e, b + 4 * n)], "utf-8", "ignore")[:n]
        return text

    def _ids_head(self, c: int, local: int, n: int) -> list[int]:
        o = self.offsets[c]
        b = o.item(local)
        return self.data[c][b:min(o.item(local + 1), b + n)].tolist()

    def lengths(self) -> np.ndarray:
        """Every row's length (characters' bytes for text, ids for lists), from the offsets alone."""
        if not self.offsets:
            return np.zeros(0, np.int64)
        return np.concatenate([np.diff(o) for o in self.offsets]).astype(np.int64)


class PromptTable:
    """Rows and their cuts, rendered as prompts (see the module docstring for the formula).

    ``rows`` is the row table (the row shards' columns); ``cut_tokens`` and ``cut_chars`` hold the cut
    table as (rows x stages) integer arrays, one per chunk, in row order. ``placement`` and
    ``hint_label`` are the build's, for chat messages.
    """

    def __init__(self, rows: pa.Table, cut_tokens: list[np.ndarray], cut_chars: list[np.ndarray],
                 num_stages: int, placement: str, hint_label: str = "") -> None:
        self._rows = rows
        self.num_stages = num_stages
        self._cut_tokens, self._cut_chars = cut_tokens, cut_chars
        self._cut_starts = np.concatenate([[0], np.cumsum([len(x) for x in cut_tokens])]).astype(np.int64)
        self._n = int(rows.num_rows)
        self._ragged: dict[str, _Ragged] = {}  # filled on first use; making a table stays O(1)
        self._lengths: dict[str, np.ndarray] = {}
        # For the per-row methods: where each record batch starts, as Python lists for bisect (one
        # entry per record batch, not per row).
        self._row_starts = np.cumsum([0, *(len(c) for c in rows.column(0).chunks)]).tolist()
        self._cut_starts_list = self._cut_starts.tolist()
        self._placement = placement
        self._hint_label = hint_label or ""

    def __len__(self) -> int:
        return self._n

    # -- checks and lookups ------------------------------------------------------------------------

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

    def _col(self, name: str) -> _Ragged:
        col = self._ragged.get(name)
        if col is None:
            col = self._ragged[name] = _Ragged(self._rows.column(name))
        return col

    def _locate(self, idx: np.ndarray) -> _Located:
        """Where rows ``idx`` lie in the row table's record batches (shared by all its columns)."""
        return _Located(self._col("row_id").starts, idx)

    def _indices(self, rows: Sequence[int]) -> np.ndarray:
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        n = self._n
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row indices must be in 0..{n - 1}")
        return idx

    def _stages(self, idx: np.ndarray, stages: int | Sequence[int] | np.ndarray) -> np.ndarray:
        out = np.broadcast_to(np.asarray(stages, dtype=np.int64), idx.shape)
        if len(out) and (out.min() < 0 or out.max() >= self.num_stages):
            raise RtpoDataError(f"stages must be in 0..{self.num_stages - 1}.")
        return out

    def _cuts_of(self, idx: np.ndarray, stages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.empty(len(idx), dtype=np.int64)
        chars = np.empty(len(idx), dtype=np.int64)
        for s, m, local in _Located(self._cut_starts, idx).groups:
            tokens[m], chars[m] = self._cut_tokens[s][local, stages[m]], self._cut_chars[s][local, stages[m]]
        return tokens, chars

    # -- one row -----------------------------------------------------------------------------------

    def cut(self, i: int, stage: int) -> tuple[int, int]:
        """``(hint tokens, hint characters)`` of row ``i`` at ``stage``."""
        return self._cut_one(self._check_index(i), self._check_stage(stage))

    def hint(self, i: int, stage: int) -> str:
        """The hint row ``i`` gets at ``stage``: a prefix of its trace ("" when there is none)."""
        i, stage = self._check_index(i), self._check_stage(stage)
        chars = self._cut_one(i, stage)[1]
        return self._col("trace").head(*self._where(i), chars) if chars else ""

    def prompt(self, i: int, stage: int | None) -> str:
        """The prompt text row ``i`` gets at ``stage`` (``None``: no hint at all)."""
        return self._one(_TEXT, i, stage, 1)

    def prompt_ids(self, i: int, stage: int | None) -> list[int]:
        """The prompt token ids row ``i`` gets at ``stage`` (``None``: no hint at all)."""
        return self._one(_IDS, i, stage, 0)

    def _one(self, parts: tuple[str, str, str, str], i: int, stage: int | None, length: int) -> Any:
        """The formula for one row: ``parts`` names its columns, ``length`` picks the cut's length in
        their unit (0: tokens, 1: characters)."""
        i = self._check_index(i)
        cut = (0, 0) if stage is None else self._cut_one(i, self._check_stage(stage))
        bare, prefix, trace, suffix = parts
        c, local = self._where(i)
        if cut[0] == 0:
            return self._col(bare).one(c, local)
        col = self._col
        return col(prefix).one(c, local) + col(trace).head(c, local, cut[length]) + col(suffix).one(c, local)

    # -- batches: O(batch), whatever the number of rows ---------------------------------------------

    def cuts(self, rows: Sequence[int], stages: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(hint tokens, hint characters)`` of each of ``rows`` at ``stages`` (one for all, or one per
        row): :meth:`cut` for a batch."""
        idx = self._indices(rows)
        return self._cuts_of(idx, self._stages(idx, stages))

    def kept_fractions(self, rows: Sequence[int], stages: Stages) -> np.ndarray:
        """The share of each trace the hint keeps, in tokens, for ``rows`` at ``stages`` (see
        :func:`kept_fraction`)."""
        idx = self._indices(rows)
        hint = np.zeros(len(idx)) if stages is None else self._cuts_of(idx, self._stages(idx, stages))[0]
        return kept_fraction(hint, self.lengths("trace_ids")[idx])

    def render(self, rows: Sequence[int], stages: Stages, output: str = "text") -> list[Any]:
        """The prompts of ``rows`` at ``stages``: one stage for all, one per row (rows of one batch
        may be at different stages), or ``None`` for no hint at all (evaluation).

        ``output``: ``"text"`` (str), ``"ids"`` (lists of ints), ``"arrays"`` (int32 NumPy arrays the
        caller owns) or ``"messages"`` (chat messages with the hint placed as the build placed it;
        with the assistant placement they end with an assistant message holding the hint, which the
        trainer must continue rather than open a new turn).

        Each distinct (row, stage) is rendered once and, for text, its string shared by every
        position that asks for it: a GRPO generation batch holds each prompt ``num_generations`` times.
        """
        if output not in OUTPUTS:
            raise RtpoDataError(f"output={output!r}: use one of {', '.join(OUTPUTS)}")
        idx = self._indices(rows)
        if stages is None:
            tokens = chars = np.zeros(len(idx), dtype=np.int64)
        else:
            tokens, chars = self._cuts_of(idx, self._stages(idx, stages))
        if output == "messages":
            return self._messages(idx, tokens, chars)
        if output == "text":
            # One string per distinct prompt: a prompt is fixed by (row, hint characters, any hint at all).
            key = (idx * (int(chars.max(initial=0)) + 1) + chars) * 2 + (tokens > 0)
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            rendered = self._assemble(_TEXT, idx[first], tokens[first], chars[first])
            return [rendered[j] for j in inverse.reshape(-1).tolist()]
        arrays = self._assemble(_IDS, idx, tokens, tokens)
        return [a.tolist() for a in arrays] if output == "ids" else arrays

    def _assemble(self, parts: tuple[str, str, str, str], idx: np.ndarray, tokens: np.ndarray,
                  cut: np.ndarray) -> list[Any]:
        """The formula for a batch: rows without a hint read ``bare``, the others ``prefix + head +
        suffix``, as texts (``cut`` in characters) or as new int32 arrays (``cut`` in tokens)."""
        bare, prefix, trace, suffix = (self._col(p) for p in parts)
        out: list[Any] = [None] * len(idx)
        plain = np.flatnonzero(tokens == 0)
        if len(plain):
            loc = self._locate(idx[plain])
            values = bare.texts(loc) if bare.is_text else [a.copy() for a in bare.ids(loc)]
            for r, value in zip(plain.tolist(), values):
                out[r] = value
        hinted = np.flatnonzero(tokens > 0)
        if len(hinted):
            loc = self._locate(idx[hinted])
            if bare.is_text:
                for r, p, h, s in zip(hinted.tolist(), prefix.texts(loc), trace.texts(loc, cut[hinted]),
                                      suffix.texts(loc)):
                    out[r] = p + h + s
            else:
                for r, p, t, s, k in zip(hinted.tolist(), prefix.ids(loc), trace.ids(loc), suffix.ids(loc),
                                         cut[hinted].tolist()):
                    out[r] = np.concatenate((p, t[:k], s))
        return out

    def _messages(self, idx: np.ndarray, tokens: np.ndarray, chars: np.ndarray) -> list[list[dict[str, str]]]:
        loc = self._locate(idx)
        hints = self._col("trace").texts(loc, chars)
        out = []
        for raw, hint, k in zip(self._col("messages").texts(loc), hints, tokens.tolist()):
            messages = json.loads(raw)
            if k:
                self._place_hint(messages, hint)
            out.append(messages)
        return out

    def _place_hint(self, messages: list[dict[str, str]], hint: str) -> None:
        if self._placement == "user":
            last = max(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[last]["content"] += self._hint_label + hint
        elif self._placement == "assistant":
            messages.append({"role": "assistant", "content": hint})
        else:
            messages[-1]["content"] += "\n" + hint

    # -- what else is stored -----------------------------------------------------------------------

    def table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The row table (or some of its columns), zero-copy over the memory maps."""
        return self._rows if columns is None else self._rows.select(list(columns))

    def value(self, column: str, i: int) -> Any:
        """Row ``i``'s value in any stored column (a kept column, ``answer``, ``trace_ids``...), as a
        Python object."""
        c, local = self._where(self._check_index(i))
        return self._rows.column(column).chunk(c)[local].as_py()

    def row_id(self, i: int) -> str:
        return self._col("row_id").one(*self._where(self._check_index(i)))

    def trace(self, i: int) -> str:
        return self._col("trace").one(*self._where(self._check_index(i)))

    def answer(self, i: int) -> str | None:
        return self.value("answer", i)  # may be null: read through pyarrow

    def lengths(self, column: str) -> np.ndarray:
        """Every row's number of ids in a token column (``trace_ids``, ``prefix_ids``, ``suffix_ids``,
        ``bare_ids``), from the list offsets alone: the ids are not read. Computed once per column."""
        if column not in ID_COLUMNS:
            raise RtpoDataError(f"lengths({column!r}): use {', '.join(ID_COLUMNS)}.")
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

    def trace_tokens(self, rows: Sequence[int]) -> np.ndarray:
        """Trace length in tokens of each of ``rows`` (from list offsets, computed once)."""
        return self.lengths("trace_ids")[np.asarray(rows, dtype=np.int64)]
