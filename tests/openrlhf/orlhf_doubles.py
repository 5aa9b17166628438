"""Test doubles for the GPU parts of an OpenRLHF run, so its real Ray trainer runs on a CPU.

What is replaced, and nothing else:

- vLLM generation: :class:`FakeRolloutActor` is OpenRLHF's own ``RolloutRayActor`` (its real
  ``generate_responses`` and the real ``SingleTurnAgentExecutor``, which loads the reward file given
  to ``--reward.remote_url`` and calls it per sample) with ``generate`` answering without a model:
  for odd rows every other sample boxes the gold answer, otherwise it boxes -1. So odd rows' groups
  score 0.5 on average and even rows' 0, which OpenRLHF's dynamic filtering rejects. With
  ``$RTPO_TEST_REWARD=capacity`` the rule is per (row, stage) instead: row ``r`` has capacity
  ``r % 3``; at a stage up to its capacity every other sample is right (mean 0.5), above it none is.
- The DeepSpeed policy model: :class:`FakePolicyActor` answers ``forward`` with zero log-probs,
  records what it is asked to train, and saves / loads OpenRLHF's checkpoint ``client_states`` in a
  tag folder with a ``latest`` file, as DeepSpeed does. It is a real ``BaseModelActor`` (OpenRLHF's
  ``execute_batch`` dispatch) inside OpenRLHF's real ``RayActorGroup``.

Every request (the prompt and label the engine actor is handed), every generation (the token ids
that reach the engine, one per sample) and every training step is appended, one JSON line each, to
the file named by ``$RTPO_TEST_EVENTS``; requests and generations of a step are all written before
that step's ``fit`` (the trainer waits for all rollouts before training), so the file's order gives
each its step.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import ray
import torch
from openrlhf.trainer.ppo_utils.experience import split_experience_batch
from openrlhf.trainer.ray.launcher import BaseModelActor
from openrlhf.trainer.ray.vllm_engine import RolloutRayActor
from openrlhf.utils.agent import SingleTurnAgentExecutor

EVENTS_ENV = "RTPO_TEST_EVENTS"
REWARD_ENV = "RTPO_TEST_REWARD"
LOAD_TAG_ENV = "RTPO_TEST_LOAD_TAG"


def log_event(**event) -> None:
    line = (json.dumps(event) + "\n").encode()
    fd = os.open(os.environ[EVENTS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one O_APPEND write per event: lines from several processes never interleave
    finally:
        os.close(fd)


def read_events(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@ray.remote(num_cpus=0)
class FakeRolloutActor(RolloutRayActor.__ray_actor_class__):
    """OpenRLHF's rollout actor without vLLM (see the module docstring)."""

    def __init__(self, pretrain: str, remote_rm_url=None) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(pretrain)
        self.executor = SingleTurnAgentExecutor(remote_rm_url)
        self._mm_pad_token_ids = None
        self._samples_seen: dict[str, int] = {}
        # per instance: Ray ships this class by value, and a module-level ContextVar does not pickle
        self._request: contextvars.ContextVar[dict] = contextvars.ContextVar("request")

    async def generate_responses(self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples=1, images=None):
        log_event(kind="request", prompt=prompt, label=label, n=num_samples)
        self._request.set({"label": label, "n": num_samples})  # the executor's tasks below inherit it
        return await super().generate_responses(prompt, label, sampling_params, max_length, hf_tokenizer, num_samples, images)

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        text = self.tokenizer.decode(prompt_token_ids)
        row = int(re.search(r"Problem (\d+):", text).group(1))
        log_event(kind="generate", ids=list(prompt_token_ids), row=row, **self._request.get())
        k = self._samples_seen[text] = self._samples_seen.get(text, -1) + 1
        completion = f" The answer is \\boxed{{{2 * row}}}." if k % 2 == 0 and solves(row, self._request.get()["label"]) \
            else " \\boxed{-1}"
        ids = self.tokenizer.encode(completion, add_special_tokens=False)[: sampling_params.max_tokens]
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, text=completion, finish_reason="stop", logprobs=None)])

    def get_num_unfinished_requests(self) -> int:
        return 0


def capacity(row: int) -> int:
    """The last stage at which row ``row`` is solved under ``$RTPO_TEST_REWARD=capacity``."""
    return row % 3


def solves(row: int, label) -> bool:
    """Whether the double's samples of this request may be right (then every other one is)."""
    if os.environ.get(REWARD_ENV) == "capacity":
        stage = label.get("stage") if isinstance(label, dict) else None
        return (stage or 0) <= capacity(row)
    return row % 2 == 1


def create_vllm_engines(num_engines, tensor_parallel_size, pretrain, *args, remote_rm_url=None, agent_func_path=None,
                        **kwargs):
    """Stands in for ``openrlhf.trainer.ray.create_vllm_engines`` (same positional arguments)."""
    assert agent_func_path is None, "the double serves the single-turn executor only"
    return [FakeRolloutActor.remote(pretrain, remote_rm_url) for _ in range(num_engines)]


@ray.remote(num_cpus=0)
class FakePolicyActor(BaseModelActor):
    """Stands in for ``PolicyModelActor`` (see the module docstring)."""

    def init_model_from_pretrained(self, strategy, pretrain, max_steps=None, vllm_engines=None):
        self.strategy = strategy
        self._trained: list[tuple[str, object]] = []
        self.checkpoint_states = {}
        ckpt = os.path.join(strategy.args.ckpt.path, "_actor")
        if strategy.args.ckpt.load_enable and os.path.exists(ckpt):
            tag = os.environ.get(LOAD_TAG_ENV) or Path(ckpt, "latest").read_text().strip()
            self.checkpoint_states = torch.load(os.path.join(ckpt, tag, "client_states.pt"), weights_only=False)
        log_event(kind="init", max_steps=max_steps, resumed_from=self.checkpoint_states.get("global_step"))

    def empty_cache(self) -> None:
        pass

    def forward(self, sequences, action_mask=None, attention_mask=None, **kwargs):
        return torch.zeros(action_mask.shape, dtype=torch.float32)

    def append(self, experience) -> None:
        # OpenRLHF's replay buffer splits batches with this function; labels must survive it.
        for item in split_experience_batch(experience):
            self._trained.append((item.prompts[0], item.labels[0]))

    def fit(self, kl_ctl: float = 0):
        log_event(kind="fit", prompts=[p for p, _ in self._trained], labels=[lab for _, lab in self._trained])
        self._trained = []
        return {"policy_loss": 0.0}

    def broadcast_to_vllm(self) -> None:
        pass

    def get_checkpoint_states(self):
        return self.checkpoint_states

    def save_checkpoint(self, tag, client_states=None, metric_value=None, metric_key=None) -> None:
        folder = os.path.join(self.strategy.args.ckpt.path, "_actor")
        os.makedirs(os.path.join(folder, tag), exist_ok=True)
        torch.save(client_states or {}, os.path.join(folder, tag, "client_states.pt"))
        with open(os.path.join(folder, "latest"), "w") as f:
            f.write(tag)

    def save_model(self) -> None:
        pass


class CpuOnly:
    """``RayActorGroup`` asks for ``num_gpus=1`` per model actor; the double needs none."""

    def __init__(self, actor_class) -> None:
        self.actor_class = actor_class

    def options(self, **options):
        return self.actor_class.options(**{**options, "num_gpus": 0, "num_cpus": 0})
