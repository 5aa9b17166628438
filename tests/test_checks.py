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
