"""End-to-end builds with the real Qwen3 tokenizer and the real GSM8K test set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtpo_data import BuildConfig, Curriculum, build
from rtpo_data.artifact import sha256_file
from rtpo_data.verify import verify

from helpers import BOS_TEMPLATE, gsm8k_rows, make_tokenizer, write_jsonl

EXAMPLE = Path(__file__).resolve().parents[1] / "rtpo_data" / "examples" / "mixed_math.jsonl"


@pytest.fixture(scope="module")
def gsm8k_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gsm8k") / "gsm8k_test.jsonl"
    rows = [{"id": r["id"], "question": r["question"], "solution": r["answer"], "gold": r["short_answer"]} for r in gsm8k_rows()]
    return write_jsonl(path, rows)


@pytest.fixture(scope="module")
def gsm8k_curriculum(gsm8k_file, tmp_path_factory) -> Curriculum:
    out = tmp_path_factory.mktemp("cur") / "gsm8k"
    build(BuildConfig(source=str(gsm8k_file), out=str(out), tokenizer="offline:qwen3", keep_columns=("gold",),
                      total_steps=100, shard_rows=500))
    return Curriculum.open(out)


def test_gsm8k_manifest_and_shards(gsm8k_curriculum: Curriculum) -> None:
    cur = gsm8k_curriculum
    m = cur.manifest
    assert len(cur) == 1319 and m["stats"]["rows_kept"] == 1319 and m["stats"]["rows_dropped"] == {}
    assert m["format_version"] == 2 and m["package_version"]
    assert m["config"]["tokenizer"] == "offline:qwen3"
    assert m["source"]["fingerprint"]["sha256"] and m["tokenizer"]["tokenizer_sha256"] and m["tokenizer"]["chat_template_sha256"]
    assert m["schedule"]["stage_fractions"][0] == 1.0 and m["schedule"]["stage_fractions"][-1] == 0.0
    assert m["stats"]["answer_split"] == {"gsm8k": 1319}
    assert m["stats"]["trace_tokens"]["p50"] > 50 and len(m["stats"]["hint_tokens_mean"]) == 8
    assert m["stats"]["hint_tokens_mean"][-1] == 0 and m["stats"]["hint_tokens_mean"][0] == m["stats"]["trace_tokens"]["mean"]
    assert m["checks"]["drift_rate"] == 0.0 and m["checks"]["leak_rate"] == 0.0
    for table in ("rows", "cuts"):
        shards = m["shards"][table]
        assert [s["name"] for s in shards] == [f"{table}-{i:05d}-of-00003.arrow" for i in range(3)]
        assert sum(s["rows"] for s in shards) == 1319
        for s in shards:
            path = cur.path / s["name"]
            assert path.stat().st_size == s["bytes"] and sha256_file(path) == s["sha256"]
    assert not list(cur.path.parent.glob("*.incomplete")) and not list(cur.path.glob(".*"))


def test_gsm8k_answers_split_off_and_kept(gsm8k_curriculum: Curriculum) -> None:
    cur = gsm8k_curriculum
    golds = {str(r["id"]): r["short_answer"] for r in gsm8k_rows()}
    for i in range(0, len(cur), 7):
        assert "####" not in cur.trace(i)
        assert cur.answer(i).replace(",", "") == golds[cur.row_id(i)].replace(",", "")


def test_prompts_are_token_exact(gsm8k_curriculum: Curriculum, qwen3) -> None:
    cur = gsm8k_curriculum
    for i in (0, 5, 700, 1318):
        for stage in range(cur.num_stages):
            text, ids = cur.prompt(i, stage), cur.prompt_ids(i, stage)
            assert qwen3(text, add_special_tokens=True)["input_ids"] == ids
            hint = cur.hint(i, stage)
            assert cur.trace(i).startswith(hint)
            if hint:
                assert text.endswith("<think>\n" + hint)
        assert cur.hint(i, 0) == cur.trace(i) and cur.hint(i, cur.num_stages - 1) == ""
        assert cur.prompt(i, cur.num_stages - 1) == qwen3.apply_chat_template(
            [{"role": "user", "content": gsm8k_rows()[i]["question"]}], tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("unit", ["word", "line"])
def test_verify_gsm8k_has_zero_drift(gsm8k_file, tmp_path, unit) -> None:
    out = tmp_path / unit
    build(BuildConfig(source=str(gsm8k_file), out=str(out), tokenizer="offline:qwen3", unit=unit, stages=5))
    report = verify(out)
    assert report.ok, report.to_dict()
    by = {c.name: c for c in report.checks}
    assert by["drift"].checked > 1319 and by["drift"].failed == 0
    assert by["token_exact"].failed == 0 and by["leaks"].failed == 0


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


def test_bos_is_never_doubled(tmp_path) -> None:
    tok_dir = make_tokenizer(tmp_path / "tok", bos=True, template=BOS_TEMPLATE)
    src = write_jsonl(tmp_path / "d.jsonl", [{"question": "What is the sum?", "solution": "First, compute the total. The answer is 42."}])
    out = tmp_path / "cur"
    build(BuildConfig(source=str(src), out=str(out), tokenizer=tok_dir, stages=3))
    cur = Curriculum.open(out)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    bos = tok.bos_token_id
    for stage in range(3):
        ids = cur.prompt_ids(0, stage)
        assert ids[0] == bos and bos not in ids[1:]
        assert not cur.prompt(0, stage).startswith("<s>")
        assert tok(cur.prompt(0, stage))["input_ids"] == ids  # what TRL does: add_special_tokens=True
    assert verify(out, tokenizer=tok).ok


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


def test_invalid_rows_skipped_and_counted(tmp_path) -> None:
    rows = [
        {"question": "ok?", "solution": "Yes. #### 1"},
        {"question": "", "solution": "x"},
        {"question": None, "solution": "x"},
        {"question": "q", "solution": ""},
        {"question": 5, "solution": "x"},
        {"question": [{"content": "no role"}], "solution": "x"},
        {"question": "q", "solution": "#### 3"},
    ]
    src = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = build(BuildConfig(source=str(src), out=str(tmp_path / "cur"), tokenizer="offline:qwen3", stages=2))
    assert result.stats["rows_kept"] == 1
    assert result.stats["rows_dropped"] == {
        "empty_prompt": 1, "null_prompt": 1, "empty_trace": 1, "non_text_prompt": 1, "bad_messages": 1, "trace_only_answer": 1,
    }


def test_view_is_lazy_and_matches_prompts(gsm8k_curriculum: Curriculum) -> None:
    cur = gsm8k_curriculum
    view = cur.view(step=30)
    stage = cur.stage_at(30)
    assert stage == 2
    assert view.num_rows == len(cur)
    batch = view[10:14]
    assert batch["prompt"] == cur.render(range(10, 14), stage)
    assert set(batch) == {"row_id", "prompt", "answer", "gold"}
    assert cur.eval_view()[3]["prompt"] == cur.prompt(3, cur.num_stages - 1)
    ids = cur.view(step=0, output="ids")[0]["prompt"]
    assert ids == cur.prompt_ids(0, 0)
    assert cur.view(step=99, output="messages")[0]["prompt"][-1]["role"] == "user"  # last stage: no hint


def test_curriculum_pickles(gsm8k_curriculum: Curriculum) -> None:
    import pickle

    clone = pickle.loads(pickle.dumps(gsm8k_curriculum))
    assert len(clone) == len(gsm8k_curriculum) and clone.prompt(3, 2) == gsm8k_curriculum.prompt(3, 2)
    view = pickle.loads(pickle.dumps(gsm8k_curriculum.view(step=10)))
    assert view[0]["prompt"] == gsm8k_curriculum.prompt(0, gsm8k_curriculum.stage_at(10))


def test_num_proc_gives_identical_shards(gsm8k_file, tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    common = dict(source=str(gsm8k_file), tokenizer="offline:qwen3", limit=300, batch_size=64)
    build(BuildConfig(out=str(a), **common))
    build(BuildConfig(out=str(b), num_proc=2, **common))
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert [s["sha256"] for s in ma["shards"]["rows"]] == [s["sha256"] for s in mb["shards"]["rows"]]
    assert ma["stats"] == mb["stats"] and ma["checks"] == mb["checks"]


def test_shards_open_with_datasets(gsm8k_curriculum: Curriculum) -> None:
    import datasets

    name = gsm8k_curriculum.manifest["shards"]["rows"][0]["name"]
    ds = datasets.Dataset.from_file(str(gsm8k_curriculum.path / name))
    assert ds.num_rows == 500 and "trace_ids" in ds.column_names


def test_build_sample_checks_drift_on_each_rows_shortest_hint(tmp_path, qwen3) -> None:
    """The build tokenizes one prompt per sampled row again, the one with the row's shortest
    non-empty hint, and counts drift per stage: the same counts as tokenizing those prompts here."""
    from helpers import math_rows

    rows = math_rows()
    # MATH row 1198 drifts with the token unit when its hint is 23 of its 82 tokens (a cut that BPE
    # merges when the text is tokenized whole: docs/exactness.md), not when it is 35.
    drifting = {"id": "m1198", "problem": rows[1198]["problem"], "solution": rows[1198]["solution"]}
    sample = [{"id": f"m{i}", "problem": r["problem"], "solution": r["solution"]} for i, r in enumerate(rows[:5])]
    src = write_jsonl(tmp_path / "rows.jsonl", [*sample[:3], drifting, *sample[3:]])
    for fraction, drifts in ((0.285, 1), (0.43, 0)):
        out = tmp_path / f"cur{fraction}"
        result = build(BuildConfig(source=str(src), out=str(out), tokenizer="offline:qwen3", unit="token",
                                   schedule="staged", fractions=(1.0, fraction, 0.0), check_sample=6), progress=False)
        checks = result.manifest["checks"]
        cur = Curriculum.open(out)
        assert cur.cut(3, 1)[0] == int(fraction * 82)
        expected = np.zeros(cur.num_stages, dtype=int)
        for r in range(6):
            hints = cur.hint_tokens()[r]
            s = int(np.flatnonzero(hints == hints[hints > 0].min())[0])
            expected[s] += qwen3(cur.prompt(r, s))["input_ids"] != cur.prompt_ids(r, s)
        assert checks["sample_rows"] == 6 and checks["sample_prompts"] == 6
        assert checks["drift_per_stage"] == expected.tolist() and expected.sum() == drifts
        assert checks["drift_rate"] == round(drifts / 6, 6)
