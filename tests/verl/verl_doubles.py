"""The one part of a verl run that cannot run on a CPU: the LLM server (vLLM or SGLang).

:class:`EchoServer` stands in for verl's ``LLMServerClient`` in the agent-loop workers: it answers
every request with a fixed short completion, and puts the token ids it was sent into the output's
``extra_fields``, which verl stores with the sample in the TransferQueue, so a test reads what the
server saw next to what verl trains on.
"""

from __future__ import annotations

from typing import Any


class EchoServer:
    def __init__(self, response: list[int]) -> None:
        self.response = list(response)

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       **kwargs: Any) -> Any:
        from verl.workers.rollout.replica import TokenOutput

        return TokenOutput(token_ids=list(self.response), log_probs=None, stop_reason="completed",
                           extra_fields={"server_prompt_ids": list(prompt_ids)})
