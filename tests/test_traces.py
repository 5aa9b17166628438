"""Splitting the final answer off traces: real GSM8K and MATH test sets, R1-style think traces,
nested boxes, custom patterns."""

from __future__ import annotations

import re

import pytest

from rtpo_data.errors import ConfigError, RtpoDataError
from rtpo_data.traces import (
    ANSWER_FORMATS,
    SplitTrace,
    boxes,
    compile_answer_pattern,
    last_boxed,
    split_answer,
)

from data_files import load_gsm8k_rows, load_math_rows


@pytest.fixture(scope="module")
def gsm8k() -> list[dict]:
    return load_gsm8k_rows()


@pytest.fixture(scope="module")
def math_rows() -> list[dict]:
    return load_math_rows()


def _is_split_of(text: str, s: SplitTrace) -> bool:
    """The trace is a prefix of the text (up to whitespace) and the tail is what follows it."""
    return text.endswith(s.tail) and text[: len(text) - len(s.tail)].strip() == s.trace


# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------


def test_gsm8k_every_solution(gsm8k: list[dict]) -> None:
    assert len(gsm8k) == 1319
    for row in gsm8k:
        for fmt in ("auto", "gsm8k"):
            s = split_answer(row["solution"], fmt)
            assert s.format == "gsm8k"
            assert s.answer == row["answer"], row["id"]
            assert "####" not in s.trace and s.trace and s.trace == s.trace.strip()
            assert s.tail.startswith("####") and _is_split_of(row["solution"], s)
    assert any("," in r["answer"] for r in gsm8k)  # "1,000"-style answers are kept as written


def test_math_every_solution(math_rows: list[dict]) -> None:
    assert len(math_rows) == 5000
    splits = [split_answer(r["solution"]) for r in math_rows]  # its speed: benchmarks/answer_split.py
    empty = 0
    for row, s in zip(math_rows, splits):
        assert s.format == "boxed", row["id"]
        assert s.answer == last_boxed(row["solution"])[2], row["id"]
        assert "\\boxed" not in s.trace and "\\fbox" not in s.trace, row["id"]
        assert _is_split_of(row["solution"], s), row["id"]
        empty += not s.trace
    # Only a solution that opens with its boxed answer leaves nothing to hint with.
    assert empty <= 2
    # The boxed text is the gold answer, up to notation, for most rows.
    assert sum(s.answer == r["answer"] for r, s in zip(math_rows, splits)) > 4000


def test_math_second_solution_does_not_leak(math_rows: list[dict]) -> None:
    twice = [r for r in math_rows if r["solution"].count("\\boxed") > 1]
    assert len(twice) > 50
    for row in twice:
        s = split_answer(row["solution"], "boxed")
        first = boxes(row["solution"])[0][0]
        assert len(row["solution"]) - len(s.tail) <= first


# ---------------------------------------------------------------------------------------------
# gsm8k
# ---------------------------------------------------------------------------------------------


def test_gsm8k_format() -> None:
    s = split_answer("He has 3 + 4 = 7 apples.\n#### 7\n", "gsm8k")
    assert s == SplitTrace("He has 3 + 4 = 7 apples.", "7", "#### 7\n", "gsm8k")
    crlf = split_answer("Line one.\r\nLine two.\r\n####  1,000 \r\n")
    assert (crlf.trace, crlf.answer, crlf.format) == ("Line one.\r\nLine two.", "1,000", "gsm8k")
    assert split_answer("#### 5 is not at the end\nmore text", "gsm8k").format == "none"
    assert split_answer("no marker", "gsm8k") == SplitTrace("no marker", None, "", "none")


# ---------------------------------------------------------------------------------------------
# think
# ---------------------------------------------------------------------------------------------


def test_think_with_and_without_opening_tag() -> None:
    text = "<think>\nLet me compute 2+2.\nIt is 4.\n</think>\n\nThe answer is $\\boxed{4}$."
    s = split_answer(text)
    assert s == SplitTrace("Let me compute 2+2.\nIt is 4.", "4", "</think>\n\nThe answer is $\\boxed{4}$.", "think")
    opened_by_template = "Let me compute 2+2. It is 4.\n</think>\nThe final answer is \\boxed{\\frac{8}{2}}"
    s = split_answer(opened_by_template, "think")
    assert (s.trace, s.answer, s.format) == ("Let me compute 2+2. It is 4.", "\\frac{8}{2}", "think")


def test_think_without_box_and_empty_solution() -> None:
    s = split_answer("<think>reasoning</think>\n  Four.  ")
    assert (s.trace, s.answer) == ("reasoning", "Four.")
    s = split_answer("<think>reasoning</think>")
    assert (s.trace, s.answer, s.tail) == ("reasoning", None, "</think>")
    # the solution's box wins over a box in the reasoning, and `auto` needs </think>
    s = split_answer("<think>try \\boxed{3}? no.</think>So \\boxed{5}.")
    assert (s.trace, s.answer) == ("try \\boxed{3}? no.", "5")
    assert split_answer("<think>unfinished", "think").format == "none"


# ---------------------------------------------------------------------------------------------
# boxed
# ---------------------------------------------------------------------------------------------


def test_boxed_cuts_before_the_statement() -> None:
    text = "First we add. Then we divide.\nSo the result is $\\boxed{\\frac{1}{2}}$."
    s = split_answer(text)
    assert s == SplitTrace("First we add. Then we divide.", "\\frac{1}{2}", "So the result is $\\boxed{\\frac{1}{2}}$.", "boxed")
    s = split_answer("We add 2 and 3. Hence the sum is \\boxed{5}.")
    assert (s.trace, s.answer) == ("We add 2 and 3.", "5")


def test_nested_and_escaped_braces_and_fbox() -> None:
    s = split_answer("Compute. Thus $x=\\boxed{\\left\\{ \\frac{1}{\\sqrt{2}}, 2^{3} \\right\\}}$ holds.")
    assert s.answer == "\\left\\{ \\frac{1}{\\sqrt{2}}, 2^{3} \\right\\}" and s.trace == "Compute."
    s = split_answer("Work. So \\fbox{42}.")
    assert (s.trace, s.answer) == ("Work.", "42")
    assert split_answer("An unclosed \\boxed{5 box.", "boxed").format == "none"
    assert boxes("a \\boxed {1} b \\boxed{{2}}") == [(2, 12, "1"), (15, 26, "{2}")]


def test_box_inside_math_that_starts_in_an_earlier_line() -> None:
    text = (
        "We simplify.\nThe sum is\n\\begin{align*}\nx &= 1 + 2 \\\\\n&= \\boxed{3}.\n\\end{align*}"
    )
    s = split_answer(text)
    assert (s.trace, s.answer) == ("We simplify.\nThe sum is", "3")  # the math starts a line
    s = split_answer(text.replace("is\n", "is "))
    assert (s.trace, s.answer) == ("We simplify.", "3")  # the math starts mid-statement
    text = "Start. So we get $$a = 1.\nb = \\boxed{2}$$ and done."
    assert split_answer(text).trace == "Start."
    text = "Start. Then \\[ y = 2 \\cdot 3 \\\\ = \\boxed{6} \\] as claimed."
    assert split_answer(text).trace == "Start."


def test_sentence_ends_inside_math_do_not_count() -> None:
    text = "Let $a = 1.5$ and note $b = 2. c$ stays. We get $a + b = \\boxed{3.5}$."
    s = split_answer(text)
    assert s.trace == "Let $a = 1.5$ and note $b = 2. c$ stays."


def test_inline_math_that_ends_a_sentence() -> None:
    # MATH test row 148: the sentence's period sits inside the math; before, the cut fell right before
    # the box and the hint ended "... = 10.$ Therefore our answer is", which states the answer.
    text = "We note that $g(2)=7$, so $f(g(2))=2\\cdot7-4=10.$ Therefore our answer is $\\boxed{10}$."
    s = split_answer(text)
    assert (s.trace, s.answer) == ("We note that $g(2)=7$, so $f(g(2))=2\\cdot7-4=10.$", "10")
    # a period inside math that is followed by more math is not a sentence end
    assert split_answer("Let $x = 1.$$y$ be. So $\\boxed{2}$.").trace == "Let $x = 1.$$y$ be."


def test_display_math_that_ends_a_sentence() -> None:
    text = "We obtain $$6y-9x=-\\frac{3}{2}a.$$Since $6y-9x=b$, we have $\\frac{a}{b}=\\boxed{-\\frac{2}{3}}$."
    s = split_answer(text)
    assert s.trace == "We obtain $$6y-9x=-\\frac{3}{2}a.$$"


def test_escaped_dollar_and_stray_dollar() -> None:
    s = split_answer("It costs \\$5. Twice is \\$\\boxed{10}.")
    assert s.trace == "It costs \\$5."
    # an unmatched $ (a price) stops at the blank line: it cannot swallow the next paragraph
    s = split_answer("It costs $5 each.\n\nTwo cost 10. So the total is \\boxed{10}.")
    assert s.trace == "It costs $5 each.\n\nTwo cost 10."


def test_one_statement_solution() -> None:
    s = split_answer("$(2-2i)(5+5i) = 10+10 = \\boxed{20}$.")
    assert (s.trace, s.answer, s.tail) == ("$(2-2i)(5+5i) = 10+10 =", "20", "\\boxed{20}$.")
    s = split_answer("Adding gives $\\boxed{7}$")
    assert (s.trace, s.tail) == ("Adding gives", "$\\boxed{7}$")
    assert split_answer("$\\boxed{7}$").trace == ""


def test_first_box_bounds_the_trace() -> None:
    text = "Way one: so $x=\\boxed{4}$.\n\n- OR -\n\nWay two.\nHence $\\boxed{4}$."
    s = split_answer(text)
    assert (s.trace, s.answer) == ("Way one: so $x=", "4")


def test_line_or_sentence_whichever_is_later() -> None:
    s = split_answer("One. Two\nthree gives \\boxed{3}")
    assert s.trace == "One. Two"
    s = split_answer("One\ntwo. Three gives \\boxed{3}")
    assert s.trace == "One\ntwo."


# ---------------------------------------------------------------------------------------------
# auto, none, whitespace
# ---------------------------------------------------------------------------------------------


def test_auto_order_and_none() -> None:
    text = "<think>a</think>b\n#### 3"
    assert split_answer(text).format == "think"
    assert split_answer("a\n\\boxed{2} b\n#### 3").format == "gsm8k"
    plain = "\n  Just reasoning, no answer.  \n"
    assert split_answer(plain) == SplitTrace("Just reasoning, no answer.", None, "", "none")
    assert split_answer("x\n#### 3", "none") == SplitTrace("x\n#### 3", None, "", "none")
    assert ANSWER_FORMATS == ("auto", "gsm8k", "boxed", "think", "none")
    with pytest.raises(ConfigError, match="--answer-format 'latex'"):
        split_answer("x", "latex")


def test_traces_are_stripped_and_keep_crlf() -> None:
    s = split_answer("\n\nStep one.\r\nStep two.\r\nSo \\boxed{2}.\r\n")
    assert s.trace == "Step one.\r\nStep two." and s.trace[0] == "S"


# ---------------------------------------------------------------------------------------------
# --answer-pattern
# ---------------------------------------------------------------------------------------------


def test_pattern_named_group_numbered_group_and_whole_match() -> None:
    text = "Step. Answer: 3 (draft)\nMore steps.\nAnswer: 42\n"
    s = split_answer(text, pattern=r"Answer:\s*(?P<answer>\d+)")
    assert s == SplitTrace("Step. Answer: 3 (draft)\nMore steps.", "42", "Answer: 42\n", "pattern")
    s = split_answer(text, pattern=r"(Ans)wer:\s*(\d+)")
    assert s.answer == "Ans"
    s = split_answer(text, pattern=r"Answer: \d+")
    assert (s.trace, s.answer) == ("Step. Answer: 3 (draft)\nMore steps.", "Answer: 42")
    s = split_answer(text, "gsm8k", pattern=r"Answer:(?P<answer> x)?")  # the group took no part
    assert s.answer is None and s.format == "pattern"
    assert split_answer(text, pattern=r"FINAL=(\d+)") == SplitTrace(text.strip(), None, "", "none")
    assert split_answer(text, pattern=re.compile(r"Answer: (\d+)")).answer == "42"


def test_invalid_pattern_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        compile_answer_pattern("Answer: (\\d+")
    msg = str(info.value)
    assert "--answer-pattern 'Answer: (\\\\d+': invalid regex (missing )" in msg
    assert isinstance(info.value, RtpoDataError)
    with pytest.raises(ConfigError, match="invalid regex"):
        split_answer("x", pattern="[")
