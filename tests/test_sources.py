"""Reading every source format in bounded batches; column mapping; row validation."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rtpo_data.errors import RtpoDataError, SourceError
from rtpo_data.sources import (
    InvalidRow,
    SourceSpec,
    count_rows,
    detect_format,
    iter_batches,
    normalize_prompt,
    resolve_columns,
    source_columns,
    source_fingerprint,
    validate_row,
)

ROWS = [
    {"id": f"r{i}", "question": f"What is {i} + {i}?", "solution": f"We add {i} and {i}.\nSo it is {2 * i}.\n#### {2 * i}",
     "level": i % 3}
    for i in range(5)
]
COLUMNS = ["id", "question", "solution", "level"]


def _read(spec: SourceSpec, batch_size: int = 2) -> list[list[dict]]:
    return list(iter_batches(spec, batch_size))


def _check_batches(batches: list[list[dict]], rows: list[dict] = ROWS) -> None:
    assert [len(b) for b in batches] == [2, 2, 1]
    got = [r for b in batches for r in b]
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for g, r in zip(got, rows):
        assert g["question"] == r["question"] and g["solution"] == r["solution"]


def _table() -> pa.Table:
    return pa.Table.from_pylist(ROWS)


def _write_jsonl(path: Path, rows=ROWS, newline: str = "\n") -> Path:
    path.write_bytes("".join(json.dumps(r) + newline for r in rows).encode())
    return path


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------


def test_jsonl(tmp_path: Path) -> None:
    spec = SourceSpec(str(_write_jsonl(tmp_path / "data.jsonl")))
    assert detect_format(spec) == "jsonl"
    _check_batches(_read(spec))
    assert source_columns(spec) == COLUMNS
    assert count_rows(spec) is None
    assert isinstance(_read(spec)[0][0]["level"], int)


def test_jsonl_crlf_blank_lines_bom_and_ndjson(tmp_path: Path) -> None:
    body = "\r\n\r\n".join(json.dumps(r) for r in ROWS) + "\r\n\r\n"
    path = tmp_path / "data.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    spec = SourceSpec(str(path))
    assert detect_format(spec) == "jsonl"
    _check_batches(_read(spec))


@pytest.mark.parametrize("name", ["data.jsonl.gz", "data.json.gz"])
def test_gzip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in ROWS)
    _check_batches(_read(SourceSpec(str(path))))


def test_json_array_and_json_lines_in_a_json_file(tmp_path: Path) -> None:
    arr = tmp_path / "array.json"
    arr.write_text(json.dumps(ROWS, indent=2))
    assert detect_format(SourceSpec(str(arr))) == "json"
    _check_batches(_read(SourceSpec(str(arr))))
    assert source_columns(SourceSpec(str(arr))) == COLUMNS
    lines = _write_jsonl(tmp_path / "lines.json")
    _check_batches(_read(SourceSpec(str(lines))))


def test_json_single_object_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": ROWS, "version": 1}, indent=2))
    with pytest.raises(SourceError, match=r"one JSON object \(keys: data, version\).*list of objects"):
        _read(SourceSpec(str(path)))


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(_table(), path, row_group_size=3)
    spec = SourceSpec(str(path))
    assert detect_format(spec) == "parquet"
    _check_batches(_read(spec))
    assert source_columns(spec) == COLUMNS
    assert count_rows(spec) == 5


def test_csv_text_columns_and_multiline_values(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(ROWS)
    spec = SourceSpec(str(path))
    assert detect_format(spec) == "csv"
    batches = _read(spec)
    _check_batches(batches)  # solutions span lines inside quotes
    assert batches[0][1]["level"] == "1"  # CSV has no types: every column is text
    assert source_columns(spec) == COLUMNS


def test_csv_column_that_changes_type_late(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    lines = ["question,solution,answer"] + [f"q{i},s{i},{i}" for i in range(3000)] + ["q,s,3/4"]
    path.write_text("\n".join(lines) + "\n")
    rows = [r for b in iter_batches(SourceSpec(str(path)), 1000) for r in b]
    assert len(rows) == 3001 and rows[-1]["answer"] == "3/4" and rows[5]["answer"] == "5"


@pytest.mark.parametrize("ipc", ["stream", "file"])
def test_arrow_stream_and_file_format(tmp_path: Path, ipc: str) -> None:
    path = tmp_path / "data.arrow"
    table = _table()
    opener = pa.ipc.new_stream if ipc == "stream" else pa.ipc.new_file
    with opener(str(path), table.schema) as w:
        for batch in table.to_batches(max_chunksize=3):
            w.write_batch(batch)
    spec = SourceSpec(str(path))
    assert detect_format(spec) == "arrow"
    _check_batches(_read(spec))
    assert source_columns(spec) == COLUMNS
    assert count_rows(spec) == 5


def test_one_big_record_batch_is_sliced(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "solution": f"s{i}"} for i in range(1000)]
    path = tmp_path / "big.arrow"
    table = pa.Table.from_pylist(rows)
    with pa.ipc.new_stream(str(path), table.schema) as w:
        w.write_table(table, max_chunksize=1000)
    batches = list(iter_batches(SourceSpec(str(path)), 64))
    assert [len(b) for b in batches] == [64] * 15 + [40]
    assert [r["question"] for b in batches for r in b] == [r["question"] for r in rows]


def test_save_to_disk_dataset(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    folder = tmp_path / "disk"
    ds.save_to_disk(str(folder), num_shards=2)
    spec = SourceSpec(str(folder))
    assert detect_format(spec) == "disk"
    _check_batches(_read(spec))
    assert source_columns(spec) == COLUMNS
    assert count_rows(spec) == 5


def test_save_to_disk_dataset_dict(tmp_path: Path) -> None:
    import datasets

    test_rows = [dict(r, id=f"t{i}") for i, r in enumerate(ROWS)]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(test_rows)})
    folder = tmp_path / "dd"
    dd.save_to_disk(str(folder))
    assert detect_format(SourceSpec(str(folder))) == "disk"
    _check_batches(_read(SourceSpec(str(folder))))  # train by default
    _check_batches(_read(SourceSpec(str(folder), split="test")), test_rows)
    with pytest.raises(SourceError, match=r"--split 'dev'.*splits: train, test"):
        _read(SourceSpec(str(folder), split="dev"))

    only = tmp_path / "dd2"
    datasets.DatasetDict({"a": datasets.Dataset.from_list(ROWS), "b": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(only))
    with pytest.raises(SourceError, match=r"splits a, b.*--split"):
        source_columns(SourceSpec(str(only)))
    _check_batches(_read(SourceSpec(str(only), split="b")))


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "arrow"])
def test_folder_of_shards_in_name_order(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    parts = {"part-0002": ROWS[3:], "part-0001": ROWS[1:3], "part-0000": ROWS[:1]}  # written out of order
    for name, rows in parts.items():
        path = folder / f"{name}.{kind}"
        if kind == "parquet":
            pq.write_table(pa.Table.from_pylist(rows), path)
        elif kind == "jsonl":
            _write_jsonl(path, rows)
        else:
            t = pa.Table.from_pylist(rows)
            with pa.ipc.new_stream(str(path), t.schema) as w:
                w.write_table(t)
    (folder / "README.md").write_text("not data")
    spec = SourceSpec(str(folder))
    assert detect_format(spec) == kind
    _check_batches(_read(spec))  # batches span shard boundaries
    assert source_columns(spec) == COLUMNS
    assert count_rows(spec) == (None if kind == "jsonl" else 5)


def test_folder_with_mixed_or_no_shards(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _write_jsonl(mixed / "a.jsonl")
    pq.write_table(_table(), mixed / "b.parquet")
    with pytest.raises(SourceError, match="several formats.*--format"):
        _read(SourceSpec(str(mixed)))
    _check_batches(_read(SourceSpec(str(mixed), format="parquet")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="holds no data files"):
        _read(SourceSpec(str(empty)))


def test_format_override(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "data.txt")
    with pytest.raises(SourceError, match=r"Unknown source format: data\.txt.*--format"):
        _read(SourceSpec(str(path)))
    _check_batches(_read(SourceSpec(str(path), format="jsonl")))
    with pytest.raises(SourceError, match=r"--format 'xml': unknown format; use one of jsonl, json"):
        _read(SourceSpec(str(path), format="xml"))


def test_fingerprint_is_stable_and_sees_changes(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "data.jsonl")
    a = source_fingerprint(SourceSpec(str(path)))
    assert a == source_fingerprint(SourceSpec(str(path)))
    assert a["kind"] == "jsonl" and a["size"] == path.stat().st_size and a["mtime_ns"] > 0 and len(a["sha256"]) == 64
    _write_jsonl(path, ROWS[:4] + [dict(ROWS[4], question="changed?")])
    assert source_fingerprint(SourceSpec(str(path)))["sha256"] != a["sha256"]
    hub = source_fingerprint(SourceSpec("openai/gsm8k", split="test", subset="main"))
    assert hub == {"kind": "hub", "path": "openai/gsm8k", "subset": "main", "split": "test"}


def test_fingerprint_of_a_big_file_reads_only_its_ends(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = json.dumps({"question": "q", "solution": "x" * 1000}) + "\n"
    with open(path, "w") as f:
        f.write(line * 70_000)  # ~70 MB
    before = source_fingerprint(SourceSpec(str(path)))
    with open(path, "r+b") as f:  # a change in the middle, same size: not seen (documented trade-off)
        f.seek(35_000_000)
        f.write(b"y")
    assert source_fingerprint(SourceSpec(str(path)))["sha256"] == before["sha256"]
    with open(path, "ab") as f:
        f.write(line.encode())
    assert source_fingerprint(SourceSpec(str(path)))["sha256"] != before["sha256"]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    for name in [str(tmp_path / "nope.jsonl"), "data/train.parquet", "nope.jsonl"]:
        with pytest.raises(SourceError) as info:
            _read(SourceSpec(name))
        msg = str(info.value)
        assert msg.startswith(f"Source not found: {name}.")
        assert ".jsonl, .json, .parquet, .csv or .arrow file, a datasets.save_to_disk folder, or a hub dataset name" in msg
    assert issubclass(SourceError, RtpoDataError)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.xml"
    path.write_text("<rows/>")
    with pytest.raises(SourceError, match=r"Unknown source format: data\.xml\. Supported: .*\.parquet.*--format"):
        source_columns(SourceSpec(str(path)))


def test_invalid_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = [json.dumps(r) for r in ROWS[:3]] + ["", '{"question": "broken", '] + [json.dumps(ROWS[4])]
    path.write_text("\n".join(lines) + "\n")
    spec = SourceSpec(str(path))
    with pytest.raises(SourceError) as info:
        _read(spec)
    msg = str(info.value)
    assert "data.jsonl line 5: invalid JSON" in msg and "Fix or remove the line" in msg
    # the rows before the bad line were read first, batch by batch
    it = iter_batches(spec, 2)
    assert len(next(it)) == 2
    with pytest.raises(SourceError, match="line 5"):
        next(it)


def test_invalid_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    good = [json.dumps(r).encode() for r in ROWS]
    good[2] = b'{"question": "caf\xe9", "solution": "x"}'  # Latin-1, not UTF-8
    path.write_bytes(b"\n".join(good) + b"\n")
    with pytest.raises(SourceError, match=r"data\.jsonl line 3: invalid UTF-8.*Re-encode the file as UTF-8"):
        _read(SourceSpec(str(path)))


def test_non_object_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n")
    with pytest.raises(SourceError, match=r"data\.jsonl line 2: expected a JSON object.*got a list"):
        _read(SourceSpec(str(path)))


def test_corrupt_files(tmp_path: Path) -> None:
    for name in ["bad.parquet", "bad.arrow", "bad.jsonl.gz"]:
        path = tmp_path / name
        path.write_bytes(b"this is not the format it claims to be" * 10)
        with pytest.raises(SourceError, match=name.replace(".", r"\.")):
            _read(SourceSpec(str(path)))


def test_hub_name_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = SourceSpec("no-such-owner-rtpo/no-such-dataset")
    assert detect_format(spec) == "hub"
    for call in (source_columns, _read):
        with pytest.raises(SourceError) as info:
            call(spec)
        msg = str(info.value)
        assert "hub is unreachable from here" in msg
        assert "pass a local file (jsonl, parquet" in msg


# ---------------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------------


def test_detect_columns() -> None:
    c = resolve_columns(["id", "question", "solution", "answer", "level"], source_name="data.jsonl")
    assert (c.prompt, c.trace, c.answer, c.id) == ("question", "solution", "answer", "id")
    assert c.detected == {"prompt": True, "trace": True, "answer": True}
    assert c.keep == ("answer",)  # the answer column travels along


def test_detect_columns_case_insensitive_and_in_list_order() -> None:
    c = resolve_columns(["Output", "Instruction", "Problem", "COT", "Final_Answer", "UID"], source_name="d")
    assert (c.prompt, c.trace, c.answer, c.id) == ("Problem", "COT", "Final_Answer", "UID")


def test_explicit_columns_and_no_reuse() -> None:
    # GSM8K as published: "answer" holds the solution
    c = resolve_columns(["question", "answer"], trace="answer", source_name="gsm8k.jsonl")
    assert (c.prompt, c.trace, c.answer) == ("question", "answer", None)
    assert c.detected == {"prompt": True, "trace": False, "answer": False}
    c = resolve_columns(["q", "r", "gold", "topic"], prompt="q", trace="r", keep=["topic"], source_name="d")
    assert c.answer == "gold" and c.keep == ("topic", "gold")


def test_explicit_missing_column_lists_available() -> None:
    with pytest.raises(SourceError) as info:
        resolve_columns(["a", "b", "c"], prompt="foo", trace="b", source_name="data.jsonl")
    assert str(info.value) == "Column 'foo' (--prompt-column) not found in data.jsonl. Available columns: a, b, c."
    with pytest.raises(SourceError, match=r"Column 'Question' \(--prompt-column\).*Did you mean 'question'"):
        resolve_columns(["question", "solution"], prompt="Question", source_name="d")
    with pytest.raises(SourceError, match=r"Column 'x' \(--keep-column\) not found in d\. Available columns: question, solution\."):
        resolve_columns(["question", "solution"], keep=["x"], source_name="d")
    with pytest.raises(SourceError, match=r"Column 'ans' \(--answer-column\)"):
        resolve_columns(["question", "solution"], answer="ans", source_name="d")


def test_undetectable_columns_name_the_flag() -> None:
    with pytest.raises(SourceError, match=r"No prompt column found in d .*Available columns: text, label\. Name it with --prompt-column"):
        resolve_columns(["text", "label"], source_name="d")
    with pytest.raises(SourceError, match=r"No trace column found in d .*Available columns: question, answer\. Name it with --trace-column"):
        resolve_columns(["question", "answer"], source_name="d")
    with pytest.raises(SourceError, match="both 'x'"):
        resolve_columns(["x"], prompt="x", trace="x", source_name="d")


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


def _prompt(value):
    return normalize_prompt(value, row=7, column="prompt", source_name="data.jsonl")


def test_prompt_text_and_chat_messages() -> None:
    assert _prompt("What is 2+2?") == "What is 2+2?"
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?", "extra": 1}]
    assert _prompt(msgs) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]


@pytest.mark.parametrize(
    ("value", "reason", "words"),
    [
        (None, "null_prompt", "null"),
        ("", "empty_prompt", "empty"),
        ("  \n", "empty_prompt", "empty"),
        (42, "non_text_prompt", "got int"),
        ({"role": "user", "content": "hi"}, "non_text_prompt", "got dict"),
        ([], "bad_messages", "empty list"),
        ([{"content": "hi"}], "bad_messages", "needs 'role' and 'content'"),
        ([{"role": "user"}], "bad_messages", "needs 'role' and 'content'"),
        ([{"from": "human", "value": "hi"}], "bad_messages", "ShareGPT"),
        ([{"role": "user", "content": ["hi"]}], "bad_messages", "non-text content"),
        ([{"role": "user", "content": None}], "bad_messages", "non-text content"),
        ([{"role": "human", "content": "hi"}], "bad_messages", "role 'human'"),
        ([{"role": "system", "content": "x"}], "bad_messages", "no user message"),
        ([{"role": "user", "content": " "}], "empty_prompt", "empty"),
        (["hi"], "bad_messages", "message 0 is a str"),
    ],
)
def test_invalid_prompts(value, reason: str, words: str) -> None:
    with pytest.raises(InvalidRow) as info:
        _prompt(value)
    assert info.value.reason == reason
    msg = str(info.value)
    assert msg.startswith("data.jsonl row 7, column 'prompt':") and words in msg and reason in msg


def test_validate_row() -> None:
    cmap = resolve_columns(["uid", "question", "solution", "answer", "topic"], keep=["topic"], source_name="d")
    v = validate_row({"uid": 17, "question": "q?", "solution": "s", "answer": 18.0, "topic": "alg"}, cmap, 3, "d")
    assert (v.row_id, v.prompt, v.trace, v.answer) == ("17", "q?", "s", "18")
    assert v.keep == {"topic": "alg", "answer": 18.0}
    v = validate_row({"uid": None, "question": "q?", "solution": "s", "answer": 0.5}, cmap, 3, "d")
    assert (v.row_id, v.answer, v.keep["topic"]) == ("3", "0.5", None)
    for answer in (None, "", float("nan")):
        assert validate_row({"question": "q", "solution": "s", "answer": answer}, cmap, 0, "d").answer is None
    assert validate_row({"question": "q", "solution": "s", "answer": 7}, cmap, 0, "d").answer == "7"
    assert validate_row({"question": "q", "solution": "s", "answer": [1, 2]}, cmap, 0, "d").answer == "[1, 2]"
    no_id = resolve_columns(["question", "solution"], source_name="d")
    assert validate_row({"question": "q", "solution": "s"}, no_id, 9, "d").row_id == "9"


@pytest.mark.parametrize(
    ("trace", "reason"),
    [(None, "null_trace"), ("", "empty_trace"), ("\n ", "empty_trace"), (["a"], "non_text_trace"), (3, "non_text_trace")],
)
def test_invalid_traces(trace, reason: str) -> None:
    cmap = resolve_columns(["question", "solution"], source_name="d")
    with pytest.raises(InvalidRow) as info:
        validate_row({"question": "q", "solution": trace}, cmap, 12, "data.jsonl")
    assert info.value.reason == reason
    assert str(info.value).startswith("data.jsonl row 12, column 'solution':")
    with pytest.raises(InvalidRow, match="null_prompt"):
        validate_row({"solution": "s"}, cmap, 0, "d")  # a missing key is a null


# ---------------------------------------------------------------------------------------------
# Reading a range of rows (the Ray engine's workers)
# ---------------------------------------------------------------------------------------------


def _sources_of_many_rows(tmp_path: Path) -> tuple[list[dict], dict[str, SourceSpec]]:
    """23 rows in every format: jsonl with blank lines (ASCII, and a non-ASCII space) and a byte-order
    mark, gzipped, split over files, parquet in row groups of 4 over two files, Arrow (stream and
    file format), csv, and a save_to_disk folder."""
    import datasets

    rows = [{"id": f"r{i}", "question": f"q {i} é", "solution": f"s {i}\n#### {i}"} for i in range(23)]
    text = "\ufeff" + "".join(json.dumps(r, ensure_ascii=False) + "\n" + ("  \n" if i % 5 == 0 else "")
                              + ("\u3000\r\n" if i == 7 else "") for i, r in enumerate(rows))
    (tmp_path / "rows.jsonl").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "rows.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    (tmp_path / "split").mkdir()
    (tmp_path / "pq").mkdir()
    _write_jsonl(tmp_path / "split" / "a.jsonl", rows[:9])
    _write_jsonl(tmp_path / "split" / "b.jsonl", rows[9:])
    pq.write_table(pa.Table.from_pylist(rows[:10]), tmp_path / "pq" / "a.parquet", row_group_size=4)
    pq.write_table(pa.Table.from_pylist(rows[10:]), tmp_path / "pq" / "b.parquet", row_group_size=4)
    table = pa.Table.from_pylist(rows)
    with pa.ipc.new_stream(str(tmp_path / "stream.arrow"), table.schema) as w:
        for batch in table.to_batches(max_chunksize=5):
            w.write_batch(batch)
    with pa.ipc.new_file(str(tmp_path / "file.arrow"), table.schema) as w:
        for batch in table.to_batches(max_chunksize=6):
            w.write_batch(batch)
    with open(tmp_path / "rows.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "disk"))
    names = ["rows.jsonl", "rows.jsonl.gz", "split", "pq", "stream.arrow", "file.arrow", "rows.csv", "disk"]
    return rows, {name: SourceSpec(str(tmp_path / name)) for name in names}


def test_read_rows_gives_the_rows_iter_batches_gives(tmp_path: Path) -> None:
    from rtpo_data.sources import index_rows, read_rows

    rows, specs = _sources_of_many_rows(tmp_path)
    for name, spec in specs.items():
        every_row = [r for b in iter_batches(spec, 3) for r in b]
        assert [r["id"] for r in every_row] == [r["id"] for r in rows], name
        index = index_rows(spec, 5)
        assert index.rows == 23 and index.every == 5, name
        if name in ("rows.jsonl", "split"):
            assert len(index.starts) == 5, name  # where rows 0, 5, 10, 15 and 20 start
        for start, stop in ((0, 23), (0, 5), (5, 10), (10, 15), (20, 23), (22, 23), (15, 20)):
            got = list(read_rows(spec, index, start, stop, 3))
            assert [len(b) for b in got][:-1] == [3] * (len(got) - 1), (name, start)
            assert [r for b in got for r in b] == every_row[start:stop], (name, start, stop)
        assert index_rows(spec, 5, limit=12).rows == 12
        assert index_rows(spec, 50, limit=40).rows == 23


def test_index_rows_refuses_a_hub_dataset() -> None:
    from rtpo_data.sources import index_rows

    with pytest.raises(SourceError, match="hub dataset.*cannot be read from a given row.*save_to_disk"):
        index_rows(SourceSpec("someone/some-dataset", format="hub"), 10)
