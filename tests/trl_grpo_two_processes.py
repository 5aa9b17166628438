"""Runs TRL's own ``trl grpo`` script (``trl.scripts.grpo``, unchanged) in one process of a torchrun job.

    python -m torch.distributed.run --nproc_per_node 2 tests/trl_grpo_two_processes.py --config grpo.yaml ...

On the CPU (gloo, torch 2.13) the end of the script can hang or abort: when ``main()`` returns, its
trainer is freed, and the DDP reducer's gloo process group joins its worker thread while the thread
that frees it holds the GIL the worker waits for (a deadlock), or, at interpreter exit, gloo aborts
("terminate called without an active exception"). So the trainer is kept alive until the process
group is closed, as tests/trl_two_processes.py does for its own trainer.
"""

import runpy
import sys

import torch
import trl

trainers = []
_init = trl.GRPOTrainer.__init__


def _keep(self, *args, **kwargs):
    trainers.append(self)
    _init(self, *args, **kwargs)


trl.GRPOTrainer.__init__ = _keep
sys.argv = ["trl.scripts.grpo", *sys.argv[1:]]
runpy.run_module("trl.scripts.grpo", run_name="__main__", alter_sys=True)
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
