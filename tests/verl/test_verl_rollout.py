"""verl 0.9.1's V1 rollout with rtpo-data, step by step (tests/verl/verl_drive.py): verl's config,
dataloader (2 worker processes), trainer batch code, agent-loop manager and ``AgentLoopWorkerTQ`` Ray
actors, reward workers, TransferQueue and replay buffer are real; the LLM server is a double that
records the token ids it is sent and answers even-numbered problems right."""

from __future__ import annotations

from collections import defaultdict

import pytest

from rtpo_data import Curriculum
from rtpo_data.adapters import verl as adapter

from verl_drive import ROWS, TOTAL_STEPS, launch

pytestmark = pytest.mark.verl
BATCH, N = 2, 2


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    run = launch(tiny, tmp_path_factory.mktemp("ckpt"))
    steps = {g: run.step(g) for g in (1, 2)}
    folder = run.checkpoint(2)
    steps.update({g: run.step(g) for g in (3, 4)})
    run.restart(folder)
    resumed = {g: run.step(g) for g in (3, 4)}
    validation = run.validate(5)
    yield {"cur": Curriculum.open(tiny["cur"]), "steps": steps, "resumed": resumed, "validation": validation,
           "folder": folder}
    run.close()


def test_hints_shrink_over_steps_and_are_gone_at_the_horizon(run):
    cur = run["cur"]
    for g, samples in run["steps"].items():
        assert len(samples) == BATCH * N
        assert {s.stage for s in samples} == {cur.stage_at(g - 1, TOTAL_STEPS)} == {g - 1}
    hint = {g: sum(s.extra["rtpo_hint_tokens"] for s in samples) for g, samples in run["steps"].items()}
    assert hint[1] > hint[2] > hint[3] > hint[4] == 0
    for s in run["steps"][4]:
        assert s.prompt_ids == cur.prompt_ids(s.row, None)


def test_the_server_is_sent_the_curriculums_token_ids_and_verl_trains_on_them(run, tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny["model"]))
    cur = run["cur"]
    samples = [s for steps in run["steps"].values() for s in steps]
    for s in samples:
        assert s.server_ids == cur.prompt_ids(s.row, s.stage)
        assert s.prompt_ids == s.server_ids
        text = tok.decode(s.prompt_ids)
        assert text == cur.prompt(s.row, s.stage)
        assert cur.hint(s.row, s.stage) in text and text.endswith(cur.hint(s.row, s.stage))
    rows = sorted(s.row for s in samples)
    assert rows == sorted(list(range(ROWS)) * N)  # 4 steps of 2 rows: one epoch, each row rollout.n times


def test_every_sample_of_a_row_shares_its_prompt_and_only_the_response_is_trained(run, tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny["model"]))
    by_row = defaultdict(list)
    for g, samples in run["steps"].items():
        for s in samples:
            by_row[(g, s.row)].append(s)
    for group in by_row.values():
        assert len(group) == N
        assert len({tuple(s.prompt_ids) for s in group}) == 1
        for s in group:
            # the hint is in the prompt; the loss mask spans the generated tokens alone
            assert tok.decode(s.response_ids).startswith("So the sum is \\boxed{")
            assert s.response_mask == [1] * len(s.response_ids)


def test_verls_reward_workers_score_the_response_and_log_stage_and_hint(run):
    cur = run["cur"]
    for s in [s for steps in run["steps"].values() for s in steps]:
        right = s.row % 2 == 0  # the scripted server answers even problems right
        assert cur.answer(s.row) == str(2 * s.row)
        assert s.reward == (1.0 if right else 0.0)
        logged = s.extra["reward_extra_info"]
        assert logged["acc"] == s.reward and logged["format"] == 1.0
        assert logged["rtpo_stage"] == s.stage and logged["rtpo_hint_tokens"] == s.extra["rtpo_hint_tokens"]


def test_validation_prompts_carry_no_hint(run):
    cur = run["cur"]
    assert len(run["validation"]) == 4 * 1  # val_batch_size 4, val_kwargs.n 1
    for s in run["validation"]:
        assert s.stage == adapter.NO_HINT and s.extra["rtpo_hint_tokens"] == 0
        assert s.extra["reward_extra_info"]["rtpo_stage"] == adapter.NO_HINT
        assert s.prompt_ids == s.server_ids == cur.prompt_ids(s.row, None)


def test_a_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(run):
    def seen(samples):
        return sorted((s.row, s.stage, tuple(s.prompt_ids)) for s in samples)

    for g in (3, 4):
        assert seen(run["resumed"][g]) == seen(run["steps"][g])
    # the schedule is a function of (row, step): nothing of the policy's is saved with the checkpoint
    assert sorted(p.name for p in run["folder"].iterdir()) == ["data.pt"]
