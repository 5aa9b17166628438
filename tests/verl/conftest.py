"""Tests of ``rtpo_data.adapters.verl`` against the real verl 0.9.1, on a CPU.

They run in their own environment (``bash scripts/test_verl.sh`` makes ``.venv-verl``): verl pins
``transformers<5.11``, which OpenRLHF's environment cannot have. The main suite leaves this folder
out where verl is missing (tests/conftest.py).

What is real: verl's Hydra config, its dataloader and trainer batch code (``PPOTrainer`` made with
``__new__``, as verl's own V1 unit tests make it), its agent-loop manager and ``AgentLoopWorkerTQ``
Ray actors, its reward workers, a TransferQueue and verl's ``ReplayBuffer``. What is not: the LLM server (vLLM or SGLang,
GPU only), replaced by :class:`verl_doubles.ScriptedServer`, and the model update between steps.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from verl_drive import ROWS, STAGES, TOTAL_STEPS  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model folder (a tiny tokenizer and a Qwen2 config: verl loads both, never the weights here)
    and curricula built with its tokenizer: ``cur`` (total_steps=4, 4 stages, the hint in a
    continued assistant turn) and ``cur_open`` (no total_steps); and ``other``, a model folder whose
    tokenizer differs."""
    from transformers import Qwen2Config

    from rtpo_data import BuildConfig, build

    from helpers import make_tokenizer, write_jsonl
    from trl_helpers import tiny_rows

    root = tmp_path_factory.mktemp("verl")
    model = Path(make_tokenizer(root / "model", vocab_size=600))
    other = Path(make_tokenizer(root / "other", vocab_size=300))
    for folder in (model, other):
        Qwen2Config(vocab_size=600, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1, max_position_embeddings=2048,
                    architectures=["Qwen2ForCausalLM"]).save_pretrained(folder)
    src = write_jsonl(root / "rows.jsonl", tiny_rows(ROWS))
    common = dict(source=str(src), tokenizer=str(model), stages=STAGES, unit="word")
    build(BuildConfig(out=str(root / "cur"), total_steps=TOTAL_STEPS, **common))
    build(BuildConfig(out=str(root / "cur_open"), **common))
    return {"root": root, "model": model, "other": other, "cur": root / "cur", "cur_open": root / "cur_open"}
