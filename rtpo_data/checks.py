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


def leaks_answer(hint: str, answer: str | None) -> bool:
    """Does the hint end by stating the gold answer?"""
    if not hint or not answer or not answer.strip():
        return False
    last = final_statement(hint)
    gold = _normalize(answer)
    if not gold or _MARKER.search(last) is None:
        return False
    # A number only counts whole: the gold 5 is not stated by "15" or "2.5" or "5.5".
    left = r"(?<![0-9.])" if gold[0].isdigit() else ""
    right = r"(?![0-9]|\.[0-9])" if gold[-1].isdigit() else ""
    return re.search(left + re.escape(gold) + right, _normalize(last)) is not None


def drifted(backend: Any, texts: Sequence[str], expected: Sequence[Sequence[int]]) -> list[bool]:
    """For each text, whether trainer-style tokenization differs from the expected ids."""
    encs = backend.encode_batch(list(texts), add_special_tokens=True)
    return [list(e.ids) != list(x) for e, x in zip(encs, expected)]
