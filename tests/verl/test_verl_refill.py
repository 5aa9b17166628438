"""A verl step that draws a row twice (DAPO's refills past the end of the data) under the frontier
hint policy (tests/verl/verl_drive.py: verl's real trainer, replay buffer, reward and agent-loop
workers; only the LLM server is scripted)."""

from __future__ import annotations

from collections import Counter

import pytest

from verl_drive import ROWS, launch

pytestmark = pytest.mark.verl
STEPS = 8


def test_a_row_drawn_twice_in_one_step_keeps_its_stage_for_the_step(tiny, tmp_path):
    """verl's DAPO group filter dispatches more prompts at the same step when it drops groups (its
    refill_fn); past the end of the data the same rows come again. Every dispatch of a step gets the
    step's stages, although the step's first groups were scored before the refills; the policy moves
    after the step, with all of its groups."""
    run = launch(tiny, tmp_path, "data.train_batch_size=4", f"trainer.total_training_steps={STEPS}",
                 "+rtpo.horizon=trainer", "+rtpo.policy=frontier")
    try:
        first = run.step(1, refills=(4, ROWS))  # 4 + 4 rows: every row once; then all of them again
        second = run.step(2) + run.step(3)
    finally:
        run.close()
    assert Counter(s.row for s in first) == {row: 2 * 2 for row in range(ROWS)}  # 2 visits, rollout.n=2
    assert {s.stage for s in first} == {0}
    assert {s.row: s.stage for s in second} == {row: 1 if row % 2 == 0 else 0 for row in range(ROWS)}
