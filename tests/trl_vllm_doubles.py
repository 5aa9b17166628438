"""Test doubles for vLLM under TRL 1.16, which cannot run on a CPU (vLLM needs CUDA).

Only the engine is replaced: ``vllm.LLM`` in colocate mode and TRL's ``VLLMClient`` (the HTTP client
of a ``trl vllm-serve`` server, whose weight-sync channel is NCCL) in server mode. TRL's own
``VLLMGeneration`` runs unchanged: it gathers the prompt ids, keeps one prompt per group in server
mode, builds the engine requests, syncs weights and slices the completions back per process.

Both doubles record the prompt token ids they receive (``engine.prompts``) and answer each with a
few fixed completion tokens and a log-probability per token. The server double sends the prompts
through JSON, as the real client does over HTTP.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, ClassVar

from trl.generation import vllm_generation

COMPLETION = [5, 6, 7]


class SamplingParams:
    """``vllm.SamplingParams``: the attributes TRL sets."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


class _Model:
    def __init__(self) -> None:
        self.loaded: list[str] = []

    def load_weights(self, weights) -> None:
        self.loaded.extend(name for name, _ in weights)


class FakeLLM:
    """``vllm.LLM`` in colocate mode."""

    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, model: str, max_model_len: int | None = None, **kwargs: Any) -> None:
        self.model = model
        self.max_model_len = max_model_len
        self.prompts: list[list[int]] = []
        worker = SimpleNamespace(model_runner=SimpleNamespace(model=_Model()))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=worker))
        FakeLLM.instances.append(self)

    def generate(self, prompts: list[dict], sampling_params: Any = None, use_tqdm: bool = False) -> list[Any]:
        outputs = []
        for request in prompts:
            ids = list(request["prompt_token_ids"])
            self.prompts.append(ids)
            completions = [SimpleNamespace(
                token_ids=list(COMPLETION),
                logprobs=[{t: SimpleNamespace(logprob=-1.0, rank=1)} for t in COMPLETION],
            ) for _ in range(getattr(sampling_params, "n", 1))]
            outputs.append(SimpleNamespace(prompt_token_ids=ids, outputs=completions))
        return outputs

    def reset_prefix_cache(self) -> None:
        pass


class FakeVLLMClient:
    """TRL's ``VLLMClient`` talking to a vLLM server whose ``max_model_len`` is ``max_model_len``;
    with ``max_model_len=None`` the server does not expose it (no ``VLLM_SERVER_DEV_MODE``)."""

    instances: ClassVar[list[FakeVLLMClient]] = []
    max_model_len: int | None = 4096

    def __init__(self, base_url: str | None = None, **kwargs: Any) -> None:
        self.base_url = base_url
        self.prompts: list[list[int]] = []
        FakeVLLMClient.instances.append(self)

    def init_communicator(self, device: Any = 0) -> None:
        pass

    def get_server_info(self) -> dict:
        if self.max_model_len is None:
            raise RuntimeError(
                f"The vLLM server at {self.base_url} does not expose its development endpoints, which TRL uses "
                "to synchronize weights. Restart it with `VLLM_SERVER_DEV_MODE=1` in its environment."
            )
        return {"model_config": {"max_model_len": self.max_model_len, "logprobs_mode": "processed_logprobs"}}

    def update_named_params(self, metadata, params) -> None:
        for _ in params:  # the real client streams every parameter
            pass

    def reset_prefix_cache(self) -> None:
        pass

    def generate(self, prompts, features=None, n: int = 1, **kwargs: Any) -> dict:
        prompts = json.loads(json.dumps(prompts))  # over HTTP, as the real client sends them
        self.prompts.extend(prompts)
        return {
            "prompt_ids": prompts,
            "completion_ids": [list(COMPLETION) for _ in prompts for _ in range(n)],
            "logprobs": [[[-1.0] for _ in COMPLETION] for _ in prompts for _ in range(n)],
            "logprob_token_ids": [[[t] for t in COMPLETION] for _ in prompts for _ in range(n)],
        }


def install(monkeypatch, *, server_max_model_len: int | None = 4096) -> None:
    """Put the doubles where TRL's ``VLLMGeneration`` looks for vLLM; restore everything after the test."""
    import os

    # colocate mode writes the distributed environment of vLLM's external launcher into os.environ
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if not os.environ[name]:
            monkeypatch.delenv(name)
    monkeypatch.setattr(vllm_generation, "is_vllm_available", lambda: True)
    monkeypatch.setattr(vllm_generation, "LLM", FakeLLM, raising=False)
    monkeypatch.setattr(vllm_generation, "SamplingParams", SamplingParams, raising=False)
    monkeypatch.setattr(vllm_generation, "VLLMClient", FakeVLLMClient)
    monkeypatch.setattr(FakeVLLMClient, "max_model_len", server_max_model_len)
    monkeypatch.setattr(FakeLLM, "instances", [])
    monkeypatch.setattr(FakeVLLMClient, "instances", [])
