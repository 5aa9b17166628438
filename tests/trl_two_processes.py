"""One process of a 2-process RTPOTrainer run on the CPU (torchrun; accelerate picks gloo from it).

    python -m torch.distributed.run --nproc_per_node 2 tests/trl_two_processes.py WORK [POLICY]

WORK holds ``cur`` (the curriculum) and ``model`` (a tiny Qwen2 and its tokenizer, saved by the test).
Every prompt this process generates from is appended to ``WORK/seen-RANK.jsonl`` as the global step,
the problem number read from the decoded prompt, and the token ids that reached the model's
``generate`` (left padding removed); the trainer's log history goes to ``WORK/logs-RANK.json``. With a
hint POLICY (``mixed``, ``frontier``), each process also writes its final policy state to
``WORK/state-RANK/``.
"""

import json
import os
import re
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.utils import GenerationMixin

from rtpo_data.adapters.trl import RTPOTrainer

from trl_helpers import grpo_args, length_reward

work = Path(sys.argv[1])
tok = AutoTokenizer.from_pretrained(work / "model")
model = AutoModelForCausalLM.from_pretrained(work / "model")
original = GenerationMixin.generate
trainer = None


def spy(self, *args, **kwargs):
    if trainer.model.training:
        rank = trainer.accelerator.process_index
        with open(work / f"seen-{rank}.jsonl", "a", encoding="utf-8") as f:
            for row, keep in zip(kwargs["input_ids"].tolist(), kwargs["attention_mask"].bool().tolist()):
                ids = [t for t, k in zip(row, keep) if k]
                problem = int(re.search(r"Problem (\d+):", tok.decode(ids)).group(1))
                f.write(json.dumps({"step": int(trainer.state.global_step), "problem": problem, "ids": ids}) + "\n")
    return original(self, *args, **kwargs)


GenerationMixin.generate = spy
args = grpo_args(work / "run", per_device_train_batch_size=4, gradient_accumulation_steps=2, steps_per_generation=2,
                 num_iterations=2, shuffle_dataset=True)
policy = sys.argv[2] if len(sys.argv) > 2 else "global"
trainer = RTPOTrainer(model=model, reward_funcs=length_reward, args=args, processing_class=tok, curriculum=work / "cur",
                      policy=policy)
trainer.train()
rank = trainer.accelerator.process_index
(work / f"logs-{rank}.json").write_text(json.dumps(trainer.state.log_history))
if policy != "global":
    (work / f"state-{rank}").mkdir()
    trainer.rtpo_policy_state().save(work / f"state-{rank}")
torch.distributed.destroy_process_group()
# The DDP reducer still holds the gloo group, which can abort at interpreter teardown ("terminate
# called without an active exception"); the work is done and written, so end without teardown.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
