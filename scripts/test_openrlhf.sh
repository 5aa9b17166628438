#!/usr/bin/env bash
# Install OpenRLHF 0.11.2 beside rtpo-data in its own venv (.venv-openrlhf) and run tests/openrlhf,
# and tests/test_build_ray.py on the Ray version OpenRLHF pins.
#
# OpenRLHF cannot be installed whole on a CPU machine: it requires flash-attn (source only, needs
# CUDA) and vllm. So it goes in with --no-deps, beside exactly the dependencies its trainer, dataset
# and Ray code import (pins from OpenRLHF 0.11.2's requirements), and tests/openrlhf/conftest.py
# stubs the GPU-only modules `vllm` and `flash_attn`, as OpenRLHF's own tests do.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RTPO_OPENRLHF_VENV:-.venv-openrlhf}
. scripts/venv.sh "$VENV"
pip install -q -e ".[test]"
pip install -q --no-deps openrlhf==0.11.2
pip install -q transformers==5.15.0 "ray[default]==2.55.0" deepspeed==0.19.6 \
    datasets tqdm pylatexenc aiohttp torchdata peft
# The Ray engine's tests again, here on the Ray that OpenRLHF pins (2.55; .venv has the latest).
python -m pytest tests/openrlhf tests/test_build_ray.py -q -p no:cacheprovider "$@"
