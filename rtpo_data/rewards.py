"""Rewards for RTPO runs, usable from Python, from TRL by dotted path, and from OpenRLHF.

What each reward checks
-----------------------
- :func:`accuracy_reward` (and :func:`make_accuracy_reward` for another gold column): 1.0 when the
  completion's final answer is mathematically equivalent to the gold answer, else 0.0; ``None`` for a
  row without a gold answer (TRL ignores ``None``). Equivalence is ``math-verify``'s: ``1,000`` =
  ``1000``, ``0.5`` = ``\\frac{1}{2}``, ``\\$18`` = ``18``, ``(-\\infty, 3]`` as an interval, ...
  The predicted answer is the content of the completion's **last** ``\\boxed{...}``; without one,
  math-verify's own extraction on the completion text (an ``answer is ...`` statement, else the last
  number or LaTeX expression). When the completion has a ``</think>``, only the text after the last
  ``</think>`` is read, unless nothing but whitespace follows it.
  The gold may be a number (``"1,000"``, ``18``), LaTeX (``"\\frac{1}{2}"``, with or without ``$``), a
  full solution ending in ``\\boxed{...}`` (MATH's ``solution``) or in ``#### N`` (GSM8K's ``answer``).
- :func:`format_reward`: see :func:`format_ok` for the exact rule: the completion ends with a
  ``\\boxed{...}`` answer (balanced braces) and has at most one ``</think>``, placed before it. No
  opening ``<think>`` is required: the completion continues a hint and may start mid-reasoning.
- :func:`score`: the single-sample core of both and of :func:`openrlhf_reward_func` (OpenRLHF's
  ``reward_func(queries, prompts, labels)`` convention; the reward is the accuracy, the format score
  and the hint's step and kept fraction are extra logs).

Why the answer comes from the completion only
---------------------------------------------
With RTPO the prompt ends with a hint, a prefix of the dataset's reasoning trace, and the completion
*continues* it. Early in training the hint holds most of the computation (``9 * 2 = $18``), so a
reward that read the prompt, or prompt + completion, would pay the model for what the hint already
said. The rewards therefore never look at prompts; the OpenRLHF function cuts the prompt off the
query before scoring.

Timeouts
--------
math-verify bounds parsing and comparison with ``signal.alarm``, which only works in the main
thread; TRL calls rewards there, but OpenRLHF 0.11 calls its reward function in a worker thread
(``asyncio.to_thread``) and Ray may too. :func:`score` therefore uses math-verify's timeouts
(:data:`TIMEOUT_SECONDS`) in the main thread and turns them off (``parsing_timeout=None``,
``timeout_seconds=None``) elsewhere. Without a timeout sympy could hang on an answer such as
``9^{9^{9^{9}}}``, so every parsed answer first goes through a cheap size estimate and one whose exact
value would exceed :data:`MAX_ANSWER_BITS` bits is scored 0.0 without being compared.

A reward never raises on model output: any math-verify or sympy error scores 0.0.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rtpo_data.errors import RtpoDataError
from rtpo_data.traces import last_boxed

__all__ = [
    "GOLD_COLUMNS",
    "MAX_ANSWER_BITS",
    "TIMEOUT_SECONDS",
    "accuracy_reward",
    "format_ok",
    "format_reward",
    "make_accuracy_reward",
    "openrlhf_reward_func",
    "score",
]

GOLD_COLUMNS = ("answer", "solution", "final_answer")
"""Columns (TRL keyword arguments) and label keys the default accuracy reward reads the gold from,
first present wins."""

TIMEOUT_SECONDS = 5
"""math-verify's per-parse and per-comparison timeout when called in the main thread."""

MAX_ANSWER_BITS = 1 << 20
"""Answers whose exact value would need more bits (about 315,000 digits) score 0.0 uncompared."""

_THINK_CLOSE = "</think>"
_GSM8K_MARK = "####"
# What may follow the final boxed answer: whitespace, math delimiters and closing punctuation.
_AFTER_BOX = re.compile(r"(?:[\s$.!*)\]]|\\\]|\\\))*")
# End-of-sequence tokens a decoder kept (OpenRLHF decodes with skip_special_tokens=False).
_TRAILING_SPECIAL = re.compile(r"(?:\s|<\|[^<>|\s]{1,40}\|>|</s>|<eos>|<end_of_turn>)+\Z")


# --------------------------------------------------------------------------------------- inputs


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def _completion_text(completion: Any) -> str:
    """TRL passes text completions as strings and conversational ones as message lists; the text of
    the assistant messages is what the model wrote."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        parts = []
        for message in completion:
            if isinstance(message, dict):
                if message.get("role", "assistant") == "assistant":
                    parts.append(_content_text(message.get("content")))
            else:
                parts.append(_content_text(message))
        return "\n".join(parts)
    return _content_text(completion)


def _answer_region(text: str) -> str:
    """The text after the last ``</think>`` when anything is there, else the whole completion."""
    if _THINK_CLOSE in text:
        tail = text.rsplit(_THINK_CLOSE, 1)[1]
        if tail.strip():
            return tail
    return text


def _gold_text(gold: Any) -> str | None:
    """The gold answer as LaTeX without delimiters, or None when the row has none."""
    if gold is None or (isinstance(gold, float) and math.isnan(gold)):
        return None
    text = str(gold).strip()
    if _GSM8K_MARK in text:  # a full GSM8K solution: "... #### 18"
        text = text.rsplit(_GSM8K_MARK, 1)[1].strip()
    box = last_boxed(text)  # a full MATH solution, or an already boxed answer
    if box is not None:
        text = box[2]
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    if text.startswith("$"):  # a currency sign, "$18"
        text = text[1:].strip()
    return text or None


# ------------------------------------------------------------------------------------ math-verify


def _math_verify() -> Any:
    try:
        import math_verify
    except ImportError as exc:  # pragma: no cover - the test environment has it
        raise RtpoDataError(
            f"The accuracy reward needs math-verify ({exc}): pip install 'rtpo-data[rewards]'."
        ) from exc
    return math_verify


def _timeout() -> int | None:
    """math-verify's signal timeouts work in the main thread only; elsewhere they must be off."""
    return TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


def _bits(expr: Any) -> float:
    """A rough upper bound of the bits an exact value of ``expr`` needs (inf when astronomical); for
    a number, about log2 of its size, so that ``b^e`` needs ``bits(b) * 2^bits(e)``."""
    import sympy

    if isinstance(expr, sympy.MatrixBase):
        return sum(_bits(e) for e in expr)
    if not isinstance(expr, sympy.Basic):
        return 0.0
    if expr.is_Integer:
        return max(math.log2(abs(int(expr)) or 1), 1.0)
    if expr.is_Rational:
        return max(math.log2(abs(expr.p)) + math.log2(expr.q), 1.0)
    if expr.is_Number or expr.is_NumberSymbol:
        return 64.0
    if expr.is_Symbol:
        return 1.0
    if expr.is_Pow:
        base, exponent = expr.args
        if base in (sympy.S.Zero, sympy.S.One, sympy.S.NegativeOne):
            return 1.0
        exp_bits = _bits(exponent)
        return math.inf if exp_bits > 62 else max(_bits(base), 1.0) * 2.0**exp_bits
    if isinstance(expr, (sympy.factorial, sympy.factorial2, sympy.gamma, sympy.subfactorial)):
        arg_bits = _bits(expr.args[0])
        if arg_bits > 40:
            return math.inf
        n = 2.0**arg_bits
        return n * math.log2(n + 1.0) + 1.0
    return sum(_bits(a) for a in expr.args)


def _small_enough(parsed: Sequence[Any]) -> bool:
    try:
        return all(_bits(p) <= MAX_ANSWER_BITS for p in parsed)
    except Exception:  # deep nesting (RecursionError) or an odd sympy object: do not compare it
        return False


def _parse_answer(text: str, timeout: int | None) -> list[Any]:
    """Parse one answer (a boxed content or a bare gold) with math-verify; [] when it cannot."""
    mv = _math_verify()
    parsed = mv.parse(
        "\\boxed{" + text + "}",
        extraction_config=[mv.LatexExtractionConfig(boxed_match_priority=0)],
        parsing_timeout=timeout,
    )
    if not parsed:
        parsed = mv.parse(
            text,
            extraction_config=[mv.LatexExtractionConfig(), mv.ExprExtractionConfig()],
            parsing_timeout=timeout,
        )
    return list(parsed)


@functools.lru_cache(maxsize=8192)
def _parse_gold(text: str, timeout: int | None) -> tuple[Any, ...]:
    # A GRPO group scores many completions against the same gold: parse it once.
    return tuple(_parse_answer(text, timeout))


def _parse_prediction(region: str, timeout: int | None) -> tuple[list[Any], str | None]:
    """``(parsed, boxed_content)``: the last boxed answer when there is one, else math-verify's
    extraction (answer statements, then the last number / expression) on the region."""
    box = last_boxed(region)
    if box is not None:
        content = box[2].rstrip(" .")
        return (_parse_answer(content, timeout) if content else []), content
    mv = _math_verify()
    parsed = mv.parse(
        region,
        extraction_config=[mv.LatexExtractionConfig(), mv.ExprExtractionConfig()],
        parsing_timeout=timeout,
    )
    return list(parsed), None


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def score(completion: str, gold: Any) -> float | None:
    """1.0 when ``completion``'s final answer equals ``gold`` mathematically, 0.0 when not (or when
    anything fails), None when ``gold`` is missing or blank. Reads the completion only."""
    gold_text = _gold_text(gold)
    if gold_text is None:
        return None
    timeout = _timeout()
    try:
        gold_parsed = _parse_gold(gold_text, timeout)
        pred_parsed, boxed = _parse_prediction(_answer_region(_completion_text(completion)), timeout)
        if not gold_parsed:
            # math-verify cannot read this gold (free text): an exact boxed match still counts.
            return 1.0 if boxed is not None and _squash(boxed) == _squash(gold_text) else 0.0
        if not pred_parsed or not _small_enough(gold_parsed) or not _small_enough(pred_parsed):
            return 0.0
        ok = _math_verify().verify(list(gold_parsed), pred_parsed, timeout_seconds=timeout)
        return 1.0 if ok else 0.0
    except Exception:  # math-verify/sympy on odd LaTeX; a reward must never crash a run
        return 0.0


# ------------------------------------------------------------------------------------------- TRL


def _gold_list(kwargs: dict[str, Any], columns: Sequence[str], n: int, strict_column: str | None) -> list[Any]:
    for column in columns:
        golds = kwargs.get(column)
        if golds is None:
            continue
        if isinstance(golds, (str, bytes)) or not hasattr(golds, "__len__"):
            raise RtpoDataError(
                f"accuracy_reward: {column}= must be a list with one gold answer per completion, "
                f"got {type(golds).__name__}."
            )
        if len(golds) != n:
            raise RtpoDataError(
                f"accuracy_reward: {len(golds)} gold answers in {column}= for {n} completions; "
                "pass one per completion (TRL repeats each row's column for its generations)."
            )
        return list(golds)
    given = sorted(k for k in kwargs if k not in ("prompts", "completion_ids", "trainer_state"))
    wanted = strict_column or " / ".join(columns)
    raise RtpoDataError(
        f"accuracy_reward: no gold answer column {wanted!r} among the dataset columns "
        f"({', '.join(given) or 'none'}); add the column or use make_accuracy_reward(answer_column=...)."
    )


def make_accuracy_reward(answer_column: str = "answer") -> Callable[..., list[float | None]]:
    """The accuracy reward reading golds from ``answer_column``. The default, ``"answer"``, also
    accepts :data:`GOLD_COLUMNS` (``answer``, ``solution``, ``final_answer``; first present wins);
    another name must be present. The function is named ``accuracy_reward`` (TRL logs by name)."""
    if not isinstance(answer_column, str) or not answer_column:
        raise RtpoDataError(f"make_accuracy_reward: answer_column must be a column name, got {answer_column!r}.")
    if answer_column == "answer":
        columns: tuple[str, ...] = GOLD_COLUMNS
        strict: str | None = None
    else:
        columns, strict = (answer_column,), answer_column

    def accuracy_reward(completions: Sequence[Any], answer: Sequence[Any] | None = None, **kwargs: Any) -> list[float | None]:
        """1.0 / 0.0 per completion by math-verify equivalence of its final answer with the gold;
        None for rows without a gold. TRL: ``reward(prompts=, completions=, completion_ids=,
        trainer_state=, **columns)``; prompts are never read."""
        if answer is not None:
            kwargs["answer"] = answer
        golds = _gold_list(kwargs, columns, len(completions), strict)
        return [score(c, g) for c, g in zip(completions, golds)]

    accuracy_reward.__qualname__ = "accuracy_reward"
    return accuracy_reward


accuracy_reward = make_accuracy_reward("answer")


def format_ok(completion: Any) -> bool:
    """The format rule, for one completion (string or messages):

    1. trailing whitespace and end-of-sequence tokens (``<|im_end|>``, ``</s>``, ...) are ignored;
    2. the completion has a ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, and after the
       last one comes nothing but whitespace, ``$``, ``.``, ``!``, ``*``, ``)``, ``]``, ``\\]``, ``\\)``;
    3. ``</think>`` appears at most once, and if it does, before that boxed answer.

    No opening ``<think>`` is required and text before the box is not: the completion continues a
    hint, so at the start of a curriculum the whole reasoning may be in the prompt.
    """
    text = _TRAILING_SPECIAL.sub("", _completion_text(completion))
    box = last_boxed(text)
    if box is None:
        return False
    start, end, _ = box
    if _AFTER_BOX.fullmatch(text, end) is None:
        return False
    closes = text.count(_THINK_CLOSE)
    return closes == 0 or (closes == 1 and text.index(_THINK_CLOSE) < start)


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 per completion that follows :func:`format_ok`'s rule, else 0.0."""
    return [1.0 if format_ok(c) else 0.0 for c in completions]


# -------------------------------------------------------------------------------------- OpenRLHF


def _label_fields(label: Any) -> dict[str, Any]:
    if isinstance(label, str) and label.lstrip().startswith("{"):
        try:
            decoded = json.loads(label)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            label = decoded
    if isinstance(label, dict):
        return label
    return {"answer": label}


def _label_gold(fields: dict[str, Any]) -> Any:
    return next((fields[k] for k in GOLD_COLUMNS if fields.get(k) is not None), None)


def _cut_prompt(query: str, prompt: str) -> str:
    """The completion inside ``query`` (prompt + completion, decoded by OpenRLHF)."""
    if query.startswith(prompt):
        return query[len(prompt):]
    # Decoding can change the prompt's start (spaces, a BOS); anchor on its last characters instead.
    anchor = prompt[-64:].strip()
    if anchor and anchor in query:
        return query[query.rindex(anchor) + len(anchor):]
    return query


def openrlhf_reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **kwargs: Any
) -> dict[str, Any]:
    """OpenRLHF 0.11's reward-file convention (``reward_func(queries, prompts, labels)``; see
    ``rtpo_data/adapters/openrlhf_reward.py``).

    ``queries[i]`` is prompt + completion, ``prompts[i]`` the prompt; the completion is the query
    after the prompt (else, the whole query). A label is the gold answer or a dict
    ``{"answer", "step", "kept_fraction", ...}`` (a JSON object string is decoded). Returns
    ``{"rewards", "scores", "extra_logs"}``: rewards = scores = accuracy as a float32 tensor of shape
    ``(len(queries),)`` (0.0 for a row without gold), and extra_logs the batch means, as 0-d tensors,
    of ``reward/accuracy``, ``reward/format`` and, when labels carry them, ``hint/step`` and
    ``hint/kept_fraction``.
    """
    import torch

    if not (len(queries) == len(prompts) == len(labels)):
        raise RtpoDataError(
            f"openrlhf_reward_func: {len(queries)} queries, {len(prompts)} prompts and {len(labels)} "
            "labels; pass one of each per sample."
        )
    completions = [_cut_prompt(q, p) for q, p in zip(queries, prompts)]
    fields = [_label_fields(lab) for lab in labels]
    accuracy = [score(c, _label_gold(f)) or 0.0 for c, f in zip(completions, fields)]
    fmt = format_reward(completions)

    def mean(values: Sequence[float]) -> Any:
        return torch.tensor(sum(values) / len(values) if values else 0.0, dtype=torch.float32)

    logs: dict[str, Any] = {"reward/accuracy": mean(accuracy), "reward/format": mean(fmt)}
    for key in ("step", "kept_fraction"):
        values = [float(f[key]) for f in fields if isinstance(f.get(key), (int, float))]
        if values:
            logs[f"hint/{key}"] = mean(values)
    rewards = torch.tensor(accuracy, dtype=torch.float32)
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": logs}
