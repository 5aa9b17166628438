"""Property tests of the cut: a prefix of the trace, on an allowed boundary, monotone over stages,
token-exact (decoding the kept ids gives exactly the kept text), with the real Qwen3 tokenizer."""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtpo_data import Curriculum
from rtpo_data.cuts import CutUnit, batch_cuts, cut_at_fraction, row_slice
from rtpo_data.errors import ConfigError
from rtpo_data.verify import verify

from helpers import build_rows

PIECES = ["Step 1: ", "Step 12: ", "x = 3.", " ", "  ", "\n", "\r\n", "\n\n", "\n \n", "word", "résumé", "≡", "÷",
          "🙂", "日本語", "42", "3.14", ". ", "! ", "? ", "$\\frac{1}{2}$", "e.g. ", "\t", "ﬁ", "é"]
texts = st.lists(st.sampled_from(PIECES), min_size=0, max_size=40).map("".join)
UNITS = ["token", "word", "line", "sentence", "paragraph", r"regex:Step \d+:"]


def encode(tok, batch):
    batch = [unicodedata.normalize("NFC", t).strip() for t in batch]
    encs = tok.backend_tokenizer.encode_batch(batch, add_special_tokens=False)
    n = np.array([len(e.ids) for e in encs])
    offs = np.array([o for e in encs for o in e.offsets], dtype=np.int64).reshape(-1, 2)
    return batch, encs, n, offs


def allowed_by_unit(unit: str, text: str, c: int) -> bool:
    if c in (0, len(text)):
        return True
    prev, nxt = text[c - 1], text[c]
    line_start = prev == "\n" and nxt not in "\r\n"
    if unit == "token":
        return True
    if unit == "line":
        return line_start
    if unit == "word":
        return line_start or (nxt.isspace() and not prev.isspace())
    if unit == "sentence":
        return line_start or (prev in ".!?。！？" and nxt.isspace())
    if unit == "paragraph":
        before = text[: c - 1]
        last_line = before[before.rfind("\n") + 1:]
        return line_start and "\n" in before and not last_line.strip()
    return text.startswith("Step", c)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(texts, min_size=1, max_size=4), unit=st.sampled_from(UNITS),
       fr=st.lists(st.floats(0, 1), min_size=0, max_size=5), measure=st.sampled_from(["tokens", "units"]))
def test_cut_properties(qwen3, batch, unit, fr, measure):
    fractions = [1.0, *sorted(fr, reverse=True), 0.0]
    batch, encs, n, offs = encode(qwen3, batch)
    cuts = batch_cuts(batch, offs[:, 0], offs[:, 1], n, CutUnit.parse(unit), fractions, measure)
    for r, text in enumerate(batch):
        ids = encs[r].ids
        bounds, chars = row_slice(cuts, r)
        assert bounds[0] == 0 and bounds[-1] == len(ids) and (np.diff(bounds) > 0).all()
        assert chars[0] == 0 and chars[-1] == len(text) and (np.diff(chars) >= 0).all()
        for k, c in zip(bounds.tolist(), chars.tolist()):
            # Token-exact: the kept ids decode to exactly the kept text, a prefix of the trace.
            assert qwen3.decode(ids[:k]) == text[:c]
            assert allowed_by_unit(unit, text, c), (unit, text, c)
        ks, cs = cuts.hint_tokens[r], cuts.hint_chars[r]
        assert ks[0] == len(ids) and ks[-1] == 0
        assert (np.diff(ks) <= 0).all() and (np.diff(cs) <= 0).all()
        for f, k in zip(fractions, ks.tolist()):
            assert k in set(bounds.tolist())
            if measure == "tokens":
                target = math.floor(f * len(ids) + 1e-9)
                assert k == max(b for b in bounds.tolist() if b <= target)
            assert cut_at_fraction(bounds, chars, f, measure)[0] == k


def test_split_characters_are_never_cut(qwen3):
    text = "So ≡ the answer 🙂 is 4. 日本語です."
    batch, encs, n, offs = encode(qwen3, [text])
    cuts = batch_cuts(batch, offs[:, 0], offs[:, 1], n, CutUnit("token"), [1, 0])
    bounds, chars = row_slice(cuts, 0)
    starts = offs[:, 0]
    # '≡' is two tokens sharing one character: the boundary between them is not allowed.
    split = [k for k in range(1, len(encs[0].ids)) if offs[k - 1, 1] > starts[k]]
    assert split and not set(split) & set(bounds.tolist())


def test_line_unit_keeps_whole_lines(qwen3):
    text = "First line.\nSecond line.\n\nThird after a blank.\nFourth."
    batch, encs, n, offs = encode(qwen3, [text])
    cuts = batch_cuts(batch, offs[:, 0], offs[:, 1], n, CutUnit("line"), [1, 0.5, 0])
    assert batch[0][: cuts.hint_chars[0, 1]] in ("First line.\nSecond line.\n\n", "First line.\n")
    para = batch_cuts(batch, offs[:, 0], offs[:, 1], n, CutUnit("paragraph"), [1, 0.5, 0], "units")
    assert batch[0][: para.hint_chars[0, 1]] == "First line.\nSecond line.\n\n"


def test_unit_parse_errors():
    with pytest.raises(ConfigError, match="unknown cut unit"):
        CutUnit.parse("chars")
    with pytest.raises(ConfigError, match="invalid regex"):
        CutUnit.parse("regex:(")
    with pytest.raises(ConfigError, match="empty"):
        CutUnit.parse("regex:")
    assert str(CutUnit.parse(r"regex:Step \d+:")) == r"regex:Step \d+:"


def test_more_stages_than_tokens(tmp_path: Path) -> None:
    res = build_rows(tmp_path, [{"question": "q?", "solution": "Two words. #### 1"}], stages=12, unit="token")
    cur = Curriculum.open(res.path)
    hints = [cur.cut(0, s)[0] for s in range(12)]
    assert hints[0] == cur.trace_tokens([0])[0] < 12  # fewer tokens than stages: cuts repeat
    assert hints == sorted(hints, reverse=True) and hints[-1] == 0 and verify(res.path).ok
