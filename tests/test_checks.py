"""The leak check: a hint leaks when its final statement states the gold answer after a marker."""

from __future__ import annotations

import pytest

from rtpo_data.checks import leaks_answer


@pytest.mark.parametrize("hint, answer, leaks", [
    ("We add.\nSo the answer is 5.", "5", True),
    ("We add.\n#### 1,234", "1234", True),
    ("Thus the final answer is $\\frac{1}{2}$.", "\\frac{1}{2}", True),
    ("The answer is 5.\nNow we check the units.", "5", False),  # not the final statement
    ("We get 5 apples in the first box.", "5", False),  # no answer marker
    ("So the answer is 15.", "5", False),  # a number counts only whole
    ("So the answer is 2.5.", "5", False),
    ("So the answer is 5.5 meters.", "5", False),
    ("So the answer is 5.5 meters.", "5.5", True),
    ("So the answer is x = -4.", "-4", True),
    ("", "5", False),
    ("So the answer is 5.", None, False),
])
def test_leaks_answer(hint: str, answer: str | None, leaks: bool) -> None:
    assert leaks_answer(hint, answer) is leaks


@pytest.mark.parametrize("trace, answer, kept", [
    # the first line that states the answer goes, with everything after it
    ("We add 2 and 3.\nSo the answer is 5. Let us check: 2 + 3 = 5.\nYes.", "5", "We add 2 and 3.\n"),
    # within that line, the sentences before the one that completes the statement stay
    ("We compute 6 * 7. The product is 42, so the answer is 42. Done.", "42", "We compute 6 * 7. "),
    ("First, the answer is not obvious. Then x = 9.\nMore.", "9", "First, the answer is not obvious. "),
    ("The answer is 7.", "7", ""),
    ("So the answer is 15.\nThen 5 more.", "5", None),  # a number counts only whole
    ("We get 5 apples, then 5 more.", "5", None),  # no answer marker
    ("So the answer is 5.", None, None),
])
def test_answer_statement(trace: str, answer: str | None, kept: str | None) -> None:
    from rtpo_data.checks import answer_statement

    cut = answer_statement(trace, answer)
    assert (None if cut is None else trace[:cut]) == kept
    if cut is not None:  # nothing cut from what is kept states the answer
        assert not any(leaks_answer(trace[:end], answer) for end in range(1, cut + 1))
