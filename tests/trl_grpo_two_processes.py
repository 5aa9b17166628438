"""Runs TRL's own ``trl grpo`` script (``trl.scripts.grpo``, unchanged) in one process of a torchrun job.

    python -m torch.distributed.run --nproc_per_node 2 tests/trl_grpo_two_processes.py --config grpo.yaml ...

On the CPU (gloo, torch 2.13) the end of the script can hang or abort: when ``main()`` returns, its
trainer is freed, and the DDP reducer's gloo process group joins its worker thread while the thread
that frees it holds the GIL the worker waits for (a deadlock), or, at interpreter exit, gloo aborts
("terminate called without an active exception"). Closing the process group first is not enough:
the DDP reducer keeps its own reference to the gloo group, and the abort still came now and then on a
loaded machine. So the trainer is kept alive, the group is closed, and the process ends with
``os._exit`` once the script has returned and its output is flushed: the run's work is done and on
disk by then, and nothing is left for interpreter teardown to free. A failure inside the script
still raises, and exits non-zero, before that.
"""

import os
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
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
