"""Hint policies in OpenRLHF's real trainer: each row's stage from the policy, every group observed
before dynamic filtering, the state in OpenRLHF's checkpoint, and the step logs.

Two driver processes (orlhf_drive.py; the doubles replace vLLM generation and the DeepSpeed model):

- ``frontier`` (``RTPO_DATA_POLICY=frontier`` with the hook): rewards scripted per (row, stage) by the
  doubles (``RTPO_TEST_REWARD=capacity``: row ``r`` is solved, 2 samples of 4, up to stage ``r % 3``,
  and never above it), dynamic filtering on, 4 episodes of 16 rows, a checkpoint every step:
  A. OpenRLHF's CLI with the hook;
  B. the launcher (``--rtpo.policy frontier``) resuming A's checkpoint of global step ``RESUME_AT``;
  C. the CLI resuming A's checkpoint with another curriculum: refused.
- ``mixed``: the launcher with ``--rtpo.policy mixed`` (passed to the trainer actor by the hook's
  environment), 4 prompts per step, dynamic filtering off, the doubles' default rewards (odd rows
  2 of 4, even rows none).

The curriculum's horizon is 40 steps, so the policies' floor stays at stage 0 throughout (the runs
take fewer steps than half of it): the stages seen are the policies' own choices.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import ROWS, base_flags, run_driver, split_runs, step_logs

import rtpo_data.adapters.openrlhf as adapter
from rtpo_data import Curriculum
from rtpo_data.adapters.openrlhf_prompt import PolicyCheckpoint
from rtpo_data.errors import RtpoDataError
from rtpo_data.policies import Frontier, GlobalSchedule, Mixed, Observations, PendingObservations

pytestmark = pytest.mark.openrlhf

N = 4  # --rollout.n_samples_per_prompt
HORIZON = 40
STAGES = 4
SEED = 42  # OpenRLHF's --train.seed default: the policy's seed
EPISODES = 4
RESUME_AT = 10
OTHER_ROWS = 12


def capacity(row: int) -> int:  # as orlhf_doubles.capacity
    return row % 3


@pytest.fixture(scope="module")
def curricula(tiny, tmp_path_factory) -> dict[str, Path]:
    """``policy``: 16 rows, 4 stages over 40 steps; ``other``: 12 rows built alike (another curriculum)."""
    from rtpo_data import BuildConfig, build

    from helpers import write_jsonl
    from trl_helpers import tiny_rows

    root = tmp_path_factory.mktemp("policy_curricula")
    out = {}
    for name, rows in (("policy", ROWS), ("other", OTHER_ROWS)):
        src = write_jsonl(root / f"{name}.jsonl", tiny_rows(rows))
        build(BuildConfig(source=str(src), out=str(root / name), tokenizer=str(tiny["model"]), total_steps=HORIZON,
                          stages=STAGES, unit="word"))
        out[name] = root / name
    return out


def _train(run: dict) -> list[dict]:
    return [r for r in run["requests"] if r["n"] == N]


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def _last_checkpoint(ckpt: Path) -> dict:
    import torch

    tag = (ckpt / "_actor" / "latest").read_text().strip()
    return torch.load(ckpt / "_actor" / tag / "client_states.pt", weights_only=False)


@pytest.fixture(scope="module")
def frontier(tiny, curricula, tmp_path_factory):
    work = tmp_path_factory.mktemp("frontier")
    common = {"algo.dynamic_filtering_enable": "", "train.num_episodes": str(EPISODES), "ckpt.save_steps": "1",
              "ckpt.max_num": "100"}
    first = base_flags(tiny, {**common, "data.prompt_dataset": str(curricula["policy"]), "ckpt.path": str(work / "ckpt_a")})
    resumed = base_flags(tiny, {**common, "data.prompt_dataset": None, "reward.remote_url": None,
                                "ckpt.path": str(work / "ckpt_b"), "ckpt.load_enable": ""})
    other = base_flags(tiny, {**common, "data.prompt_dataset": str(curricula["other"]), "ckpt.path": str(work / "ckpt_c"),
                              "ckpt.load_enable": ""})
    plan = [
        {"cli": first},
        {"resume": [str(work / "ckpt_a"), str(work / "ckpt_b"), f"global_step{RESUME_AT}"]},
        {"wrapper": ["--curriculum", str(curricula["policy"]), "--rtpo.policy", "frontier", "--", *resumed]},
        {"resume": [str(work / "ckpt_a"), str(work / "ckpt_c"), f"global_step{RESUME_AT}"]},
        {"cli": other, "expect_error": True},
    ]
    events, log = run_driver(work, plan, {adapter.POLICY_ENV: "frontier", "RTPO_TEST_REWARD": "capacity"})
    runs = split_runs(events)
    assert len(runs) == 3, log[-6000:]
    return {"runs": runs, "logs": step_logs(log), "work": work, "log": log}


@pytest.fixture(scope="module")
def mixed(tiny, curricula, tmp_path_factory):
    work = tmp_path_factory.mktemp("mixed")
    flags = base_flags(tiny, {"data.prompt_dataset": None, "reward.remote_url": None, "rollout.batch_size": "4",
                              "train.batch_size": "16", "ckpt.path": str(work / "ckpt"), "ckpt.save_steps": "2"})
    plan = [{"wrapper": ["--curriculum", str(curricula["policy"]), "--rtpo.policy", "mixed",
                         "--rtpo.success_threshold", "0.5", "--", *flags]}]
    events, log = run_driver(work, plan)
    runs = split_runs(events)
    assert len(runs) == 1, log[-6000:]
    return {"run": runs[0], "logs": step_logs(log), "work": work}


# -- mixed ------------------------------------------------------------------------------------------


def test_mixed_steps_hold_several_stages_and_one_per_prompt(mixed, curricula):
    """The launcher's --rtpo.policy mixed reaches the trainer actor: each prompt is rendered at the stage
    Mixed chooses for (row, step), one step's prompts hold different stages, and every sample of a
    prompt is generated from the same ids, those of the chosen stage."""
    cur = Curriculum.open(curricula["policy"])
    policy = Mixed()
    state = policy.init_state(cur, cur.clock(HORIZON), SEED)
    run = mixed["run"]
    assert run["trainer"] == "rtpo_data.adapters.openrlhf.RTPOPPOTrainer"
    by_step: dict[int, list[int]] = defaultdict(list)
    for r in _train(run):
        row, step, stage = r["label"]["index"], r["label"]["step"], r["label"]["stage"]
        assert step == r["at"] and r["label"]["row_id"] == cur.row_id(row)
        assert stage == policy.select(state, [row], step)[0]
        assert r["prompt"] == cur.render([row], stage)[0]
        by_step[step].append(stage)
    assert sorted(by_step) == [0, 1, 2, 3] and all(len(stages) == 4 for stages in by_step.values())
    # the schedule gives stage 0 to every row at these steps; the policy mixes
    assert any(len(set(stages)) > 1 for stages in by_step.values())
    assert len({s for stages in by_step.values() for s in stages}) >= 3
    # every sample of a prompt: the ids of the prompt's stage, the same for all N of them
    samples: dict[str, list[list[int]]] = defaultdict(list)
    for g in run["generates"]:
        assert g["ids"] == cur.prompt_ids(g["row"], g["label"]["stage"])
        samples[_canonical(g["label"])].append(g["ids"])
    assert len(samples) == ROWS and all(len(ids) == N and all(i == ids[0] for i in ids) for ids in samples.values())
    # and each trained group of N samples shares one prompt and one label (one stage)
    for fit in run["fits"]:
        for g in range(0, len(fit["prompts"]), N):
            assert len(set(fit["prompts"][g:g + N])) == 1 and len({_canonical(x) for x in fit["labels"][g:g + N]}) == 1
    saved = _last_checkpoint(mixed["work"] / "ckpt")[adapter.CHECKPOINT_KEY]
    assert isinstance(saved, PolicyCheckpoint) and json.loads(saved.meta)["policy"] == "mixed"


def test_without_dynamic_filtering_every_group_is_observed_and_logged(mixed, curricula):
    """rtpo/* step logs over every group of the step: stage shares, all-fail / all-succeed groups, hint
    tokens; and rtpo/stage, the mean stage of the trained prompts."""
    cur = Curriculum.open(curricula["policy"])
    (logs,) = mixed["logs"]
    run = mixed["run"]
    assert sorted(logs) == [1, 2, 3, 4]
    for step in range(4):
        requests = [r for r in _train(run) if r["at"] == step]
        rows = [r["label"]["index"] for r in requests]
        stages = [r["label"]["stage"] for r in requests]
        status = logs[step + 1]
        assert status["rtpo/groups"] == len(requests) == 4
        for k in range(STAGES):
            assert status[f"rtpo/stage_share/{k}"] == pytest.approx(stages.count(k) / 4)
        # the doubles' default rewards: even rows all wrong, odd rows 2 of 4 right
        assert status["rtpo/all_fail_groups"] == pytest.approx(sum(r % 2 == 0 for r in rows) / 4)
        assert status["rtpo/all_succeed_groups"] == 0.0
        assert status["rtpo/hint_tokens"] == pytest.approx(float(np.mean(cur.cuts(rows, stages)[0])))
        trained = [lab["stage"] for lab in run["fits"][step]["labels"]]
        assert status["rtpo/stage"] == pytest.approx(float(np.mean(trained)))


# -- frontier -------------------------------------------------------------------------------------


def _frontier_rule(visits: list[tuple[int, int]], cap: int) -> list[int]:
    """The stage Frontier gives each of a row's visits ``(step, stage)``, stated plainly: every visit of
    a step has the row's frontier at the start of that step (it starts at 0); after the step, a
    success (scripted: stage <= capacity) moves it one stage forward, an all-fail step one back."""
    frontier, out = 0, []
    for step in sorted({s for s, _ in visits}):
        stages = [frontier for s, _ in visits if s == step]
        out += stages
        frontier = min(frontier + 1, STAGES - 1) if frontier <= cap else max(frontier - 1, 0)
    return out


def test_frontier_moves_each_row_by_its_rewards(frontier, curricula):
    """Each row's stage follows Frontier under the scripted rewards: a group with a success steps the
    row forward (less hint), an all-fail group steps it back. Row r is solved up to stage r % 3, so over
    4 visits in 4 steps it goes 0, 1, 0, 1 (capacity 0), 0, 1, 2, 1 (capacity 1) or 0, 1, 2, 3
    (capacity 2). Dynamic filtering draws more rows when it drops a group, so a row may come back
    within the same step: both visits then have the stage of that step; and every prompt is the
    curriculum's at the label's stage."""
    cur = Curriculum.open(curricula["policy"])
    first = frontier["runs"][0]
    assert first["trainer"] == "rtpo_data.adapters.openrlhf.RTPOPPOTrainer" and first["init"]["resumed_from"] is None
    visits: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for r in _train(first):
        row, stage = r["label"]["index"], r["label"]["stage"]
        assert r["label"]["step"] == r["at"] and r["prompt"] == cur.render([row], stage)[0]
        visits[row].append((r["at"], stage))
    assert sorted(visits) == list(range(ROWS))
    for row, seen in visits.items():
        assert [stage for _, stage in sorted(seen)] == _frontier_rule(seen, capacity(row)), (row, seen)
    expected = {0: [0, 1, 0, 1], 1: [0, 1, 2, 1], 2: [0, 1, 2, 3]}
    apart = [row for row, seen in visits.items() if len({s for s, _ in seen}) == len(seen) == 4]
    assert len(apart) >= ROWS // 2  # most rows come once a step: the rule is seen over all 4 visits
    for row in apart:
        assert [stage for _, stage in sorted(visits[row])] == expected[capacity(row)]
    for g in first["generates"]:
        assert g["ids"] == cur.prompt_ids(g["row"], g["label"]["stage"])

    # the same, replayed through the policy itself step by step; and the state saved last, after the
    # last step that trained (when every group of the run's last call is dropped, that call's step never
    # trains: its groups reach neither the policy nor a checkpoint)
    policy = Frontier()
    state = policy.init_state(cur, cur.clock(HORIZON), SEED)
    for step in range(len(first["fits"])):
        requests = [r for r in _train(first) if r["at"] == step]
        rows = np.array([r["label"]["index"] for r in requests])
        stages = np.array([r["label"]["stage"] for r in requests])
        assert stages.tolist() == policy.select(state, rows, step).tolist()
        won = np.where(stages <= rows % 3, N // 2, 0)
        state = policy.update(state, Observations(rows, stages, won, np.full(len(rows), N), step))
    untrained = [r for r in _train(first) if r["at"] == len(first["fits"])]
    for r in untrained:
        assert r["label"]["stage"] == policy.select(state, [r["label"]["index"]], r["at"])[0]
    saved = _last_checkpoint(frontier["work"] / "ckpt_a")[adapter.CHECKPOINT_KEY]
    loaded = saved.load(policy.init_state(cur, cur.clock(HORIZON), SEED), "A's last checkpoint")
    assert np.array_equal(loaded.arrays["frontier"], state.arrays["frontier"])
    assert np.array_equal(loaded.arrays["last_step"], state.arrays["last_step"])


def test_all_fail_groups_that_filtering_drops_still_move_their_row_back(frontier):
    """Dynamic filtering drops every all-fail group (it trains none of them), yet the policy saw each:
    the row's next prompt in a later step has one stage more hint."""
    first = frontier["runs"][0]
    trained = {_canonical([p, lab]) for fit in first["fits"] for p, lab in zip(fit["prompts"], fit["labels"])}
    by_row: dict[int, list[dict]] = defaultdict(list)
    for r in _train(first):
        by_row[r["label"]["index"]].append(r)
    dropped = 0
    for row, requests in by_row.items():
        for r, after in zip(requests, requests[1:]):
            key = _canonical([r["prompt"], r["label"]])
            failed = r["label"]["stage"] > capacity(row)  # all 4 samples wrong
            assert (key in trained) != failed
            if after["at"] == r["at"]:  # drawn again within the step: the same stage
                assert after["label"]["stage"] == r["label"]["stage"]
                continue
            dropped += failed
            assert after["label"]["stage"] == r["label"]["stage"] + (-1 if failed else 1)
    # before a later visit: capacity 0 at stage 1 (2nd visit), capacity 1 at stage 2 (3rd)
    assert dropped > 0


def test_filtered_groups_count_in_the_step_logs(frontier):
    first = frontier["runs"][0]
    logs = frontier["logs"][0]
    assert sorted(logs) == list(range(1, len(first["fits"]) + 1))
    failed_somewhere = 0
    for step in range(len(first["fits"])):
        requests = [r for r in _train(first) if r["at"] == step]
        failed = sum(r["label"]["stage"] > capacity(r["label"]["index"]) for r in requests)
        failed_somewhere += failed
        status = logs[step + 1]
        assert status["rtpo/groups"] == len(requests)
        assert status["rtpo/all_fail_groups"] == pytest.approx(failed / len(requests))
        assert status["rtpo/all_succeed_groups"] == 0.0
        assert status["rtpo/stage"] == pytest.approx(float(np.mean([lab["stage"] for lab in first["fits"][step]["labels"]])))
    assert failed_somewhere > 0


def test_resume_continues_with_the_same_policy_state_and_prompts(frontier):
    """The launcher (--rtpo.policy frontier) resumed from A's checkpoint at step RESUME_AT draws and trains,
    step by step, the same (prompt, label)s as A, and ends with the same policy state."""
    first, resumed, _ = frontier["runs"]
    assert resumed["init"]["resumed_from"] == RESUME_AT and resumed["trainer"] == first["trainer"]

    def requests(run):
        by_step: dict[int, list[str]] = defaultdict(list)
        for r in _train(run):
            if r["at"] >= RESUME_AT:
                by_step[r["at"]].append(_canonical([r["prompt"], r["label"]]))
        return {step: sorted(items) for step, items in by_step.items()}

    def trained(fits):
        return [sorted(_canonical([p, lab]) for p, lab in zip(f["prompts"], f["labels"])) for f in fits]

    assert requests(resumed) == requests(first) and len(requests(first)) > 3
    assert trained(resumed["fits"]) == trained(first["fits"][RESUME_AT:])
    # the stages after the resume depend on what the state learned before it
    assert {r["label"]["stage"] for r in _train(resumed)} > {0, 1}
    a = _last_checkpoint(frontier["work"] / "ckpt_a")[adapter.CHECKPOINT_KEY]
    b = _last_checkpoint(frontier["work"] / "ckpt_b")[adapter.CHECKPOINT_KEY]
    assert a.meta == b.meta
    with np.load(_bytes_io(a.arrays)) as x, np.load(_bytes_io(b.arrays)) as y:
        assert sorted(x.files) == sorted(y.files) == ["frontier", "last_step"]
        assert all(np.array_equal(x[name], y[name]) for name in x.files)


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


def test_a_state_saved_for_another_curriculum_is_refused(frontier, curricula):
    *_, refused = frontier["runs"]
    error = refused["error"]
    assert error and error["message"], "the run on another curriculum was not refused"
    message = error["message"]
    assert "RtpoDataError" in message and "belongs to another run" in message
    assert "row count: saved 16, now 12" in message and "curriculum: saved" in message
    assert f"the checkpoint of global step {RESUME_AT} in --ckpt.path" in message
    assert not refused["fits"] and not _train(refused)  # refused before any prompt was drawn


# -- the checkpoint state, without Ray --------------------------------------------------------------


def test_restore_policy_state_checks_the_saved_state(curricula):
    cur, other = Curriculum.open(curricula["policy"]), Curriculum.open(curricula["other"])
    clock = cur.clock(HORIZON)
    policy = Frontier()
    state = policy.init_state(cur, clock, SEED)
    state = policy.update(state, Observations(np.array([3, 4]), np.array([0, 0]), np.array([2, 0]), np.array([4, 4]), 0))
    saved = PolicyCheckpoint.of(state)
    assert "PolicyCheckpoint('frontier', 16 rows" in repr(saved) and len(repr(saved)) < 80
    import pickle

    states = {"global_step": 5, adapter.CHECKPOINT_KEY: pickle.loads(pickle.dumps(saved))}
    restored = adapter.restore_policy_state(states, policy, cur, clock, SEED)
    assert restored.arrays["frontier"].tolist() == state.arrays["frontier"].tolist()
    assert restored.arrays["frontier"][3] == 1 and restored.arrays["last_step"][3] == 0

    with pytest.raises(RtpoDataError, match=r"ckpt X belongs to another run \(curriculum: saved .*row count: saved 16, now 12"):
        adapter.restore_policy_state(states, policy, other, other.clock(HORIZON), SEED, where="ckpt X")
    with pytest.raises(RtpoDataError, match=r"horizon: saved 40, now 30"):
        adapter.restore_policy_state(states, policy, cur, cur.clock(30), SEED)
    with pytest.raises(RtpoDataError, match=r"policy: saved 'frontier', now 'mixed'"):
        adapter.restore_policy_state(states, Mixed(), cur, clock, SEED)
    # a resumed checkpoint without a state: refused for a policy that keeps one, fine for the schedule
    with pytest.raises(RtpoDataError, match="has no hint-policy state"):
        adapter.restore_policy_state({"global_step": 5}, policy, cur, clock, SEED)
    assert adapter.restore_policy_state({"global_step": 5}, GlobalSchedule(), cur, clock, SEED).arrays == {}
    # the schedule keeps nothing: it resumes from any checkpoint, as it did before policies existed
    assert adapter.restore_policy_state(states, GlobalSchedule(), other, other.clock(HORIZON), SEED).policy == "global"
    fresh = adapter.restore_policy_state({"global_step": 0}, policy, cur, clock, SEED)
    assert (fresh.arrays["frontier"] == 0).all()


def test_dataset_renders_each_row_at_the_policys_stage(curricula):
    cur = Curriculum.open(curricula["policy"])
    ds = adapter.CurriculumPromptDataset(cur, policy="frontier", seed=SEED)
    policy = ds.policy
    ds.policy_state = policy.update(ds.policy_state, Observations(np.array([1, 2]), np.array([0, 0]), np.array([1, 1]),
                                                                  np.array([4, 4]), 0))
    ds.set_step(1)
    for row in range(4):
        _, prompt, label, _ = ds[row]
        stage = 1 if row in (1, 2) else 0
        assert (label["index"], label["step"], label["stage"]) == (row, 1, stage)
        assert prompt == cur.render([row], stage)[0] and prompt.ids == cur.prompt_ids(row, stage)


def test_the_trainer_counts_successes_at_the_threshold_and_updates_once_per_step(curricula):
    """RTPOPPOTrainer._rtpo_observe, given the groups of each generation call: a sample succeeds when its
    reward is at least the threshold; a sample without reward is not counted, a group without any is not
    observed. The groups wait for the step to train (_rtpo_end_step): row 2, all-fail in the step's first
    call and drawn again in a second (OpenRLHF generates again at the same step when a call keeps no
    sample), moves forward on its success there. The step's figures cover every group observed."""
    cur = Curriculum.open(curricula["policy"])
    trainer = adapter.RTPOPPOTrainer.__ray_actor_class__.__new__(adapter.RTPOPPOTrainer.__ray_actor_class__)
    trainer.curriculum, trainer.rtpo_policy, trainer.rtpo_success_threshold = cur, Frontier(), 0.75
    trainer.rtpo_dataset = adapter.CurriculumPromptDataset(cur, policy=trainer.rtpo_policy, seed=SEED)
    trainer._rtpo_pending = PendingObservations()
    trainer._rtpo_observe([
        {"index": 1, "step": 0, "stage": 0, "rewards": [0.75, 0.0, None, 0.0]},  # one success at the threshold
        {"index": 2, "step": 0, "stage": 0, "rewards": [0.7, 0.5, 0.0, None]},  # below it: all fail
        {"index": 3, "step": 0, "stage": 0, "rewards": [None, None, None, None]},  # no reward: not observed
    ])
    assert [trainer.rtpo_dataset.stage_of(i) for i in (1, 2, 3)] == [0, 0, 0]  # the step's stages hold
    trainer._rtpo_observe([{"index": 2, "step": 0, "stage": 0, "rewards": [0.0, 1.0, 0.0, 0.0]}])
    (obs,) = trainer._rtpo_end_step()
    assert obs.rows.tolist() == [1, 2, 2] and obs.successes.tolist() == [1, 0, 1] and obs.samples.tolist() == [3, 3, 4]
    state = trainer.rtpo_dataset.policy_state
    assert state.arrays["frontier"][[1, 2, 3]].tolist() == [1, 1, 0]
    assert state.arrays["last_step"][[1, 2, 3]].tolist() == [0, 0, -1]
    figures = adapter.group_metrics(state, cur, [obs])
    assert figures["rtpo/groups"] == 3 and figures["rtpo/all_fail_groups"] == pytest.approx(1 / 3)
    assert figures["rtpo/stage_share/0"] == 1.0 and figures["rtpo/all_succeed_groups"] == 0.0
    assert figures["rtpo/hint_tokens"] == pytest.approx(float(np.mean(cur.cuts([1, 2, 2], [0, 0, 0])[0])))
    assert trainer._rtpo_end_step() == []
    assert adapter.group_metrics(state, cur, []) == {}
