"""The real TRL GRPOTrainer on a tiny model made in-process: every prompt TRL tokenizes is the
curriculum's prompt for the step it is generated at (shuffling, accumulation, steps_per_generation,
num_iterations, resume)."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from trl import GRPOTrainer  # noqa: E402

from rtpo_data import Curriculum  # noqa: E402
from rtpo_data.adapters.trl import RTPOTrainer  # noqa: E402
from rtpo_data.errors import RtpoDataError  # noqa: E402
from trl_helpers import grpo_args, length_reward, tiny_setup  # noqa: E402

pytestmark = pytest.mark.trl


class Recorder:
    """Records (global_step, prompt) for every prompt TRL itself tokenizes for generation."""

    def __init__(self, monkeypatch):
        self.seen: list[tuple[int, str]] = []
        original = GRPOTrainer._tokenize_prompts
        recorder = self

        def spy(trainer, prompts):
            if trainer.model.training:
                recorder.seen.extend((int(trainer.state.global_step), p) for p in prompts)
            return original(trainer, prompts)

        monkeypatch.setattr(GRPOTrainer, "_tokenize_prompts", spy)


def row_of(cur: Curriculum, prompt: str) -> int:
    matches = [i for i in range(len(cur)) if prompt == cur.eval_prompts([i])[0] or prompt.startswith(cur.prompts([i], 0)[0][:60])]
    assert len(matches) == 1, prompt
    return matches[0]


def check_exact(cur: Curriculum, seen, total_steps: int) -> set[int]:
    stages = set()
    for step, prompt in seen:
        i = row_of(cur, prompt)
        stage = cur.stage_at(step, total_steps)
        assert prompt == cur.prompt(i, stage), (step, i, stage)
        stages.add(stage)
    return stages


GEOMETRY = dict(gradient_accumulation_steps=2, steps_per_generation=2, num_iterations=2, shuffle_dataset=True)


def test_prompts_follow_the_schedule_exactly(tmp_path, monkeypatch):
    cur_dir, tok, model = tiny_setup(tmp_path)
    rec = Recorder(monkeypatch)
    trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=grpo_args(tmp_path / "run", **GEOMETRY),
                          processing_class=tok, curriculum=cur_dir)
    trainer.train()
    cur = Curriculum.open(cur_dir)
    assert check_exact(cur, rec.seen, 6) == {0, 1, 2}
    # 6 optimizer steps, a generation round every 2 -> 3 rounds of 4 prompts x 4 generations.
    assert sorted({s for s, _ in rec.seen}) == [0, 2, 4] and len(rec.seen) == 3 * 16
    for step in (0, 2, 4):  # all copies of a prompt in a round get the same hint
        texts = [p for s, p in rec.seen if s == step]
        assert all(texts.count(p) % 4 == 0 for p in texts)
    logged = [h for h in trainer.state.log_history if "rtpo/stage" in h]
    assert [h["rtpo/stage"] for h in logged][:1] == [0.0] and max(h["rtpo/stage"] for h in logged) == 2.0
    assert all("rtpo/hint_tokens" in h and "rtpo/kept_fraction" in h for h in logged)
    assert logged[0]["rtpo/kept_fraction"] == 1.0


def test_resume_reproduces_the_uninterrupted_prompts(tmp_path, monkeypatch):
    cur_dir, tok, model = tiny_setup(tmp_path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rec = Recorder(monkeypatch)
    args = grpo_args(tmp_path / "run", save_strategy="steps", save_steps=2, **GEOMETRY)
    RTPOTrainer(model=model, reward_funcs=length_reward, args=args, processing_class=tok, curriculum=cur_dir).train()
    full = list(rec.seen)
    rec.seen.clear()
    model.load_state_dict(state)
    args = grpo_args(tmp_path / "run", save_strategy="steps", save_steps=2, **GEOMETRY)
    RTPOTrainer(model=model, reward_funcs=length_reward, args=args, processing_class=tok,
                curriculum=cur_dir).train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert rec.seen and rec.seen == [(s, p) for s, p in full if s >= 2]


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


def test_prompt_that_cannot_fit_is_refused(tmp_path):
    cur_dir, tok, model = tiny_setup(tmp_path)
    model.config.max_position_embeddings = 40
    with pytest.raises(RtpoDataError, match=r"rows do not fit.*max_position_embeddings=40.*p0"):
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
    result = subprocess.run(cmd, cwd=tests_dir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "config.json").exists()  # the trained model was saved
    logs = result.stdout + result.stderr
    assert "'rtpo/stage': '0'" in logs and "'rtpo/hint_tokens'" in logs, logs[-2000:]
    bad = subprocess.run([sys.executable, "-m", "rtpo_data.cli.main", "train", "trl", "--config", str(tmp_path / "grpo.yaml"),
                          "--model_name_or_path", str(model_dir)], cwd=tests_dir, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "--curriculum is required" in bad.stderr


def _export_setup(tmp_path):
    cur_dir, tok, model = tiny_setup(tmp_path, total_steps=4, stages=2)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    (tmp_path / "grpo.yaml").write_text(
        f"model_name_or_path: {model_dir}\nbf16: false\nuse_cpu: true\nreport_to: none\nnum_generations: 4\n"
        "max_completion_length: 8\nper_device_train_batch_size: 8\ngradient_accumulation_steps: 2\nmax_steps: 4\n"
        "logging_steps: 1\nsave_strategy: 'no'\ndisable_tqdm: true\nseed: 3\n"
        "reward_funcs: [trl_helpers.length_reward]\n"
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


def test_stock_trl_grpo_runs_an_export_and_the_guard_stops_a_changed_geometry(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    cur_dir = _export_setup(tmp_path)
    tests_dir = Path(__file__).parent
    cli = [sys.executable, "-m", "rtpo_data.cli.main"]
    exported = subprocess.run([*cli, "export", "trl", "--curriculum", str(cur_dir), "--config", str(tmp_path / "grpo.yaml"),
                               "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=tests_dir, timeout=300)
    assert exported.returncode == 0, exported.stderr
    trl = [str(Path(sys.executable).with_name("trl")), "grpo", "--config", str(tmp_path / "run" / "grpo.yaml"),
           "--output_dir", str(tmp_path / "out")]
    ok = subprocess.run(trl, capture_output=True, text=True, cwd=tests_dir, timeout=600)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "rewards/step_guard/mean" in ok.stdout + ok.stderr
    changed = subprocess.run([*trl, "--gradient_accumulation_steps", "1", "--steps_per_generation", "1"],
                             capture_output=True, text=True, cwd=tests_dir, timeout=600)
    assert changed.returncode != 0
    assert "rtpo-data step guard" in changed.stderr and "are being used at step" in changed.stderr


@pytest.mark.slow
def test_two_processes_each_see_the_curriculum_prompt_of_the_step(tmp_path):
    """Two processes (torchrun, gloo on the CPU): both render for the same global step,
    each its own share of the rows, and every prompt is the curriculum's for that step."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    cur_dir, tok, model = tiny_setup(tmp_path)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(here / "trl_two_processes.py"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cur = Curriculum.open(cur_dir)
    seen = {rank: [(r["step"], r["prompt"]) for r in map(json.loads, (tmp_path / f"seen-{rank}.jsonl").read_text().splitlines())]
            for rank in (0, 1)}
    # a round: 4 completions per device x 2 processes x 2 steps per generation = 16 completions (4 problems),
    # feeding 2 optimizer steps (accumulation 2, num_iterations 2)
    for rank in (0, 1):
        assert sorted({s for s, _ in seen[rank]}) == [0, 2, 4] and len(seen[rank]) == 3 * 8
        assert check_exact(cur, seen[rank], 6) == {0, 1, 2}
    for step in (0, 2, 4):
        rows = [{row_of(cur, p) for s, p in seen[rank] if s == step} for rank in (0, 1)]
        assert rows[0] and rows[1]
        both = [p for rank in (0, 1) for s, p in seen[rank] if s == step]
        assert all(both.count(p) % 4 == 0 for p in both)  # the 4 copies of a prompt share its hint
