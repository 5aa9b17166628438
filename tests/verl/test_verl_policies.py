"""The frontier hint policy in verl's rollout (tests/verl/verl_drive.py): verl's reward workers score
each sample, rtpo-data's workers record it, the manager updates the policy before the next step, and
the state rides in verl's checkpoint folder through the checkpoint callback."""

from __future__ import annotations

import json

import pytest

from verl_drive import ROWS, launch

pytestmark = pytest.mark.verl
STEPS = 8  # 4 rows a step: every row once per 2 steps


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    run = launch(tiny, tmp_path_factory.mktemp("ckpt"), "data.train_batch_size=4", f"trainer.total_training_steps={STEPS}",
                 "+rtpo.horizon=trainer", "+rtpo.policy=frontier", "trainer.save_freq=2")
    steps = {g: run.step(g) for g in (1, 2)}
    folder = run.checkpoint(2)
    steps.update({g: run.step(g) for g in (3, 4)})
    run.restart(folder)
    resumed = {g: run.step(g) for g in (3, 4)}
    yield {"steps": steps, "resumed": resumed, "folder": folder}
    run.close()


def stages(samples):
    return {s.row: s.stage for s in samples}


def test_a_solved_problem_gets_less_hint_and_a_failed_one_keeps_the_whole_trace(run):
    first = {**stages(run["steps"][1]), **stages(run["steps"][2])}
    second = {**stages(run["steps"][3]), **stages(run["steps"][4])}
    assert sorted(first) == sorted(second) == list(range(ROWS))
    assert set(first.values()) == {0}  # every row starts with the whole trace
    # the scripted server solves even problems: a group with a success steps the row forward
    assert second == {row: 1 if row % 2 == 0 else 0 for row in range(ROWS)}


def test_the_policy_state_is_saved_with_the_checkpoint_and_a_resume_reproduces_the_run(run):
    meta = json.loads((run["folder"] / "rtpo_policy.json").read_text())
    assert meta["policy"] == "frontier" and meta["total_steps"] == STEPS
    for g in (3, 4):
        assert sorted((s.row, s.stage, tuple(s.prompt_ids)) for s in run["resumed"][g]) == \
            sorted((s.row, s.stage, tuple(s.prompt_ids)) for s in run["steps"][g])
