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
. scripts/venv.sh "$VENV"
pip install -q --no-deps verl==0.9.1
pip install -q -e ".[test]" transformers==5.9.0 tensordict==0.10.0 "ray[default]>=2.41,<3" \
    transferqueue==0.1.11 hydra-core torchdata codetiming dill pylatexenc pybind11 pyzmq msgspec \
    peft accelerate pillow fastapi uvicorn cachetools datasets pandas math-verify
python -m pytest tests/verl -q -p no:cacheprovider "$@"
