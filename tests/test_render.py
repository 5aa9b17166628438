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


# -- one batch, many stages; no hint; what each output hands out ----------------------------------------


def test_render_mixes_stages_per_row_in_every_output(curriculum: Curriculum) -> None:
    """One batch whose rows are at different stages (a row at two stages, too) renders, in every
    output, what the per-row methods give for each (row, stage)."""
    cur = curriculum
    rng = np.random.default_rng(5)
    rows = rng.integers(0, len(cur), size=120)
    stages = rng.integers(0, cur.num_stages, size=120)
    rows[:6] = rows[6:12]
    stages[:6] = (stages[6:12] + 1) % cur.num_stages  # the same rows at another stage, in the same batch
    pairs = list(zip(rows.tolist(), stages.tolist()))
    assert len(set(pairs)) > len(set(rows.tolist())) and len(set(stages.tolist())) == cur.num_stages
    texts = [cur.prompt(i, s) for i, s in pairs]
    ids = [cur.prompt_ids(i, s) for i, s in pairs]
    assert cur.render(rows, stages) == texts and cur.render(rows, stages, "text") == texts
    assert cur.render(rows.tolist(), stages.tolist()) == texts  # lists as well as arrays
    assert cur.render(rows, stages, "ids") == ids
    assert [a.tolist() for a in cur.render(rows, stages, "arrays")] == ids
    assert cur.render(rows, stages, "messages") == [cur.render([i], s, "messages")[0] for i, s in pairs]
    assert len(set(texts)) > len(set(rows.tolist()))  # the stages really differ in what they render


def test_no_hint_is_the_stored_bare_prompt_and_the_last_stage_of_a_down_schedule(curriculum: Curriculum) -> None:
    """``stages=None`` (and ``prompt(i, None)``) is the prompt with no hint at all: the stored bare
    prompt, which is also the last stage's prompt of a schedule that goes down to no hint."""
    cur = curriculum
    last = cur.num_stages - 1
    assert cur.stage_fractions[0] == 1.0 and cur.stage_fractions[-1] == 0.0
    assert all(cur.cut(i, last) == (0, 0) for i in range(len(cur)))
    assert all(cur.cut(i, 0)[0] > 0 for i in range(len(cur)))  # every row has a hint at first
    rows = [96, 0, 50, 0, 13]
    stored = cur.table(["bare", "bare_ids", "messages"]).to_pylist()
    assert cur.render(rows, None) == [stored[i]["bare"] for i in rows]
    assert cur.render(rows, None, "ids") == [stored[i]["bare_ids"] for i in rows]
    assert [a.tolist() for a in cur.render(rows, None, "arrays")] == [stored[i]["bare_ids"] for i in rows]
    assert cur.render(rows, None, "messages") == [json.loads(stored[i]["messages"]) for i in rows]
    for output in ("text", "ids", "messages"):
        assert cur.render(rows, None, output) == cur.render(rows, last, output)
    for i in range(len(cur)):
        assert cur.prompt(i, None) == cur.prompt(i, last) == stored[i]["bare"]
        assert cur.prompt_ids(i, None) == cur.prompt_ids(i, last) == stored[i]["bare_ids"]
        assert cur.prompt(i, None) != cur.prompt(i, 0)


def test_arrays_are_int32_and_owned_by_the_caller(curriculum: Curriculum) -> None:
    """``output="arrays"``: int32 arrays the caller may write into, on the hinted path and on the
    no-hint path (the stored ids as they are), never views of the memory map, and never one array
    shared by two positions of a batch."""
    cur = curriculum
    last = cur.num_stages - 1
    rows = [3, 41, 96, 3]
    before = {s: cur.render(rows, s, "ids") for s in (0, last)}
    batches = [cur.render(rows, 0, "arrays"), cur.render(rows, last, "arrays"), cur.render(rows, None, "arrays"),
               cur.render(rows + rows, [0] * 4 + [last] * 4, "arrays")]
    for arrays in batches:
        assert len(arrays) == len(rows) or len(arrays) == 2 * len(rows)
        for a in arrays:
            assert isinstance(a, np.ndarray) and a.dtype == np.int32 and a.ndim == 1 and len(a) > 0
            assert a.flags.writeable
    first, again = batches[0][0], batches[0][3]  # row 3 twice in one batch: two arrays
    assert first is not again and not np.shares_memory(first, again)
    stored = cur.table(["bare_ids", "trace_ids"])
    for name in ("bare_ids", "trace_ids"):
        for chunk in stored.column(name).chunks:
            mapped = chunk.values.to_numpy(zero_copy_only=True)
            assert not any(np.shares_memory(a, mapped) for arrays in batches for a in arrays)
    first[:] = -1
    assert again.tolist() == before[0][3]
    for arrays in batches:
        for a in arrays:
            a[:] = -7
    assert {s: cur.render(rows, s, "ids") for s in (0, last)} == before
    assert [cur.prompt_ids(i, 0) for i in rows] == before[0]
    assert [a.tolist() for a in cur.render(rows, None, "arrays")] == before[last]


def test_text_output_shares_one_string_per_prompt(curriculum: Curriculum) -> None:
    """A GRPO batch holds each prompt ``num_generations`` times: each (row, stage) is rendered once
    and its string shared by every position that asks for it."""
    cur = curriculum
    rows = [5, 7, 5, 9, 7, 5, 9, 9]
    stages = [0, 1, 0, 2, 1, 0, 2, 3]
    texts = cur.render(rows, stages)
    assert texts == [cur.prompt(i, s) for i, s in zip(rows, stages)]
    positions: dict[tuple[int, int], list[int]] = {}
    for p, key in enumerate(zip(rows, stages)):
        positions.setdefault(key, []).append(p)
    for same in positions.values():
        assert all(texts[p] is texts[same[0]] for p in same)
    assert texts[3] is not texts[7]  # row 9 at stages 2 and 3: two prompts
    for stages_of_all in (0, None):  # one stage for all, and no hint
        texts = cur.render([4, 8, 4, 4, 8], stages_of_all)
        assert texts[0] is texts[2] is texts[3] and texts[1] is texts[4] and texts[0] is not texts[1]


# -- the share of the trace a hint keeps -----------------------------------------------------------------


def test_kept_fraction_is_hint_over_trace_tokens_and_zero_without_a_trace() -> None:
    from rtpo_data.render import kept_fraction

    got = kept_fraction([2, 0, 3, 4, 0], [5, 0, 4, 4, 7])
    assert got.dtype == np.float64 and got.tolist() == [0.4, 0.0, 0.75, 1.0, 0.0]
    assert kept_fraction(np.array([[1, 2]], np.int32), np.array([[4, 8]], np.int64)).tolist() == [[0.25, 0.25]]


def test_kept_fractions_of_a_tiny_curriculum(tmp_path: Path) -> None:
    """Two traces of 5 and 4 Qwen3 tokens, cut on tokens at 1, 0.5 and 0: the hints keep 5, 2, 0 and
    4, 2, 0 tokens, so 1, 0.4, 0 and 1, 0.5, 0 of their traces."""
    from rtpo_data import BuildConfig, build

    from helpers import write_jsonl

    rows = [{"id": "five", "question": "Count?", "solution": "One two three four five\n#### 5"},
            {"id": "four", "question": "Sum?", "solution": "Add them up.\n#### 4"}]
    src = write_jsonl(tmp_path / "rows.jsonl", rows)
    result = build(BuildConfig(source=str(src), out=str(tmp_path / "cur"), tokenizer="offline:qwen3", unit="token",
                               schedule="staged", fractions=(1.0, 0.5, 0.0)), progress=False)
    cur = Curriculum.open(result.path)
    assert [cur.row_id(i) for i in range(2)] == ["five", "four"]
    assert cur.trace_tokens([0, 1]).tolist() == [5, 4]
    assert cur.hint_tokens().tolist() == [[5, 2, 0], [4, 2, 0]]
    assert (cur.hint(0, 1), cur.hint(1, 1)) == ("One two", "Add them")
    assert cur.kept_fractions([0, 1], 0).tolist() == [1.0, 1.0]
    assert cur.kept_fractions([0, 1], 1).tolist() == [0.4, 0.5]
    assert cur.kept_fractions([0, 1], 2).tolist() == [0.0, 0.0]
    assert cur.kept_fractions([0, 1], None).tolist() == [0.0, 0.0]
    assert cur.kept_fractions([1, 0, 0, 1], [1, 1, 0, 2]).tolist() == [0.5, 0.4, 1.0, 0.0]
    assert result.manifest["stats"]["kept_fraction_mean"] == [1.0, 0.45, 0.0]


# -- a PromptTable over rows in memory ---------------------------------------------------------------------


def _table_of_two_rows():
    """Two rows in two record batches (the second with a non-ASCII trace), three stages."""
    import pyarrow as pa

    ids = pa.list_(pa.int32())
    schema = pa.schema([("row_id", pa.string()), ("bare", pa.string()), ("prefix", pa.string()),
                        ("trace", pa.string()), ("suffix", pa.string()), ("messages", pa.string()),
                        ("answer", pa.string()), ("bare_ids", ids), ("prefix_ids", ids), ("trace_ids", ids),
                        ("suffix_ids", ids)])
    a = {"row_id": ["a"], "bare": ["Q1 ="], "prefix": ["Q1 ["], "trace": ["x y z"], "suffix": ["]"],
         "messages": ['[{"role": "user", "content": "Q1"}]'], "answer": ["3"],
         "bare_ids": [[1, 9]], "prefix_ids": [[1, 2]], "trace_ids": [[10, 11, 12]], "suffix_ids": [[3]]}
    b = {"row_id": ["b"], "bare": ["Q2 ="], "prefix": ["Q2 ["], "trace": ["é ü ø"], "suffix": ["]"],
         "messages": ['[{"role": "user", "content": "Q2"}]'], "answer": [None],
         "bare_ids": [[4, 9]], "prefix_ids": [[4, 2]], "trace_ids": [[20, 21, 22]], "suffix_ids": [[3]]}
    table = pa.Table.from_batches([pa.RecordBatch.from_pydict(r, schema=schema) for r in (a, b)])
    # the cut table in one chunk of (rows x stages): hint tokens and hint characters
    tokens = np.array([[3, 2, 0], [3, 1, 0]], dtype=np.int32)
    chars = np.array([[5, 3, 0], [5, 1, 0]], dtype=np.int32)
    return table, [tokens], [chars]


def test_a_prompt_table_over_rows_in_memory_renders_the_formula() -> None:
    """prompt = bare without a hint, else prefix + the hint's characters of the trace + suffix; the ids
    likewise with the hint's tokens (written out by hand here for two tiny rows)."""
    from rtpo_data.render import PromptTable

    table, tokens, chars = _table_of_two_rows()
    pt = PromptTable(table, tokens, chars, 3, "assistant")
    assert len(pt) == 2 and table.column("trace").num_chunks == 2
    text = {(0, 0): "Q1 [x y z]", (0, 1): "Q1 [x y]", (0, 2): "Q1 =",
            (1, 0): "Q2 [é ü ø]", (1, 1): "Q2 [é]", (1, 2): "Q2 ="}
    ids = {(0, 0): [1, 2, 10, 11, 12, 3], (0, 1): [1, 2, 10, 11, 3], (0, 2): [1, 9],
           (1, 0): [4, 2, 20, 21, 22, 3], (1, 1): [4, 2, 20, 3], (1, 2): [4, 9]}
    hint = {(0, 0): "x y z", (0, 1): "x y", (0, 2): "", (1, 0): "é ü ø", (1, 1): "é", (1, 2): ""}
    for (i, s), want in text.items():
        assert pt.prompt(i, s) == want and pt.prompt_ids(i, s) == ids[i, s] and pt.hint(i, s) == hint[i, s]
    assert (pt.prompt(0, None), pt.prompt_ids(1, None)) == ("Q1 =", [4, 9])
    assert (pt.cut(0, 1), pt.cut(1, 1)) == ((2, 3), (1, 1))
    order = [(1, 1), (0, 0), (1, 2), (0, 1), (1, 0), (0, 1)]
    rows, stages = [i for i, _ in order], [s for _, s in order]
    assert pt.render(rows, stages) == [text[p] for p in order]
    assert pt.render(rows, stages, "ids") == [ids[p] for p in order]
    assert [a.tolist() for a in pt.render(rows, stages, "arrays")] == [ids[p] for p in order]
    assert pt.render([0, 1], None) == ["Q1 =", "Q2 ="] and pt.render([1, 0], None, "ids") == [[4, 9], [1, 9]]
    assert pt.render([0, 1], 1, "messages") == [
        [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "x y"}],
        [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "é"}]]
    assert pt.render([0, 1], 2, "messages") == [[{"role": "user", "content": "Q1"}], [{"role": "user", "content": "Q2"}]]
    # what else it answers, from the same columns
    assert [x.tolist() for x in pt.cuts([0, 1, 1], [0, 1, 2])] == [[3, 1, 0], [5, 1, 0]]
    assert pt.hint_tokens().tolist() == [[3, 2, 0], [3, 1, 0]]
    assert pt.lengths("trace_ids").tolist() == [3, 3] and pt.longest_prompt_tokens().tolist() == [6, 6]
    assert pt.kept_fractions([0, 1], 1).tolist() == [2 / 3, 1 / 3]
    assert (pt.row_id(1), pt.trace(1), pt.answer(0), pt.answer(1)) == ("b", "é ü ø", "3", None)


def test_a_prompt_table_places_the_hint_in_messages_as_the_build_placed_it() -> None:
    from rtpo_data.render import PromptTable

    table, tokens, chars = _table_of_two_rows()
    user = PromptTable(table, tokens, chars, 3, "user", "\nHint: ")
    assert user.render([0, 1], 1, "messages") == [[{"role": "user", "content": "Q1\nHint: x y"}],
                                                  [{"role": "user", "content": "Q2\nHint: é"}]]
    plain = PromptTable(table, tokens, chars, 3, "none")
    assert plain.render([1, 0], [0, 2], "messages") == [[{"role": "user", "content": "Q2\né ü ø"}],
                                                        [{"role": "user", "content": "Q1"}]]
