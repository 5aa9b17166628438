"""The reward file for OpenRLHF's ``--reward.remote_url`` (a local ``.py`` path).

OpenRLHF loads this file by path inside every vLLM engine actor and calls
``reward_func(queries, prompts, labels)`` once per sample. It is a separate, tiny file on purpose:
loading ``rtpo_data.adapters.openrlhf`` instead would import the trainer side (DeepSpeed, the PPO
trainer) into the vLLM processes. Labels are the dicts the curriculum dataset writes
(``{"answer", "row_id", "step", "stage", "kept_fraction"}``); see :func:`rtpo_data.rewards.openrlhf_reward_func`.

Print its path with ``python -c "import rtpo_data.adapters.openrlhf_reward as m; print(m.__file__)"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rtpo_data.rewards import openrlhf_reward_func


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
    """Accuracy (math-verify on the completion) as reward and score; format and hint stats as extra logs."""
    return openrlhf_reward_func(queries, prompts, labels, **kwargs)
