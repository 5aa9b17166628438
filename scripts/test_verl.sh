#!/usr/bin/env bash
# Install verl 0.9.1 beside rtpo-data in its own venv (.venv-verl) and run tests/verl.
#
# verl's pins (transformers<5.11) conflict with OpenRLHF's, hence an environment of its own. Its
# rollout needs vLLM or SGLang (GPU only), so verl goes in with --no-deps, beside exactly what its
# trainer, dataloader, agent-loop and TransferQueue code import (its 0.9.1 metadata's pins), and
# the tests replace only the LLM server.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RTPO_VERL_VENV:-.venv-verl}
python3 -m venv "$VENV"
. "$VENV/bin/activate"
pip install -q --upgrade pip
# The CPU wheel of torch lies on this machine's disk; an unpinned torch would pull a CUDA build.
pip install -q torch==2.13.0
pip install -q --no-deps verl==0.9.1
pip install -q -e ".[test]" transformers==5.9.0 tensordict==0.10.0 "ray[default]>=2.41,<3" \
    transferqueue==0.1.11 hydra-core torchdata codetiming dill pylatexenc pybind11 pyzmq msgspec \
    peft accelerate pillow fastapi uvicorn cachetools datasets pandas math-verify
python -m pytest tests/verl -q -p no:cacheprovider "$@"
