"""End to end: OpenRLHF's real CLI and ``PPOTrainer.fit()`` loop in a local Ray cluster (2 CPUs).

One driver process (orlhf_drive.py) runs, in one Ray cluster:

A. ``python -m openrlhf.cli.train_ppo_ray`` as is, with ``RAY_RUNTIME_ENV_HOOK`` set: GRPO
   (group_norm), 4 samples per prompt, 2 prompts per step, dynamic filtering on, evaluation on the
   curriculum every 2 steps, a checkpoint every step, 2 episodes of 16 rows -> 8 training steps;
B. ``rtpo_data.adapters.openrlhf.main`` (the wrapper) resuming from A's checkpoint at global step 3;
C. the CLI as in A, with a policy tokenizer that adds BOS and a curriculum built with it (one
   episode, no dynamic filtering).

Test doubles (orlhf_doubles.py) replace vLLM generation and the DeepSpeed policy model only; the
trainer actor, sample generator, dynamic filtering, experience maker, rollout actor with its reward
executor (which loads rtpo-data's reward file), checkpoint states and dataloader are OpenRLHF's.
The doubles write every generation request, the token ids of every generation and every training
step to one event file in the order they happen, which gives each its training step.
"""

from __future__ import annotations

import json

import pytest
from conftest import ROWS, base_flags, run_driver, split_runs

from rtpo_data import Curriculum

pytestmark = pytest.mark.openrlhf

N = 4  # --rollout.n_samples_per_prompt
EVAL_N = 2  # --eval.n_samples_per_prompt
BATCH = 2  # --rollout.batch_size
RESUME_AT = 3


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("fit")
    common = {"eval.dataset": str(tiny["cur"]), "eval.steps": "2", "eval.n_samples_per_prompt": str(EVAL_N),
              "algo.dynamic_filtering_enable": "", "train.num_episodes": "2", "ckpt.save_steps": "1",
              "ckpt.max_num": "100"}
    first = base_flags(tiny, {**common, "ckpt.path": str(work / "ckpt_a")})
    # the wrapper fills in --data.prompt_dataset and rtpo-data's reward file itself
    resumed = base_flags(tiny, {**common, "data.prompt_dataset": None, "reward.remote_url": None,
                                "ckpt.path": str(work / "ckpt_b"), "ckpt.load_enable": ""})
    # a policy whose tokenizer adds BOS (Llama style), through OpenRLHF's CLI as is
    bos = base_flags(tiny, {"actor.model_name_or_path": str(tiny["model_bos"]), "data.prompt_dataset": str(tiny["cur_bos"]),
                            "eval.dataset": str(tiny["cur_bos"]), "eval.steps": "4", "eval.n_samples_per_prompt": str(EVAL_N),
                            "train.num_episodes": "1", "ckpt.path": str(work / "ckpt_c")})
    plan = [
        {"cli": first},
        {"resume": [str(work / "ckpt_a"), str(work / "ckpt_b"), f"global_step{RESUME_AT}"]},
        {"wrapper": ["--curriculum", str(tiny["cur"]), "--", *resumed]},
        {"cli": bos},
    ]
    events, log = run_driver(work, plan)
    parsed = split_runs(events)
    assert len(parsed) == 3, log[-6000:]
    return parsed


def _train(run: dict) -> list[dict]:
    return [r for r in run["requests"] if r["n"] == N]


def _row(request: dict) -> int:
    return int(request["label"]["row_id"][1:])


def test_openrlhf_trains_with_rtpo_trainer_installed_by_the_hook(runs):
    first, resumed, bos = runs
    assert first["trainer"] == resumed["trainer"] == bos["trainer"] == "rtpo_data.adapters.openrlhf.RTPOPPOTrainer"
    assert len(first["fits"]) == 8 and first["init"]["resumed_from"] is None


def test_hints_shrink_step_by_step_as_the_curriculum_says(runs, tiny):
    cur = Curriculum.open(tiny["cur"])
    first = runs[0]
    stages = {}
    for request in _train(first):
        step = request["at"]
        stage = cur.stage_at(step)
        assert request["label"]["step"] == step and request["label"]["stage"] == stage
        assert request["prompt"] == cur.render([_row(request)], stage)[0]
        stages.setdefault(step, stage)
    # steps 0-7 train; step 8 only draws the last rows of episode 2, which filtering rejects
    assert [stages[s] for s in range(8)] == [0, 1, 2, 3, 3, 3, 3, 3] and set(stages) <= set(range(9))
    # the fraction of trace shown falls step by step, and is zero from the horizon on
    kept = {s: max(r["label"]["kept_fraction"] for r in _train(first) if r["at"] == s) for s in stages}
    assert kept[0] == 1.0 and kept[0] > kept[1] > kept[2] > kept[3] == kept[7] == 0.0


def test_every_sample_of_a_group_sees_the_same_text(runs):
    for run in runs:
        for fit in run["fits"]:
            prompts, labels = fit["prompts"], fit["labels"]
            assert len(prompts) == BATCH * N
            for g in range(0, len(prompts), N):
                assert len(set(prompts[g:g + N])) == 1 and all(lab == labels[g] for lab in labels[g:g + N])
            # the trained labels are the dataset's dicts, through OpenRLHF's experience batching and splitting
            assert {"answer", "row_id", "step", "stage", "kept_fraction"} <= set(labels[0])


def test_dynamic_filtering_replacements_get_the_current_steps_hint(runs, tiny):
    cur = Curriculum.open(tiny["cur"])
    first = runs[0]
    replaced = 0
    for step in range(len(first["fits"])):
        requests = [r for r in _train(first) if r["at"] == step]
        # the doubles' rewards make even rows' groups all wrong: dynamic filtering rejects them
        rejected = [r for r in requests if _row(r) % 2 == 0]
        accepted = sorted({p for p in first["fits"][step]["prompts"]})
        assert sorted({r["prompt"] for r in requests if _row(r) % 2 == 1}) == accepted
        for r in requests[BATCH:]:  # drawn after the first rollout batch: replacements
            replaced += 1
            assert r["prompt"] == cur.render([_row(r)], cur.stage_at(step))[0]
        if step < 3 and rejected:
            assert any(r["label"]["kept_fraction"] > 0 for r in requests[BATCH:])
    assert replaced > 0


def test_evaluation_prompts_have_no_hint(runs, tiny):
    cur = Curriculum.open(tiny["cur"])
    for run in runs[:2]:  # the runs on `cur`
        evals = [r for r in run["requests"] if r["n"] == EVAL_N]
        by_step: dict[int, list[str]] = {}
        for r in evals:
            by_step.setdefault(r["at"], []).append(r["prompt"])
            assert r["label"] == {"answer": cur.answer(_row(r)), "row_id": cur.row_id(_row(r)), "kept_fraction": 0.0}
        assert set(by_step) == {s for s in (2, 4, 6, 8) if s > run["start"]}
        for prompts in by_step.values():
            assert sorted(prompts) == sorted(cur.render(range(ROWS), None))


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def test_engines_generate_from_the_curriculum_prompt_ids(runs, tiny):
    """The token ids that reach the rollout engine, sample by sample, are the curriculum's ``prompt_ids``:
    for training at the step's stage, for evaluation without hint; with a tokenizer that adds BOS
    (which OpenRLHF's agent would drop: it tokenizes with add_special_tokens=False) exactly one BOS."""
    from transformers import AutoTokenizer

    first, _, bos = runs
    for run, name, model in ((first, "cur", "model"), (bos, "cur_bos", "model_bos")):
        cur = Curriculum.open(tiny[name])
        generates = run["generates"]
        assert len(generates) == sum(r["n"] for r in run["requests"])  # every sample of every request
        for g in generates:
            row = _row(g)
            assert row == g["row"]  # the prompt the engine got is the row the label names
            if g["n"] == N:
                assert g["label"]["stage"] == cur.stage_at(g["at"])
                assert g["ids"] == cur.prompt_ids(row, g["label"]["stage"])
            else:
                assert g["ids"] == cur.render([row], None, "ids")[0]
        assert {g["n"] for g in generates} == {N, EVAL_N}
        tokenizer = AutoTokenizer.from_pretrained(tiny[model])
        if tokenizer.bos_token_id is not None:
            assert all(g["ids"][0] == tokenizer.bos_token_id != g["ids"][1] for g in generates)
            # the text the reward function and the logs see is what the model sees: BOS first
            assert all(r["prompt"].startswith(tokenizer.bos_token) for r in run["requests"])
    assert AutoTokenizer.from_pretrained(tiny["model_bos"]).bos_token_id is not None


def test_resume_reproduces_the_uninterrupted_run(runs):
    """Step by step, the resumed run draws and trains the same (prompt, label)s as the uninterrupted one.

    Within a step the order is not OpenRLHF's to keep: the requests of a step run concurrently in an
    async Ray actor, and the sample generator collects their results as they finish (``ray.wait``),
    so the order in which they are logged and batched varies from run to run. Each step's requests
    and trained samples are compared as multisets.
    """
    first, resumed, _ = runs
    assert resumed["init"]["resumed_from"] == RESUME_AT and resumed["start"] == RESUME_AT

    def trained(fits):
        return [sorted(_canonical([p, lab]) for p, lab in zip(f["prompts"], f["labels"])) for f in fits]

    assert trained(resumed["fits"]) == trained(first["fits"][RESUME_AT:])

    def requests(run):
        by_step: dict[int, list[str]] = {}
        for r in _train(run):
            if r["at"] >= RESUME_AT:
                by_step.setdefault(r["at"], []).append(_canonical([r["prompt"], r["label"]]))
        return {step: sorted(items) for step, items in by_step.items()}

    assert requests(resumed) == requests(first)
