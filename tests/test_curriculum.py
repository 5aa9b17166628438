"""``Curriculum`` (rtpo_data/curriculum.py): a built curriculum opened for random access, pickled
as its path, and the names of earlier releases."""

from __future__ import annotations

from rtpo_data import Curriculum


def test_curriculum_pickles(gsm8k_curriculum: Curriculum) -> None:
    import pickle

    clone = pickle.loads(pickle.dumps(gsm8k_curriculum))
    assert len(clone) == len(gsm8k_curriculum) and clone.prompt(3, 2) == gsm8k_curriculum.prompt(3, 2)
    view = pickle.loads(pickle.dumps(gsm8k_curriculum.view(step=10)))
    assert view[0]["prompt"] == gsm8k_curriculum.prompt(0, gsm8k_curriculum.stage_at(10))
