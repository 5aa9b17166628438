"""The one part of a verl run that cannot run on a CPU: the LLM server (vLLM or SGLang).

:class:`ScriptedServer` stands in for verl's ``LLMServerClient`` in the agent-loop workers. It reads
the problem number ``i`` from the prompt it is sent ("Problem i: what is i + i?", the test rows) and
answers ``\\boxed{2i}`` (right) when ``i`` is even and ``\\boxed{-1}`` (wrong) when it is odd, so verl's
reward workers score real responses. It puts the token ids it was sent into the output's
``extra_fields``, which verl stores with the sample in the TransferQueue: a test reads what the server
saw next to what verl trains on.
"""

from __future__ import annotations

import re
from typing import Any


class ScriptedServer:
    def __init__(self, tokenizer_dir: str) -> None:
        self.tokenizer_dir = tokenizer_dir
        self._tokenizer = None

    def respond(self, prompt: str) -> str:
        i = int(re.search(r"Problem (\d+):", prompt).group(1))
        return f"So the sum is \\boxed{{{2 * i if i % 2 == 0 else -1}}}"

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       **kwargs: Any) -> Any:
        from transformers import AutoTokenizer
        from verl.workers.rollout.replica import TokenOutput

        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        response = self._tokenizer.encode(self.respond(self._tokenizer.decode(prompt_ids)), add_special_tokens=False)
        return TokenOutput(token_ids=response, log_probs=None, stop_reason="completed",
                           extra_fields={"server_prompt_ids": list(prompt_ids)})
