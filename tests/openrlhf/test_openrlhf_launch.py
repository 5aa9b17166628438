"""Launching through OpenRLHF's own CLI: its parser, the Ray hook, the wrapper, and each refusal."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import base_flags, parse_openrlhf

import rtpo_data.adapters.openrlhf as adapter
from rtpo_data import Curriculum
from rtpo_data.errors import RtpoDataError

pytestmark = pytest.mark.openrlhf
DOCS = Path(__file__).resolve().parents[2] / "docs" / "openrlhf.md"


@pytest.fixture
def stock_trainer(monkeypatch):
    """Restore OpenRLHF's trainer class after a test that installs rtpo-data's."""
    import openrlhf.trainer.ppo_trainer as ppo_trainer

    monkeypatch.setattr(ppo_trainer, "PPOTrainer", adapter.STOCK_PPO_TRAINER)
    for name in ("RAY_RUNTIME_ENV_HOOK", adapter.TOTAL_STEPS_ENV, adapter.ALLOW_TOKENIZER_ENV, adapter.POLICY_ENV,
                 adapter.SUCCESS_THRESHOLD_ENV):  # the wrapper sets them
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return ppo_trainer


@pytest.fixture
def no_launch(monkeypatch):
    """Capture what the wrapper would run instead of running OpenRLHF's CLI."""
    calls = []

    def run_as_main(module, argv):
        calls.append(SimpleNamespace(name=module, argv=[module, *argv]))

    monkeypatch.setattr(adapter, "run_as_main", run_as_main)
    return calls


def documented_command(tiny) -> list[str]:
    """The GRPO command line of docs/openrlhf.md, with this test's curriculum, tokenizer and reward file."""
    text = DOCS.read_text()
    block = re.search(r"<!-- grpo-command -->\s*```bash\n(.*?)```", text, re.S).group(1)
    words = shlex.split(block.replace("\\\n", " "))
    words = words[words.index("openrlhf.cli.train_ppo_ray") + 1:]
    subst = {"Qwen/Qwen3-1.7B": str(tiny["model"]), "cur/gsm8k": str(tiny["cur"]), "cur/gsm8k-test": str(tiny["cur"]),
             "$REWARD": adapter.REWARD_FILE}
    return [subst.get(w, w) for w in words]


def test_stock_cli_parser_accepts_the_documented_grpo_command(tiny):
    args = parse_openrlhf(documented_command(tiny))
    assert args.data.prompt_dataset == str(tiny["cur"])
    assert args.algo.advantage.estimator == "group_norm" and args.rollout.n_samples_per_prompt == 8
    assert args.algo.dynamic_filtering_enable and args.vllm.num_engines == 4
    assert args.reward.remote_url == [adapter.REWARD_FILE]
    assert not args.data.apply_chat_template and not args.train.async_enable
    # and rtpo-data's own check passes on it
    adapter.check_openrlhf_args(args, Curriculum.open(tiny["cur"]))


def test_trainer_is_a_module_level_ray_actor_subclassing_openrlhfs():
    import importlib

    import ray

    cls = adapter.RTPOPPOTrainer
    assert isinstance(cls, ray.actor.ActorClass)
    impl = cls.__ray_actor_class__
    assert issubclass(impl, adapter.STOCK_PPO_TRAINER.__ray_actor_class__)
    # what Ray does on a worker: import the class by (module, name)
    assert getattr(importlib.import_module(impl.__module__), impl.__name__) is cls


def test_hook_installs_the_trainer_and_passes_the_horizon_on(tiny, stock_trainer, monkeypatch):
    monkeypatch.setenv(adapter.TOTAL_STEPS_ENV, "12")
    env = adapter.runtime_env_hook({"env_vars": {"NCCL_DEBUG": "WARN"}})
    assert stock_trainer.PPOTrainer is adapter.RTPOPPOTrainer
    assert env == {"env_vars": {"NCCL_DEBUG": "WARN", adapter.TOTAL_STEPS_ENV: "12"}}
    assert adapter.runtime_env_hook(None) == {"env_vars": {adapter.TOTAL_STEPS_ENV: "12"}}


def test_hook_is_what_rays_init_calls(stock_trainer, monkeypatch):
    """Ray's own loader of RAY_RUNTIME_ENV_HOOK (what ray.init calls) reaches rtpo-data's hook."""
    from ray._private.worker import _maybe_modify_runtime_env

    monkeypatch.setenv("RAY_RUNTIME_ENV_HOOK", adapter.HOOK)
    assert _maybe_modify_runtime_env({"env_vars": {}}, False) == {"env_vars": {}}
    assert stock_trainer.PPOTrainer is adapter.RTPOPPOTrainer


def test_wrapper_runs_the_stock_cli_with_the_curriculum(tiny, stock_trainer, no_launch):
    flags = base_flags(tiny, {"data.prompt_dataset": None, "reward.remote_url": None})
    adapter.main(["--curriculum", str(tiny["cur"]), "--", *flags])
    (call,) = no_launch
    assert call.name == call.argv[0] == "openrlhf.cli.train_ppo_ray"
    argv = call.argv[1:]
    assert argv[argv.index("--data.prompt_dataset") + 1] == str(tiny["cur"])
    assert argv[argv.index("--reward.remote_url") + 1] == adapter.REWARD_FILE
    assert stock_trainer.PPOTrainer is adapter.RTPOPPOTrainer
    import os

    assert os.environ["RAY_RUNTIME_ENV_HOOK"] == adapter.HOOK and os.environ[adapter.TOTAL_STEPS_ENV] == "4"
    # the stock parser accepts what the wrapper hands it
    assert parse_openrlhf(argv).data.prompt_dataset == str(tiny["cur"])


def test_rtpo_data_train_openrlhf_command_runs_the_wrapper(tiny, stock_trainer, no_launch):
    from typer.testing import CliRunner

    from rtpo_data.cli.main import app

    flags = base_flags(tiny, {"data.prompt_dataset": None, "reward.remote_url": None})
    result = CliRunner().invoke(app, ["train", "openrlhf", "--curriculum", str(tiny["cur"]), "--", *flags])
    assert result.exit_code == 0, result.output
    argv = no_launch[0].argv[1:]
    assert argv[argv.index("--data.prompt_dataset") + 1] == str(tiny["cur"])
    refused = CliRunner().invoke(app, ["train", "openrlhf", "--curriculum", str(tiny["cur"]), "--",
                                       *base_flags(tiny, {"data.prompt_dataset": None, "train.async_enable": ""})])
    assert refused.exit_code == 1 and "--train.async_enable" in refused.output and "Traceback" not in refused.output


def test_wrapper_keeps_a_reward_the_user_gave(tiny, stock_trainer, no_launch):
    adapter.main(["--curriculum", str(tiny["cur"]), "--", *base_flags(tiny, {"reward.remote_url": "http://rm:5000"})])
    argv = no_launch[0].argv
    assert argv.count("--reward.remote_url") == 1 and argv[argv.index("--reward.remote_url") + 1] == "http://rm:5000"


# -- refusals: each through the wrapper (before launching), the hook (inside ray.init) and the trainer's check --

REFUSALS = {
    "async": ({"train.async_enable": ""}, "--train.async_enable"),
    "workers": ({"data.dataloader_num_workers": "2"}, "--data.dataloader_num_workers 0"),
    "max_len": ({"data.max_len": "40"}, "Set --data.max_len to at least"),
    "probs": ({"data.prompt_probs": "1.0"}, "--data.prompt_probs"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_wrapper_refuses_before_launching(case, tiny, stock_trainer, no_launch):
    overrides, fix = REFUSALS[case]
    with pytest.raises(RtpoDataError, match=re.escape(fix)):
        adapter.main(["--curriculum", str(tiny["cur"]), "--", *base_flags(tiny, overrides)])
    assert no_launch == []
    assert stock_trainer.PPOTrainer is adapter.STOCK_PPO_TRAINER


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_hook_refuses_the_clis_parsed_settings(case, tiny, stock_trainer, monkeypatch):
    overrides, fix = REFUSALS[case]
    args = parse_openrlhf(base_flags(tiny, overrides))
    monkeypatch.setattr(sys.modules["__main__"], "args", args, raising=False)
    with pytest.raises(RtpoDataError, match=re.escape(fix)):
        adapter.runtime_env_hook({})


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_trainer_check_refuses(case, tiny):
    overrides, fix = REFUSALS[case]
    with pytest.raises(RtpoDataError, match=re.escape(fix)):
        adapter.check_openrlhf_args(parse_openrlhf(base_flags(tiny, overrides)), Curriculum.open(tiny["cur"]))


def test_all_problems_are_reported_at_once(tiny):
    args = parse_openrlhf(base_flags(tiny, {"train.async_enable": "", "data.dataloader_num_workers": "1"}))
    with pytest.raises(RtpoDataError) as err:
        adapter.check_openrlhf_args(args, Curriculum.open(tiny["cur"]))
    assert "2 problems" in str(err.value)


def test_max_len_boundary_is_the_longest_prompt_plus_new_tokens(tiny):
    cur = Curriculum.open(tiny["cur"])
    longest, row = adapter.longest_prompt(cur)
    assert longest == max(len(cur.prompt_ids(i, s)) for i in range(len(cur)) for s in range(cur.num_stages))
    assert longest == len(cur.prompt_ids(row, 0))
    ok = parse_openrlhf(base_flags(tiny, {"data.max_len": str(longest + 16), "rollout.max_new_tokens": "16"}))
    adapter.check_openrlhf_args(ok, cur)
    short = parse_openrlhf(base_flags(tiny, {"data.max_len": str(longest + 15), "rollout.max_new_tokens": "16"}))
    with pytest.raises(RtpoDataError, match=f"at least {longest + 16} or lower --rollout.max_new_tokens"):
        adapter.check_openrlhf_args(short, cur)


def test_horizon_is_required(tiny, stock_trainer, no_launch):
    flags = base_flags(tiny, {"data.prompt_dataset": None})
    with pytest.raises(RtpoDataError, match="--rtpo.total_steps"):
        adapter.main(["--curriculum", str(tiny["cur_open"]), "--", *flags])
    assert no_launch == []
    adapter.main(["--curriculum", str(tiny["cur_open"]), "--rtpo.total_steps", "8", "--", *flags])
    import os

    assert len(no_launch) == 1 and os.environ[adapter.TOTAL_STEPS_ENV] == "8"
    with pytest.raises(RtpoDataError, match="positive"):
        adapter.resolve_total_steps(Curriculum.open(tiny["cur_open"]), 0)


def test_not_a_curriculum_or_several_datasets(tiny, tmp_path, stock_trainer, no_launch):
    with pytest.raises(RtpoDataError, match="not an rtpo-data curriculum"):
        adapter.main(["--curriculum", str(tmp_path)])
    with pytest.raises(RtpoDataError, match="one curriculum per run"):
        adapter.main(["--", *base_flags(tiny, {"data.prompt_dataset": f"{tiny['cur']},{tiny['cur']}"})])
    with pytest.raises(RtpoDataError, match="differ"):
        adapter.main(["--curriculum", str(tiny["cur"]), "--", *base_flags(tiny, {"data.prompt_dataset": str(tmp_path)})])
    with pytest.raises(RtpoDataError, match="--curriculum is required"):
        adapter.main(["--", *base_flags(tiny, {"data.prompt_dataset": None})])
    assert no_launch == []


def test_wrapper_refuses_a_foreign_ray_hook(tiny, stock_trainer, no_launch, monkeypatch):
    monkeypatch.setenv("RAY_RUNTIME_ENV_HOOK", "somebody.else.hook")
    with pytest.raises(RtpoDataError, match="RAY_RUNTIME_ENV_HOOK"):
        adapter.main(["--curriculum", str(tiny["cur"]), "--", *base_flags(tiny)])
    assert no_launch == []


# -- the policy's tokenizer must be the curriculum's ---------------------------------------------------


def test_a_policy_tokenizer_that_is_not_the_curriculums_is_refused(tiny, stock_trainer, no_launch, monkeypatch):
    """Checked by the wrapper and the hook before anything starts, and by the trainer actor with the
    tokenizer OpenRLHF loads; each says how to go on deliberately."""
    import os

    from openrlhf.utils.utils import get_tokenizer

    from rtpo_data.errors import TokenizerMismatchError

    other = {"actor.model_name_or_path": str(tiny["model_bos"])}
    with pytest.raises(TokenizerMismatchError, match=r"tokenizer and chat template differ.*--rtpo.allow_tokenizer_mismatch"):
        adapter.main(["--curriculum", str(tiny["cur"]), "--", *base_flags(tiny, other)])
    assert no_launch == []
    args = parse_openrlhf(base_flags(tiny, other))
    monkeypatch.setattr(sys.modules["__main__"], "args", args, raising=False)
    with pytest.raises(TokenizerMismatchError, match=str(tiny["model_bos"])):
        adapter.runtime_env_hook({})
    cur = Curriculum.open(tiny["cur"])
    with pytest.raises(TokenizerMismatchError, match=adapter.ALLOW_TOKENIZER_ENV):
        adapter.check_policy_tokenizer(get_tokenizer(str(tiny["model_bos"]), None, "left"), [cur])
    adapter.check_policy_tokenizer(get_tokenizer(str(tiny["model"]), None, "left"), [cur])  # the curriculum's own
    # deliberately: the wrapper's flag sets the variable, the hook passes it on to every worker
    adapter.main(["--curriculum", str(tiny["cur"]), "--rtpo.allow_tokenizer_mismatch", "--", *base_flags(tiny, other)])
    assert len(no_launch) == 1 and os.environ[adapter.ALLOW_TOKENIZER_ENV] == "1"
    assert adapter.runtime_env_hook({})["env_vars"][adapter.ALLOW_TOKENIZER_ENV] == "1"
    adapter.check_policy_tokenizer(get_tokenizer(str(tiny["model_bos"]), None, "left"), [cur])


# -- the hint policy: --rtpo.policy / RTPO_DATA_POLICY, --rtpo.success_threshold ----------------------


def test_wrapper_passes_the_policy_and_success_threshold_to_the_trainer(tiny, stock_trainer, no_launch):
    """The launcher's flags become the variables the hook hands every worker of the job, where the
    trainer actor reads them; without flags: the global schedule and 0.5."""
    import os

    flags = base_flags(tiny, {"data.prompt_dataset": None})
    adapter.main(["--curriculum", str(tiny["cur"]), "--", *flags])
    assert (os.environ[adapter.POLICY_ENV], os.environ[adapter.SUCCESS_THRESHOLD_ENV]) == ("global", "0.5")
    adapter.main(["--curriculum", str(tiny["cur"]), "--rtpo.policy", "frontier", "--rtpo.success_threshold", "0.75",
                  "--", *flags])
    assert (os.environ[adapter.POLICY_ENV], os.environ[adapter.SUCCESS_THRESHOLD_ENV]) == ("frontier", "0.75")
    assert len(no_launch) == 2 and "--rtpo.policy" not in no_launch[1].argv  # OpenRLHF's parser never sees ours
    env = adapter.runtime_env_hook({})["env_vars"]
    assert (env[adapter.POLICY_ENV], env[adapter.SUCCESS_THRESHOLD_ENV]) == ("frontier", "0.75")
    assert adapter.resolve_policy().name == "frontier" and adapter.resolve_success_threshold() == 0.75
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        adapter.main(["--curriculum", str(tiny["cur"]), "--rtpo.policy", "adaptive", "--", *flags])


def test_a_policy_or_threshold_the_hook_cannot_use_is_refused(stock_trainer, monkeypatch):
    monkeypatch.setenv(adapter.POLICY_ENV, "adaptive")
    with pytest.raises(RtpoDataError, match=r"RTPO_DATA_POLICY = 'adaptive': use one of global, mixed, frontier"):
        adapter.runtime_env_hook({})
    monkeypatch.setenv(adapter.POLICY_ENV, "mixed")
    monkeypatch.setenv(adapter.SUCCESS_THRESHOLD_ENV, "half")
    with pytest.raises(RtpoDataError, match="RTPO_DATA_SUCCESS_THRESHOLD = 'half': give a number"):
        adapter.runtime_env_hook({})


def test_a_policy_that_learns_needs_rewards_at_generation(tiny, stock_trainer, no_launch, monkeypatch):
    """A reward model scores samples after generation; the policy observes groups in the sample generator,
    before dynamic filtering, where only reward functions (--reward.remote_url, agents) have scored them."""
    rm = {"data.prompt_dataset": None, "reward.remote_url": None, "reward.model_name_or_path": "some/reward-model"}
    with pytest.raises(RtpoDataError, match=r"--reward.model_name_or_path without --reward.remote_url.*--rtpo.policy global or mixed"):
        adapter.main(["--curriculum", str(tiny["cur"]), "--rtpo.policy", "frontier", "--", *base_flags(tiny, rm)])
    assert no_launch == []
    # the schedule and mixed choose stages without rewards (they only lose the rtpo/ group figures)
    adapter.main(["--curriculum", str(tiny["cur"]), "--", *base_flags(tiny, rm)])
    adapter.main(["--curriculum", str(tiny["cur"]), "--rtpo.policy", "mixed", "--", *base_flags(tiny, rm)])
    assert len(no_launch) == 2
    args = parse_openrlhf(base_flags(tiny, {"reward.remote_url": None, "reward.model_name_or_path": "some/rm"}))
    monkeypatch.setenv(adapter.POLICY_ENV, "frontier")
    monkeypatch.setattr(sys.modules["__main__"], "args", args, raising=False)
    with pytest.raises(RtpoDataError, match="--reward.model_name_or_path without"):
        adapter.runtime_env_hook({})


def test_a_policy_needs_a_schedule_going_down(tiny, tmp_path):
    from rtpo_data import BuildConfig, build

    from helpers import write_jsonl
    from trl_helpers import tiny_rows

    src = write_jsonl(tmp_path / "rows.jsonl", tiny_rows(4))
    build(BuildConfig(source=str(src), out=str(tmp_path / "up"), tokenizer=str(tiny["model"]), total_steps=4, stages=4,
                      unit="word", direction="up"))
    cur = Curriculum.open(tmp_path / "up")
    args = parse_openrlhf(base_flags(tiny, {"data.prompt_dataset": str(tmp_path / "up")}))
    adapter.check_openrlhf_args(args, cur)  # the global schedule goes either way
    with pytest.raises(RtpoDataError, match="needs a schedule going down"):
        adapter.check_openrlhf_args(args, cur, adapter.resolve_policy("mixed"))


def test_generating_ahead_of_the_step_is_refused(tiny, stock_trainer, no_launch):
    with pytest.raises(RtpoDataError, match="--rollout.vllm_generate_batch_size 4 > --rollout.batch_size 2"):
        adapter.main(["--curriculum", str(tiny["cur"]), "--",
                      *base_flags(tiny, {"data.prompt_dataset": None, "rollout.vllm_generate_batch_size": "4"})])
    assert no_launch == []


def test_the_observation_hook_is_checked_against_openrlhfs_sample_generator(tiny, monkeypatch):
    """OpenRLHF 0.11.2 makes every response into an experience before dynamic filtering: the hook's place.
    A sample generator that filters first is refused for a policy that learns (and only warned about for
    the schedule and mixed, which choose without rewards)."""
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    assert adapter.observation_hook_problem() is None

    class FiltersFirst(SamplesGenerator):
        def _generate_vllm(self, dataloader_iter, num_prompts, dynamic_filtering, **generate_kwargs):
            responses = []
            if dynamic_filtering:
                responses = [r for r in responses if r]
            return [self._process_response_into_experience(r) for r in responses], 0, True

    monkeypatch.setattr(adapter._ppo, "SamplesGenerator", FiltersFirst)
    assert "before dynamic filtering" in adapter.observation_hook_problem()
    args = parse_openrlhf(base_flags(tiny))
    cur = Curriculum.open(tiny["cur"])
    adapter.check_openrlhf_args(args, cur)
    adapter.check_openrlhf_args(args, cur, adapter.resolve_policy("mixed"))
    with pytest.raises(RtpoDataError, match="--rtpo.policy frontier: in the installed OpenRLHF"):
        adapter.check_openrlhf_args(args, cur, adapter.resolve_policy("frontier"))


def test_the_sample_generator_refuses_to_miss_a_group(monkeypatch):
    """At run time too: a generation call that consumed more prompts than the hook saw groups stops the run."""
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    monkeypatch.setattr(SamplesGenerator, "_generate_vllm", lambda self, *a, **k: ([], 3, False))
    seen = []
    gen = adapter.RTPOSamplesGenerator.__new__(adapter.RTPOSamplesGenerator)
    gen._rtpo_observe, gen._rtpo_groups, gen._rtpo_training = seen.append, None, False
    assert gen._generate_vllm(None, 2, True) == ([], 3, False)  # evaluation: not observed
    gen._rtpo_training = True
    with pytest.raises(RtpoDataError, match="saw 0 groups of the 3 prompts"):
        gen._generate_vllm(None, 2, True)
    assert seen == []


def test_the_commands_help_without_openrlhf_names_every_launcher_flag(capsys):
    """rtpo-data train openrlhf --help prints TRAIN_HELP when OpenRLHF is missing: the same --rtpo flags
    as the launcher's own help."""
    from rtpo_data.cli.main import TRAIN_HELP

    with pytest.raises(SystemExit):
        adapter.main(["--help"])
    ours = set(re.findall(r"--rtpo\.\w+", capsys.readouterr().out))
    assert ours == set(re.findall(r"--rtpo\.\w+", TRAIN_HELP["openrlhf"]))
    assert {"--rtpo.policy", "--rtpo.success_threshold", "--rtpo.total_steps"} <= ours
