"""``rtpo_data.prompts``: the prompt rendered around the hint's place (placements), chat messages and
a system prompt, and a chat template that fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtpo_data import BuildConfig, Curriculum, RtpoDataError, build

from helpers import build_rows, make_tokenizer, write_jsonl


def test_placements_golden(tmp_path) -> None:
    src = write_jsonl(tmp_path / "one.jsonl", [{"question": "What is 2+3?", "solution": "Add them.\n2 + 3 = 5.\n#### 5"}])
    expected = {
        "assistant": "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n<think>\nAdd them.\n2 + 3 = 5.",
        "user": "<|im_start|>user\nWhat is 2+3?\n\nPartial solution:\nAdd them.\n2 + 3 = 5.<|im_end|>\n<|im_start|>assistant\n",
        "none": "What is 2+3?\nAdd them.\n2 + 3 = 5.",
    }
    bare = {"assistant": "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n",
            "none": "What is 2+3?"}
    bare["user"] = bare["assistant"]
    for placement, text in expected.items():
        out = tmp_path / placement
        build(BuildConfig(source=str(src), out=str(out), tokenizer="offline:qwen3", placement=placement, stages=3, unit="line"))
        cur = Curriculum.open(out)
        assert cur.prompt(0, 0) == text
        assert cur.prompt(0, 1) == text.replace("\n2 + 3 = 5.", "\n")  # line unit: the first line only
        assert cur.prompt(0, 2) == bare[placement]
        assert cur.answer(0) == "5"


def test_chat_message_prompts_and_system_prompt(tmp_path) -> None:
    rows = [{"prompt": [{"role": "user", "content": "Compute 6*7."}], "solution": "6*7 = 42.\nSo the answer is \\boxed{42}."}]
    src = write_jsonl(tmp_path / "chat.jsonl", rows)
    out = tmp_path / "cur"
    build(BuildConfig(source=str(src), out=str(out), tokenizer="offline:qwen3", system_prompt="Be brief.", stages=2))
    cur = Curriculum.open(out)
    assert cur.prompt(0, 0).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCompute 6*7.")
    assert cur.hint(0, 0) == "6*7 = 42." and cur.answer(0) == "42"
    msgs = cur.render([0], 0, "messages")[0]
    assert msgs[0]["role"] == "system" and msgs[-1] == {"role": "assistant", "content": "6*7 = 42."}


def test_template_that_raises(tmp_path: Path) -> None:
    template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}{{ messages[0]['content'] }}"
    tok = make_tokenizer(tmp_path / "tok", template=template)
    with pytest.raises(RtpoDataError, match="chat template .* failed on row 0: .*no system role"):
        build_rows(tmp_path, [{"question": "q?", "solution": "x. #### 1"}], tokenizer=tok, system_prompt="Be brief.")
