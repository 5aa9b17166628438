"""Where a hint may end, and where it does end at each stage.

A hint is always ``trace[:c]`` whose token ids are exactly ``trace_ids[:k]``. Two things decide
which ``k`` are allowed:

1. **Clean token boundaries.** Token ``k`` must start exactly where token ``k - 1`` ends. Byte-level
   BPE tokenizers can split one character across two tokens (``≡``, emoji, CJK); the offset mapping
   then reports the same character for both, and no string slice can stop between them. Such
   boundaries are never used, whatever the unit.
2. **The cut unit** (``--unit``): which clean boundaries a user accepts.

   ========== =====================================================================================
   unit       a hint may end ...
   ========== =====================================================================================
   token      at any clean token boundary
   word       right after a word (before whitespace), or at the start of a line
   line       at the start of a line (the hint holds whole lines, newline included)
   sentence   after ``.``, ``!``, ``?`` (and CJK full stops) followed by whitespace, or at a line start
   paragraph  at the start of a line that follows a blank line
   regex:P    where a match of ``P`` begins (e.g. ``regex:Step \\d+:`` keeps whole steps)
   ========== =====================================================================================

   The empty hint (``k = 0``) and the whole trace (``k = n``) are always allowed.

Why these positions: GPT-style pre-tokenizers split before a space and after a newline run, so
a hint that ends there tokenizes, on its own, to exactly the first ``k`` ids of the full trace. A
cut inside a word is only safe when the BPE merges agree, which is why the ``token`` unit can drift
(``inspect --verify`` measures it).

A cut snaps to the nearest allowed boundary at or below its target. ``--measure tokens`` (RTPO)
targets ``floor(f * n_tokens)`` tokens; ``--measure units`` (R^3 counts lines) targets
``floor(f * n_units)`` whole units, where ``n_units`` is the number of allowed boundaries after 0.

Everything here works on a whole batch at once with NumPy: per-row Python work would cost as much
as the tokenizer on short GSM8K rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rtpo_data.errors import ConfigError

UNITS = ("token", "word", "line", "sentence", "paragraph")
MEASURES = ("tokens", "units")

_NEWLINE = ord("\n")
_CR = ord("\r")
# Unicode whitespace that str.isspace() accepts; a fixed table keeps the test vectorized.
_WHITESPACE = np.array(
    sorted({c for c in range(0x3001) if chr(c).isspace()} | {0x3000, 0x2028, 0x2029, 0x205F, 0xFEFF}),
    dtype=np.uint32,
)
_SENTENCE_END = np.array(sorted(ord(c) for c in ".!?。！？"), dtype=np.uint32)


@dataclass(frozen=True)
class CutUnit:
    """A parsed ``--unit`` value: one of :data:`UNITS`, or ``regex`` with its pattern."""

    kind: str
    pattern: str | None = None

    @classmethod
    def parse(cls, text: str) -> CutUnit:
        if text.startswith("regex:"):
            pattern = text[len("regex:"):]
            if not pattern:
                raise ConfigError("unit='regex:': the pattern is empty; write e.g. --unit 'regex:Step \\d+:'")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(
                    f"unit={text!r}: invalid regex ({exc}); fix the pattern after 'regex:'"
                ) from None
            return cls("regex", pattern)
        if text not in UNITS:
            raise ConfigError(
                f"unit={text!r}: unknown cut unit; use one of {', '.join(UNITS)} or regex:PATTERN"
            )
        return cls(text)

    def __str__(self) -> str:
        return f"regex:{self.pattern}" if self.kind == "regex" else self.kind


@dataclass(frozen=True)
class BatchCuts:
    """Allowed boundaries and per-stage cuts of a batch of traces (ragged arrays, row-major).

    ``boundaries[bound_offsets[r]:bound_offsets[r + 1]]`` are row ``r``'s allowed token counts
    (sorted, starting at 0 and ending at ``n_tokens[r]``); ``boundary_chars`` holds the matching
    character offsets. ``hint_tokens[r, s]`` / ``hint_chars[r, s]`` are the cut at stage ``s``.
    """

    boundaries: np.ndarray
    boundary_chars: np.ndarray
    bound_offsets: np.ndarray
    hint_tokens: np.ndarray
    hint_chars: np.ndarray


def _isin_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(table, values)
    idx[idx == len(table)] = 0
    return table[idx] == values


def batch_cuts(
    texts: Sequence[str],
    token_starts: np.ndarray,
    token_ends: np.ndarray,
    n_tokens: np.ndarray,
    unit: CutUnit,
    fractions: Sequence[float],
    measure: str = "tokens",
) -> BatchCuts:
    """Compute allowed boundaries and the cut for every (row, stage) of a batch.

    ``token_starts``/``token_ends`` are the flattened character offsets of every token of every
    row (row ``r`` owns ``n_tokens[r]`` consecutive entries), relative to the row's own text.
    """
    n_rows = len(texts)
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    tok_row_start = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(n_tokens, out=tok_row_start[1:])
    text_lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n_rows)
    char_base = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(text_lens, out=char_base[1:])

    # Interior boundaries: between token j-1 and token j of the same row (k = j - row start).
    total = int(tok_row_start[-1])
    row_of_token = np.repeat(np.arange(n_rows, dtype=np.int64), n_tokens)
    first_of_row = np.zeros(total, dtype=bool)
    first_of_row[tok_row_start[:-1][n_tokens > 0]] = True
    j = np.flatnonzero(~first_of_row)
    ends_before = token_ends[j - 1].astype(np.int64)
    clean = ends_before == token_starts[j]
    j, ends_before = j[clean], ends_before[clean]
    rows = row_of_token[j]
    k = j - tok_row_start[rows]

    allowed = _unit_mask(texts, unit, rows, ends_before, char_base)
    rows, k, chars = rows[allowed], k[allowed], ends_before[allowed]

    # Add k = 0 and k = n for every row, then sort by (row, k) into one ragged array.
    all_rows = np.concatenate([np.arange(n_rows), rows, np.arange(n_rows)])
    all_k = np.concatenate([np.zeros(n_rows, dtype=np.int64), k, n_tokens])
    all_chars = np.concatenate([np.zeros(n_rows, dtype=np.int64), chars, text_lens])
    key = all_rows * (int(n_tokens.max(initial=0)) + 1) + all_k
    order = np.argsort(key, kind="stable")
    key, all_k, all_chars, all_rows = key[order], all_k[order], all_chars[order], all_rows[order]
    # An empty trace has k = 0 twice; drop exact duplicates so every row's list is strictly increasing.
    keep = np.ones(len(key), dtype=bool)
    keep[1:] = key[1:] != key[:-1]
    key, all_k, all_chars, all_rows = key[keep], all_k[keep], all_chars[keep], all_rows[keep]
    bound_offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(all_rows, minlength=n_rows), out=bound_offsets[1:])

    hint_tokens, hint_chars = cuts_from_boundaries(all_k, all_chars, bound_offsets, n_tokens, fractions, measure)
    return BatchCuts(
        boundaries=all_k.astype(np.int32),
        boundary_chars=all_chars.astype(np.int32),
        bound_offsets=bound_offsets,
        hint_tokens=hint_tokens,
        hint_chars=hint_chars,
    )


def cuts_from_boundaries(
    boundaries: np.ndarray,
    boundary_chars: np.ndarray,
    bound_offsets: np.ndarray,
    n_tokens: np.ndarray,
    fractions: Sequence[float],
    measure: str = "tokens",
) -> tuple[np.ndarray, np.ndarray]:
    """The cut ``(hint tokens, hint characters)`` of every (row, stage), as two (rows x stages) int32
    arrays, from the rows' allowed boundaries (ragged, as in :class:`BatchCuts`).

    The build computes the boundaries and calls this; ``reschedule`` reads them from the row shards
    and calls this with the new fractions, so both give the same cuts by construction.
    """
    n_rows = len(bound_offsets) - 1
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    boundaries = np.asarray(boundaries, dtype=np.int64)
    fr = np.asarray(fractions, dtype=np.float64)
    if measure == "tokens":
        # floor(f * n), with a tiny tolerance so that f = 0.5 of 10 tokens is 5 and not 4.
        target = np.floor(fr[None, :] * n_tokens[:, None] + 1e-9).astype(np.int64)
        # The last boundary at or below the target, within the row: rows are searched as one sorted
        # array of (row, k) keys.
        width = int(n_tokens.max(initial=0)) + 1
        key = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(bound_offsets)) * width + boundaries
        pick = np.searchsorted(key, np.arange(n_rows)[:, None] * width + target, side="right") - 1
    elif measure == "units":
        n_units = np.diff(bound_offsets) - 1
        target = np.floor(fr[None, :] * n_units[:, None] + 1e-9).astype(np.int64)
        pick = bound_offsets[:-1, None] + target
    else:
        raise ConfigError(f"measure={measure!r}: use one of {', '.join(MEASURES)}")
    return boundaries[pick].astype(np.int32), np.asarray(boundary_chars)[pick].astype(np.int32)


# Which units' boundaries are a subset of which (on the same clean token boundaries), so that a
# curriculum cut on the first can be re-cut on the second from its stored boundaries alone: a line
# start is a word boundary and a sentence boundary; a paragraph start is a line start; a sentence end
# (before whitespace) ends a word. The token unit keeps every clean boundary, so any unit follows
# from it; a regex unit follows only from the token unit.
NARROWER = {
    "token": ("token", "word", "line", "sentence", "paragraph", "regex"),
    "word": ("word", "line", "sentence", "paragraph"),
    "sentence": ("sentence", "line", "paragraph"),
    "line": ("line", "paragraph"),
    "paragraph": ("paragraph",),
    "regex": (),
}


def narrows(source: CutUnit, target: CutUnit) -> bool:
    """Whether ``target``'s boundaries can be computed exactly from ``source``'s stored ones."""
    return source == target or target.kind in NARROWER[source.kind]


def narrow_boundaries(
    texts: Sequence[str],
    boundaries: np.ndarray,
    boundary_chars: np.ndarray,
    bound_offsets: np.ndarray,
    unit: CutUnit,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the boundaries ``unit`` accepts (see :func:`narrows`): ``(boundaries, chars, offsets)``.

    The empty hint and the whole trace stay, as in the build; interior boundaries go through the
    same unit test the build applies to every clean token boundary.
    """
    n_rows = len(texts)
    counts = np.diff(bound_offsets)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), counts)
    position = np.arange(len(boundaries)) - bound_offsets[rows]
    interior = (position > 0) & (position < counts[rows] - 1)
    text_lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n_rows)
    char_base = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(text_lens, out=char_base[1:])
    keep = ~interior
    at = np.flatnonzero(interior)
    keep[at] = _unit_mask(texts, unit, rows[at], np.asarray(boundary_chars, dtype=np.int64)[at], char_base)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=n_rows), out=offsets[1:])
    return np.asarray(boundaries)[keep], np.asarray(boundary_chars)[keep], offsets


def _unit_mask(
    texts: Sequence[str],
    unit: CutUnit,
    rows: np.ndarray,
    positions: np.ndarray,
    char_base: np.ndarray,
) -> np.ndarray:
    """Which candidate boundaries (row, char position) the unit accepts."""
    if unit.kind == "token":
        return np.ones(len(positions), dtype=bool)
    if unit.kind == "regex":
        pattern = re.compile(unit.pattern or "")
        starts = [
            char_base[r] + m.start()
            for r, text in enumerate(texts)
            for m in pattern.finditer(text)
            if m.start() > 0
        ]
        table = np.unique(np.asarray(starts, dtype=np.int64))
        return _isin_sorted(char_base[rows] + positions, table) if len(table) else np.zeros(len(rows), bool)

    # UTF-32 gives one code point per character, so global char index = array index.
    cps = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    g = char_base[rows] + positions  # interior positions: 0 < pos < len(text)
    prev, nxt = cps[g - 1], cps[g]
    line_start = (prev == _NEWLINE) & (nxt != _NEWLINE) & (nxt != _CR)
    if unit.kind == "line":
        return line_start
    if unit.kind == "word":
        return line_start | (_isin_sorted(nxt, _WHITESPACE) & ~_isin_sorted(prev, _WHITESPACE))
    if unit.kind == "sentence":
        return line_start | (_isin_sorted(prev, _SENTENCE_END) & _isin_sorted(nxt, _WHITESPACE))
    if unit.kind == "paragraph":
        at = np.flatnonzero(line_start)  # only line starts can open a paragraph
        paragraph = np.zeros(len(g), dtype=bool)
        paragraph[at] = _after_blank_line(cps, g[at], char_base[rows][at])
        return paragraph
    raise ConfigError(f"unit={unit}: unknown cut unit")


def _after_blank_line(cps: np.ndarray, g: np.ndarray, row_start: np.ndarray) -> np.ndarray:
    """For line starts at ``g`` (``cps[g - 1]`` is a newline): is the line before it blank?

    That line runs from just after the newline before ``g - 1`` (or from the row's first character,
    never into the previous row of the concatenated batch) up to ``g - 1``; it is blank when it
    holds only whitespace.
    """
    nl_pos = np.flatnonzero(cps == _NEWLINE)
    i = np.searchsorted(nl_pos, g - 1)  # index of the newline at g - 1
    prev_nl = np.where(i > 0, nl_pos[np.maximum(i - 1, 0)], -1)
    line_start = np.maximum(prev_nl + 1, row_start)
    cum = np.zeros(len(cps) + 1, dtype=np.int64)
    np.cumsum(~_isin_sorted(cps, _WHITESPACE), out=cum[1:])
    return cum[g - 1] - cum[line_start] == 0


def row_slice(cuts: BatchCuts, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``r``'s allowed token counts and their character offsets."""
    a, b = cuts.bound_offsets[r], cuts.bound_offsets[r + 1]
    return cuts.boundaries[a:b], cuts.boundary_chars[a:b]


def cut_at_fraction(
    boundaries: np.ndarray, boundary_chars: np.ndarray, fraction: float, measure: str = "tokens"
) -> tuple[int, int]:
    """The cut ``(tokens, chars)`` for one row at any fraction, from its stored boundaries.

    The same rule as :func:`batch_cuts`, for callers that choose a fraction per sample at run time
    (adaptive hint levels) instead of a precomputed stage.
    """
    if measure == "tokens":
        target = int(np.floor(fraction * int(boundaries[-1]) + 1e-9))
        i = int(np.searchsorted(boundaries, target, side="right")) - 1
    else:
        i = int(np.floor(fraction * (len(boundaries) - 1) + 1e-9))
    return int(boundaries[i]), int(boundary_chars[i])
