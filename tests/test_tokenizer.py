"""``rtpo_data.tokenizer``: the tokenizers a build accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtpo_data import RtpoDataError

from helpers import build_rows


def test_slow_tokenizer_is_refused(tmp_path: Path) -> None:
    from transformers import CTRLTokenizer  # a tokenizer transformers still implements in Python only

    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2, "<unk>": 3}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    CTRLTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")).save_pretrained(tmp_path / "slow")
    with pytest.raises(RtpoDataError, match="is a slow \\(Python\\) tokenizer"):
        build_rows(tmp_path / "b", [{"question": "ab?", "solution": "ab. #### 1"}], tokenizer=str(tmp_path / "slow"))
