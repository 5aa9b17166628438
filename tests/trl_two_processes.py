"""One process of a 2-process RTPOTrainer run on the CPU (torchrun; accelerate picks gloo from it).

    python -m torch.distributed.run --nproc_per_node 2 tests/trl_two_processes.py WORK

WORK holds ``cur`` (the curriculum), ``model`` (a tiny Qwen2 and its tokenizer, saved by the test).
Every prompt TRL tokenizes for generation on this process is appended, with the global step, to
``WORK/seen-RANK.jsonl``.
"""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOTrainer
from trl_helpers import grpo_args, length_reward

from rtpo_data.adapters.trl import RTPOTrainer

work = Path(sys.argv[1])
original = GRPOTrainer._tokenize_prompts


def spy(trainer, prompts):
    if trainer.model.training:
        rank = trainer.accelerator.process_index
        with open(work / f"seen-{rank}.jsonl", "a", encoding="utf-8") as f:
            for p in prompts:
                f.write(json.dumps({"step": int(trainer.state.global_step), "prompt": p}) + "\n")
    return original(trainer, prompts)


GRPOTrainer._tokenize_prompts = spy
tok = AutoTokenizer.from_pretrained(work / "model")
model = AutoModelForCausalLM.from_pretrained(work / "model")
args = grpo_args(work / "run", per_device_train_batch_size=4, gradient_accumulation_steps=2, steps_per_generation=2,
                 num_iterations=2, shuffle_dataset=True)
RTPOTrainer(model=model, reward_funcs=length_reward, args=args, processing_class=tok, curriculum=work / "cur").train()
torch.distributed.destroy_process_group()  # else gloo aborts at interpreter exit
