"""``Curriculum`` (rtpo_data/curriculum.py): a built curriculum opened for random access, pickled
as its path, and the names of earlier releases."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from rtpo_data import Curriculum


def test_curriculum_pickles(gsm8k_curriculum: Curriculum) -> None:
    import pickle

    clone = pickle.loads(pickle.dumps(gsm8k_curriculum))
    assert len(clone) == len(gsm8k_curriculum) and clone.prompt(3, 2) == gsm8k_curriculum.prompt(3, 2)
    view = pickle.loads(pickle.dumps(gsm8k_curriculum.view(step=10)))
    assert view[0]["prompt"] == gsm8k_curriculum.prompt(0, gsm8k_curriculum.stage_at(10))


def _same(got, want) -> bool:
    """``got`` is exactly ``want``: the same types, dtypes and values, all the way down."""
    if isinstance(want, np.ndarray):
        return type(got) is type(want) and got.dtype == want.dtype and np.array_equal(got, want)
    if isinstance(want, datasets.Dataset):
        return (type(got) is type(want) and got.features == want.features and len(got) == len(want)
                and got[:] == want[:])
    if isinstance(want, list):
        return type(got) is list and len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    return type(got) is type(want) and got == want


def test_every_name_of_earlier_releases_still_works_and_names_its_replacement(gsm8k_curriculum: Curriculum) -> None:
    """Each render method of earlier releases returns exactly what its replacement returns, with a
    FutureWarning, pointing at the caller, that names the replacement."""
    cur = gsm8k_curriculum
    rows, stages = [3, 0, 3, 1318], [1, 0, 7, 2]
    renamed = [  # (old name, a call of it, the same call of its replacement, the replacement as the warning names it)
        ("prompts", lambda: cur.prompts(rows, stages), lambda: cur.render(rows, stages), "render(rows, stages)"),
        ("prompts", lambda: cur.prompts(rows, 1), lambda: cur.render(rows, 1), "render(rows, stages)"),
        ("eval_prompts", lambda: cur.eval_prompts(rows), lambda: cur.render(rows, None), "render(rows, None)"),
        ("prompt_ids_batch", lambda: cur.prompt_ids_batch(rows, stages), lambda: cur.render(rows, stages, "arrays"),
         "render(rows, stages, 'arrays')"),
        ("prompt_ids_batch", lambda: cur.prompt_ids_batch(rows, None), lambda: cur.render(rows, None, "arrays"),
         "render(rows, stages, 'arrays')"),
        ("messages_batch", lambda: cur.messages_batch(rows, stages), lambda: cur.render(rows, stages, "messages"),
         "render(rows, stages, 'messages')"),
        ("messages", lambda: cur.messages(3, 1), lambda: cur.render([3], 1, "messages")[0],
         "render([i], stage, 'messages')[0]"),
        ("hint_tokens_at", lambda: cur.hint_tokens_at(rows, stages), lambda: cur.cuts(rows, stages)[0],
         "cuts(rows, stages)[0]"),
        ("stage_view", lambda: cur.stage_view(2), lambda: cur.view(stage=2), "view(stage=...)"),
        ("stage_view", lambda: cur.stage_view(2, "ids"), lambda: cur.view(stage=2, output="ids"), "view(stage=...)"),
    ]
    assert {name for name, *_ in renamed} == {"prompts", "eval_prompts", "prompt_ids_batch", "messages_batch",
                                               "messages", "hint_tokens_at", "stage_view"}
    for name, old, new, replacement in renamed:
        with pytest.warns(FutureWarning) as caught:
            got = old()
        assert len(caught) == 1, name
        assert str(caught[0].message) == f"Curriculum.{name} is deprecated: use Curriculum.{replacement}.", name
        assert caught[0].filename == __file__, name  # the warning points at the caller's line
        want = new()
        assert _same(got, want), name
    with pytest.raises(AttributeError, match="'Curriculum' object has no attribute 'prompt_batch'"):
        cur.prompt_batch  # noqa: B018 (a name that never existed is still an error)
