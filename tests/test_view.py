"""``CurriculumView`` (rtpo_data/view.py): a step of the curriculum, or no hint at all, as a real
``datasets.Dataset`` whose prompt column is rendered on access, in every output, over many shards
and record batches, and non-ASCII traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtpo_data import Curriculum, RtpoDataError

from helpers import reference_prompt


def test_views_render_lazily_in_every_output(curriculum: Curriculum) -> None:
    cur = curriculum
    step = 23
    stage = cur.stage_at(step)
    rows = [3, 41, 96]
    for output, expected in (("text", cur.render(rows, stage)),
                             ("ids", [x.tolist() for x in cur.render(rows, stage, "arrays")]),
                             ("messages", cur.render(rows, stage, "messages"))):
        assert cur.view(step, output=output)[rows]["prompt"] == expected
    assert cur.eval_view(output="ids")[rows]["prompt"] == [reference_prompt(cur, i, cur.num_stages - 1)[1] for i in rows]


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


def test_view_is_lazy_and_matches_prompts(gsm8k_curriculum: Curriculum) -> None:
    cur = gsm8k_curriculum
    view = cur.view(step=30)
    stage = cur.stage_at(30)
    assert stage == 2
    assert view.num_rows == len(cur)
    batch = view[10:14]
    assert batch["prompt"] == cur.render(range(10, 14), stage)
    assert set(batch) == {"row_id", "prompt", "answer", "gold"}
    assert cur.eval_view()[3]["prompt"] == cur.prompt(3, cur.num_stages - 1)
    ids = cur.view(step=0, output="ids")[0]["prompt"]
    assert ids == cur.prompt_ids(0, 0)
    assert cur.view(step=99, output="messages")[0]["prompt"][-1]["role"] == "user"  # last stage: no hint
