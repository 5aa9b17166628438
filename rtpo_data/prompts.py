"""Rendering a row's prompt around the place where the hint goes.

Every row's prompt is stored as three texts, so a prompt at any stage is a concatenation and never a
template call::

    bare    the prompt with no hint at all (evaluation, and the last stage of a down schedule)
    prefix  everything before the hint
    suffix  everything after the hint ("" unless the hint sits inside the user turn)

    prompt(stage) = bare                          if the hint is empty
                  = prefix + trace[:c] + suffix   otherwise

Placements (``--placement``):

- ``assistant`` (default): the hint continues the assistant turn right after the generation prompt,
  as the model's own reasoning. Templates never continue a final assistant message reliably
  (DeepSeek-R1 templates drop think blocks from assistant messages; TRL always adds a new generation
  prompt), so the template is rendered with ``add_generation_prompt=True`` and the hint appended to
  that text. With ``--think auto`` a ``<think>`` block is opened first when the template knows think
  blocks but its generation prompt does not open one (Qwen3); R1 templates already end in
  ``<think>\\n``.
- ``user``: the hint is appended to the (last) user message under a short label, as QuestA does.
- ``none``: no chat template: the plain prompt text, a newline, then the hint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rtpo_data.errors import RtpoDataError

PLACEMENTS = ("assistant", "user", "none")
THINK_MODES = ("auto", "on", "off")
DEFAULT_HINT_LABEL = "\n\nPartial solution:\n"
THINK_OPEN = "<think>\n"

# Private-use characters: no real prompt contains them, and no template rewrites them.
_SENTINEL = "\ue000RTPO_HINT\ue001"
_QUESTION = "\ue002RTPO_QUESTION\ue003"


@dataclass(frozen=True)
class PromptParts:
    bare: str
    prefix: str
    suffix: str
    messages: list[dict[str, str]]  # the conversation without hint (for trainers that template themselves)


class PromptRenderer:
    """Renders :class:`PromptParts` for each row with the tokenizer's chat template.

    For plain-text prompts the template is rendered once with a placeholder question and reused
    (checked first on probe questions; templates that rewrite the question fall back to one render
    per row), which keeps template work out of the per-row cost of large builds.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        placement: str = "assistant",
        system_prompt: str | None = None,
        think: str = "auto",
        hint_label: str = DEFAULT_HINT_LABEL,
        tokenizer_name: str = "tokenizer",
    ) -> None:
        self.tok = tokenizer
        self.placement = placement
        self.system_prompt = system_prompt
        self.think = think
        self.hint_label = hint_label
        self.tokenizer_name = tokenizer_name
        template = getattr(tokenizer, "chat_template", None)
        if placement != "none" and not template:
            raise RtpoDataError(
                f"Tokenizer {tokenizer_name!r} has no chat template, which --placement {placement} needs. "
                "Use --placement none (plain prompt text + hint), or a tokenizer with a chat template."
            )
        self._template_text = template if isinstance(template, str) else json.dumps(template)
        self._fast: tuple[str, str, str, str] | None = None
        if placement != "none":
            self._fast = self._probe_fast_path()

    # -- the per-row entry point ----------------------------------------------------------------

    def render(self, prompt: str | list[dict[str, str]], *, row: int | None = None) -> PromptParts:
        messages = self._messages(prompt)
        if self.placement == "none":
            text = "\n\n".join(m["content"] for m in messages)
            return PromptParts(bare=text, prefix=text + "\n", suffix="", messages=messages)
        if isinstance(prompt, str) and self._fast is not None:
            bare_head, bare_tail, pre_head, pre_tail = self._fast
            return PromptParts(
                bare=bare_head + prompt + bare_tail,
                prefix=pre_head + prompt + pre_tail,
                suffix=self._fast_suffix,
                messages=messages,
            )
        bare, prefix, suffix = self._render_slow(messages, row)
        return PromptParts(bare=bare, prefix=prefix, suffix=suffix, messages=messages)

    # -- internals --------------------------------------------------------------------------------

    def _messages(self, prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
        if self.system_prompt and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def _apply(self, messages: list[dict[str, str]], row: int | None) -> str:
        try:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja2 errors, raise_exception() in templates, missing jinja2...
            where = f" on row {row}" if row is not None else ""
            raise RtpoDataError(
                f"The chat template of {self.tokenizer_name!r} failed{where}: {type(exc).__name__}: {exc}. "
                "Check the prompt's roles (some templates reject a system message or two user turns in a row), "
                "or use --placement none."
            ) from exc

    def _think_opener(self, generation_prompt: str) -> str:
        if self.placement != "assistant" or self.think == "off":
            return ""
        if generation_prompt.rstrip().endswith("<think>"):
            return ""
        if self.think == "on" or "<think>" in self._template_text:
            return THINK_OPEN
        return ""

    def _render_slow(self, messages: list[dict[str, str]], row: int | None) -> tuple[str, str, str]:
        bare = self._apply(messages, row)
        if self.placement == "assistant":
            return bare, bare + self._think_opener(bare), ""
        hinted = [dict(m) for m in messages]
        last_user = max((i for i, m in enumerate(hinted) if m["role"] == "user"), default=None)
        if last_user is None:
            raise RtpoDataError(
                f"Row {row}: --placement user needs a user message to append the hint to; the prompt has none."
            )
        hinted[last_user]["content"] += self.hint_label + _SENTINEL
        text = self._apply(hinted, row)
        if text.count(_SENTINEL) != 1:
            raise RtpoDataError(
                f"The chat template of {self.tokenizer_name!r} does not keep the user message as written "
                "(the hint's position cannot be found). Use --placement assistant or none."
            )
        prefix, suffix = text.split(_SENTINEL)
        return bare, prefix, suffix

    def _probe_fast_path(self) -> tuple[str, str, str, str] | None:
        """Render once around a placeholder question; keep it only if it reproduces real renders."""
        try:
            bare, prefix, suffix = self._render_slow(self._messages(_QUESTION), None)
        except RtpoDataError:
            return None
        if bare.count(_QUESTION) != 1 or prefix.count(_QUESTION) != 1:
            return None
        bare_head, bare_tail = bare.split(_QUESTION)
        pre_head, pre_tail = prefix.split(_QUESTION)
        self._fast_suffix = suffix
        for probe in ("What is 2 + 3?", "  Spaces around\n\n", "Line one\nLine two: $x^2$ {braces}"):
            b, p, s = self._render_slow(self._messages(probe), None)
            if (b, p, s) != (bare_head + probe + bare_tail, pre_head + probe + pre_tail, suffix):
                return None
        return bare_head, bare_tail, pre_head, pre_tail
