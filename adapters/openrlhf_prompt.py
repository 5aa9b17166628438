"""What travels from the trainer actor to OpenRLHF's other processes: prompts that take their exact
token ids to the rollout workers, and the hint policy's state in the checkpoint.

OpenRLHF 0.11.2 hands each prompt to a vLLM engine actor as text, together with the trainer's
tokenizer, and the agent executor there tokenizes it::

    ids = hf_tokenizer(text=prompt, add_special_tokens=False, return_tensors="pt")["input_ids"][0]

(``SingleTurnAgentExecutor.execute``; ``MultiTurnAgentExecutor`` does the same with the first
observation). With ``add_special_tokens=False`` a BOS that the tokenizer would add is lost, and text
tokenized again need not give the curriculum's ids (SentencePiece-style tokenizers tokenize the text
after a BOS differently from the text alone). So the dataset hands OpenRLHF a :class:`PromptText`,
a ``str`` that also carries the curriculum's ``prompt_ids``, and the sample generator a
:class:`CurriculumTokenizer`, the trainer's tokenizer that answers such a text with those ids. Both
travel to the engine actors with the request (Ray pickles them by reference to this module, which
imports neither OpenRLHF nor the trainer side).

The text itself is what the model sees, the tokenizer's BOS included, so reward functions and any
code that tokenizes it anew still start from the right text. Any change to the text (slicing,
concatenation) gives a plain ``str`` without ids, which the tokenizer then tokenizes as usual.

The hint policy's state rides in OpenRLHF's checkpoint ``client_states`` as a :class:`PolicyCheckpoint`,
which the policy-model actors pickle into DeepSpeed's checkpoint and unpickle on resume; it lives
here, so that they import nothing of the trainer side for it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

    from rtpo_data.policies import PolicyState


class PromptText(str):
    """A prompt's text that carries its exact token ids in ``ids``."""

    ids: list[int]

    def __new__(cls, text: str, ids: Sequence[int]) -> Self:
        obj = super().__new__(cls, text)
        obj.ids = [int(i) for i in ids]
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (PromptText, (str(self), self.ids))


_TOKENIZE_KWARGS = {"add_special_tokens", "return_tensors", "return_attention_mask"}


class CurriculumTokenizer:
    """A tokenizer that answers ``tokenizer(text=PromptText)`` with the text's stored ids.

    Everything else (other texts, ``decode``, attributes) goes to the wrapped tokenizer. The stored
    ids are the model's whole prompt, special tokens included, so they are returned whatever
    ``add_special_tokens`` says: adding a BOS to a text that begins with one would only double it.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: Any = None, *args: Any, **kwargs: Any) -> Any:
        tensors = kwargs.get("return_tensors")
        plain_call = not args and set(kwargs) <= _TOKENIZE_KWARGS and tensors in (None, "pt")
        if isinstance(text, PromptText) and plain_call:
            from transformers import BatchEncoding

            ids = list(text.ids)
            if tensors == "pt":
                import torch

                row = torch.tensor([ids], dtype=torch.long)
                return BatchEncoding({"input_ids": row, "attention_mask": torch.ones_like(row)})
            return BatchEncoding({"input_ids": ids, "attention_mask": [1] * len(ids)})
        return self.tokenizer(text, *args, **kwargs)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name: str) -> Any:
        if name == "tokenizer" or name.startswith("__"):  # unpickling looks these up before __dict__ is set
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __repr__(self) -> str:
        return f"CurriculumTokenizer({self.tokenizer!r})"


class PolicyCheckpoint:
    """A hint policy's state as OpenRLHF's checkpoint carries it (``client_states["rtpo_policy"]``).

    It holds the two files :meth:`rtpo_data.policies.PolicyState.save` writes, as they are (``meta``: the
    text of ``rtpo_policy.json``, ``arrays``: the bytes of ``rtpo_policy.npz``), so a resume checks
    them with :meth:`~rtpo_data.policies.PolicyState.load` exactly as a checkpoint folder is checked. Its
    ``repr`` is one line: OpenRLHF logs the whole ``client_states`` it resumes from.
    """

    def __init__(self, meta: str, arrays: bytes) -> None:
        self.meta = str(meta)
        self.arrays = bytes(arrays)

    @classmethod
    def of(cls, state: PolicyState) -> PolicyCheckpoint:
        from rtpo_data.policies import STATE_ARRAYS, STATE_META

        with tempfile.TemporaryDirectory(prefix="rtpo-policy-") as tmp:
            state.save(tmp)
            return cls(Path(tmp, STATE_META).read_text(encoding="utf-8"), Path(tmp, STATE_ARRAYS).read_bytes())

    def load(self, expected: PolicyState, where: str) -> PolicyState:
        """The state, refused (:class:`~rtpo_data.errors.RtpoDataError`) unless it belongs to what
        ``expected`` describes; ``where`` names the checkpoint in the message."""
        from rtpo_data.errors import RtpoDataError
        from rtpo_data.policies import STATE_ARRAYS, STATE_META, PolicyState

        with tempfile.TemporaryDirectory(prefix="rtpo-policy-") as tmp:
            Path(tmp, STATE_META).write_text(self.meta, encoding="utf-8")
            Path(tmp, STATE_ARRAYS).write_bytes(self.arrays)
            try:
                return PolicyState.load(tmp, expected)
            except RtpoDataError as exc:
                raise RtpoDataError(str(exc).replace(os.fspath(tmp), where)) from None

    def __reduce__(self) -> tuple[Any, ...]:
        return (PolicyCheckpoint, (self.meta, self.arrays))

    def __repr__(self) -> str:
        try:
            meta = json.loads(self.meta)
            what = f"{meta.get('policy')!r}, {meta.get('num_rows')} rows"
        except ValueError:
            what = "unreadable"
        return f"PolicyCheckpoint({what}, {len(self.arrays)} bytes)"
