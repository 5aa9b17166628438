"""Checks that a rendered prompt is what the trainer will really see, and that no hint gives away
the answer. The build runs them on a sample (stored in the manifest); ``inspect --verify`` on all rows.

- **drift**: tokenizing ``prompt(i, k)`` the way a trainer does (``encode(text,
  add_special_tokens=True)``, as TRL and vLLM do for text prompts) gives ids other than
  ``prompt_ids(i, k)``. Zero drift means handing the trainer text is as exact as handing it ids.
- **leak**: the hint's final statement states the gold answer with an answer marker (``####``,
  ``\\boxed``, "the answer is", "Final Answer:"). Intermediate results that happen to equal the
  answer are not leaks: at stage 0 the model is meant to see the whole reasoning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_MARKER = re.compile(r"####|\\boxed|\\fbox|answer\s*(is|:)|final answer", re.IGNORECASE)
_NOISE = re.compile(r"[\s,$]|\\[,!;: ]|\\text\{[^}]*\}")


def _normalize(text: str) -> str:
    return _NOISE.sub("", text).rstrip(".").lower()


def final_statement(text: str) -> str:
    """The last non-empty line of ``text``."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line
    return ""


def _gold(answer: str | None) -> re.Pattern[str] | None:
    """The gold answer as a pattern over normalized text, or None when there is nothing to look for."""
    if not answer or not answer.strip():
        return None
    gold = _normalize(answer)
    if not gold:
        return None
    # A number only counts whole: the gold 5 is not stated by "15" or "2.5" or "5.5".
    left = r"(?<![0-9.])" if gold[0].isdigit() else ""
    right = r"(?![0-9]|\.[0-9])" if gold[-1].isdigit() else ""
    return re.compile(left + re.escape(gold) + right)


def _states(statement: str, gold: re.Pattern[str]) -> bool:
    return _MARKER.search(statement) is not None and gold.search(_normalize(statement)) is not None


def leaks_answer(hint: str, answer: str | None) -> bool:
    """Does the hint end by stating the gold answer?"""
    gold = _gold(answer) if hint else None
    return gold is not None and _states(final_statement(hint), gold)


_SENTENCE_END = re.compile(r"[.!?](?=\s)")


def answer_statement(trace: str, answer: str | None) -> int | None:
    """Where the first statement that states the gold answer starts in ``trace``, or None.

    A statement is a line, as for :func:`leaks_answer`; within the first line that states the
    answer, the cut moves forward to the start of the sentence at whose end the line first states
    it, so that the sentences before it stay. ``trace[:cut]`` then holds no line that states the
    answer, and no hint cut from it ends by stating it (``--on-leak trim``).
    """
    if _MARKER.search(trace) is None:  # most traces: no marker at all, nothing to look for
        return None
    gold = _gold(answer)
    if gold is None:
        return None
    start = 0
    for line in trace.splitlines(keepends=True):
        if _states(line, gold):
            ends = [m.end() for m in _SENTENCE_END.finditer(line)] + [len(line)]
            sentence_start = 0
            for end in ends:
                if _states(line[:end], gold):
                    break
                sentence_start = end
            while sentence_start < len(line) and line[sentence_start].isspace():
                sentence_start += 1
            return start + sentence_start
        start += len(line)
    return None


def drifted(backend: Any, texts: Sequence[str], expected: Sequence[Sequence[int]]) -> list[bool]:
    """For each text, whether trainer-style tokenization differs from the expected ids."""
    encs = backend.encode_batch_fast(list(texts), add_special_tokens=True)
    return [list(e.ids) != list(x) for e, x in zip(encs, expected)]
