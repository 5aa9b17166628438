"""Trainer integrations, imported as ``rtpo_data.adapters.<trainer>``.

Each adapter imports the core and its trainer; the core never imports an adapter, so
``pip install rtpo-data`` needs no trainer at all.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence


def run_as_main(module: str, argv: Sequence[str]) -> None:
    """``python -m module *argv``, in this process: a trainer's own entry point, unchanged."""
    saved = sys.argv
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved
