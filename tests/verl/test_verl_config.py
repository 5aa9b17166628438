"""rtpo-data's checks of a verl run, the dataset, the reward and the launcher, against verl 0.9.1's
real config, dataloader and reward manager (no Ray here; tests/verl/test_verl_rollout.py runs the
rollout)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rtpo_data import Curriculum
from rtpo_data.adapters import verl as adapter
from rtpo_data.errors import ConfigError, RtpoDataError, TokenizerMismatchError

from verl_drive import ROWS, TOTAL_STEPS, user_overrides


def given(tiny: dict[str, Path], *extra: str) -> list[str]:
    """The user's overrides (no dataloader workers here)."""
    return user_overrides(tiny, "data.dataloader_num_workers=0", *extra)


def base(tiny: dict[str, Path], cur: str = "cur", *extra: str) -> list[str]:
    """The user's overrides and rtpo-data's, as the launcher hands them to verl."""
    user = given(tiny, *extra)
    return [*user, *adapter.overrides(tiny[cur], user)]


def refusal(tiny: dict[str, Path], *extra: str, cur: str = "cur") -> str:
    with pytest.raises(ConfigError) as info:
        adapter.check_config(adapter.compose(base(tiny, cur, *extra)))
    return str(info.value)


def test_a_plain_run_is_accepted_with_the_curriculums_horizon(tiny):
    config = adapter.compose(base(tiny))
    plan = adapter.check_config(config)
    # verl would train 30 epochs by default; the launcher gives it the build's --total-steps
    assert config.trainer.total_training_steps == TOTAL_STEPS == plan.total_steps
    assert [int(plan.stages([0], g)[0]) for g in range(1, 7)] == [0, 1, 2, 3, 3, 3]


def test_each_setting_that_cannot_follow_the_step_is_refused(tiny):
    assert "trainer.use_v1=false" in refusal(tiny, "trainer.use_v1=false")
    message = refusal(tiny, "trainer.v1.trainer_mode=separate_async")
    assert "trainer.v1.trainer_mode=separate_async" in message and "trainer.v1.trainer_mode=sync" in message
    message = refusal(tiny, "data.max_prompt_length=20")
    need = int(Curriculum.open(tiny["cur"]).longest_prompt_tokens().max())
    assert "data.max_prompt_length=20: the longest prompt" in message and f"data.max_prompt_length={need} or more" in message
    message = refusal(tiny, "trainer.total_training_steps=6")
    assert "total_steps=4" in message and "trainer.total_training_steps=6" in message and "+rtpo.horizon=" in message
    message = refusal(tiny, "+rtpo.policy=frontier", "reward.reward_model.enable=true")
    assert "+rtpo.policy=frontier with a colocated reward model" in message
    message = refusal(tiny, "+rtpo.policy=frontier", "trainer.save_freq=5", "trainer.checkpoint_callback_class=my.Saver")
    assert "trainer.checkpoint_callback_class=my.Saver" in message and "RTPOCheckpointCallback" in message
    assert "+rtpo.success_threshold='high': give a number" in refusal(tiny, "+rtpo.success_threshold=high")
    assert "+rtpo.horizon='forever': use one of auto, curriculum, trainer, or a number of steps" in \
        refusal(tiny, "+rtpo.horizon=forever")
    assert "+rtpo.policy='greedy': use one of global, mixed, frontier" in refusal(tiny, "+rtpo.policy=greedy")
    # a separate validation curriculum: its bare prompts must fit too
    bare = int(Curriculum.open(tiny["cur_open"]).lengths("bare_ids").max())
    message = refusal(tiny, "data.max_prompt_length=20", f"data.val_files={tiny['cur_open']}")
    assert f"the longest validation prompt of {tiny['cur_open']} is {bare} tokens" in message
    # several at once, each named
    message = refusal(tiny, "trainer.use_v1=false", "trainer.total_training_steps=6")
    assert "2 problems" in message


def test_the_manager_refuses_train_files_that_are_not_a_curriculum(tiny, tmp_path):
    config = adapter.compose(base(tiny))
    config.data.train_files = str(tmp_path)
    with pytest.raises(ConfigError, match=r"data.train_files=.* is not an rtpo-data curriculum .*remove rtpo-data's "
                                          r"agent-loop manager"):
        adapter.check_config(config)


def test_the_horizon_follows_an_explicit_choice_and_verls_epochs(tiny):
    plan = adapter.check_config(adapter.compose(base(tiny, "cur", "trainer.total_training_steps=8",
                                                     "+rtpo.horizon=trainer")))
    assert plan.total_steps == 8
    # built without --total-steps: verl's own count, 8 rows // 2 * 3 epochs
    plan = adapter.check_config(adapter.compose(base(tiny, "cur_open", "trainer.total_epochs=3")))
    assert plan.total_steps == ROWS // 2 * 3
    assert "horizon" in refusal(tiny, "+rtpo.horizon=sometimes")


def test_the_dataset_refuses_another_tokenizer_and_a_short_prompt_budget(tiny):
    from verl.utils import hf_tokenizer

    config = adapter.compose(base(tiny))
    with pytest.raises(TokenizerMismatchError, match=r"\+data.rtpo_allow_tokenizer_mismatch=true"):
        adapter.RTPODataset(config.data.train_files, hf_tokenizer(str(tiny["other"])), config.data)
    config = adapter.compose(base(tiny, "cur", "+data.rtpo_allow_tokenizer_mismatch=true"))
    assert len(adapter.RTPODataset(config.data.train_files, hf_tokenizer(str(tiny["other"])), config.data)) == ROWS
    config = adapter.compose(base(tiny, "cur", "data.max_prompt_length=20"))
    with pytest.raises(ConfigError, match="data.max_prompt_length=20"):
        adapter.RTPODataset(config.data.train_files, hf_tokenizer(str(tiny["model"])), config.data)


def test_verls_trainer_refuses_a_run_without_rtpo_datas_manager_when_it_makes_the_dataset(tiny):
    from verl.trainer.ppo.v1 import get_trainer_cls

    without = [o for o in base(tiny) if "agent_loop_manager_class" not in o]
    cls = get_trainer_cls("sync")
    trainer = cls.__new__(cls)
    trainer.config, trainer.trainer_mode, trainer.parameter_sync_step = adapter.compose(without), "sync", 1
    trainer._init_tokenizer()
    with pytest.raises(ConfigError, match=r"agent_loop_manager_class=None: .*Add \+actor_rollout_ref"):
        trainer._init_dataloader()
    trainer.config = adapter.compose(base(tiny))
    trainer._init_dataloader()
    assert len(trainer.train_dataset) == ROWS


def test_verls_dataloader_yields_the_same_items_at_every_step_and_other_files_get_verls_dataset(tiny, tmp_path):
    import pandas as pd
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils import hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = adapter.compose(base(tiny))
    tok = hf_tokenizer(str(tiny["model"]))
    dataset = create_rl_dataset(config.data.train_files, config.data, tok, None, is_train=True)
    assert isinstance(dataset, adapter.RTPODataset) and len(dataset) == ROWS
    cur = Curriculum.open(tiny["cur"])
    item = dataset[3]
    assert item["agent_name"] == "rtpo" and item["rtpo_row"] == 3
    assert item["reward_model"]["ground_truth"] == cur.answer(3)
    assert item["raw_prompt"] == cur.render([3], None, "messages")[0]
    parquet = tmp_path / "val.parquet"
    pd.DataFrame({"prompt": [[{"role": "user", "content": "1+1?"}]], "data_source": ["x"],
                  "reward_model": [{"ground_truth": "2"}]}).to_parquet(parquet)
    val = create_rl_dataset(str(parquet), config.data, tok, None, is_train=False)
    assert type(val) is RLHFDataset and len(val) == 1


def test_the_manager_stamps_each_rows_stage_on_verls_batch(tiny):
    """The mixed policy's stages on a batch from verl's own dataloader code: one per row, pure in
    (row, step), no hint for validation."""
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.utils import tensordict_utils as tu

    config = adapter.compose(base(tiny, "cur", "data.train_batch_size=8", "+rtpo.policy=mixed",
                                  "+rtpo.policy_seed=3", "trainer.total_training_steps=4"))
    cls = get_trainer_cls("sync")
    trainer = cls.__new__(cls)
    trainer.config, trainer.trainer_mode, trainer.parameter_sync_step = config, "sync", 1
    trainer._init_tokenizer()
    trainer._init_dataloader()
    manager = adapter.RTPOAgentLoopManager.__new__(adapter.RTPOAgentLoopManager)
    manager.rtpo = adapter.check_config(config)
    seen = {}
    for g in (1, 2, 3):
        trainer.global_steps = g
        batch = trainer._next_train_batch()
        manager.stamp(batch)
        rows, stages = [int(r) for r in batch["rtpo_row"]], batch["rtpo_stage"].tolist()
        assert sorted(rows) == list(range(ROWS))
        seen[g] = dict(zip(rows, stages))
        again = manager.rtpo.stages(list(reversed(rows)), g)[::-1].tolist()
        assert again == stages  # the same row and step give the same stage, in any order
    assert len(set(seen[2].values())) > 1  # rows of one batch at several stages
    assert seen[1] != seen[2]
    val = next(iter(trainer.val_dataloader))
    val = tu.get_tensordict(val)
    tu.assign_non_tensor_data(val, "global_steps", 2)
    tu.assign_non_tensor_data(val, "validate", True)
    manager.stamp(val)
    assert set(val["rtpo_stage"].tolist()) == {adapter.NO_HINT}
    stepless = trainer._next_train_batch()
    del stepless["global_steps"]
    with pytest.raises(RtpoDataError, match="without global_steps: .*use verl 0.9's V1 sync trainer"):
        manager.stamp(stepless)


def test_the_reward_goes_through_verls_reward_manager_with_the_stage_logged(tiny):
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.utils import hf_tokenizer

    tok = hf_tokenizer(str(tiny["model"]))

    async def score(data):  # verl makes the manager inside the reward worker's event loop
        manager = NaiveRewardManager(config=None, tokenizer=tok, compute_score=adapter.compute_score)
        return await manager.run_single(data)

    def run(response: str, gold: str) -> dict:
        ids = torch.tensor([tok.encode(response)])
        data = DataProto.from_dict(
            tensors={"responses": ids, "attention_mask": torch.ones_like(ids)},
            non_tensors={"data_source": np.array(["rtpo:cur"], dtype=object),
                         "reward_model": np.array([{"ground_truth": gold}], dtype=object),
                         "extra_info": np.array([{"rtpo_row": 0}], dtype=object),
                         "tool_extra_fields": np.array([{"rtpo_stage": 2, "rtpo_hint_tokens": 14,
                                                         "rtpo_kept_fraction": 0.33}], dtype=object)})
        return asyncio.run(score(data))

    right = run("so the total is \\boxed{18}", "18")
    assert right["reward_score"] == 1.0
    assert right["reward_extra_info"] == {"score": 1.0, "acc": 1.0, "format": 1.0, "rtpo_stage": 2.0,
                                          "rtpo_hint_tokens": 14.0, "rtpo_kept_fraction": 0.33}
    wrong = run("the total is 17", "18")
    assert wrong["reward_score"] == 0.0 and wrong["reward_extra_info"]["format"] == 0.0


def test_the_launcher_composes_checks_and_runs_verls_main(tiny, monkeypatch):
    import runpy

    seen = {}

    def fake_run_module(name, run_name=None, alter_sys=False):
        seen["module"], seen["argv"] = name, list(sys.argv)

    monkeypatch.setattr(runpy, "run_module", fake_run_module)
    user = given(tiny)
    adapter.main(["--curriculum", str(tiny["cur"]), "--policy", "mixed", "--", *user])
    assert seen["module"] == "verl.trainer.main_ppo"
    argv = seen["argv"][1:]
    assert f"data.train_files={Path(tiny['cur']).resolve()}" in argv and "+rtpo.policy=mixed" in argv
    # what verl's main would compose from that argv passes the checks, with rtpo-data's classes
    config = adapter.compose(argv)
    assert adapter.check_config(config).policy.name == "mixed"
    assert config.actor_rollout_ref.rollout.agent.agent_loop_manager_class.endswith("RTPOAgentLoopManager")
    assert config.reward.custom_reward_function.name == "compute_score"
    with pytest.raises(ConfigError, match="trainer.use_v1=false"):
        adapter.main(["--curriculum", str(tiny["cur"]), "--", *user, "trainer.use_v1=false"])
    with pytest.raises(TokenizerMismatchError):
        adapter.main(["--curriculum", str(tiny["cur"]), "--", *user, f"actor_rollout_ref.model.path={tiny['other']}"])


def test_the_command_line_prints_the_plain_verl_command_and_refuses_with_a_message(tiny):
    user = given(tiny)
    cmd = [sys.executable, "-m", "rtpo_data.cli.main", "train", "verl", "--curriculum", str(tiny["cur"])]
    out = subprocess.run([*cmd, "--print-overrides", "--", *user], capture_output=True, text=True, check=True).stdout
    assert out.startswith("python -m verl.trainer.main_ppo") and "data.custom_cls.name=RTPODataset" in out
    bad = subprocess.run([*cmd, "--", *user, "trainer.v1.trainer_mode=colocate_async"], capture_output=True, text=True)
    assert bad.returncode != 0 and "trainer.v1.trainer_mode=colocate_async" in bad.stderr


def test_the_documented_command_composes_and_passes_the_checks(tiny):
    """docs/verl.md's GRPO command, with the tiny model and curriculum, as the launcher composes it."""
    import re
    import shlex

    text = (Path(__file__).resolve().parents[2] / "docs" / "verl.md").read_text()
    block = re.search(r"<!-- grpo-command -->\s*```bash\n(.*?)```", text, re.S).group(1)
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:5] == ["rtpo-data", "train", "verl", "--curriculum", "cur/gsm8k"] and words[5] == "--"
    documented = [w.replace("Qwen/Qwen3-1.7B", str(tiny["model"])) for w in words[6:]]
    config = adapter.compose([*documented, *adapter.overrides(tiny["cur"], documented)])
    plan = adapter.check_config(config)
    assert plan.total_steps == TOTAL_STEPS and config.actor_rollout_ref.rollout.n == 8


def test_the_help_shown_without_verl_names_every_launcher_option():
    from rtpo_data.cli.main import TRAIN_HELP

    options = [o for action in adapter._parser()._actions for o in action.option_strings
               if o.startswith("--") and o != "--help"]
    assert "--curriculum" in options and "--success-threshold" in options
    for option in options:
        assert option in TRAIN_HELP["verl"], option


def test_inputs_the_adapter_cannot_serve_are_named(tiny, tmp_path):
    # an rtpo setting it does not know, a curriculum mixed with other files
    assert "+rtpo.polcy: rtpo-data has no such setting" in refusal(tiny, "+rtpo.polcy=mixed")
    with pytest.raises(RtpoDataError, match=r"data.train_files=.* mixes an rtpo-data curriculum with other files"):
        adapter.curriculum_path([str(tiny["cur"]), str(tmp_path / "more.parquet")])
    # the launcher: a path that is no curriculum, two different curricula, an option verl would not take
    with pytest.raises(RtpoDataError, match=r"--curriculum .* is not an rtpo-data curriculum"):
        adapter.main(["--curriculum", str(tmp_path), "--", *given(tiny)])
    with pytest.raises(RtpoDataError, match=r"and data.train_files=.* differ: give one of them"):
        adapter.main(["--curriculum", str(tiny["cur"]), *given(tiny, f"data.train_files={tiny['cur_open']}")])
    with pytest.raises(RtpoDataError, match=r"unknown option '--polcy'"):
        adapter.main(["--curriculum", str(tiny["cur"]), "--polcy", "mixed", *given(tiny)])


def test_the_agent_loop_refuses_a_row_without_a_stage_or_too_long_for_the_rollout(tiny):
    loop = adapter.RTPOAgentLoop.__new__(adapter.RTPOAgentLoop)  # run() reads only what is set here
    loop.rollout_config = adapter.compose(base(tiny, "cur", "data.max_prompt_length=20")).actor_rollout_ref.rollout
    row = {"rtpo_curriculum": str(tiny["cur"]), "rtpo_row": 0}
    with pytest.raises(RtpoDataError, match=r"agent_loop_manager_class=rtpo_data.adapters.verl.RTPOAgentLoopManager"):
        asyncio.run(loop.run({}, **row))
    with pytest.raises(RtpoDataError, match=r"row 0 of .*: a prompt of \d+ tokens exceeds rollout.prompt_length=20"):
        asyncio.run(loop.run({}, **row, rtpo_stage=0))
