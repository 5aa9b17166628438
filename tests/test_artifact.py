"""The curriculum directory's manifest: format 2 stores each fact once, and a format-1 curriculum
(tests/fixtures/curriculum-v1, written by rtpo-data 0.1.0 before format 2) still opens, verifies
and renders exactly what a build makes today."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rtpo_data import ArtifactError, BuildConfig, Curriculum, build
from rtpo_data.verify import verify

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
    assert old.manifest.config == today.manifest.config | {"out": old.manifest.config["out"], "source": old.manifest.config["source"]}
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
