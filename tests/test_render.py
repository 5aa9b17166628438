"""``PromptTable`` (rtpo_data/render.py), the one prompt formula, per row and per batch: ``render`` in
every output against a reference computed row by row from the stored columns, over many shards and
record batches, repeated indices, one stage per row, and non-ASCII traces (where the byte cut of the
hint is not the character cut); ``kept_fraction``; a table over an in-memory batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtpo_data import Curriculum, RtpoDataError

from helpers import reference_prompt


def test_batches_match_the_row_by_row_reference(curriculum: Curriculum) -> None:
    cur = curriculum
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(cur), size=300)
    idx[:8] = idx[8:16]  # repeated rows, as a GRPO batch holds every prompt num_generations times
    stages = rng.integers(0, cur.num_stages, size=300)
    texts, ids = cur.render(idx, stages), cur.render(idx, stages, "arrays")
    for r, (i, s) in enumerate(zip(idx.tolist(), stages.tolist())):
        text, token_ids = reference_prompt(cur, i, s)
        assert texts[r] == text, (i, s)
        assert ids[r].tolist() == token_ids, (i, s)
    assert cur.render(idx, None) == [cur.table().slice(i, 1).column("bare")[0].as_py() for i in idx.tolist()]
    assert any(not cur.trace(i).isascii() for i in idx.tolist())  # the multi-byte path was exercised


def test_one_stage_for_all_and_every_stage(curriculum: Curriculum) -> None:
    cur = curriculum
    idx = list(range(len(cur)))
    for stage in range(cur.num_stages):
        assert cur.render(idx, stage) == [reference_prompt(cur, i, stage)[0] for i in idx]
        assert [cur.hint(i, stage) for i in idx] == [cur.trace(i)[: cur.cut(i, stage)[1]] for i in idx]


def test_per_row_methods_match_the_batch_methods(curriculum: Curriculum) -> None:
    cur = curriculum
    batch = {stage: cur.render(range(len(cur)), stage, "messages") for stage in range(cur.num_stages)}
    for i in range(len(cur)):
        for stage in range(cur.num_stages):
            text, ids = reference_prompt(cur, i, stage)
            assert cur.prompt(i, stage) == text, (i, stage)
            assert cur.prompt_ids(i, stage) == ids, (i, stage)
            assert cur.hint(i, stage) == cur.trace(i)[: cur.cut(i, stage)[1]]
            assert cur.render([i], stage, "messages")[0] == batch[stage][i], (i, stage)
    def row_at(i: int) -> dict:
        return cur.table().slice(i, 1).to_pylist()[0]

    row = row_at(96)
    assert (cur.row_id(-1), cur.trace(-1), cur.answer(-1)) == (row["row_id"], row["trace"], row["answer"])
    assert cur.prompt(np.int64(96), np.int32(0)) == cur.prompt(-1, 0)
    # any stored column, one row at a time (the OpenRLHF adapter reads kept columns this way)
    assert [cur.value("row_id", i) for i in (0, 45, 96)] == [cur.row_id(i) for i in (0, 45, 96)]
    assert cur.value("trace_ids", 45) == row_at(45)["trace_ids"]
    assert not all(cur.trace(i).isascii() for i in range(len(cur)))  # the multi-byte path was exercised
    with pytest.raises(IndexError, match="row 97 out of range"):
        cur.prompt(97, 0)
    with pytest.raises(RtpoDataError, match="stage 5 out of range"):
        cur.prompt_ids(0, 5)


def test_messages_carry_the_same_hint(curriculum: Curriculum) -> None:
    cur = curriculum
    placement = cur.manifest["prompt"]["placement"]
    idx = np.arange(len(cur))
    for stage in (0, 2, cur.num_stages - 1):
        for i, messages in zip(idx.tolist(), cur.render(idx, stage, "messages")):
            base = json.loads(cur.table().slice(i, 1).column("messages")[0].as_py())
            hint = cur.hint(i, stage)
            if not hint:
                assert messages == base
            elif placement == "assistant":
                assert messages[:-1] == base and messages[-1] == {"role": "assistant", "content": hint}
            else:
                assert messages[-1]["content"].endswith(hint) and len(messages) == len(base)


def test_lengths_and_longest_prompt_from_offsets(curriculum: Curriculum) -> None:
    cur = curriculum
    table = cur.table(["trace_ids", "bare_ids"]).to_pylist()
    assert cur.lengths("trace_ids").tolist() == [len(r["trace_ids"]) for r in table]
    longest = [max(len(reference_prompt(cur, i, s)[1]) for s in range(cur.num_stages)) for i in range(len(cur))]
    assert cur.longest_prompt_tokens().tolist() == longest
    assert cur.hint_tokens().shape == (len(cur), cur.num_stages)
    assert cur.cuts([5, 6], [0, 1])[0].tolist() == [cur.cut(5, 0)[0], cur.cut(6, 1)[0]]
    assert [x.tolist() for x in cur.cuts([5, 6], [0, 1])] == [list(t) for t in zip(cur.cut(5, 0), cur.cut(6, 1))]
    with pytest.raises(RtpoDataError, match=r"lengths\('trace'\): use trace_ids"):
        cur.lengths("trace")


def test_render_without_hint_in_every_output(curriculum: Curriculum) -> None:
    cur = curriculum
    rows = [0, 50, 96]
    last = cur.num_stages - 1  # the schedule ends with no hint
    assert cur.render(rows, None) == cur.render(rows, last)
    assert cur.render(rows, None, "ids") == [x.tolist() for x in cur.render(rows, last, "arrays")]
    assert cur.render(rows, None, "messages") == cur.render(rows, last, "messages")
    with pytest.raises(RtpoDataError, match="output='tokens': use one of text, ids, arrays, messages"):
        cur.render(rows, None, "tokens")


def test_ids_do_not_alias_the_memory_map(curriculum: Curriculum, tmp_path: Path) -> None:
    """The caller owns the arrays it gets, on every path: a hinted prompt (assembled from pieces) and
    a prompt with no hint, which is the stored no-hint ids as they are, the path where handing out
    the memory map itself would be easy. Writing into them must work and change nothing stored."""
    cur = curriculum
    last = cur.num_stages - 1
    rows = [i for i in range(len(cur)) if cur.cut(i, 0)[0] > 0][:3]
    assert rows and all(cur.cut(i, last)[0] == 0 for i in rows)  # both paths are taken
    want = {(i, s): list(reference_prompt(cur, i, s)[1]) for i in rows for s in (0, last)}
    got = cur.render(rows + rows, [0] * len(rows) + [last] * len(rows), "arrays") + cur.render(rows, None, "arrays")
    views = [cur.view(0, total_steps=1, output="ids"), cur.eval_view(output="ids")]
    got += [np.asarray(row["prompt"]) for view in views for row in view.with_format("numpy").select(rows)]
    for ids in got:
        ids[:] = -1
    assert {(i, s): cur.prompt_ids(i, s) for i in rows for s in (0, last)} == want
    assert cur.render(rows, None, "ids") == [want[i, last] for i in rows]
