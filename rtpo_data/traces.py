"""Splitting the final answer off a reference trace, so that no hint ever contains it.

Formats (``--answer-format``; ``auto`` tries them in this order):

- ``think``: R1 style ``<think>REASONING</think>SOLUTION`` (the opening tag may be missing, as when
  the template opens it). The trace is REASONING; the answer is the last ``\\boxed{}`` of SOLUTION,
  else SOLUTION itself. Only tried when ``</think>`` is present.
- ``gsm8k``: a final line ``#### ANSWER``. The trace is everything before it.
- ``boxed``: a final ``\\boxed{...}`` (or ``\\fbox{...}``; nested braces fine). The trace stops
  before the sentence or line that states it (whichever starts later); the answer is the box's content.
- ``none``: the trace is kept whole and no answer is derived.

``--answer-pattern REGEX`` overrides them all: the trace ends where the regex's last match starts;
the answer is its group ``answer``, else group 1, else the whole match.

Traces are stripped of surrounding whitespace: one that starts with a newline could merge with the
chat template's final newline when tokenized, and trailing blanks are never worth a cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rtpo_data.errors import ConfigError

ANSWER_FORMATS = ("auto", "gsm8k", "boxed", "think", "none")

_GSM8K = re.compile(r"(?:^|\n)[ \t]*####[ \t]*(?P<answer>[^\n]*?)\s*$")
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_SENTENCE_START = re.compile(r"(?:[.!?](?=\s)|\n)\s*")


@dataclass(frozen=True)
class SplitTrace:
    trace: str
    answer: str | None
    tail: str  # what was removed from the end ("" if nothing)
    format: str  # the rule that fired, or "none"


def compile_answer_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"answer_pattern={pattern!r}: invalid regex ({exc}); fix the pattern", what="--answer-pattern") from None


def last_boxed(text: str) -> tuple[int, int, str] | None:
    """``(start, end, content)`` of the last ``\\boxed{...}`` with balanced braces, or None."""
    for m in reversed(list(_BOX.finditer(text))):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return m.start(), i, text[m.end(): i - 1].strip()
    return None


def split_answer(text: str, answer_format: str = "auto", pattern: str | re.Pattern[str] | None = None) -> SplitTrace:
    if pattern is not None:
        rx = compile_answer_pattern(pattern) if isinstance(pattern, str) else pattern
        matches = list(rx.finditer(text))
        if not matches:
            return SplitTrace(text.strip(), None, "", "none")
        m = matches[-1]
        if "answer" in rx.groupindex:
            answer = m.group("answer")
        elif rx.groups:
            answer = m.group(1)
        else:
            answer = m.group(0)
        return SplitTrace(text[: m.start()].strip(), answer.strip() if answer else None, text[m.start():], "pattern")
    if answer_format not in ANSWER_FORMATS:
        raise ConfigError(f"answer_format={answer_format!r}: use one of {', '.join(ANSWER_FORMATS)}", what="--answer-format")
    tries = {"auto": ("think", "gsm8k", "boxed"), "none": ()}.get(answer_format, (answer_format,))
    for fmt in tries:
        result = _SPLITTERS[fmt](text)
        if result is not None:
            return result
    return SplitTrace(text.strip(), None, "", "none")


def _think(text: str) -> SplitTrace | None:
    close = text.rfind("</think>")
    if close < 0:
        return None
    reasoning = text[:close]
    open_ = reasoning.find("<think>")
    if open_ >= 0:
        reasoning = reasoning[open_ + len("<think>"):]
    solution = text[close + len("</think>"):]
    boxed = last_boxed(solution)
    answer = boxed[2] if boxed else (solution.strip() or None)
    return SplitTrace(reasoning.strip(), answer, text[close:], "think")


def _gsm8k(text: str) -> SplitTrace | None:
    m = _GSM8K.search(text)
    if m is None:
        return None
    return SplitTrace(text[: m.start()].strip(), m.group("answer").strip() or None, text[m.start():], "gsm8k")


def _boxed(text: str) -> SplitTrace | None:
    box = last_boxed(text)
    if box is None:
        return None
    start, _, answer = box
    # Start of the statement holding the box: after the last sentence end or newline before it.
    cut = 0
    for m in _SENTENCE_START.finditer(text, 0, start):
        cut = m.end()
    if not text[:cut].strip():
        # A one-sentence solution: stop right before the box (and the $ that opens its math).
        cut = start
        dollar = text.rfind("$", 0, start)
        if dollar >= 0 and text[:dollar].count("$") % 2 == 0:
            cut = dollar
    return SplitTrace(text[:cut].strip(), answer, text[cut:], "boxed")


_SPLITTERS = {"think": _think, "gsm8k": _gsm8k, "boxed": _boxed}
