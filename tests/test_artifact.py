"""The curriculum directory (rtpo_data/artifact.py): the manifest, where format 2 stores each fact
once and a format-1 curriculum (tests/fixtures/curriculum-v1, written by rtpo-data 0.1.0 before
format 2) still opens, verifies and renders exactly what a build makes today; shards gathered into
large record batches and readable by datasets; damaged files named on open and by --verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rtpo_data import ArtifactError, BuildConfig, Curriculum, build
from rtpo_data.verify import verify

from helpers import gsm8k_rows, mixed_rows, reference_prompt, write_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "curriculum-v1"
EXAMPLE = Path(__file__).resolve().parents[1] / "rtpo_data" / "examples" / "mixed_math.jsonl"
# The options the fixture was built with (rtpo-data build ... --limit 6, as its manifest records).
OPTIONS = {"tokenizer": "offline:qwen3", "keep_columns": ["source"], "schedule": "cosine", "stages": 4,
           "total_steps": 40, "limit": 6, "check_sample": 6}


@pytest.fixture(scope="module")
def today(tmp_path_factory) -> Curriculum:
    out = tmp_path_factory.mktemp("v2") / "cur"
    build(BuildConfig(source=str(EXAMPLE), out=str(out), **OPTIONS), progress=False)
    return Curriculum.open(out)


def test_format_2_stores_the_stage_count_and_horizon_once(today: Curriculum) -> None:
    written = json.loads((today.path / "manifest.json").read_text())
    assert written["format_version"] == 2
    assert "num_stages" not in written and "total_steps" not in written and "num_stages" not in written["schedule"]
    assert len(written["schedule"]["stage_fractions"]) == 4 and written["schedule"]["total_steps"] == 40
    assert today.manifest.num_stages == today.num_stages == 4 and today.total_steps == 40


def test_a_format_1_curriculum_reads_and_renders_as_a_build_today(today: Curriculum) -> None:
    old = Curriculum.open(FIXTURE)
    assert json.loads((FIXTURE / "manifest.json").read_text())["format_version"] == 1
    assert old.manifest.format_version == 1 and old.num_stages == 4 and old.total_steps == 40
    assert old.manifest["num_stages"] == 4 and old.manifest["total_steps"] == 40  # code written for format 1
    # The fixture predates the engine options; it was built as today's default, the local engine.
    engine = {"engine": "local", "ray_address": None, "workers": None}
    assert old.manifest.config | engine == today.manifest.config | {"out": old.manifest.config["out"], "source": old.manifest.config["source"]}
    # The shards are what they were: only the manifest's form changed.
    assert [s["sha256"] for s in old.manifest.shards["cuts"]] == [s["sha256"] for s in today.manifest.shards["cuts"]]
    assert [s["sha256"] for s in old.manifest.shards["rows"]] == [s["sha256"] for s in today.manifest.shards["rows"]]
    rows = list(range(len(today)))
    for step in range(45):
        stage = old.stage_at(step)
        assert stage == today.stage_at(step)
        assert old.render(rows, stage) == today.render(rows, stage)
        assert old.render(rows, stage, "ids") == today.render(rows, stage, "ids")
    assert verify(FIXTURE).ok


def test_a_format_1_manifest_that_contradicts_itself_is_refused(tmp_path: Path) -> None:
    cur = tmp_path / "cur"
    shutil.copytree(FIXTURE, cur)
    manifest = json.loads((cur / "manifest.json").read_text())
    manifest["num_stages"] = 5
    (cur / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest.json is damaged: its stage count or horizon disagree"):
        Curriculum.open(cur)


def test_a_manifest_without_a_section_names_it(tmp_path: Path, today: Curriculum) -> None:
    cur = tmp_path / "cur"
    shutil.copytree(today.path, cur)
    manifest = json.loads((cur / "manifest.json").read_text())
    del manifest["tokenizer"]
    (cur / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="is damaged: 'tokenizer' missing"):
        Curriculum.open(cur)


def test_rows_are_gathered_into_large_record_batches(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "rows.jsonl", mixed_rows(97))
    build(BuildConfig(source=str(src), out=str(tmp_path / "cur"), tokenizer="offline:qwen3", batch_size=7, shard_rows=40),
          progress=False)
    cur = Curriculum.open(tmp_path / "cur")
    # 14 tokenization batches, 3 shards: one record batch per shard and table
    assert [s["rows"] for s in cur.manifest["shards"]["rows"]] == [40, 40, 17]
    assert cur.table().column("trace").num_chunks == 3
    assert cur.render([0, 45, 96], 0) == [reference_prompt(cur, i, 0)[0] for i in (0, 45, 96)]


def test_shards_open_with_datasets(gsm8k_curriculum: Curriculum) -> None:
    import datasets

    name = gsm8k_curriculum.manifest["shards"]["rows"][0]["name"]
    ds = datasets.Dataset.from_file(str(gsm8k_curriculum.path / name))
    assert ds.num_rows == 500 and "trace_ids" in ds.column_names


@pytest.fixture(scope="module")
def small_curriculum(tmp_path_factory) -> Path:
    src = write_jsonl(tmp_path_factory.mktemp("s") / "s.jsonl",
                      [{"question": r["question"], "solution": r["answer"]} for r in gsm8k_rows()[:60]])
    out = tmp_path_factory.mktemp("c") / "cur"
    build(BuildConfig(source=str(src), out=str(out), tokenizer="offline:qwen3", shard_rows=25))
    return out


def _damaged(src: Path, tmp_path: Path, how: str) -> tuple[Path, str]:
    cur = tmp_path / how
    shutil.copytree(src, cur)
    shard = cur / "rows-00001-of-00003.arrow"
    if how == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    elif how == "flipped":
        data = bytearray(shard.read_bytes())
        data[len(data) // 3] ^= 0x01
        shard.write_bytes(bytes(data))
    elif how == "missing":
        shard.unlink()
    elif how == "newer":
        m = json.loads((cur / "manifest.json").read_text())
        m["format_version"] = 3
        (cur / "manifest.json").write_text(json.dumps(m))
    elif how == "badjson":
        (cur / "manifest.json").write_text('{"format_version": 1, "shards": ')
    return cur, shard.name


@pytest.mark.parametrize("how, on_open", [
    ("truncated", "rows-00001-of-00003.arrow in .* is damaged"),
    ("missing", "Shard rows-00001-of-00003.arrow is missing"),
    ("newer", "Unsupported curriculum format version 3 .* reads 1, 2. Upgrade rtpo-data"),
    ("badjson", "manifest.json is damaged \\(not valid JSON"),
    ("flipped", None),  # same size: only the checksum can tell, which --verify computes
])
def test_damage_is_named(small_curriculum: Path, tmp_path: Path, how: str, on_open: str | None) -> None:
    from typer.testing import CliRunner

    from rtpo_data.cli.main import app

    cur, shard = _damaged(small_curriculum, tmp_path, how)
    if on_open:
        with pytest.raises(ArtifactError, match=on_open):
            Curriculum.open(cur)
    else:
        Curriculum.open(cur)  # opening stays cheap: no hashing
    result = CliRunner().invoke(app, ["inspect", str(cur), "--verify"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (shard if how in ("truncated", "missing", "flipped") else "manifest.json") in result.output
