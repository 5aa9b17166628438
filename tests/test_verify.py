"""``rtpo_data.verify``: every check on every row and stage, and the leak limit."""

from __future__ import annotations

import pytest

from rtpo_data import BuildConfig, build
from rtpo_data.verify import verify


@pytest.mark.parametrize("unit", ["word", "line"])
def test_verify_gsm8k_has_zero_drift(gsm8k_file, tmp_path, unit) -> None:
    out = tmp_path / unit
    build(BuildConfig(source=str(gsm8k_file), out=str(out), tokenizer="offline:qwen3", unit=unit, stages=5))
    report = verify(out)
    assert report.ok, report.to_dict()
    by = {c.name: c for c in report.checks}
    assert by["drift"].checked > 1319 and by["drift"].failed == 0
    assert by["token_exact"].failed == 0 and by["leaks"].failed == 0


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
