"""Drive verl 0.9.1's V1 trainer through its rollout half, step by step, on a CPU.

:class:`Run` composes verl's real config (``rtpo_data.adapters.verl.compose``), makes verl's sync
``PPOTrainer`` with ``__new__`` (as verl's own V1 unit tests do) and runs its real
``_init_tokenizer``, ``_init_dataloader`` and replay buffer; creates rtpo-data's agent-loop manager
with verl's real ``AgentLoopWorkerTQ`` Ray actors and a real TransferQueue; then, per step, calls the
trainer's ``prepare_step`` (the dataloader batch, stamped with ``global_steps``, dispatched to the
workers) and ``replay_buffer.sample``, and reads the samples back from the TransferQueue: what verl
would train on. Only the LLM server is a double (:class:`verl_doubles.EchoServer`), and no model is
updated between steps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch

from verl_doubles import EchoServer

HERE = Path(__file__).resolve().parent
RESPONSE = [5, 6, 7]
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
    extra: dict[str, Any]


def start_ray() -> None:
    # TransferQueue starts 8 storage actors; with Ray's default of one CPU per core, tq.init() waits
    # for CPUs forever on a 2-core machine.
    # Workers import this folder's doubles by name.
    if not ray.is_initialized():
        path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}})


class Run:
    def __init__(self, overrides: list[str]) -> None:
        import transfer_queue as tq
        from verl.trainer.ppo.v1 import get_trainer_cls

        from rtpo_data.adapters.verl import RTPOAgentLoopManager, compose

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
        self.manager = RTPOAgentLoopManager.create(config=self.config, llm_client=EchoServer(RESPONSE),
                                                   teacher_client=None, reward_loop_worker_handles=None)
        trainer.agent_loop_manager = self.manager

    def step(self, global_steps: int) -> list[Sample]:
        """One training step's rollout: the samples verl would train on at ``global_steps``."""
        import transfer_queue as tq

        trainer = self.trainer
        trainer.global_steps = global_steps
        trainer.prepare_step()
        batch, _ = trainer.replay_buffer.sample(global_steps=global_steps, partition_id="train",
                                                batch_size=self.config.data.train_batch_size)
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

    def restart(self, state: dict[str, Any]) -> None:
        """What a resume from ``global_step_N`` does to the data: a fresh dataloader (verl's
        ``_init_dataloader``) loaded with the saved ``data.pt`` state."""
        self.trainer._init_dataloader()
        self.trainer.train_dataloader.load_state_dict(state)
        self.trainer.train_dataloader_it = None

    def state_dict(self) -> dict[str, Any]:
        """What verl saves as global_step_N/data.pt."""
        return self.trainer.train_dataloader.state_dict()

    def close(self) -> None:
        import transfer_queue as tq

        for worker in self.manager.agent_loop_workers:
            ray.kill(worker)
        tq.close()


def _ids(value: Any) -> list[int]:
    return [int(v) for v in (value.tolist() if isinstance(value, torch.Tensor) else value)]


def samples(data: Any, step: int) -> list[Sample]:
    out = []
    for i in range(len(data)):
        item = data[i]
        extra = item["extra_fields"]
        extra = getattr(extra, "data", extra)
        out.append(Sample(step=step, row=int(item["rtpo_row"]), stage=int(item["rtpo_stage"]),
                          prompt_ids=_ids(item["prompts"]), server_ids=_ids(extra["server_prompt_ids"]),
                          response_ids=_ids(item["responses"]), response_mask=_ids(item["response_mask"]),
                          extra=dict(extra)))
    return out
