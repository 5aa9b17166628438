"""Splitting the final answer off a reference trace, so that no hint ever contains it.

:func:`split_answer` returns the trace to cut hints from, the answer it found, and the ``tail`` it
removed from the end (``trace`` is a prefix of the text up to surrounding whitespace; ``tail`` is a
suffix of the text). Rules (``--answer-format``; ``auto`` tries think, gsm8k, boxed in that order):

- ``think``: R1 style ``<think>REASONING</think>SOLUTION``. The opening ``<think>`` may be missing
  (some distilled datasets leave it to the chat template); text before it is dropped. The trace is
  REASONING; the answer is the content of the last ``\\boxed{}`` in SOLUTION, else SOLUTION itself
  (``None`` when SOLUTION is empty); the tail is ``</think>SOLUTION``. With several ``</think>`` the
  last one counts. ``auto`` only tries it when ``</think>`` is present.
- ``gsm8k``: the last non-blank line is ``#### ANSWER``. The trace is the text before that line; the
  answer is ANSWER as written (``1,000`` stays ``1,000``), without surrounding whitespace.
- ``boxed``: the text holds a ``\\boxed{...}`` or ``\\fbox{...}`` with balanced braces (nesting such
  as ``\\boxed{\\frac{1}{2}}`` and escaped ``\\{ \\}`` are fine; an unbalanced box is ignored). The
  answer is the content of the LAST box. The trace stops at the start of the statement that holds
  the FIRST box, so no box is left in the hint (MATH solutions with an "- OR -" second solution box
  the same answer twice; some box an intermediate result first). A statement starts after the last
  sentence end (``.``, ``!`` or ``?`` followed by whitespace) or line break before the box, whichever
  is later, counting only those outside LaTeX math: when the box sits inside ``$...$``, ``$$...$$``,
  ``\\[...\\]``, ``\\(...\\)`` or a display environment (``align``, ``equation``, ...) that starts
  earlier, the cut falls before the statement in which that math starts, never inside the math. The
  end of display math counts as a sentence end when the math ends with a period or the next word is
  capitalized. A blank line ends any math region (TeX does not allow one inside math), so a stray
  ``$`` (a price) cannot swallow more than its paragraph; an escaped ``\\$`` is text. If that cut
  would leave an empty trace (the whole solution is one statement), the cut falls right before the
  box instead, or before the math delimiter that opens right in front of it (``$\\boxed{5}$``).
- ``none``: the trace is the whole text; no answer is derived.

``--answer-pattern REGEX`` (Python ``re`` syntax) overrides them all: the trace ends where the
regex's LAST match starts; the answer is its group ``answer`` if it has one, else group 1 if it has
groups, else the whole match (stripped; ``None`` if the group did not take part). No match: format
``none``. A match reports the format ``pattern``.

In every case the trace is stripped of leading and trailing whitespace: a trace that starts with a
newline can merge with the chat template's final newline when tokenized, and trailing blanks are
never worth a cut. Line endings inside (``\\r\\n``) are kept as they are.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from rtpo_data.errors import ConfigError

ANSWER_FORMATS = ("auto", "gsm8k", "boxed", "think", "none")

_GSM8K = re.compile(r"(?:^|\n)[ \t]*####[ \t]*(?P<answer>[^\n]*?)\s*$")
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BEGIN = re.compile(r"\\begin\s*\{([A-Za-z*]+)\}")
_MATH_ENVS = frozenset(
    f"{name}{star}"
    for name in ("equation", "align", "eqnarray", "gather", "multline", "flalign", "alignat", "displaymath", "math")
    for star in ("", "*")
)
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class SplitTrace:
    trace: str  # the text hints are cut from, stripped
    answer: str | None  # the answer found, or None
    tail: str  # what was removed from the end ("" if nothing)
    format: str  # the rule that fired: think, gsm8k, boxed, pattern, or "none"


@functools.lru_cache(maxsize=64)
def compile_answer_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a user's ``--answer-pattern``; a bad regex is a :class:`ConfigError`."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"--answer-pattern {pattern!r}: invalid regex ({exc}). Fix the pattern (Python re syntax), "
            "or use --answer-format instead.",
            what="answer pattern",
        ) from None


def boxes(text: str) -> list[tuple[int, int, str]]:
    """Every ``\\boxed{...}``/``\\fbox{...}`` with balanced braces: ``(start, end, content)``."""
    found = []
    for m in _BOX.finditer(text):
        depth, i, n = 1, m.end(), len(text)
        while i < n:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        if depth == 0 and i < n:
            found.append((m.start(), i + 1, text[m.end(): i].strip()))
    return found


def last_boxed(text: str) -> tuple[int, int, str] | None:
    """``(start, end, content)`` of the last ``\\boxed{...}`` with balanced braces, or None."""
    found = boxes(text)
    return found[-1] if found else None


def split_answer(text: str, answer_format: str = "auto", pattern: str | re.Pattern[str] | None = None) -> SplitTrace:
    """Split the final answer off ``text`` (see the module docstring for every rule)."""
    if pattern is not None:
        return _split_pattern(text, compile_answer_pattern(pattern) if isinstance(pattern, str) else pattern)
    if answer_format not in ANSWER_FORMATS:
        raise ConfigError(
            f"--answer-format {answer_format!r}: unknown; use one of {', '.join(ANSWER_FORMATS)}",
            what="answer format",
        )
    if answer_format == "auto":
        tries: tuple[str, ...] = ("think", "gsm8k", "boxed")
    elif answer_format == "none":
        tries = ()
    else:
        tries = (answer_format,)
    for fmt in tries:
        result = _SPLITTERS[fmt](text)
        if result is not None:
            return result
    return SplitTrace(text.strip(), None, "", "none")


def _split_pattern(text: str, rx: re.Pattern[str]) -> SplitTrace:
    last = None
    for last in rx.finditer(text):  # noqa: B007 (the loop only finds the last match)
        pass
    if last is None:
        return SplitTrace(text.strip(), None, "", "none")
    if "answer" in rx.groupindex:
        answer = last.group("answer")
    elif rx.groups:
        answer = last.group(1)
    else:
        answer = last.group(0)
    return SplitTrace(text[: last.start()].strip(), None if answer is None else answer.strip(), text[last.start():], "pattern")


def _think(text: str) -> SplitTrace | None:
    close = text.rfind(_THINK_CLOSE)
    if close < 0:
        return None
    reasoning = text[:close]
    opened = reasoning.find(_THINK_OPEN)
    if opened >= 0:
        reasoning = reasoning[opened + len(_THINK_OPEN):]
    solution = text[close + len(_THINK_CLOSE):]
    box = last_boxed(solution)
    answer = box[2] if box else (solution.strip() or None)
    return SplitTrace(reasoning.strip(), answer, text[close:], "think")


def _gsm8k(text: str) -> SplitTrace | None:
    if "####" not in text:  # the regex needs it; this skips the regex's scan of every other trace
        return None
    m = _GSM8K.search(text)
    if m is None:
        return None
    return SplitTrace(text[: m.start()].strip(), m.group("answer").strip() or None, text[m.start():].lstrip("\r\n"), "gsm8k")


def _skip_space(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    return i


# The characters _statement_start acts on, outside and inside a math region.
_OUTSIDE_MATH = re.compile(r"[\n\\$.!?]")
_INSIDE_MATH = re.compile(r"[\n\\$]")
# Inside $...$ a backslash matters only as the first of an escaped pair whose second character does.
_INSIDE_DOLLAR_MATH = re.compile(r"\\[\\$\n]|[\n$]")


def _statement_start(text: str, pos: int) -> tuple[int, int | None]:
    """Where the statement holding ``pos`` starts, and the start of the math region around ``pos``.

    Scans ``text[:pos]`` once, tracking LaTeX math regions; only sentence ends and line breaks
    outside math are candidate cuts.
    """
    cut = 0
    closer: str | None = None  # the delimiter that closes the open math region
    math_start = 0
    display = False
    i = 0
    while i < pos:
        # Every other character only moves the scan on by one: jump to the next one that matters.
        if closer is None:
            m = _OUTSIDE_MATH.search(text, i, pos)
        else:
            m = (_INSIDE_DOLLAR_MATH if closer[0] == "$" else _INSIDE_MATH).search(text, i, pos)
        if m is None:
            break
        i = m.start()
        c = text[i]
        if c == "\n" and text.startswith("\n", _skip_inline_space(text, i + 1)):
            # A blank line: no math region survives it (TeX forbids it), and it ends a statement.
            closer = None
            cut = _skip_space(text, i)
            i = cut
            continue
        if closer is None:
            if c == "\\":
                nxt = text[i + 1: i + 2]
                if nxt in ("[", "("):
                    closer, math_start, display = ("\\]" if nxt == "[" else "\\)"), i, nxt == "["
                    i += 2
                    continue
                m = _BEGIN.match(text, i)
                if m and m.group(1) in _MATH_ENVS:
                    closer, math_start, display = f"\\end{{{m.group(1)}}}", i, True
                    i = m.end()
                    continue
                i += 2  # an escaped character (\$, \\, \{) or a command name's first letter
                continue
            if c == "$":
                double = text.startswith("$$", i)
                closer, math_start, display = ("$$" if double else "$"), i, double
                i += 2 if double else 1
                continue
            if c == "\n" or (c in ".!?" and i + 1 < len(text) and text[i + 1].isspace()):
                cut = _skip_space(text, i + 1)
            i += 1
            continue
        # Inside math: look for the closer only.
        if text.startswith(closer, i):
            inner = text[math_start:i].rstrip().rstrip("\\").rstrip()
            i += len(closer)
            closer = None
            if display:
                after = _skip_space(text, i)
                if inner.endswith((".", "!", "?")) or (after < len(text) and text[after].isupper()):
                    cut = after
            elif inner.endswith((".", "!", "?")) and (i >= len(text) or text[i].isspace()):
                # A sentence whose final period sits inside inline math: "... = 10.$ Therefore ..."
                cut = _skip_space(text, i)
            continue
        i += 2 if c == "\\" else 1
    return cut, (math_start if closer is not None else None)


def _skip_inline_space(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in " \t\r":
        i += 1
    return i


def _boxed(text: str) -> SplitTrace | None:
    found = boxes(text)
    if not found:
        return None
    first = found[0][0]
    answer = found[-1][2]
    cut, math_start = _statement_start(text, first)
    if not text[:cut].strip():
        # One statement only: stop right before the box, or before a math delimiter right in front of it.
        cut = first
        if math_start is not None:
            opener_end = math_start + (2 if text.startswith(("$$", "\\[", "\\("), math_start) else 1)
            if text.startswith("\\begin", math_start):
                m = _BEGIN.match(text, math_start)
                opener_end = m.end() if m else opener_end
            if not text[opener_end:first].strip():
                cut = math_start
    return SplitTrace(text[:cut].strip(), answer, text[cut:], "boxed")


_SPLITTERS = {"think": _think, "gsm8k": _gsm8k, "boxed": _boxed}
