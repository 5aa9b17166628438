"""Stand-ins for the two GPU-only packages OpenRLHF imports at import time: ``vllm`` and ``flash_attn``.

Neither installs on a CPU machine (vLLM needs CUDA; flash-attn builds from source against CUDA).
As OpenRLHF's own tests do, only the names its modules import when they load are provided, so the
real trainer, dataset, sample generator, experience maker, rollout actor and CLI modules import:

- ``vllm.SamplingParams`` (openrlhf/trainer/ppo_utils/samples_generator.py) — a plain attribute bag,
  defined under the module name ``vllm`` so Ray can pickle it between processes by reference;
- ``vllm.inputs.TokensPrompt``, ``vllm.utils.random_uuid`` (openrlhf/trainer/ray/vllm_engine.py);
- ``flash_attn.bert_padding.{index_first_axis, pad_input, rearrange, unpad_input}`` and
  ``flash_attn.utils.distributed.all_gather`` (openrlhf/models/ring_attn_utils.py, imported by the
  DeepSpeed strategy module).

Nothing here generates text: generation is replaced by a test double (orlhf_doubles.py). Each stub
has a ``__spec__`` so ``importlib.util.find_spec`` (used by transformers' availability checks) works.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
import uuid


class SamplingParams:
    """vLLM's sampling parameters, as the attribute bag OpenRLHF builds and reads."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def __repr__(self) -> str:
        return f"SamplingParams({self.__dict__})"


SamplingParams.__module__ = "vllm"


def _unavailable(*args, **kwargs):
    raise RuntimeError("flash_attn is a test stub here: this code path needs a GPU")


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def install() -> None:
    """Put the stubs in ``sys.modules`` (idempotent; never replaces a real installed package)."""
    if "vllm" not in sys.modules:
        vllm = _module("vllm", SamplingParams=SamplingParams, __version__="0.29.0")
        vllm.inputs = _module("vllm.inputs", TokensPrompt=dict)
        vllm.utils = _module("vllm.utils", random_uuid=lambda: uuid.uuid4().hex)
    if "flash_attn" not in sys.modules:
        flash_attn = _module("flash_attn", __version__="2.8.3")
        flash_attn.bert_padding = _module("flash_attn.bert_padding", index_first_axis=_unavailable, pad_input=_unavailable,
                                          rearrange=_unavailable, unpad_input=_unavailable)
        flash_attn.utils = _module("flash_attn.utils")
        flash_attn.utils.distributed = _module("flash_attn.utils.distributed", all_gather=_unavailable)
