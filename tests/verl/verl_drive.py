"""Drive verl 0.9.1's V1 trainer through its rollout half, step by step, on a CPU.

:class:`Run` composes verl's real config (``rtpo_data.adapters.verl.compose``), makes verl's sync
``PPOTrainer`` with ``__new__`` (as verl's own V1 unit tests do) and runs its real
``_init_tokenizer``, ``_init_dataloader`` and replay buffer; starts verl's ``RewardLoopManager`` (reward
worker actors running the configured reward function) and rtpo-data's agent-loop manager with its
``AgentLoopWorkerTQ`` Ray actors and a real TransferQueue. Per step it calls the trainer's
``prepare_step`` (the dataloader batch, stamped with ``global_steps``, dispatched to the workers) and
``replay_buffer.sample``, and reads the samples back from the TransferQueue: what verl would train on.
A checkpoint writes ``data.pt`` and calls the configured checkpoint callback, as
``PPOTrainer._save_checkpoint`` does; a restart makes a fresh dataloader and manager and loads
``data.pt``, as a resumed run does. Only the LLM server is a double
(:class:`verl_doubles.ScriptedServer`), and no model is updated between steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch

from verl_doubles import ScriptedServer

HERE = Path(__file__).resolve().parent
# The curricula of conftest.py: ROWS rows, STAGES stages over TOTAL_STEPS steps.
ROWS, STAGES, TOTAL_STEPS = 8, 4, 4


@dataclass
class Sample:
    step: int
    row: int
    stage: int
    prompt_ids: list[int]       # verl's `prompts`: what it trains on
    server_ids: list[int]       # what the LLM server was sent
    response_ids: list[int]
    response_mask: list[int]
    reward: float               # verl's reward (the last token's rm_score)
    extra: dict[str, Any]       # the agent loop's extra_fields, with verl's reward_extra_info


def start_ray() -> None:
    # TransferQueue starts 8 storage actors; with Ray's default of one CPU per core, tq.init() waits
    # for CPUs forever on a 2-core machine.
    # Workers import this folder's doubles by name.
    if not ray.is_initialized():
        path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}})


class Run:
    def __init__(self, overrides: list[str], tokenizer_dir: str) -> None:
        import transfer_queue as tq
        from verl.experimental.reward_loop import RewardLoopManager
        from verl.trainer.ppo.v1 import get_trainer_cls

        from rtpo_data.adapters.verl import compose

        start_ray()
        self.config = compose(overrides)
        self.config.transfer_queue.enable = True
        tq.init(self.config.transfer_queue)
        cls = get_trainer_cls(self.config.trainer.v1.trainer_mode)
        trainer = cls.__new__(cls)
        trainer.config = self.config
        trainer.trainer_mode = self.config.trainer.v1.trainer_mode
        trainer.parameter_sync_step = 1
        trainer._init_tokenizer()
        trainer._init_dataloader()
        trainer.replay_buffer = trainer._build_replay_buffer()
        self.trainer = trainer
        self.rewards = RewardLoopManager(config=self.config)
        self.server = ScriptedServer(tokenizer_dir)
        self.manager = None
        self.new_manager()

    def new_manager(self) -> None:
        """The agent-loop manager named by the config (rtpo-data's), with fresh workers."""
        from verl.utils.import_utils import load_class_from_fqn

        if self.manager is not None:
            for worker in self.manager.agent_loop_workers:
                ray.kill(worker)
        cls = load_class_from_fqn(self.config.actor_rollout_ref.rollout.agent.agent_loop_manager_class, "manager")
        self.manager = cls.create(config=self.config, llm_client=self.server, teacher_client=None,
                                  reward_loop_worker_handles=self.rewards.reward_loop_worker_handles)
        self.trainer.agent_loop_manager = self.manager

    def step(self, global_steps: int, refills: tuple[int, ...] = ()) -> list[Sample]:
        """One training step's rollout: the samples verl would train on at ``global_steps``.

        ``refills``: after the step's batch is scored, dispatch that many more prompts at the same step,
        once per entry, through the function verl's DAPO group filter calls to replace groups it drops
        (``refill_fn``, the trainer's ``_add_prompts_to_generate``); their samples are returned too."""
        trainer = self.trainer
        trainer.global_steps = global_steps
        trainer.prepare_step()
        out = self._collect(global_steps, self.config.data.train_batch_size)
        for prompts in refills:
            trainer.replay_buffer.refill_fn(prompts)
            out += self._collect(global_steps, prompts)
        return out

    def _collect(self, global_steps: int, prompts: int) -> list[Sample]:
        import transfer_queue as tq

        batch, _ = self.trainer.replay_buffer.sample(global_steps=global_steps, partition_id="train", batch_size=prompts)
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id)
        out = samples(data, global_steps)
        tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)
        return out

    def validate(self, global_steps: int) -> list[Sample]:
        """One validation batch, dispatched as verl's ``PPOTrainer._validate`` dispatches it (stamped
        ``validate=True``; its samples go to the TransferQueue's "val" partition)."""
        import uuid

        import numpy as np
        import transfer_queue as tq
        from verl.utils import tensordict_utils as tu

        trainer = self.trainer
        batch_dict = next(iter(trainer.val_dataloader))
        batch_dict["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(batch_dict["raw_prompt"]))], dtype=object)
        batch = tu.get_tensordict(batch_dict)
        tu.assign_non_tensor_data(batch, "global_steps", global_steps)
        tu.assign_non_tensor_data(batch, "validate", True)
        tags = [{"is_prompt": True, "status": "pending", "global_steps": global_steps} for _ in range(len(batch))]
        tq.kv_batch_put(keys=list(batch["uid"]), partition_id="val", tags=tags)
        self.manager.generate_sequences(batch)
        meta, _ = trainer.replay_buffer.sample(global_steps=global_steps, partition_id="val", batch_size=len(batch))
        data = tq.kv_batch_get(keys=meta.keys, partition_id=meta.partition_id)
        out = samples(data, global_steps)
        tq.kv_clear(keys=meta.keys, partition_id=meta.partition_id)
        return out

    def checkpoint(self, global_steps: int) -> Path:
        """What ``PPOTrainer._save_checkpoint`` writes besides the model: ``global_step_N/data.pt``, then
        the configured checkpoint callback's ``on_save``."""
        from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback

        folder = Path(self.config.trainer.default_local_dir) / f"global_step_{global_steps}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.trainer.train_dataloader.state_dict(), folder / "data.pt")
        build_checkpoint_callback(self.config).on_save(trainer=self.trainer, global_step=global_steps,
                                                        checkpoint_dir=str(folder))
        return folder

    def restart(self, folder: Path) -> None:
        """What a resumed run starts with: a fresh dataloader (verl's ``_init_dataloader``) loaded from
        ``folder/data.pt``, and a fresh agent-loop manager."""
        self.trainer._init_dataloader()
        self.trainer.train_dataloader.load_state_dict(torch.load(folder / "data.pt", weights_only=False))
        self.trainer.train_dataloader_it = None
        self.new_manager()

    def close(self) -> None:
        import transfer_queue as tq

        for worker in [*self.manager.agent_loop_workers, *self.rewards.reward_loop_workers]:
            ray.kill(worker)
        tq.close()
        ray.shutdown()


def user_overrides(tiny: dict[str, Path], *extra: str) -> list[str]:
    """A small GRPO run's Hydra overrides as a user gives them (``rtpo_data.adapters.verl.overrides``
    adds rtpo-data's): 2 rows per step, 2 samples per row; ``extra`` come last and win."""
    return ["algorithm.adv_estimator=grpo", f"actor_rollout_ref.model.path={tiny['model']}",
            "actor_rollout_ref.rollout.name=vllm", "data.train_batch_size=2", "actor_rollout_ref.rollout.n=2",
            "data.max_prompt_length=200", "data.max_response_length=32", *extra]


def launch(tiny: dict[str, Path], tmp: Path, *extra: str) -> Run:
    """A :class:`Run` over conftest's ``cur``, as ``rtpo-data train verl`` would configure it: 2
    dataloader worker processes, 2 agent-loop workers, 1 reward worker, checkpoints in ``tmp``."""
    from rtpo_data.adapters.verl import overrides

    given = user_overrides(tiny, "data.dataloader_num_workers=2", "data.val_batch_size=4",
                           "actor_rollout_ref.rollout.agent.num_workers=2", "reward.num_workers=1",
                           f"trainer.default_local_dir={tmp}", *extra)
    return Run([*given, *overrides(tiny["cur"], given)], str(tiny["model"]))


def _ids(value: Any) -> list[int]:
    return [int(v) for v in (value.tolist() if isinstance(value, torch.Tensor) else value)]


def samples(data: Any, step: int) -> list[Sample]:
    out = []
    for i in range(len(data)):
        item = data[i]
        extra = item["extra_fields"]
        extra = dict(getattr(extra, "data", extra))
        scores = item.get("rm_scores", None)
        out.append(Sample(step=step, row=int(item["rtpo_row"]), stage=int(item["rtpo_stage"]),
                          prompt_ids=_ids(item["prompts"]), server_ids=_ids(extra["server_prompt_ids"]),
                          response_ids=_ids(item["responses"]), response_mask=_ids(item["response_mask"]),
                          reward=float(scores.sum()) if scores is not None else float("nan"), extra=extra))
    return out
