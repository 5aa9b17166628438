"""End-to-end builds (rtpo_data/build.py) with the real Qwen3 tokenizer and the real GSM8K test set:
manifest, token-exact prompts, the sampled drift check, --on-leak, every bad row counted, and
fuzzed sources that either build exact curricula or fail with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtpo_data import BuildConfig, Curriculum, RtpoDataError, build
from rtpo_data.artifact import sha256_file
from rtpo_data.verify import verify

from helpers import BOS_TEMPLATE, build_rows, gsm8k_rows, make_tokenizer, write_jsonl

EXAMPLE = Path(__file__).resolve().parents[1] / "rtpo_data" / "examples" / "mixed_math.jsonl"


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


def test_shards_are_fixed_ranges_of_source_rows(tmp_path, monkeypatch) -> None:
    """Shard i holds the rows kept of source rows [i * shard_rows, (i + 1) * shard_rows), in batches of
    batch_size rows from the shard's first row: dropped rows leave a shard short and move nothing."""
    from rtpo_data import artifact

    rows = [{"id": f"r{i}", "question": f"What is {i} + {i}?", "solution": f"Add them. #### {2 * i}"} for i in range(30)]
    rows[3]["question"] = rows[4]["question"] = ""
    monkeypatch.setattr(artifact, "RECORD_BATCH_BYTES", 1)  # one record batch per batch of the build
    src = write_jsonl(tmp_path / "rows.jsonl", rows)
    for num_proc in (1, 2):
        out = tmp_path / f"cur{num_proc}"
        build(BuildConfig(source=str(src), out=str(out), tokenizer="offline:qwen3", shard_rows=10, batch_size=4,
                          num_proc=num_proc, stages=3), progress=False)
        cur = Curriculum.open(out)
        assert [s["rows"] for s in cur.manifest.shards["rows"]] == [8, 10, 10]
        assert cur.row_id(8) == "r10"
        assert [len(c) for c in cur.table().column("row_id").chunks] == [3, 3, 2, 4, 4, 2, 4, 4, 2]


def test_a_shard_that_keeps_no_row_is_left_out(tmp_path) -> None:
    rows = [{"question": f"q{i}", "solution": f"s {i}. #### {i}"} for i in range(30)]
    for i in (0, *range(10, 20)):
        rows[i]["solution"] = None
    result = build_rows(tmp_path, rows, shard_rows=10, stages=2)
    assert [(s["name"], s["rows"]) for s in result.manifest.shards["rows"]] == [
        ("rows-00000-of-00002.arrow", 9), ("rows-00001-of-00002.arrow", 10)]
    assert Curriculum.open(result.path).row_id(9) == "20"


def test_num_proc_gives_identical_shards(gsm8k_file, tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    common = dict(source=str(gsm8k_file), tokenizer="offline:qwen3", limit=300, batch_size=64)
    build(BuildConfig(out=str(a), **common))
    build(BuildConfig(out=str(b), num_proc=2, **common))
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert [s["sha256"] for s in ma["shards"]["rows"]] == [s["sha256"] for s in mb["shards"]["rows"]]
    assert ma["stats"] == mb["stats"] and ma["checks"] == mb["checks"]


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


def test_on_leak_trim_and_drop(leaky_builds: dict) -> None:
    from rtpo_data import Curriculum
    from rtpo_data.verify import verify

    traces = {}
    for mode, result in leaky_builds.items():
        cur = Curriculum.open(result.path)
        traces[mode] = {cur.row_id(i): cur.trace(i) for i in range(len(cur))}
        assert result.manifest["config"]["on_leak"] == mode
    assert traces["keep"]["mid"] == "We add 2 and 3.\nSo the answer is 5. Check: 2 + 3 = 5.\nYes."
    assert traces["trim"] == {"mid": "We add 2 and 3.", "clean": traces["keep"]["clean"], "sentence": "We compute 6 * 7."}
    assert traces["drop"] == {"clean": traces["keep"]["clean"]}
    stats = {mode: r.manifest["stats"] for mode, r in leaky_builds.items()}
    assert stats["keep"]["leaks"] == {"on_leak": "keep", "rows_trimmed": 0, "rows_dropped": 0}
    assert stats["trim"]["leaks"] == {"on_leak": "trim", "rows_trimmed": 2, "rows_dropped": 1}
    assert stats["trim"]["rows_dropped"] == {"answer_leak_no_trace": 1}
    assert stats["drop"]["leaks"] == {"on_leak": "drop", "rows_trimmed": 0, "rows_dropped": 3}
    assert stats["drop"]["rows_dropped"] == {"answer_leak": 3}
    leaks = {mode: {c.name: c for c in verify(r.path).checks}["leaks"] for mode, r in leaky_builds.items()}
    assert leaks["keep"].failed > 0 and leaks["trim"].failed == 0 and leaks["drop"].failed == 0


def test_wrong_types_nulls_and_empty_strings_are_counted(tmp_path: Path) -> None:
    rows = [{"question": "ok?", "solution": "Fine. #### 2"}, {"question": "q", "solution": 42}, {"question": {"a": 1}, "solution": "x"},
            {"question": None, "solution": "x"}, {"question": "q", "solution": None}, {"question": "   ", "solution": "x"}]
    stats = build_rows(tmp_path, rows).stats
    assert stats["rows_kept"] == 1
    assert stats["rows_dropped"] == {"non_text_trace": 1, "non_text_prompt": 1, "null_prompt": 1, "null_trace": 1, "empty_prompt": 1}


def test_crlf_traces_and_mixed_chat_and_plain_prompts(tmp_path: Path) -> None:
    rows = [{"question": "Plain?", "solution": "Line one.\r\nLine two.\r\n#### 5"},
            {"question": [{"role": "user", "content": "Chat?"}], "solution": "Step.\r\nMore.\r\n#### 6"}]
    res = build_rows(tmp_path, rows, unit="line", stages=3)
    cur = Curriculum.open(res.path)
    assert cur.trace(0) == "Line one.\r\nLine two." and cur.hint(0, 1) == "Line one.\r\n"
    assert "Chat?" in cur.prompt(1, 0) and verify(res.path).ok


def test_messages_missing_role_and_duplicate_ids(tmp_path: Path) -> None:
    rows = [{"id": 7, "question": [{"content": "no role"}], "solution": "x"}, {"id": 8, "question": "a?", "solution": "A. #### 1"},
            {"id": 8, "question": "b?", "solution": "B. #### 2"}]
    stats = build_rows(tmp_path, rows).stats
    assert stats["rows_dropped"] == {"bad_messages": 1, "duplicate_id": 1} and stats["rows_kept"] == 1
    with pytest.raises(RtpoDataError, match="row 1: id column 'id' repeats"):
        build_rows(tmp_path / "e", rows[1:], on_invalid="error")


def test_traces_without_answer_marker_are_kept_whole(tmp_path: Path) -> None:
    res = build_rows(tmp_path, [{"question": "q?", "solution": "Just reasoning, no final line."}])
    assert res.stats["answer_split"] == {"none": 1} and res.stats["answers_derived"] == 0
    assert Curriculum.open(res.path).answer(0) is None


def test_enormous_row(tmp_path: Path) -> None:
    trace = "\n".join(f"Step {i}: we add {i} and {i + 1} to get {2 * i + 1}." for i in range(12_000))  # ~200k tokens
    res = build_rows(tmp_path, [{"question": "Sum?", "solution": trace + "\n#### 7"}], unit="line")
    assert res.stats["trace_tokens"]["max"] > 150_000
    cur = Curriculum.open(res.path)
    assert cur.trace(0).startswith(cur.hint(0, 3)) and cur.hint(0, 3).endswith("\n")


PIECES = ["Step 1: ", "x = 3.", " ", "\n", "\r\n", "\n\n", "word", "≡", "🙂", "日本", "42", "\\boxed{7}", "#### 9",
          "<think>", "</think>", "$x$", "\t", "é"]


text = st.lists(st.sampled_from(PIECES), max_size=25).map("".join)


prompt = st.one_of(text, st.none(), st.integers(), st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": text}), max_size=2))


row = st.fixed_dictionaries({"question": prompt, "solution": st.one_of(text, st.none())})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=6), unit=st.sampled_from(["token", "word", "line", "sentence", "paragraph"]),
       placement=st.sampled_from(["assistant", "user", "none"]), stages=st.integers(2, 6))
def test_fuzz_build_and_view(tmp_path_factory, qwen3, rows, unit, placement, stages) -> None:
    tmp = tmp_path_factory.mktemp("fz")
    src = write_jsonl(tmp / "f.jsonl", rows)
    try:
        build(BuildConfig(source=str(src), out=str(tmp / "cur"), tokenizer="offline:qwen3", unit=unit,
                          placement=placement, stages=stages, check_sample=0), progress=False)
    except RtpoDataError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return
    report = verify(tmp / "cur", tokenizer=qwen3)
    by = {c.name: c for c in report.checks}
    assert by["invariants"].ok and by["token_exact"].ok and by["checksums"].ok, report.to_dict()
    cur = Curriculum.open(tmp / "cur")
    for i in range(len(cur)):
        for s in range(stages):
            assert cur.trace(i).startswith(cur.hint(i, s))


def test_build_drift_check_tokenizes_what_the_prompt_table_renders(tmp_path, monkeypatch) -> None:
    """The build's sampled drift check renders the prompts it tokenizes again through
    ``PromptTable.render`` over the batch it is about to write, the code every trainer renders with:
    a wrong prompt from it for one row is drift in the manifest, at the stage that row was checked."""
    from rtpo_data.render import PromptTable

    rows = [{"id": f"r{i}", "question": f"What is {i} + {i}?", "solution": f"We add {i} and {i}.\nSo it is {2 * i}.\n#### {2 * i}"}
            for i in range(4)]
    src = write_jsonl(tmp_path / "rows.jsonl", rows)

    def run(name: str):
        return build(BuildConfig(source=str(src), out=str(tmp_path / name), tokenizer="offline:qwen3", unit="line",
                                 stages=3, check_sample=4), progress=False)

    clean = run("clean")
    assert clean.manifest["checks"]["drift_per_stage"] == [0, 0, 0] and clean.manifest["checks"]["sample_prompts"] == 4
    real = PromptTable.render
    wrong: list[int] = []

    def render(self, rows, stages, output="text"):
        out = real(self, rows, stages, output)
        if output == "text":
            for p, i in enumerate(np.asarray(rows).tolist()):
                if self.row_id(i) == "r2":
                    wrong.append(i)
                    out[p] = out[p] + " and a word the ids do not have"
        return out

    monkeypatch.setattr(PromptTable, "render", render)
    result = run("wrong")
    monkeypatch.undo()
    cur = Curriculum.open(result.path)
    hints = cur.hint_tokens()[2]
    checked = int(np.flatnonzero(hints == hints[hints > 0].min())[0])  # r2's shortest non-empty hint
    expected = [int(s == checked) for s in range(3)]
    checks = json.loads((result.path / "manifest.json").read_text())["checks"]
    assert checks["drift_per_stage"] == result.manifest["checks"]["drift_per_stage"] == expected
    assert checks["drift_rate"] == 0.25 and checks["sample_prompts"] == 4
    assert wrong == [2]  # the check rendered row r2 once, through PromptTable.render
    # the shards written are right: only the check saw the wrong prompt
    assert cur.prompt(2, checked) == Curriculum.open(clean.path).prompt(2, checked)
