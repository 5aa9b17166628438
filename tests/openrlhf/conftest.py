"""Tests of ``rtpo_data.adapters.openrlhf`` against the real OpenRLHF 0.11.2, on a CPU.

They run in their own environment (``bash scripts/test_openrlhf.sh`` makes ``.venv-openrlhf``): the
main suite has no OpenRLHF, so it leaves this folder out (tests/conftest.py), and the check below
skips it wherever OpenRLHF is missing.

GPU-only modules: ``vllm`` and ``flash_attn`` cannot be installed on a CPU machine, and OpenRLHF
imports a handful of their names when its trainer modules load. As OpenRLHF's own tests do, those
names (and only those) are stubbed in ``sys.modules`` by ``orlhf_stubs.install()`` here; Ray worker
processes and the end-to-end driver get the same stubs from ``worker_site/sitecustomize.py``. What
replaces generation and the DeepSpeed model in the end-to-end runs is in ``orlhf_doubles.py``.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from unittest import mock

import pytest


def _openrlhf_installed() -> bool:
    # find_spec of a submodule, not an import: importing OpenRLHF's CLI needs the vllm stub installed
    # below, and a bare "openrlhf" would also match this folder as a namespace package (tests/ is on
    # sys.path).
    import importlib.util

    try:
        return importlib.util.find_spec("openrlhf.cli.train_ppo_ray") is not None
    except (ImportError, ValueError):
        return False


if not _openrlhf_installed():
    pytest.skip("OpenRLHF runs in its own venv: bash scripts/test_openrlhf.sh", allow_module_level=True)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import orlhf_stubs  # noqa: E402

orlhf_stubs.install()
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

CLI = "openrlhf.cli.train_ppo_ray"
TOTAL_STEPS = 4
STAGES = 4
ROWS = 16


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tokenizer folders (OpenRLHF's ``--actor.model_name_or_path``: only its tokenizer is loaded
    here) and curricula built from them: ``cur`` (total_steps=4, 4 stages, word cuts), ``cur_open``
    (no total_steps), and ``cur_bos`` built like ``cur`` with ``model_bos``, a tokenizer that adds
    a BOS token and a template that writes it (Llama style)."""
    from rtpo_data import BuildConfig, build

    from helpers import BOS_TEMPLATE, make_tokenizer, write_jsonl
    from trl_helpers import tiny_rows

    root = tmp_path_factory.mktemp("openrlhf")
    model = make_tokenizer(root / "model", vocab_size=600)
    model_bos = make_tokenizer(root / "model_bos", vocab_size=600, bos=True, template=BOS_TEMPLATE)
    src = write_jsonl(root / "rows.jsonl", tiny_rows(ROWS))
    build(BuildConfig(source=str(src), out=str(root / "cur"), tokenizer=model, total_steps=TOTAL_STEPS, stages=STAGES, unit="word"))
    build(BuildConfig(source=str(src), out=str(root / "cur_open"), tokenizer=model, stages=STAGES, unit="word"))
    build(BuildConfig(source=str(src), out=str(root / "cur_bos"), tokenizer=model_bos, total_steps=TOTAL_STEPS,
                      stages=STAGES, unit="word"))
    return {"root": root, "model": Path(model), "cur": root / "cur", "cur_open": root / "cur_open",
            "model_bos": Path(model_bos), "cur_bos": root / "cur_bos"}


class _Parsed(Exception):
    pass


def parse_openrlhf(flags: list[str]):
    """OpenRLHF's own CLI, parse only: runs ``openrlhf.cli.train_ppo_ray`` as ``__main__`` (its parser
    and checks live in that block) and stops as ``train(args)`` begins; returns its ``args``."""
    import ray

    def stop() -> bool:
        raise _Parsed(sys.modules["__main__"].args)

    with mock.patch.object(ray, "is_initialized", stop), mock.patch.object(sys, "argv", [CLI, *flags]):
        try:
            runpy.run_module(CLI, run_name="__main__", alter_sys=True)
        except _Parsed as parsed:
            return parsed.args[0]
    raise AssertionError("OpenRLHF's CLI returned without calling train()")


def base_flags(tiny: dict[str, Path], overrides: dict[str, str | None] | None = None) -> list[str]:
    """A small GRPO run's flags. ``overrides`` maps flag names (without ``--``) to a value, ``""`` for
    a switch, or None to leave the flag out."""
    values = {
        "actor.model_name_or_path": str(tiny["model"]),
        "data.prompt_dataset": str(tiny["cur"]),
        "reward.remote_url": "REWARD",
        "algo.advantage.estimator": "group_norm",
        "algo.kl.init_coef": "0",
        "rollout.n_samples_per_prompt": "4",
        "rollout.batch_size": "2",
        "train.batch_size": "8",
        "actor.num_gpus_per_node": "1",
        "vllm.num_engines": "1",
        "data.max_len": "256",
        "rollout.max_new_tokens": "16",
    }
    values.update(overrides or {})
    if values["reward.remote_url"] == "REWARD":
        from rtpo_data.adapters.openrlhf import REWARD_FILE

        values["reward.remote_url"] = REWARD_FILE
    flags: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        flags += [f"--{key}"] if value == "" else [f"--{key}", value]
    return flags


# -- the end-to-end driver (orlhf_drive.py) and what it records -----------------------------------


def run_driver(work: Path, plan: list[dict], env: dict[str, str] | None = None, timeout: int = 540) -> tuple[list[dict], str]:
    """Run ``plan`` in one driver process (orlhf_drive.py) in ``work``, with the hook in its
    environment and ``env`` on top; returns (its events, its log). Fails the test if the driver fails."""
    import json
    import subprocess

    import rtpo_data.adapters.openrlhf as adapter

    (work / "plan.json").write_text(json.dumps(plan))
    events = work / "events.jsonl"
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE / "worker_site"), str(HERE), os.environ.get("PYTHONPATH", "")]),
        "RTPO_TEST_EVENTS": str(events),
        "RAY_RUNTIME_ENV_HOOK": adapter.HOOK,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for name in (adapter.TOTAL_STEPS_ENV, adapter.POLICY_ENV, adapter.SUCCESS_THRESHOLD_ENV):
        full_env.pop(name, None)
    full_env.update(env or {})
    log = work / "driver.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, str(HERE / "orlhf_drive.py"), str(work / "plan.json")], cwd=work,
                              env=full_env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    text = log.read_text()
    if proc.returncode != 0:
        pytest.fail(f"the OpenRLHF driver failed ({proc.returncode}):\n" + text[-6000:])
    return [json.loads(line) for line in events.read_text().splitlines() if line.strip()], text


def split_runs(events: list[dict]) -> list[dict]:
    """Per run: its requests and generations (each with the step ``at`` which it was made), its
    training steps, its driver record, and the error of a run that had to fail."""
    runs: list[dict] = []
    for event in events:
        kind = event["kind"]
        if kind == "run":
            runs.append({"requests": [], "generates": [], "fits": [], "init": None, "trainer": None, "start": 0,
                         "error": None})
            continue
        run = runs[-1]
        if kind == "init":
            run["init"] = event
            run["start"] = event["resumed_from"] or 0
        elif kind in ("request", "generate"):
            run[f"{kind}s"].append({**event, "at": run["start"] + len(run["fits"])})
        elif kind == "fit":
            run["fits"].append(event)
        elif kind == "driver":
            run["trainer"] = event["trainer"]
        elif kind == "error":
            run["error"] = event
    return runs


def step_logs(log: str) -> list[dict[int, dict]]:
    """The status dict OpenRLHF's trainer logs after each training step ("Global step N: {...}"),
    per trainer actor in the order the runs started: ``[{global_step: status}, ...]``."""
    import ast
    import re

    per_actor: dict[str, dict[int, dict]] = {}
    for match in re.finditer(r"\((\w+) pid=(\d+)\).*?Global step (\d+): (\{.*\})\s*$", log, re.M):
        per_actor.setdefault(match.group(2), {})[int(match.group(3))] = ast.literal_eval(match.group(4))
    return list(per_actor.values())
