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


LEAKY = [
    {"id": "mid", "question": "What is 2 + 3?", "solution": "We add 2 and 3.\nSo the answer is 5. Check: 2 + 3 = 5.\nYes.\n#### 5"},
    {"id": "only", "question": "What is 3 + 4?", "solution": "The answer is 7.\n#### 7"},
    {"id": "clean", "question": "What is 2 + 2?", "solution": "First 1 + 1 = 2.\nThen 2 + 2 = 4.\n#### 4"},
    {"id": "sentence", "question": "What is 6 * 7?", "solution": "We compute 6 * 7. The product is 42, so the answer is 42. Done.\n#### 42"},
]


@pytest.fixture(scope="module")
def leaky_builds(tmp_path_factory) -> dict:
    from rtpo_data import BuildConfig, build

    from helpers import write_jsonl

    tmp = tmp_path_factory.mktemp("leaks")
    src = write_jsonl(tmp / "leaky.jsonl", LEAKY)
    return {mode: build(BuildConfig(source=str(src), out=str(tmp / mode), tokenizer="offline:qwen3", unit="line",
                                    stages=4, on_leak=mode), progress=False) for mode in ("keep", "trim", "drop")}


def test_on_leak_trim_and_drop(leaky_builds: dict) -> None:
    from rtpo_data import Curriculum
    from rtpo_data.verify import verify

    traces = {}
    for mode, result in leaky_builds.items():
        cur = Curriculum.open(result.path)
        traces[mode] = {cur.row_id(i): cur.trace(i) for i in range(len(cur))}
        assert result.manifest["config"]["on_leak"] == mode
    assert traces["keep"]["mid"] == "We add 2 and 3.\nSo the answer is 5. Check: 2 + 3 = 5.\nYes."
    assert traces["trim"] == {"mid": "We add 2 and 3.", "clean": traces["keep"]["clean"], "sentence": "We compute 6 * 7."}
    assert traces["drop"] == {"clean": traces["keep"]["clean"]}
    stats = {mode: r.manifest["stats"] for mode, r in leaky_builds.items()}
    assert stats["keep"]["leaks"] == {"on_leak": "keep", "rows_trimmed": 0, "rows_dropped": 0}
    assert stats["trim"]["leaks"] == {"on_leak": "trim", "rows_trimmed": 2, "rows_dropped": 1}
    assert stats["trim"]["rows_dropped"] == {"answer_leak_no_trace": 1}
    assert stats["drop"]["leaks"] == {"on_leak": "drop", "rows_trimmed": 0, "rows_dropped": 3}
    assert stats["drop"]["rows_dropped"] == {"answer_leak": 3}
    leaks = {mode: {c.name: c for c in verify(r.path).checks}["leaks"] for mode, r in leaky_builds.items()}
    assert leaks["keep"].failed > 0 and leaks["trim"].failed == 0 and leaks["drop"].failed == 0


def test_verify_fails_on_leaks_only_above_the_limit(leaky_builds: dict) -> None:
    from rtpo_data import RtpoDataError
    from rtpo_data.verify import DEFAULT_MAX_LEAK_RATE, verify

    path = leaky_builds["keep"].path
    report = verify(path, max_leak_rate=1.0)
    leaks = {c.name: c for c in report.checks}["leaks"]
    # whole-trace hints ending "The answer is 7." and "... so the answer is 42. Done." (with these
    # line cuts, no hint of "mid" ends on the line that states its answer)
    assert leaks.rows == ["only", "sentence"] and leaks.rows_failed == 2
    assert report.ok and leaks.rate > DEFAULT_MAX_LEAK_RATE
    assert not verify(path).ok  # the default limit, 1% of hints: far above it here
    assert verify(path, max_leak_rate=leaks.rate).ok and not verify(path, max_leak_rate=leaks.rate * 0.99).ok
    data = report.to_dict()["checks"][-1]
    assert data["rows"] == ["only", "sentence"] and data["max_rate"] == 1.0 and data["ok"]
    with pytest.raises(RtpoDataError, match="--max-leak-rate 1.5"):
        verify(path, max_leak_rate=1.5)


def test_cli_reports_leaks_and_their_limit(leaky_builds: dict, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from rtpo_data.cli.main import app

    from helpers import write_jsonl

    runner = CliRunner()
    path = str(leaky_builds["keep"].path)
    failed = runner.invoke(app, ["inspect", path, "--verify"])
    assert failed.exit_code == 1 and "2 rows flagged: only, sentence" in failed.output, failed.output
    passed = runner.invoke(app, ["inspect", path, "--verify", "--max-leak-rate", "0.9"])
    assert passed.exit_code == 0 and "All checks passed" in passed.output, passed.output
    data = json.loads(runner.invoke(app, ["inspect", path, "--verify", "--format", "json"]).output)
    assert not data["ok"] and [c["ok"] for c in data["checks"]] == [True, True, True, True, False]
    src = write_jsonl(tmp_path / "leaky.jsonl", LEAKY)
    built = runner.invoke(app, ["build", str(src), "--out", str(tmp_path / "t"), "--tokenizer", "offline:qwen3",
                                "--on-leak", "trim"])
    assert built.exit_code == 0 and "--on-leak trim: 2 rows trimmed before the statement of the answer, 1 dropped" in built.output
    assert "answer_leak_no_trace 1" in built.output
    shown = runner.invoke(app, ["inspect", str(tmp_path / "t")])
    assert "--on-leak trim: 2 rows trimmed" in shown.output, shown.output
    bad = runner.invoke(app, ["build", str(src), "--out", str(tmp_path / "u"), "--tokenizer", "offline:qwen3",
                              "--on-leak", "fix"])
    assert bad.exit_code == 1 and "on_leak='fix': use one of keep, trim, drop" in bad.output
