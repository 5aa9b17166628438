"""Batch rendering (``prompts``, ``prompt_ids_batch``, ``messages_batch``, ``eval_prompts``, views)
against a reference computed row by row from the stored columns, over many shards and record
batches, repeated indices, one stage per row, and non-ASCII traces (where the byte cut of the hint
is not the character cut)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import write_jsonl

from rtpo_data import BuildConfig, Curriculum, RtpoDataError, artifact, build

PIECES = ["Step 1: x = 3.", " ", "\n", "\n\n", "word", "≡", "🙂", "日本語", "42", "é", "$x^2$", "Therefore"]


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = rng.choice(PIECES, size=int(rng.integers(5, 60)))
        # a third of the traces are plain ASCII: the fast path; the rest mix in multi-byte characters
        trace = " ".join(w for w in words if i % 3 or w.isascii())
        rows.append({"id": f"r{i}", "question": f"Problem {i}: what is {i} + {i}? 🙂", "solution": f"{trace}\n#### {2 * i}"})
    return rows


@pytest.fixture(scope="module", params=["assistant", "user"])
def curriculum(request, tmp_path_factory) -> Curriculum:
    tmp = tmp_path_factory.mktemp("view")
    src = write_jsonl(tmp / "rows.jsonl", _rows(97))
    # 7-row tokenization batches written as they come, and 20-row shards: 5 shards of several record
    # batches each (a real build gathers rows into batches of 64 MB)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(artifact, "RECORD_BATCH_BYTES", 1)
        build(BuildConfig(source=str(src), out=str(tmp / "cur"), tokenizer="offline:qwen3", stages=5, total_steps=50,
                          placement=request.param, batch_size=7, shard_rows=20, unit="word"), progress=False)
    cur = Curriculum.open(tmp / "cur")
    assert len(cur.manifest["shards"]["rows"]) == 5 and cur.table().column("trace").num_chunks > 5
    return cur


def _reference(cur: Curriculum, i: int, stage: int) -> tuple[str, list[int]]:
    row = cur.table().slice(i, 1).to_pylist()[0]
    k, c = cur.cut(i, stage)
    if k == 0:
        return row["bare"], row["bare_ids"]
    return row["prefix"] + row["trace"][:c] + row["suffix"], row["prefix_ids"] + row["trace_ids"][:k] + row["suffix_ids"]


def test_batches_match_the_row_by_row_reference(curriculum: Curriculum) -> None:
    cur = curriculum
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(cur), size=300)
    idx[:8] = idx[8:16]  # repeated rows, as a GRPO batch holds every prompt num_generations times
    stages = rng.integers(0, cur.num_stages, size=300)
    texts, ids = cur.prompts(idx, stages), cur.prompt_ids_batch(idx, stages)
    for r, (i, s) in enumerate(zip(idx.tolist(), stages.tolist())):
        text, token_ids = _reference(cur, i, s)
        assert texts[r] == text, (i, s)
        assert ids[r].tolist() == token_ids, (i, s)
    assert cur.eval_prompts(idx) == [cur.table().slice(i, 1).column("bare")[0].as_py() for i in idx.tolist()]
    assert any(not cur.trace(i).isascii() for i in idx.tolist())  # the multi-byte path was exercised


def test_one_stage_for_all_and_every_stage(curriculum: Curriculum) -> None:
    cur = curriculum
    idx = list(range(len(cur)))
    for stage in range(cur.num_stages):
        assert cur.prompts(idx, stage) == [_reference(cur, i, stage)[0] for i in idx]
        assert [cur.hint(i, stage) for i in idx] == [cur.trace(i)[: cur.cut(i, stage)[1]] for i in idx]


def test_per_row_methods_match_the_batch_methods(curriculum: Curriculum) -> None:
    cur = curriculum
    for i in range(len(cur)):
        for stage in range(cur.num_stages):
            text, ids = _reference(cur, i, stage)
            assert cur.prompt(i, stage) == text, (i, stage)
            assert cur.prompt_ids(i, stage) == ids, (i, stage)
            assert cur.hint(i, stage) == cur.trace(i)[: cur.cut(i, stage)[1]]
            assert cur.messages(i, stage) == cur.messages_batch([i], stage)[0], (i, stage)
    row = cur.table().slice(96, 1).to_pylist()[0]
    assert (cur.row_id(-1), cur.trace(-1), cur.answer(-1)) == (row["row_id"], row["trace"], row["answer"])
    assert cur.prompt(np.int64(96), np.int32(0)) == cur.prompt(-1, 0)
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
        for i, messages in zip(idx.tolist(), cur.messages_batch(idx, stage)):
            base = json.loads(cur.table().slice(i, 1).column("messages")[0].as_py())
            hint = cur.hint(i, stage)
            if not hint:
                assert messages == base
            elif placement == "assistant":
                assert messages[:-1] == base and messages[-1] == {"role": "assistant", "content": hint}
            else:
                assert messages[-1]["content"].endswith(hint) and len(messages) == len(base)


def test_views_render_lazily_in_every_output(curriculum: Curriculum) -> None:
    cur = curriculum
    step = 23
    stage = cur.stage_at(step)
    rows = [3, 41, 96]
    for output, expected in (("text", cur.prompts(rows, stage)),
                             ("ids", [x.tolist() for x in cur.prompt_ids_batch(rows, stage)]),
                             ("messages", cur.messages_batch(rows, stage))):
        assert cur.view(step, output=output)[rows]["prompt"] == expected
    assert cur.eval_view(output="ids")[rows]["prompt"] == [_reference(cur, i, cur.num_stages - 1)[1] for i in rows]


def test_lengths_and_longest_prompt_from_offsets(curriculum: Curriculum) -> None:
    cur = curriculum
    table = cur.table(["trace_ids", "bare_ids"]).to_pylist()
    assert cur.lengths("trace_ids").tolist() == [len(r["trace_ids"]) for r in table]
    longest = [max(len(_reference(cur, i, s)[1]) for s in range(cur.num_stages)) for i in range(len(cur))]
    assert cur.longest_prompt_tokens().tolist() == longest
    assert cur.hint_tokens().shape == (len(cur), cur.num_stages)
    assert cur.hint_tokens_at([5, 6], [0, 1]).tolist() == [cur.cut(5, 0)[0], cur.cut(6, 1)[0]]
    with pytest.raises(RtpoDataError, match=r"lengths\('trace'\): use trace_ids"):
        cur.lengths("trace")


def test_render_without_hint_in_every_output(curriculum: Curriculum) -> None:
    cur = curriculum
    rows = [0, 50, 96]
    last = cur.num_stages - 1  # the schedule ends with no hint
    assert cur.render(rows, None) == cur.eval_prompts(rows) == cur.prompts(rows, last)
    assert cur.render(rows, None, "ids") == [x.tolist() for x in cur.prompt_ids_batch(rows, last)]
    assert cur.render(rows, None, "messages") == cur.messages_batch(rows, last)
    with pytest.raises(RtpoDataError, match="output='tokens': use one of text, messages, ids"):
        cur.render(rows, None, "tokens")


def test_ids_do_not_alias_the_memory_map(curriculum: Curriculum, tmp_path: Path) -> None:
    cur = curriculum
    a = cur.prompt_ids_batch([0, 0], [0, cur.num_stages - 1])
    a[0][:] = -1  # the caller owns what it gets
    assert cur.prompt_ids(0, 0) == _reference(cur, 0, 0)[1]


def test_rows_are_gathered_into_large_record_batches(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "rows.jsonl", _rows(97))
    build(BuildConfig(source=str(src), out=str(tmp_path / "cur"), tokenizer="offline:qwen3", batch_size=7, shard_rows=40),
          progress=False)
    cur = Curriculum.open(tmp_path / "cur")
    # 14 tokenization batches, 3 shards: one record batch per shard and table
    assert [s["rows"] for s in cur.manifest["shards"]["rows"]] == [40, 40, 17]
    assert cur.table().column("trace").num_chunks == 3 and len(cur._cut_tokens) == 3
    assert cur.prompts([0, 45, 96], 0) == [_reference(cur, i, 0)[0] for i in (0, 45, 96)]
