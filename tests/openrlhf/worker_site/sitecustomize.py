"""Installs the vllm / flash_attn stubs (orlhf_stubs.py) in every Python process started with this
folder on PYTHONPATH: the end-to-end tests' driver and the Ray worker processes it starts, which do
not share the pytest process's sys.modules."""

import orlhf_stubs

orlhf_stubs.install()
