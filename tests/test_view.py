"""Batch rendering (``render`` in every output, views)
against a reference computed row by row from the stored columns, over many shards and record
batches, repeated indices, one stage per row, and non-ASCII traces (where the byte cut of the hint
is not the character cut)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtpo_data import BuildConfig, Curriculum, RtpoDataError, artifact, build

from helpers import write_jsonl

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
    texts, ids = cur.render(idx, stages), cur.render(idx, stages, "arrays")
    for r, (i, s) in enumerate(zip(idx.tolist(), stages.tolist())):
        text, token_ids = _reference(cur, i, s)
        assert texts[r] == text, (i, s)
        assert ids[r].tolist() == token_ids, (i, s)
    assert cur.render(idx, None) == [cur.table().slice(i, 1).column("bare")[0].as_py() for i in idx.tolist()]
    assert any(not cur.trace(i).isascii() for i in idx.tolist())  # the multi-byte path was exercised


def test_one_stage_for_all_and_every_stage(curriculum: Curriculum) -> None:
    cur = curriculum
    idx = list(range(len(cur)))
    for stage in range(cur.num_stages):
        assert cur.render(idx, stage) == [_reference(cur, i, stage)[0] for i in idx]
        assert [cur.hint(i, stage) for i in idx] == [cur.trace(i)[: cur.cut(i, stage)[1]] for i in idx]


def test_per_row_methods_match_the_batch_methods(curriculum: Curriculum) -> None:
    cur = curriculum
    batch = {stage: cur.render(range(len(cur)), stage, "messages") for stage in range(cur.num_stages)}
    for i in range(len(cur)):
        for stage in range(cur.num_stages):
            text, ids = _reference(cur, i, stage)
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


def test_views_render_lazily_in_every_output(curriculum: Curriculum) -> None:
    cur = curriculum
    step = 23
    stage = cur.stage_at(step)
    rows = [3, 41, 96]
    for output, expected in (("text", cur.render(rows, stage)),
                             ("ids", [x.tolist() for x in cur.render(rows, stage, "arrays")]),
                             ("messages", cur.render(rows, stage, "messages"))):
        assert cur.view(step, output=output)[rows]["prompt"] == expected
    assert cur.eval_view(output="ids")[rows]["prompt"] == [_reference(cur, i, cur.num_stages - 1)[1] for i in rows]


def test_lengths_and_longest_prompt_from_offsets(curriculum: Curriculum) -> None:
    cur = curriculum
    table = cur.table(["trace_ids", "bare_ids"]).to_pylist()
    assert cur.lengths("trace_ids").tolist() == [len(r["trace_ids"]) for r in table]
    longest = [max(len(_reference(cur, i, s)[1]) for s in range(cur.num_stages)) for i in range(len(cur))]
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
    want = {(i, s): list(_reference(cur, i, s)[1]) for i in rows for s in (0, last)}
    got = cur.render(rows + rows, [0] * len(rows) + [last] * len(rows), "arrays") + cur.render(rows, None, "arrays")
    views = [cur.view(0, total_steps=1, output="ids"), cur.eval_view(output="ids")]
    got += [np.asarray(row["prompt"]) for view in views for row in view.with_format("numpy").select(rows)]
    for ids in got:
        ids[:] = -1
    assert {(i, s): cur.prompt_ids(i, s) for i in rows for s in (0, last)} == want
    assert cur.render(rows, None, "ids") == [want[i, last] for i in rows]


def test_rows_are_gathered_into_large_record_batches(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "rows.jsonl", _rows(97))
    build(BuildConfig(source=str(src), out=str(tmp_path / "cur"), tokenizer="offline:qwen3", batch_size=7, shard_rows=40),
          progress=False)
    cur = Curriculum.open(tmp_path / "cur")
    # 14 tokenization batches, 3 shards: one record batch per shard and table
    assert [s["rows"] for s in cur.manifest["shards"]["rows"]] == [40, 40, 17]
    assert cur.table().column("trace").num_chunks == 3
    assert cur.render([0, 45, 96], 0) == [_reference(cur, i, 0)[0] for i in (0, 45, 96)]


# -- the views are real datasets.Dataset objects -------------------------------------------------------

OUTPUTS = ("text", "ids", "messages")


def _view(cur: Curriculum, kind: str, output: str):
    """A view at step 23 (a middle stage), or the evaluation view, and its stage for ``render``."""
    if kind == "eval":
        return cur.eval_view(output=output), None
    return cur.view(23, output=output), cur.stage_at(23)


def _expected(cur: Curriculum, stage, output: str) -> list:
    """Every row's prompt, from the batch renderer (checked against the stored columns above)."""
    return cur.render(range(len(cur)), stage, output)


def _check_rows(view, cur: Curriculum, stage, output: str) -> list[int]:
    """Each row of ``view`` holds the prompt of the curriculum row its row_id names; the rows, in order."""
    position = {cur.row_id(i): i for i in range(len(cur))}
    expected = _expected(cur, stage, output)
    rows = [position[r] for r in view["row_id"]]
    assert list(view["prompt"]) == [expected[i] for i in rows]
    return rows


@pytest.mark.parametrize("kind", ["step", "eval"])
@pytest.mark.parametrize("output", OUTPUTS)
def test_view_columns_access_and_iteration(curriculum: Curriculum, kind: str, output: str) -> None:
    import datasets

    from rtpo_data.view import PROMPT_FEATURES

    cur = curriculum
    view, stage = _view(cur, kind, output)
    expected = _expected(cur, stage, output)
    assert isinstance(view, datasets.Dataset) and len(view) == len(cur)
    assert view.column_names == ["row_id", "prompt", "answer"] == list(view.features)
    assert view.features["prompt"] == PROMPT_FEATURES[output] and view.shape == (len(cur), 3)
    assert "__index__" not in repr(view) and "prompt" in repr(view)
    assert list(view["prompt"]) == expected
    assert view["prompt"][5] == expected[5] and view["prompt"][2:4] == expected[2:4]
    assert view["row_id"][:3] == [cur.row_id(i) for i in range(3)]
    assert view[7] == {"row_id": cur.row_id(7), "prompt": expected[7], "answer": cur.answer(7)}
    assert view[-1]["prompt"] == expected[-1]
    assert view[3:6]["prompt"] == expected[3:6] and view[[5, 2, 5]]["prompt"] == [expected[i] for i in (5, 2, 5)]
    assert view[np.array([4, 1])]["prompt"] == [expected[4], expected[1]] and view[np.int64(6)]["prompt"] == expected[6]
    assert view[(i for i in (8, 0))]["prompt"] == [expected[8], expected[0]]
    assert [row["prompt"] for row in view] == expected
    batches = list(view.iter(batch_size=10))
    assert len(batches) == 10 and [p for b in batches for p in b["prompt"]] == expected
    assert view.with_format("arrow")["prompt"].to_pylist() == expected
    assert view.with_format("arrow")[4:6].column_names == ["row_id", "prompt", "answer"]
    frame = view.with_format("pandas")[0:3]
    assert frame["row_id"].tolist() == [cur.row_id(i) for i in range(3)] and len(frame["prompt"]) == 3
    if output == "text":
        assert frame["prompt"].tolist() == expected[0:3]
    assert view.with_format(columns=["prompt"])[1] == {"prompt": expected[1]}


@pytest.mark.parametrize("kind", ["step", "eval"])
def test_view_row_selection_keeps_a_view(curriculum: Curriculum, kind: str) -> None:
    from rtpo_data.view import CurriculumView

    cur = curriculum
    view, stage = _view(cur, kind, "text")
    expected = _expected(cur, stage, "text")
    picked = view.select([9, 3, 9])
    assert _check_rows(picked, cur, stage, "text") == [9, 3, 9]
    shuffled = view.shuffle(seed=0)
    order = _check_rows(shuffled, cur, stage, "text")
    assert sorted(order) == list(range(len(cur))) and order != sorted(order)
    assert _check_rows(shuffled.select(range(10, 20)), cur, stage, "text") == order[10:20]
    assert _check_rows(view.skip(90), cur, stage, "text") == list(range(90, 97))
    assert _check_rows(view.take(5).shuffle(seed=1).select([0]), cur, stage, "text")[0] in range(5)
    assert _check_rows(view.shard(num_shards=3, index=1), cur, stage, "text") == list(range(33, 65))
    assert _check_rows(view.sort("row_id", reverse=True), cur, stage, "text") == sorted(
        range(len(cur)), key=cur.row_id, reverse=True)
    split = view.train_test_split(test_size=0.25, seed=1)
    parts = [_check_rows(split[name], cur, stage, "text") for name in ("train", "test")]
    assert sorted(parts[0] + parts[1]) == list(range(len(cur))) and len(parts[1]) == 25
    kept = view.filter(lambda row: "Problem 1" in row["prompt"])
    assert _check_rows(kept, cur, stage, "text") == [i for i, p in enumerate(expected) if "Problem 1" in p]
    assert 0 < len(kept) < len(cur)
    twice = shuffled.select(range(60)).filter(lambda row: len(row["prompt"]) % 2 == 0)
    assert _check_rows(twice, cur, stage, "text") == [i for i in order[:60] if len(expected[i]) % 2 == 0]
    for derived in (picked, shuffled, kept, twice, split["test"], view.skip(3)):
        assert isinstance(derived, CurriculumView)  # still lazy: nothing was written out
    by_prompt = view.sort("prompt")
    assert list(by_prompt["prompt"]) == sorted(expected)


@pytest.mark.parametrize("output", OUTPUTS)
def test_view_map_and_column_changes(curriculum: Curriculum, output: str) -> None:
    cur = curriculum
    view, stage = _view(cur, "step", output)
    expected = _expected(cur, stage, output)
    mapped = view.map(lambda row: {"n": len(row["prompt"])})
    assert mapped.column_names == ["row_id", "prompt", "answer", "n"]
    assert mapped[0]["n"] == len(expected[0]) and mapped["n"] == [len(p) for p in expected]
    assert list(mapped["prompt"]) == expected
    batched = view.map(lambda b: {"k": [len(p) for p in b["prompt"]]}, batched=True, batch_size=8,
                       remove_columns=["prompt"])
    assert batched.column_names == ["row_id", "answer", "k"] and batched["k"] == [len(p) for p in expected]
    indexed = view.select([4, 1]).map(lambda row, i: {"i": i, "p": row["prompt"]}, with_indices=True)
    assert indexed["i"] == [0, 1] and indexed["p"] == [expected[4], expected[1]]
    assert view.remove_columns("answer").column_names == ["row_id", "prompt"]
    assert list(view.rename_column("prompt", "query")["query"]) == expected
    assert view.select_columns(["prompt"])[2] == {"prompt": expected[2]}
    assert view.to_dict()["prompt"] == expected and view.to_list()[9]["prompt"] == expected[9]


def test_view_exports(curriculum: Curriculum, tmp_path: Path) -> None:
    import datasets

    cur = curriculum
    view, stage = _view(cur, "step", "text")
    expected = _expected(cur, stage, "text")
    frame = view.to_pandas()
    assert list(frame.columns) == ["row_id", "prompt", "answer"] and frame["prompt"].tolist() == expected
    assert [p for f in view.to_pandas(batch_size=40, batched=True) for p in f["prompt"]] == expected
    polars = view.to_polars()
    assert polars.columns == ["row_id", "prompt", "answer"] and polars["prompt"].to_list() == expected
    assert sum(len(f) for f in view.to_polars(batch_size=40, batched=True)) == len(cur)
    view.save_to_disk(tmp_path / "saved", num_shards=2)
    saved = datasets.load_from_disk(tmp_path / "saved")
    assert type(saved) is datasets.Dataset and saved.column_names == ["row_id", "prompt", "answer"]
    assert saved["prompt"][:] == expected and saved[5] == view[5]
    part = view.shuffle(seed=3).select(range(30))
    part.save_to_disk(tmp_path / "part")
    assert datasets.load_from_disk(tmp_path / "part")["row_id"][:] == part["row_id"][:]
    ids = cur.view(23, output="ids")
    ids.save_to_disk(tmp_path / "ids")
    assert datasets.load_from_disk(tmp_path / "ids")["prompt"][:] == _expected(cur, stage, "ids")
    view.to_parquet(tmp_path / "v.parquet")
    assert datasets.Dataset.from_parquet(str(tmp_path / "v.parquet"))["prompt"][:] == expected


def test_view_with_format_torch_gives_tensors_of_ids(curriculum: Curriculum) -> None:
    torch = pytest.importorskip("torch")
    import pickle

    cur = curriculum
    for view, stage in (_view(cur, "step", "ids"), _view(cur, "eval", "ids")):
        expected = _expected(cur, stage, "ids")
        tv = view.with_format("torch")
        assert isinstance(tv[0]["prompt"], torch.Tensor) and tv[0]["prompt"].tolist() == expected[0]
        assert [t.tolist() for t in tv[0:4]["prompt"]] == expected[0:4]
        assert tv[0]["row_id"] == cur.row_id(0)  # text columns stay text
        only = view.with_format("torch", columns=["prompt"])
        assert set(only[1]) == {"prompt"} and only[1]["prompt"].dtype == torch.int64
        loader = torch.utils.data.DataLoader(tv.shuffle(seed=0), batch_size=8, collate_fn=list)
        seen = [row["prompt"].tolist() for batch in loader for row in batch]
        assert sorted(seen) == sorted(expected)
        again = pickle.loads(pickle.dumps(tv.select([6, 2])))  # as DataLoader workers get it
        assert again.format["type"] == "torch" and [t.tolist() for t in again[:]["prompt"]] == [expected[6], expected[2]]
    numpy_view = cur.view(23, output="ids").with_format("numpy")
    assert numpy_view[3]["prompt"].tolist() == _expected(cur, cur.stage_at(23), "ids")[3]


def test_views_render_only_what_is_read(curriculum: Curriculum, tmp_path: Path, monkeypatch) -> None:
    """Opening a view renders nothing, a read renders its rows, whole-view calls go in bounded batches."""
    import datasets

    from rtpo_data import view as view_module

    cur = curriculum
    calls: list[int] = []
    real = Curriculum.render  # the views render their prompt column through it

    def counted(self, rows, stages, output="text"):
        calls.append(len(rows))
        return real(self, rows, stages, output)

    monkeypatch.setattr(Curriculum, "render", counted)
    monkeypatch.setattr(view_module, "BATCH_ROWS", 16)
    monkeypatch.setattr(datasets.config, "DEFAULT_MAX_BATCH_SIZE", 16)  # save_to_disk's batches
    # A fresh directory for the written-out view (another test may have written this one already).
    (tmp_path / "cache").mkdir()
    monkeypatch.setattr(view_module, "get_temporary_cache_files_directory", lambda: str(tmp_path / "cache"))
    view = cur.view(23)
    shuffled = view.shuffle(seed=0).select(range(50)).skip(5)
    assert calls == []
    assert view["row_id"][:] and calls == []  # a stored column renders no prompt
    shuffled[3]
    view[10:20]
    assert calls == [1, 10]
    calls.clear()
    list(view)
    assert max(calls) <= 16 and sum(calls) == len(cur)
    for whole in (lambda: view.to_pandas(), lambda: view.to_polars(), lambda: view.map(lambda r: {"x": 1}),
                  lambda: view.save_to_disk(tmp_path / "s"), lambda: list(view["prompt"])):
        calls.clear()
        whole()
        assert calls and max(calls) <= 16, calls


def test_view_pickles_as_the_curriculum_path(curriculum: Curriculum) -> None:
    import pickle

    cur = curriculum
    view = cur.view(23).with_format("pandas")
    data = pickle.dumps(view)
    assert len(data) < 4000  # the path, the selection and the format: no row data
    again = pickle.loads(data)
    assert again.format["type"] == "pandas" and again[:]["prompt"].tolist() == view[:]["prompt"].tolist()
    part = view.shuffle(seed=2).select(range(3, 40))
    assert pickle.loads(pickle.dumps(part))[:]["row_id"].tolist() == part[:]["row_id"].tolist()


def test_every_dataset_method_is_handled_by_the_view() -> None:
    import datasets

    from rtpo_data.view import NATIVE, RENDERED, CurriculumView

    public = {n for n in dir(datasets.Dataset) if not n.startswith("_")}
    own = {n for n in vars(CurriculumView) if not n.startswith("_")}
    unhandled = public - own - NATIVE - set(RENDERED)
    assert not unhandled, f"datasets.Dataset methods the view does not handle: {sorted(unhandled)}"


def test_view_errors_name_the_column(curriculum: Curriculum) -> None:
    cur = curriculum
    view = cur.view(23)
    with pytest.raises(ValueError, match=r"Columns \['nope'\] not in the dataset.*'prompt'"):
        view.set_format(columns=["nope"])
    with pytest.raises(ValueError, match="Column 'nope' doesn't exist"):
        view["nope"]
    with pytest.raises(RtpoDataError, match="output='tokens'"):
        cur.view(23, output="tokens")
    with pytest.raises(IndexError):
        view[len(cur)]
    assert cur.view(stage=2)[4]["prompt"] == cur.prompt(4, 2)
