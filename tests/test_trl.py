"""The real TRL GRPOTrainer on a tiny model made in-process: the token ids that reach the model's
``generate`` are the curriculum's ``prompt_ids`` for the step they are generated at (shuffling,
accumulation, steps_per_generation, num_iterations, resume), and what reward functions receive."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from rtpo_data import Curriculum
from rtpo_data.adapters.trl import RTPOTrainer
from rtpo_data.errors import RtpoDataError

from trl_helpers import (
    PROBLEM,
    GenerateRecorder,
    RewardRecorder,
    grpo_args,
    length_reward,
    record_tokenized,
    tiny_setup,
)

pytestmark = pytest.mark.trl

GEOMETRY = {"gradient_accumulation_steps": 2, "steps_per_generation": 2, "num_iterations": 2, "shuffle_dataset": True}


def row_of(cur: Curriculum, problem: int) -> int:
    """The curriculum row of problem number ``problem`` (row ids are ``p<number>``)."""
    return next(i for i in range(len(cur)) if cur.row_id(i) == f"p{problem}")


def check_exact(cur: Curriculum, seen, total_steps: int) -> set[int]:
    """Every (step, problem, ids) generated from is ``prompt_ids(row, stage_at(step))``; returns the stages."""
    stages = set()
    for step, problem, ids in seen:
        i = row_of(cur, problem)
        stage = cur.stage_at(step, total_steps)
        assert ids == cur.prompt_ids(i, stage), (step, i, stage)
        stages.add(stage)
    return stages


def test_prompt_ids_reaching_generate_follow_the_schedule_exactly(tmp_path, monkeypatch):
    cur_dir, tok, model = tiny_setup(tmp_path)
    rec = GenerateRecorder(monkeypatch, tok)
    tokenized = record_tokenized(monkeypatch, tok)  # none of the prompts: they come as stored ids
    reward = RewardRecorder()
    trainer = RTPOTrainer(model=model, reward_funcs=reward, args=grpo_args(tmp_path / "run", **GEOMETRY),
                          processing_class=tok, curriculum=cur_dir)
    rec.trainer = trainer
    trainer.train()
    cur = Curriculum.open(cur_dir)
    seen = rec.train()
    assert check_exact(cur, seen, 6) == {0, 1, 2}
    # 6 optimizer steps, a generation round every 2 -> 3 rounds of 4 prompts x 4 generations.
    assert sorted({s for s, _, _ in seen}) == [0, 2, 4] and len(seen) == 3 * 16
    for step in (0, 2, 4):  # all copies of a prompt in a round get the same hint
        problems = [p for s, p, _ in seen if s == step]
        assert all(problems.count(p) == 4 for p in problems)
    # reward functions get the step's prompt text, the row's stable row_id and its answer
    assert [c["step"] for c in reward.calls] == [0, 2, 4]
    for call in reward.calls:
        stage = cur.stage_at(call["step"], 6)
        rows = [row_of(cur, int(rid[1:])) for rid in call["row_id"]]
        assert call["prompts"] == [cur.prompt(i, stage) for i in rows]
        assert call["answer"] == [cur.answer(i) for i in rows]
    logged = [h for h in trainer.state.log_history if "rtpo/stage" in h]
    assert [h["rtpo/stage"] for h in logged][:1] == [0.0] and max(h["rtpo/stage"] for h in logged) == 2.0
    assert all("rtpo/hint_tokens" in h and "rtpo/kept_fraction" in h for h in logged)
    assert logged[0]["rtpo/kept_fraction"] == 1.0
    prompts = {p for call in reward.calls for p in call["prompts"]}
    assert not prompts & set(tokenized)


def test_bos_tokenizer_gets_exactly_one_bos(tmp_path, monkeypatch):
    """A tokenizer that adds BOS (and a template that writes it): the ids start with one BOS, as stored."""
    cur_dir, tok, model = tiny_setup(tmp_path, bos=True, unit="token")
    rec = GenerateRecorder(monkeypatch, tok)
    trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run", max_steps=2),
                          processing_class=tok, curriculum=cur_dir, horizon="curriculum")
    rec.trainer = trainer
    trainer.train()
    cur = Curriculum.open(cur_dir)
    seen = rec.train()
    assert seen and check_exact(cur, seen, 6) == {0}
    assert all(ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id for _, _, ids in seen)


def test_resume_reproduces_the_uninterrupted_prompts(tmp_path, monkeypatch):
    cur_dir, tok, model = tiny_setup(tmp_path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rec = GenerateRecorder(monkeypatch, tok)
    args = grpo_args(tmp_path / "run", save_strategy="steps", save_steps=2, **GEOMETRY)
    rec.trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=args, processing_class=tok, curriculum=cur_dir)
    rec.trainer.train()
    full = rec.train()
    rec.seen.clear()
    model.load_state_dict(state)
    args = grpo_args(tmp_path / "run", save_strategy="steps", save_steps=2, **GEOMETRY)
    rec.trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=args, processing_class=tok, curriculum=cur_dir)
    rec.trainer.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert rec.train() and rec.train() == [r for r in full if r[0] >= 2]


def test_horizon_mismatch_is_an_error(tmp_path):
    cur_dir, tok, model = tiny_setup(tmp_path, total_steps=10)
    trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run"),
                          processing_class=tok, curriculum=cur_dir)
    with pytest.raises(RtpoDataError, match="total_steps=10.*max_steps=6"):
        trainer.train()
    trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run2", max_steps=2),
                          processing_class=tok, curriculum=cur_dir, horizon="curriculum")
    trainer.train()
    assert trainer.rtpo_total_steps() == 10


def test_missing_horizon_uses_max_steps(tmp_path):
    cur_dir, tok, model = tiny_setup(tmp_path, total_steps=None)
    trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run", max_steps=2),
                          processing_class=tok, curriculum=cur_dir)
    trainer.train()
    assert trainer.rtpo_total_steps() == 2
    trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run2", max_steps=2),
                          processing_class=tok, curriculum=cur_dir, horizon="curriculum")
    with pytest.raises(RtpoDataError, match="horizon='curriculum', but .* was built without --total-steps"):
        trainer.train()


def test_prompt_that_cannot_fit_is_refused(tmp_path):
    cur_dir, tok, model = tiny_setup(tmp_path)
    model.config.max_position_embeddings = 40
    with pytest.raises(RtpoDataError, match=r"16 rows of .*cur do not fit.*max_position_embeddings=40.*p0, .*p9 and 6 more\."):
        RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run"),
                    processing_class=tok, curriculum=cur_dir)


def test_launcher_uses_trl_parser_and_yaml(tmp_path):
    """`rtpo-data train trl` in a subprocess: TRL's own flags and YAML keys, a real 2-step run."""
    import subprocess
    import sys
    from pathlib import Path

    cur_dir, tok, model = tiny_setup(tmp_path, total_steps=None)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    (tmp_path / "grpo.yaml").write_text(
        "bf16: false\nuse_cpu: true\nreport_to: none\nnum_generations: 4\nmax_completion_length: 8\n"
        "per_device_train_batch_size: 8\nmax_steps: 5\nlogging_steps: 1\nsave_strategy: 'no'\ndisable_tqdm: true\n"
    )
    tests_dir = Path(__file__).parent
    cmd = [sys.executable, "-m", "rtpo_data.cli.main", "train", "trl", "--curriculum", str(cur_dir),
           "--config", str(tmp_path / "grpo.yaml"), "--model_name_or_path", str(model_dir), "--max_steps", "2",
           "--output_dir", str(tmp_path / "run"), "--reward_funcs", "trl_helpers.length_reward"]
    result = subprocess.run(cmd, cwd=tests_dir, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "config.json").exists()  # the trained model was saved
    logs = result.stdout + result.stderr
    assert "'rtpo/stage': '0'" in logs and "'rtpo/hint_tokens'" in logs, logs[-2000:]
    bad = subprocess.run([sys.executable, "-m", "rtpo_data.cli.main", "train", "trl", "--config", str(tmp_path / "grpo.yaml"),
                          "--model_name_or_path", str(model_dir)], cwd=tests_dir, capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode == 1 and "--curriculum is required" in bad.stderr


def _launcher_flags(tmp_path, cur_dir, model_dir) -> list[str]:
    return ["--curriculum", str(cur_dir), "--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "run"),
            "--bf16", "false", "--use_cpu", "true", "--report_to", "none", "--num_generations", "4",
            "--max_completion_length", "8", "--per_device_train_batch_size", "8", "--max_steps", "2",
            "--logging_steps", "1", "--save_strategy", "no", "--disable_tqdm", "true",
            "--reward_funcs", "trl_helpers.length_reward"]


def test_launcher_trains_peft_and_evaluates_a_held_out_curriculum(tmp_path):
    """`--use_peft` and the LoRA flags reach the trainer as `trl grpo` passes them: a PEFT model trains
    (its LoRA weights move, the base weights do not) and only the adapter is saved; `--eval_curriculum`
    evaluates the held-out curriculum."""
    from peft import PeftModel

    from rtpo_data.adapters.trl import main

    from trl_helpers import build_curriculum

    cur_dir, tok, model = tiny_setup(tmp_path, total_steps=None)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    held_dir = build_curriculum(tmp_path, "held", str(tmp_path / "model"), n=8, start=100, total_steps=None)
    trainer = main([*_launcher_flags(tmp_path, cur_dir, tmp_path / "model"), "--use_peft", "--lora_r", "4",
                    "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj", "--learning_rate", "0.01",
                    "--eval_curriculum", str(held_dir), "--eval_strategy", "steps", "--eval_steps", "2",
                    "--per_device_eval_batch_size", "8"])
    assert isinstance(trainer.model, PeftModel)
    config = trainer.model.peft_config["default"]
    assert config.r == 4 and config.lora_alpha == 8 and set(config.target_modules) == {"q_proj", "v_proj"}
    weights = dict(trainer.model.named_parameters())
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # LoRA B starts at zero: it trained
    base = {k: v for k, v in model.state_dict().items()}
    merged_free = {name.removeprefix("base_model.model.").replace(".base_layer", ""): w
                   for name, w in weights.items() if "lora_" not in name}
    assert all(torch.equal(merged_free[k], base[k]) for k in base if k in merged_free)
    assert (tmp_path / "run" / "adapter_config.json").exists() and not (tmp_path / "run" / "model.safetensors").exists()
    assert any("eval_loss" in h for h in trainer.state.log_history)


def test_launcher_passes_quantization_to_the_model_loader(tmp_path):
    """`--load_in_4bit` reaches the model loader (as `trl grpo` passes it): here, without bitsandbytes
    (it needs CUDA), loading stops and asks for it instead of training an unquantized model."""
    from rtpo_data.adapters.trl import main

    cur_dir, tok, model = tiny_setup(tmp_path, total_steps=None)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    with pytest.raises(ImportError, match="bitsandbytes"):
        main([*_launcher_flags(tmp_path, cur_dir, tmp_path / "model"), "--load_in_4bit"])


@pytest.mark.parametrize(("extra", "message"), [
    (["--eval_without_hint", "--eval_curriculum", "HELD", "--eval_strategy", "steps"], "give one of them"),
    (["--eval_curriculum", "HELD"], "add --eval_strategy steps --eval_steps N"),
    (["--eval_curriculum", "NOWHERE", "--eval_strategy", "steps"], "is not a curriculum directory"),
])
def test_launcher_refuses_unclear_evaluation(extra, message, tmp_path):
    from rtpo_data.adapters.trl import main

    cur_dir, _tok, _model = tiny_setup(tmp_path, total_steps=None)
    extra = [{"HELD": str(cur_dir), "NOWHERE": str(tmp_path)}.get(x, x) for x in extra]
    with pytest.raises(RtpoDataError, match=message):
        main([*_launcher_flags(tmp_path, cur_dir, tmp_path / "model"), *extra])


def _export_setup(tmp_path, recipe: str = "", total_steps: int | None = 4) -> Path:
    cur_dir, _tok, _model = tiny_setup(tmp_path, total_steps=total_steps, stages=2)
    (tmp_path / "grpo.yaml").write_text(
        f"model_name_or_path: {tmp_path / 'model'}\nbf16: false\nuse_cpu: true\nreport_to: none\nnum_generations: 4\n"
        "max_completion_length: 8\nmax_steps: 4\nlogging_steps: 1\nsave_strategy: 'no'\ndisable_tqdm: true\nseed: 3\n"
        + (recipe or "per_device_train_batch_size: 8\ngradient_accumulation_steps: 2\n"
           "reward_funcs: [trl_helpers.length_reward]\n")
    )
    return cur_dir


def test_export_order_matches_trl_consumption(tmp_path):
    import pyarrow.parquet as pq

    from rtpo_data.adapters.trl import export

    cur_dir = _export_setup(tmp_path)
    run = export(cur_dir, tmp_path / "grpo.yaml", tmp_path / "run")
    table = pq.read_table(run / "train.parquet").to_pydict()
    # per_device 8 x 1 process x steps_per_generation 2 = 16 per round = 4 prompts; a round covers 1 optimizer step.
    assert table["rtpo_step"] == [s for s in range(4) for _ in range(4)]
    cur = Curriculum.open(cur_dir)
    for prompt, rid, stage in zip(table["prompt"], table["row_id"], table["rtpo_stage"]):
        i = next(j for j in range(len(cur)) if cur.row_id(j) == rid)
        assert prompt == cur.prompt(i, stage)
    assert table["rtpo_stage"] == [0] * 8 + [1] * 8


def test_export_horizon_follows_the_one_rule(tmp_path):
    """``--horizon curriculum`` on a curriculum built without ``--total-steps`` is an error (it used to
    fall back to the config's max_steps silently); ``auto`` runs the schedule over max_steps."""
    import pyarrow.parquet as pq

    from rtpo_data.adapters.trl import export

    cur_dir = _export_setup(tmp_path, total_steps=None)
    with pytest.raises(RtpoDataError, match="--horizon curriculum, but .* was built without --total-steps"):
        export(cur_dir, tmp_path / "grpo.yaml", tmp_path / "run", horizon="curriculum")
    run = export(cur_dir, tmp_path / "grpo.yaml", tmp_path / "run", horizon="auto")
    assert pq.read_table(run / "train.parquet").column("rtpo_stage").to_pylist() == [0] * 8 + [1] * 8
    assert json.loads((run / "export.json").read_text())["horizon"] == 4


def test_stock_trl_grpo_runs_an_export_with_weights_and_unscorable_rows(tmp_path):
    """`trl grpo` on an export whose recipe weights its rewards and has rows no reward can score: the
    guard's weight is added (no length mismatch), and the guard, which scores nothing (None), leaves
    TRL's "every reward is None: unscorable" rule to the user's rewards. A changed geometry stops."""
    import subprocess
    import sys

    import yaml

    cur_dir = _export_setup(tmp_path, "per_device_train_batch_size: 8\ngradient_accumulation_steps: 2\n"
                                      "reward_funcs: [trl_helpers.even_rows_reward]\nreward_weights: [0.5]\n")
    tests_dir = Path(__file__).parent
    cli = [sys.executable, "-m", "rtpo_data.cli.main"]
    exported = subprocess.run([*cli, "export", "trl", "--curriculum", str(cur_dir), "--config", str(tmp_path / "grpo.yaml"),
                               "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=tests_dir, timeout=300, check=False)
    assert exported.returncode == 0, exported.stderr
    recipe = yaml.safe_load((tmp_path / "run" / "grpo.yaml").read_text())
    assert recipe["reward_funcs"] == ["rtpo_data.adapters.trl.step_guard", "trl_helpers.even_rows_reward"]
    assert recipe["reward_weights"] == [0.0, 0.5]
    trl = [str(Path(sys.executable).with_name("trl")), "grpo", "--config", str(tmp_path / "run" / "grpo.yaml"),
           "--output_dir", str(tmp_path / "out")]
    ok = subprocess.run(trl, capture_output=True, text=True, cwd=tests_dir, timeout=600, check=False)
    assert ok.returncode == 0, ok.stderr[-3000:]
    logs = ok.stdout + ok.stderr
    assert "rewards/step_guard/mean" in logs
    # odd problems have no score: TRL sees every reward of those rows as None and leaves them out
    assert "All reward functions returned None" in logs and "'row_id': 'p" in logs
    changed = subprocess.run([*trl, "--gradient_accumulation_steps", "1", "--steps_per_generation", "1"],
                             capture_output=True, text=True, cwd=tests_dir, timeout=600, check=False)
    assert changed.returncode != 0
    assert "rtpo-data step guard" in changed.stderr and "are being used at step" in changed.stderr


TWO_PROCESS_RECIPE = ("per_device_train_batch_size: 6\ngradient_accumulation_steps: 1\n"
                      "reward_funcs: [trl_helpers.length_reward]\n")


def test_export_reads_a_multi_process_recipe_as_that_many_processes(tmp_path):
    """6 completions per device, 4 per prompt: valid on 2 processes (12 a round), not on one (6)."""
    import pyarrow.parquet as pq

    from rtpo_data.adapters.trl import export

    cur_dir = _export_setup(tmp_path, TWO_PROCESS_RECIPE)
    with pytest.raises(RtpoDataError, match=r"on 1 process\(es\).*must be divisible by num_generations \(4\)"):
        export(cur_dir, tmp_path / "grpo.yaml", tmp_path / "one")
    run = export(cur_dir, tmp_path / "grpo.yaml", tmp_path / "run", num_processes=2)
    geometry = json.loads((run / "export.json").read_text())["geometry"]
    assert geometry["generation_batch_size"] == 12 and geometry["num_processes"] == 2
    table = pq.read_table(run / "train.parquet").to_pydict()
    assert table["rtpo_step"] == [s for s in range(4) for _ in range(3)]  # 3 prompts a round, a round a step


@pytest.mark.slow
def test_stock_trl_grpo_on_two_processes_runs_a_two_process_export(tmp_path):
    """`trl grpo` under torchrun with 2 processes (gloo on the CPU) on an export for 2 processes: the
    guard checks on both that every row is used at the step it was rendered for."""
    import subprocess
    import sys

    from rtpo_data.adapters.trl import export

    cur_dir = _export_setup(tmp_path, TWO_PROCESS_RECIPE)
    run = export(cur_dir, tmp_path / "grpo.yaml", tmp_path / "run", num_processes=2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(Path(__file__).parent / "trl_grpo_two_processes.py"), "--config", str(run / "grpo.yaml"),
           "--output_dir", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    logs = proc.stdout + proc.stderr
    assert logs.count("'rewards/step_guard/mean'") >= 4 and "rtpo-data step guard" not in logs


def _free_port() -> int:
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_each_generate_from_the_curriculum_ids_and_log_global_means(tmp_path):
    """Two processes (torchrun, gloo on the CPU): both render for the same global step, each its own
    share of the rows; the ids each process generates from are the curriculum's for that step; and
    the logged rtpo/* metrics are the means over both processes' prompts, not rank 0's."""
    import subprocess
    import sys

    cur_dir, _tok, _model = tiny_setup(tmp_path)
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(here / "trl_two_processes.py"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cur = Curriculum.open(cur_dir)
    seen = {rank: [(r["step"], r["problem"], r["ids"])
                   for r in map(json.loads, (tmp_path / f"seen-{rank}.jsonl").read_text().splitlines())]
            for rank in (0, 1)}
    # a round: 4 completions per device x 2 processes x 2 steps per generation = 16 completions (4 problems),
    # feeding 2 optimizer steps (accumulation 2, num_iterations 2)
    for rank in (0, 1):
        assert sorted({s for s, _, _ in seen[rank]}) == [0, 2, 4] and len(seen[rank]) == 3 * 8
        assert check_exact(cur, seen[rank], 6) == {0, 1, 2}
    expected, local = [], []
    for step in (0, 2, 4):
        rows = [[row_of(cur, p) for s, p, _ in seen[rank] if s == step] for rank in (0, 1)]
        assert rows[0] and rows[1]
        both = rows[0] + rows[1]
        assert all(both.count(i) == 4 for i in both)  # the 4 copies of a prompt share its hint
        stage = cur.stage_at(step, 6)
        expected.append(float(np.mean(cur.cuts(both, stage)[0])))
        local.append(float(np.mean(cur.cuts(rows[0], stage)[0])))
    assert expected != local  # the shares differ, so the check below tells global from local means
    for rank in (0, 1):
        logged = [h["rtpo/hint_tokens"] for h in json.loads((tmp_path / f"logs-{rank}.json").read_text())
                  if "rtpo/hint_tokens" in h]
        assert logged == pytest.approx(expected)


# -- vLLM: the same ids, on both of TRL's vLLM paths ---------------------------------------------------


@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_vllm_generates_from_the_curriculum_prompt_ids(mode, tmp_path, monkeypatch):
    """vLLM cannot run on a CPU: its engine (colocate) and its server's client (server) are test doubles
    (trl_vllm_doubles.py); TRL's own VLLMGeneration, which builds their requests, runs unchanged."""
    import trl_vllm_doubles as doubles

    doubles.install(monkeypatch)
    cur_dir, tok, model = tiny_setup(tmp_path)
    args = grpo_args(tmp_path / "run", use_vllm=True, vllm_mode=mode, **GEOMETRY)
    trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=args, processing_class=tok, curriculum=cur_dir)
    tokenized = record_tokenized(monkeypatch, tok)
    trainer.train()
    engine = (doubles.FakeLLM if mode == "colocate" else doubles.FakeVLLMClient).instances[0]
    cur = Curriculum.open(cur_dir)
    # colocate: every completion's prompt (4 prompts x 4 generations a round); server: one per prompt
    per_round = 16 if mode == "colocate" else 4
    assert len(engine.prompts) == 3 * per_round
    seen = []
    for j, ids in enumerate(engine.prompts):
        problem = int(PROBLEM.search(tok.decode(ids)).group(1))
        seen.append((2 * (j // per_round), problem, ids))
    assert check_exact(cur, seen, 6) == {0, 1, 2}
    assert not {cur.prompt(row_of(cur, p), cur.stage_at(s, 6)) for s, p, _ in seen} & set(tokenized)


def test_vllm_server_limit_is_checked(tmp_path, monkeypatch, caplog):
    """The length check reads the vLLM server's max_model_len through TRL's client (a test double:
    vLLM cannot run on a CPU); when the server does not expose it, a warning says what to set."""
    import trl_vllm_doubles as doubles

    cur_dir, tok, model = tiny_setup(tmp_path)
    longest = int(Curriculum.open(cur_dir).longest_prompt_tokens().max())
    doubles.install(monkeypatch, server_max_model_len=longest + 7)
    args = grpo_args(tmp_path / "run", use_vllm=True, vllm_mode="server", vllm_max_model_length=100_000)
    with pytest.raises(RtpoDataError, match=rf"exceeds the vLLM server's max_model_len={longest + 7}"):
        RTPOTrainer(model=model, reward_funcs=length_reward, args=args, processing_class=tok, curriculum=cur_dir)
    doubles.install(monkeypatch, server_max_model_len=longest + 8)
    RTPOTrainer(model=model, reward_funcs=length_reward, args=args, processing_class=tok, curriculum=cur_dir)
    doubles.install(monkeypatch, server_max_model_len=None)
    args = grpo_args(tmp_path / "run", use_vllm=True, vllm_mode="server", vllm_importance_sampling_correction=False)
    with caplog.at_level("WARNING", logger="rtpo_data.adapters.trl"):
        RTPOTrainer(model=model, reward_funcs=length_reward, args=args, processing_class=tok, curriculum=cur_dir)
    assert f"--max-model-len {longest + 8} or more" in caplog.text and "VLLM_SERVER_DEV_MODE=1" in caplog.text


# -- evaluation on held-out data ---------------------------------------------------------------------


def test_eval_on_held_out_curricula_uses_their_own_prompts(tmp_path, monkeypatch):
    import datasets

    from trl_helpers import build_curriculum

    cur_dir, tok, model = tiny_setup(tmp_path)
    held_dir = build_curriculum(tmp_path, "held", str(tmp_path / "model"), n=8, start=100)
    rec = GenerateRecorder(monkeypatch, tok)
    reward = RewardRecorder()
    args = grpo_args(tmp_path / "run", max_steps=2, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=8)
    mine = [f"Problem {i}: what is {i} + 1?" for i in range(200, 208)]  # prompts of the user's own
    trainer = RTPOTrainer(model=model, reward_funcs=reward, args=args, processing_class=tok, curriculum=cur_dir,
                          horizon="curriculum", eval_dataset={"held": held_dir, "seen": True,
                                                              "mine": datasets.Dataset.from_dict({"prompt": mine})})
    rec.trainer = trainer
    trainer.train()
    cur, held = Curriculum.open(cur_dir), Curriculum.open(held_dir)
    evals = rec.eval()
    # every row of each eval curriculum, 4 generations each, no hint, ids from its own curriculum;
    # the user's own prompts as TRL tokenizes them
    assert sorted(p for _, p, _ in evals) == sorted([*range(100, 108), *range(16), *range(200, 208)] * 4)
    for _, problem, ids in evals:
        if problem >= 200:
            assert ids == tok(mine[problem - 200])["input_ids"]
            continue
        source = held if problem >= 100 else cur
        assert ids == source.render([row_of(source, problem)], None, "ids")[0]
    eval_calls = [c for c in reward.calls if c.get("row_id", [""])[0] in {f"p{i}" for i in range(100, 108)}]
    assert eval_calls
    for call in eval_calls:
        rows = [row_of(held, int(rid[1:])) for rid in call["row_id"]]
        assert call["answer"] == [held.answer(i) for i in rows]
        assert call["prompts"] == held.render(rows, None)
    assert any("eval_held_loss" in h for h in trainer.state.log_history)
    assert any("eval_seen_loss" in h for h in trainer.state.log_history)


def test_ambiguous_eval_datasets_are_refused(tmp_path):
    import datasets

    from rtpo_data.adapters.trl import curriculum_dataset

    from trl_helpers import build_curriculum

    cur_dir, tok, model = tiny_setup(tmp_path)
    held_dir = build_curriculum(tmp_path, "held", str(tmp_path / "model"), n=8, start=100)

    def make(**kwargs):
        return RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run"), processing_class=tok,
                           curriculum=cur_dir, **kwargs)

    index_only = datasets.Dataset.from_dict({"prompt": ["a", "b"], "rtpo_index": [0, 1]})
    with pytest.raises(RtpoDataError, match="does not say which curriculum"):
        make(eval_dataset=index_only)
    with pytest.raises(RtpoDataError, match="curriculum this trainer was not given"):
        make(eval_dataset=curriculum_dataset(Curriculum.open(held_dir)))
    with pytest.raises(RtpoDataError, match="is not a curriculum directory"):
        make(eval_dataset=str(tmp_path))
    with pytest.raises(RtpoDataError, match="train_dataset holds rows of another curriculum"):
        make(train_dataset=curriculum_dataset(Curriculum.open(held_dir)))
    # what is not ambiguous: a dataset of the user's own prompts, and held-out rows given with their curriculum
    make(eval_dataset=datasets.Dataset.from_dict({"prompt": ["a", "b"]}))
    make(eval_dataset=Curriculum.open(held_dir))


# -- settings the adapter cannot honour --------------------------------------------------------------


def test_lost_index_column_is_an_error(tmp_path):
    cur_dir, tok, model = tiny_setup(tmp_path)
    with pytest.raises(RtpoDataError, match="remove_unused_columns=True"):
        RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run", remove_unused_columns=True),
                    processing_class=tok, curriculum=cur_dir)
    # the column lost on the way (set after the check, so TRL's dataloader really drops it): the first
    # generation stops, instead of training on no-hint prompts
    trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run"),
                          processing_class=tok, curriculum=cur_dir)
    trainer.args.remove_unused_columns = True
    with pytest.raises(RtpoDataError, match="'rtpo_index' column did not reach generation"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_a_tokenizer_that_is_not_the_curriculums_is_refused(tmp_path):
    from transformers import AutoTokenizer

    from rtpo_data.errors import TokenizerMismatchError

    from helpers import make_tokenizer

    cur_dir, tok, model = tiny_setup(tmp_path)
    other = AutoTokenizer.from_pretrained(make_tokenizer(tmp_path / "other", vocab_size=300))

    def make(tokenizer, **kwargs):
        return RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run"),
                           processing_class=tokenizer, curriculum=cur_dir, **kwargs)

    with pytest.raises(TokenizerMismatchError) as err:
        make(other)
    message = str(err.value)
    assert "(tokenizer differs)" in message and str(tmp_path / "model") in message and str(tmp_path / "other") in message
    assert "allow_tokenizer_mismatch=True" in message
    make(other, allow_tokenizer_mismatch=True)  # deliberately
    retemplated = AutoTokenizer.from_pretrained(tmp_path / "model")
    retemplated.chat_template = retemplated.chat_template.replace("<|im_start|>", "<|im_start|> ")
    with pytest.raises(TokenizerMismatchError, match=r"\(chat template differs\)"):
        make(retemplated)
    # the same tokenizer, after it padded and truncated a batch (transformers leaves that in its state)
    tok(["a", "a longer text"], padding=True, truncation=True, max_length=3)
    make(tok)


# -- hint policies: a stage per row, chosen at generation time, updated from the round's rewards ---------


def even_problems_reward(completions, row_id, **kwargs):
    """A scripted reward: every completion of an even problem succeeds, every one of an odd problem fails."""
    return [1.0 if int(r[1:]) % 2 == 0 else 0.0 for r in row_id]


def stage_of(cur: Curriculum, row: int, ids: list[int]) -> int:
    """The stage whose prompt ids these are (the first, where stages share a prompt)."""
    return next(s for s in range(cur.num_stages) if cur.prompt_ids(row, s) == ids)


def test_mixed_policy_batches_hold_several_stages_one_per_prompt(tmp_path, monkeypatch):
    cur_dir, tok, model = tiny_setup(tmp_path, stages=5, total_steps=12)
    rec = GenerateRecorder(monkeypatch, tok)
    trainer = RTPOTrainer(model=model, reward_funcs=length_reward, processing_class=tok, curriculum=cur_dir,
                          args=grpo_args(tmp_path / "run", max_steps=12, **GEOMETRY), policy="mixed")
    rec.trainer = trainer
    trainer.train()
    cur, state = Curriculum.open(cur_dir), trainer.rtpo_policy_state()
    seen = rec.train()
    per_round: dict[int, set[int]] = {}
    for step, problem, ids in seen:
        row = row_of(cur, problem)
        stage = int(trainer.rtpo_policy.select(state, [row], step)[0])
        assert ids == cur.prompt_ids(row, stage), (step, problem, stage)
        per_round.setdefault(step, set()).add(stage)
        assert [i for s, p, i in seen if s == step and p == problem] == [ids] * 4  # a group shares its prompt
    assert max(len(stages) for stages in per_round.values()) >= 2  # one batch, several hint levels
    logged = [h for h in trainer.state.log_history if "rtpo/all_fail_groups" in h]
    assert logged and all(sum(v for k, v in h.items() if k.startswith("rtpo/stage_share/")) == pytest.approx(1.0)
                          for h in logged)


def test_frontier_moves_each_row_by_its_rewards(tmp_path, monkeypatch):
    """4 problems, all in every round: the even ones always succeed and lose a stage of hint each round;
    the odd ones always fail and keep the whole trace."""
    cur_dir, tok, model = tiny_setup(tmp_path, n=4, stages=3, total_steps=100)
    rec = GenerateRecorder(monkeypatch, tok)
    trainer = RTPOTrainer(model=model, reward_funcs=even_problems_reward, processing_class=tok, curriculum=cur_dir,
                          args=grpo_args(tmp_path / "run", **GEOMETRY), policy="frontier", horizon="curriculum")
    rec.trainer = trainer
    trainer.train()
    cur = Curriculum.open(cur_dir)
    stages = {(step, problem): stage_of(cur, row_of(cur, problem), ids) for step, problem, ids in rec.train()}
    assert stages == {(step, p): (min(step // 2, 2) if p % 2 == 0 else 0) for step in (0, 2, 4) for p in range(4)}
    frontier = trainer.rtpo_policy_state().arrays["frontier"]
    assert {cur.row_id(i): int(frontier[i]) for i in range(4)} == {"p0": 2, "p1": 0, "p2": 2, "p3": 0}
    logged = [h for h in trainer.state.log_history if "rtpo/all_fail_groups" in h]
    assert [h["rtpo/all_fail_groups"] for h in logged] == [0.5] * 3
    assert [h["rtpo/all_succeed_groups"] for h in logged] == [0.5] * 3


def test_policy_resume_continues_with_the_same_state_and_prompts(tmp_path, monkeypatch):
    cur_dir, tok, model = tiny_setup(tmp_path, n=4, stages=3, total_steps=100)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rec = GenerateRecorder(monkeypatch, tok)

    def trainer_for(cur) -> RTPOTrainer:
        args = grpo_args(tmp_path / "run", save_strategy="steps", save_steps=2, **GEOMETRY)
        return RTPOTrainer(model=model, reward_funcs=even_problems_reward, args=args, processing_class=tok,
                           curriculum=cur, policy="frontier", horizon="curriculum")

    rec.trainer = trainer_for(cur_dir)
    rec.trainer.train()
    full, final = rec.train(), rec.trainer.rtpo_policy_state().arrays
    assert (tmp_path / "run" / "checkpoint-2" / "rtpo_policy.npz").is_file()
    rec.seen.clear()
    model.load_state_dict(weights)
    rec.trainer = trainer_for(cur_dir)
    rec.trainer.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    # Each round holds all 4 rows (a whole epoch), whose order TRL's resumed sampler draws anew: compare
    # each step's prompts as a set of (problem, ids).
    assert rec.train() and sorted(rec.train()) == sorted(r for r in full if r[0] >= 2)
    resumed = rec.trainer.rtpo_policy_state().arrays
    assert all(np.array_equal(resumed[k], final[k]) for k in final)
    # The same checkpoint for another curriculum: refused before any prompt is rendered from it.
    from trl_helpers import build_curriculum

    other = build_curriculum(tmp_path, "other", str(tmp_path / "model"), n=4, start=10, total_steps=100)
    rec.trainer = trainer_for(other)
    with pytest.raises(RtpoDataError, match="belongs to another run .*curriculum: saved"):
        rec.trainer.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))


def test_launcher_takes_a_policy(tmp_path):
    from rtpo_data.adapters.trl import parse_args

    cur_dir, _tok, _model = tiny_setup(tmp_path)
    flags = ["--curriculum", str(cur_dir), "--model_name_or_path", str(tmp_path / "model"), "--output_dir",
             str(tmp_path / "o"), "--use_cpu", "true", "--bf16", "false"]
    script, _, _ = parse_args([*flags, "--policy", "frontier", "--success_threshold", "0.8"])
    assert (script.policy, script.success_threshold) == ("frontier", 0.8)
    with pytest.raises(RtpoDataError, match="--policy adaptive: use one of global, mixed, frontier"):
        parse_args([*flags, "--policy", "adaptive"])


@pytest.mark.slow
def test_two_processes_choose_the_same_stages_and_hold_the_same_state(tmp_path):
    """The frontier policy on two processes (torchrun, gloo): every copy of a prompt, on either process,
    gets one stage, the one the policy's final state and the logged rounds agree on, and both processes
    end with the same state, updated from the rewards of both."""
    import subprocess
    import sys

    from rtpo_data.policies import Frontier, PolicyState

    cur_dir, _tok, _model = tiny_setup(tmp_path, n=4, stages=3, total_steps=None)  # the horizon: max_steps, 6
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(here / "trl_two_processes.py"), str(tmp_path), "frontier"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cur = Curriculum.open(cur_dir)
    fresh = Frontier().init_state(cur, cur.clock(6), seed=7)
    states = [PolicyState.load(tmp_path / f"state-{rank}", fresh) for rank in (0, 1)]
    assert all(np.array_equal(states[0].arrays[k], states[1].arrays[k]) for k in fresh.arrays)
    assert (states[0].arrays["last_step"] == 4).all()  # every row observed in the last round, by both
    seen = [(r["step"], r["problem"], r["ids"]) for rank in (0, 1)
            for r in map(json.loads, (tmp_path / f"seen-{rank}.jsonl").read_text().splitlines())]
    for step in (0, 2, 4):
        by_problem: dict[int, set] = {}
        for s, p, ids in seen:
            if s == step:
                by_problem.setdefault(p, set()).add(tuple(ids))
        assert sorted(by_problem) == [0, 1, 2, 3] and all(len(v) == 1 for v in by_problem.values())
    assert len({stage_of(cur, row_of(cur, p), list(i)) for s, p, i in seen}) >= 2  # rows moved apart
