# Sourced by the test scripts: make (or reuse) the virtual environment $1, activate it, and install
# pip and the CPU wheel of torch into it. The CPU wheel lies on this machine's disk; an unpinned torch
# would pull a CUDA build of several GB.
python3 -m venv "$1"
. "$1/bin/activate"
pip install -q --upgrade pip
pip install -q torch==2.13.0
