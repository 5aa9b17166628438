"""Runs OpenRLHF trainings in this process, the GPU parts replaced by the doubles of orlhf_doubles.py.

    python orlhf_drive.py PLAN.json

PLAN is a list of steps, run in order in one process (so one local Ray cluster serves them all):

    {"cli": [flags]}          OpenRLHF's CLI module, unchanged, run as __main__ (python -m openrlhf.cli.train_ppo_ray)
    {"wrapper": [argv]}       rtpo_data.adapters.openrlhf.main(argv)
    {"resume": [src, dst, tag]}  copy checkpoint folder src to dst and point its "latest" at tag

A "cli" or "wrapper" step with ``"expect_error": true`` is a run that must fail: its exception is
recorded as an ``error`` event (its message, with the trainer actor's traceback when it failed in
the actor) instead of ending the driver. Put it last: its actors are left behind.

Only two names are replaced before the CLI runs: ``openrlhf.trainer.ray.create_vllm_engines`` and
``openrlhf.trainer.ray.ppo_actor.PolicyModelActor``; Ray, the CLI, the trainer actor, the sample
generator, the experience maker and the checkpoint logic are OpenRLHF's. The first run's
``ray.init`` is the CLI's own, so the caller's ``RAY_RUNTIME_ENV_HOOK`` is what installs rtpo-data.
After each run it records which trainer class OpenRLHF's ``train()`` imported.
"""

import json
import os
import runpy
import shutil
import sys

import orlhf_stubs

orlhf_stubs.install()

import openrlhf.trainer.ray as ray_package  # noqa: E402
import openrlhf.trainer.ray.ppo_actor as ppo_actor  # noqa: E402

import orlhf_doubles  # noqa: E402

ray_package.create_vllm_engines = orlhf_doubles.create_vllm_engines
ppo_actor.PolicyModelActor = orlhf_doubles.CpuOnly(orlhf_doubles.FakePolicyActor)

with open(sys.argv[1], encoding="utf-8") as f:
    plan = json.load(f)

for index, step in enumerate(plan):
    if "resume" in step:
        src, dst, tag = step["resume"]
        shutil.copytree(src, dst)
        with open(os.path.join(dst, "_actor", "latest"), "w") as f:
            f.write(tag)
        continue
    orlhf_doubles.log_event(kind="run", index=index)
    try:
        if "cli" in step:
            saved = sys.argv
            sys.argv = ["openrlhf.cli.train_ppo_ray", *step["cli"]]
            try:
                runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)
            finally:
                sys.argv = saved
        else:
            from rtpo_data.adapters.openrlhf import main

            main(step["wrapper"])
    except Exception as exc:  # noqa: BLE001 - recorded for the test to read
        if not step.get("expect_error"):
            raise
        orlhf_doubles.log_event(kind="error", type=type(exc).__name__, message=str(exc))
        continue
    if step.get("expect_error"):
        orlhf_doubles.log_event(kind="error", type=None, message=None)
    import openrlhf.trainer.ppo_trainer as ppo_trainer

    trainer = ppo_trainer.PPOTrainer.__ray_actor_class__
    orlhf_doubles.log_event(kind="driver", trainer=f"{trainer.__module__}.{trainer.__name__}")
