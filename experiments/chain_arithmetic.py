"""The experiment's task, tokenizer and model: chained arithmetic with a step-by-step trace, a
character-level fast tokenizer with a ChatML template, and a small Qwen2 made from scratch.

A problem lists a start value and ``n`` signed operands; the trace writes one line per operation
and the solution ends GSM8K-style with ``#### answer``::

    question:  41 +7 -9 +3
    solution:  41+7=48
               48-9=39
               39+3=42
               #### 42

Every intermediate value stays in 0..99 and every operand is a single digit, so each line is easy;
what makes a problem hard is the number of lines (``n``, the difficulty knob): a small model has to
carry the running value from line to line and cannot add ``n`` operands in its head.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Every character the task and the template write: digits, signs, the answer mark, the role names.
ALPHABET = sorted(set("0123456789+-=# \n") | set("userassistantsystem"))


def make_problem(rng: random.Random, steps: int) -> dict[str, Any]:
    """One problem of ``steps`` operations, each a signed digit 1..9, all values within 0..99."""
    value = rng.randint(10, 89)
    start, ops, lines = value, [], []
    for _ in range(steps):
        while True:
            sign, digit = rng.choice("+-"), rng.randint(1, 9)
            new = value + digit if sign == "+" else value - digit
            if 0 <= new <= 99:
                break
        lines.append(f"{value}{sign}{digit}={new}")
        ops.append(f"{sign}{digit}")
        value = new
    return {
        "question": " ".join([str(start), *ops]),
        "solution": "\n".join(lines) + f"\n#### {value}",
        "answer": str(value),
        "difficulty": steps,
    }


def make_rows(seed: int, counts: dict[int, int], prefix: str) -> list[dict[str, Any]]:
    """``counts[d]`` problems of difficulty ``d``, shuffled; ids are ``{prefix}-{n}``."""
    rng = random.Random(seed)
    rows = [make_problem(rng, d) for d, n in sorted(counts.items()) for _ in range(n)]
    rng.shuffle(rows)
    return [{"id": f"{prefix}-{i}", **row} for i, row in enumerate(rows)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_tokenizer(directory: Path) -> str:
    """A character-level fast tokenizer (a BPE with no merges) with a ChatML template, saved as a
    transformers folder that ``rtpo-data build --tokenizer`` and ``AutoTokenizer`` load."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for ch in ALPHABET:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return str(directory)


def make_model(tokenizer: Any, *, hidden: int, layers: int, heads: int, seed: int) -> Any:
    """A Qwen2 causal LM with random weights (nothing downloaded)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return Qwen2ForCausalLM(config)
