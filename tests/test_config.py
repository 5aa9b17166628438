"""``BuildConfig`` (rtpo_data/config.py) through ``rtpo-data build``: a recipe with flags over it,
and every problem of the flags, the recipe and the schedule reported at once."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rtpo_data.cli.main import app

from helpers import write_jsonl

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "rtpo_data" / "examples" / "mixed_math.jsonl"
RECIPE = EXAMPLE.with_name("recipe.yaml")


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_recipe_with_flag_override(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(EXAMPLE.parent)
    out = tmp_path / "from-recipe"
    result = run("build", "--config", RECIPE, "--out", out, "--stages", "4")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["schedule"]["stage_fractions"]) == 4 and manifest["schedule"]["kind"] == "cosine"


def test_build_reports_every_problem_of_flags_and_recipe_at_once(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("source: rows.jsonl\nunit: paragraphs\non-leak: shout\n")
    result = run("build", "--config", recipe, "--fractions", "1,half,0", "--schedule", "staged", "--num-proc", "0")
    assert result.exit_code == 1
    for problem in ("out is required: give --out", "tokenizer is required: give --tokenizer", "fractions='1,half,0'",
                    "on_leak='shout'", "paragraphs", "num_proc=0"):
        assert problem in result.output, (problem, result.output)


def test_invalid_schedule_reports_every_problem(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "ok.jsonl", [{"question": "q?", "solution": "Because. #### 1"}])
    result = run("build", src, "--out", tmp_path / "o", "--tokenizer", "offline:qwen3", "--schedule", "staged",
                 "--fractions", "0.5,1.5,0.9", "--unit", "sentences", "--placement", "side")
    assert result.exit_code == 1
    for needle in ("fractions", "unit='sentences'", "placement='side'"):
        assert needle in result.output, result.output
    assert "problems" in result.output


def test_engine_options_are_checked_with_the_others(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "ok.jsonl", [{"question": "q?", "solution": "Because. #### 1"}])
    common = ("build", src, "--out", tmp_path / "o", "--tokenizer", "offline:qwen3")
    result = run(*common, "--engine", "spark", "--workers", "0")
    assert result.exit_code == 1
    for needle in ("engine='spark': use one of local, ray", "workers=0: must be an integer >= 1"):
        assert needle in result.output, result.output
    result = run(*common, "--workers", "4", "--ray-address", "10.0.0.1:6379")
    assert result.exit_code == 1
    for needle in ("ray_address='10.0.0.1:6379': applies to --engine ray only", "workers=4: applies to --engine ray"):
        assert needle in result.output, result.output
    result = run(*common, "--engine", "ray", "--num-proc", "4")
    assert result.exit_code == 1 and "num_proc=4: applies to --engine local only" in result.output, result.output
    assert "--workers" in result.output and not (tmp_path / "o").exists()
