"""The rtpo-data command, through Typer's CliRunner: happy paths and every bad input of a build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtpo_data.cli.main import app, stage_table

from helpers import LEAKY, make_tokenizer, write_jsonl

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[1] / "rtpo_data" / "examples" / "mixed_math.jsonl"
RECIPE = EXAMPLE.with_name("recipe.yaml")


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "example"
    result = run("build", EXAMPLE, "--out", out, "--tokenizer", "offline:qwen3", "--keep-column", "source",
                 "--schedule", "cosine", "--stages", "6", "--total-steps", "300")
    assert result.exit_code == 0, result.output
    assert "Built" in result.output and "24 kept of 24" in result.output
    assert "auto-detected: prompt, trace" in result.output
    return out


def test_version_and_help() -> None:
    assert run("--version").output.startswith("rtpo-data ")
    result = run("build", "-h")
    assert result.exit_code == 0 and "--tokenizer" in result.output and "--unit" in result.output


# Run with the trainers made unimportable (None in sys.modules: ``import trl`` raises
# ModuleNotFoundError and importlib.util.find_spec("trl") is None, as when they are not installed).
_CORE_ONLY = """
import json, sys
for name in ("trl", "openrlhf", "verl", "torch", "accelerate", "ray", "deepspeed", "vllm", "peft"):
    sys.modules[name] = None
from typer.main import get_command
from typer.testing import CliRunner
from rtpo_data.cli.main import app

def paths(command, prefix=()):
    yield prefix
    for name, sub in getattr(command, "commands", {}).items():
        yield from paths(sub, (*prefix, name))

runner = CliRunner()
out = {" ".join(p): runner.invoke(app, [*p, "--help"]) for p in paths(get_command(app))}
out["run train trl"] = runner.invoke(app, ["train", "trl", "--curriculum", "cur", "--model_name_or_path", "m"])
out["run train openrlhf"] = runner.invoke(app, ["train", "openrlhf", "--curriculum", "cur"])
out["run train verl"] = runner.invoke(app, ["train", "verl", "--curriculum", "cur"])
out["run build ray"] = runner.invoke(app, ["build", sys.argv[1], "--out", sys.argv[2], "-t", "offline:qwen3",
                                           "--engine", "ray"])
print(json.dumps({k: [r.exit_code, r.output] for k, r in out.items()}))
"""


def test_every_help_works_with_only_the_core_installed(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _CORE_ONLY, str(EXAMPLE), str(tmp_path / "cur")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    helps = {k: v for k, v in results.items() if not k.startswith("run ")}
    assert set(helps) >= {"", "build", "inspect", "train", "train trl", "train openrlhf", "train verl", "export",
                          "export trl"}
    for command, (code, output) in helps.items():
        assert code == 0, (command, output)
        assert "usage" in output.lower() and "Error" not in output and "Traceback" not in output, (command, output)
    for trainer in ("trl", "openrlhf", "verl"):
        assert "--curriculum DIR" in helps[f"train {trainer}"][1]
    # The install hint comes when the command runs.
    code, output = results["run train trl"]
    assert code == 1 and "pip install 'rtpo-data[trl]'" in output and "Traceback" not in output, output
    code, output = results["run train openrlhf"]
    assert code == 1 and "pip install 'rtpo-data[openrlhf]'" in output and "Traceback" not in output, output
    code, output = results["run train verl"]
    assert code == 1 and "pip install 'rtpo-data[verl]'" in output and "Traceback" not in output, output
    code, output = results["run build ray"]
    assert code == 1 and "--engine ray needs Ray" in output and "pip install 'rtpo-data[ray]'" in output, output
    assert not (tmp_path / "cur").exists() and not (tmp_path / "cur.incomplete").exists()


def test_train_trl_help_lists_trl_flags_when_trl_is_installed() -> None:
    import dataclasses

    pytest.importorskip("trl")
    from rtpo_data.adapters.trl import RTPOScriptArguments
    from rtpo_data.cli.main import TRAIN_HELP

    result = run("train", "trl", "--help")
    assert result.exit_code == 0, result.output
    assert "--learning_rate" in result.output and "--curriculum" in result.output
    # The help shown without TRL names every option of the launcher's own.
    for f in dataclasses.fields(RTPOScriptArguments):
        assert f"--{f.name}" in TRAIN_HELP["trl"], f.name


def test_inspect_summary_row_json_plot(built: Path, tmp_path: Path) -> None:
    result = run("inspect", built)
    assert result.exit_code == 0, result.output
    assert "cosine down, 6 stages" in result.output and "250-" in result.output
    row = run("inspect", built, "--step", "120", "--row", "20")
    assert row.exit_code == 0, row.output
    assert "stage 2 (step 120)" in row.output and "\u27e6" in row.output and "\u27e7" in row.output
    data = json.loads(run("inspect", built, "--format", "json").output)
    assert set(data) >= {"source", "tokenizer", "rows", "tokens", "schedule", "stages", "checks"}
    assert [s["stage"] for s in data["stages"]] == list(range(6))
    assert set(data["stages"][0]) >= {"fraction", "kept_fraction_mean", "hint_tokens_mean", "hint_tokens_p95",
                                       "rollout_tokens_saved_mean", "rollout_tokens_saved_pct", "steps"}
    rec = json.loads(run("inspect", built, "--stage", "1", "--row", "3", "--format", "json").output)
    assert rec["prompt"][rec["hint_start"]:rec["hint_end"]] and rec["stage"] == 1
    png = tmp_path / "cur.png"
    assert run("inspect", built, "--plot", png).exit_code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_stage_table_fits_80_columns(built: Path) -> None:
    from rich.console import Console

    # The widest figures a real curriculum reaches: a million rows, 16k-token hints, six-digit steps.
    widest = [{"stage": s, "steps": [s * 12_500, None if s == 19 else s * 12_500 + 12_499], "fraction": 1 - s / 19,
               "kept_fraction_mean": 0.5, "hint_tokens_mean": 16_384.0, "hint_tokens_p95": 16_384.0,
               "rows_with_hint": 1_000_000, "rollout_tokens_saved_pct": 100.0} for s in range(20)]
    console = Console(width=80, record=True)
    console.print(stage_table(widest))
    text = console.export_text()
    assert "\u2026" not in text, text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "237500-" in text and "1,000,000" in text and "16384.0" in text
    for header in ("stage", "target", "fraction", "hint mean", "with hint", "saved"):
        assert header in text
    result = run("inspect", built)
    assert "\u2026" not in result.output and "with hint" in result.output, result.output


def test_verify_passes_and_json(built: Path) -> None:
    result = run("inspect", built, "--verify")
    assert result.exit_code == 0, result.output
    assert "All checks passed" in result.output
    data = json.loads(run("inspect", built, "--verify", "--format", "json").output)
    assert data["ok"] and {c["name"] for c in data["checks"]} == {"checksums", "invariants", "token_exact", "drift", "leaks"}


def test_verify_names_a_damaged_shard(built: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(built, copy)
    shard = sorted(copy.glob("rows-*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run("inspect", copy, "--verify")
    assert result.exit_code == 1
    assert shard.name in result.output and "damaged" in result.output
    assert "Traceback" not in result.output


def test_every_build_option_is_a_flag_with_the_configs_help() -> None:
    """The command line's build options are BuildConfig's fields: one flag each, with its help."""
    import dataclasses

    from rtpo_data.config import BuildConfig

    text = " ".join(runner.invoke(app, ["build", "--help"], env={"COLUMNS": "400"}).output.split())
    for f in dataclasses.fields(BuildConfig):
        flag = "SOURCE" if f.name == "source" else (f.metadata["flags"] or (f"--{f.name.replace('_', '-')}",))[0]
        assert (flag == "SOURCE" or f" {flag} " in text) and " ".join(f.metadata["help"].split()) in text, f.name


def test_python_api_mirrors_cli(tmp_path: Path) -> None:
    """The same options through ``rtpo_data.build`` and through ``rtpo-data build`` give the same
    curriculum: the same configuration, statistics and checks, and byte-identical shards."""
    import rtpo_data

    res = rtpo_data.build(rtpo_data.BuildConfig(
        source=str(EXAMPLE), out=str(tmp_path / "api"), tokenizer="offline:qwen3", keep_columns=["source"],
        schedule="cosine", stages=6, total_steps=300, unit="sentence", on_leak="trim"), progress=False)
    result = run("build", EXAMPLE, "--out", tmp_path / "cli", "--tokenizer", "offline:qwen3", "--keep-column", "source",
                 "--schedule", "cosine", "--stages", "6", "--total-steps", "300", "--unit", "sentence", "--on-leak", "trim")
    assert result.exit_code == 0, result.output

    def facts(path: Path) -> dict:
        manifest = json.loads((path / "manifest.json").read_text())
        for varies in ("created_at", "build_seconds"):
            manifest.pop(varies)
        manifest["config"].pop("out")
        return manifest

    api, cli = facts(res.path), facts(tmp_path / "cli")
    assert api == cli and len(api["schedule"]["stage_fractions"]) == 6 and api["unit"] == "sentence"
    assert [s["sha256"] for s in api["shards"]["rows"]] == [s["sha256"] for s in cli["shards"]["rows"]]


def _bad(tmp_path: Path) -> dict[str, Path]:
    d = {}
    d["ok"] = write_jsonl(tmp_path / "ok.jsonl", [{"question": "q?", "solution": "Because. #### 1"}])
    d["allbad"] = write_jsonl(tmp_path / "allbad.jsonl", [{"question": "", "solution": "x"}, {"question": "q", "solution": None}])
    (tmp_path / "data.xml").write_text("<x/>")
    d["xml"] = tmp_path / "data.xml"
    d["notemplate"] = Path(make_tokenizer(tmp_path / "notemplate", template=None))
    return d


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("missing file", ["build", "{tmp}/nope.jsonl", "--out", "{tmp}/o", "--tokenizer", "offline:qwen3"], "Source not found"),
        ("unknown format", ["build", "{xml}", "--out", "{tmp}/o", "--tokenizer", "offline:qwen3"], "Unknown source format"),
        ("missing column", ["build", "{ok}", "--out", "{tmp}/o", "--tokenizer", "offline:qwen3", "--trace-column", "cot"],
         "Available columns: question, solution"),
        ("all rows invalid", ["build", "{allbad}", "--out", "{tmp}/o", "--tokenizer", "offline:qwen3"], "Every row of allbad.jsonl is invalid"),
        ("no chat template", ["build", "{ok}", "--out", "{tmp}/o", "--tokenizer", "{notemplate}"], "has no chat template"),
        ("bad tokenizer", ["build", "{ok}", "--out", "{tmp}/o", "--tokenizer", "{tmp}"], "Cannot load tokenizer"),
        ("bad offline name", ["build", "{ok}", "--out", "{tmp}/o", "--tokenizer", "offline:nope"], "no tokenizer named 'nope'"),
        ("stages < 2", ["build", "{ok}", "--out", "{tmp}/o", "--tokenizer", "offline:qwen3", "--stages", "1"], "stages=1"),
        ("total steps <= 0", ["build", "{ok}", "--out", "{tmp}/o", "--tokenizer", "offline:qwen3", "--total-steps", "0"], "total_steps=0"),
        ("bad unit regex", ["build", "{ok}", "--out", "{tmp}/o", "--tokenizer", "offline:qwen3", "--unit", "regex:(("], "invalid regex"),
        ("bad answer regex", ["build", "{ok}", "--out", "{tmp}/o", "--tokenizer", "offline:qwen3", "--answer-pattern", "[x"], "answer_pattern"),
        ("on-invalid error", ["build", "{allbad}", "--out", "{tmp}/o", "--tokenizer", "offline:qwen3", "--on-invalid", "error"],
         "allbad.jsonl row 0"),
        ("missing tokenizer", ["build", "{ok}", "--out", "{tmp}/o"], "tokenizer is required: give --tokenizer on the command line"),
        ("unknown recipe key", ["build", "{ok}", "--out", "{tmp}/o", "--tokenizer", "offline:qwen3", "--config", "{recipe}"], "unknown key 'colour'"),
    ],
)
def test_bad_inputs_one_clear_line(tmp_path: Path, case: str, args: list[str], message: str) -> None:
    paths = {k: str(v) for k, v in _bad(tmp_path).items()}
    (tmp_path / "bad.yaml").write_text("colour: blue\n")
    fmt = {"tmp": str(tmp_path), "recipe": str(tmp_path / "bad.yaml"), **paths}
    result = run(*[a.format(**fmt) for a in args])
    assert result.exit_code == 1, (case, result.output)
    assert message in result.output, (case, result.output)
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.incomplete").exists()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "ok.jsonl", [{"question": "q?", "solution": "Because. #### 1"}])
    out = tmp_path / "o"
    assert run("build", src, "--out", out, "--tokenizer", "offline:qwen3").exit_code == 0
    before = (out / "manifest.json").read_text()
    result = run("build", src, "--out", out, "--tokenizer", "offline:qwen3", "--stages", "3")
    assert result.exit_code == 1 and "already exists" in result.output and "--overwrite" in result.output
    assert (out / "manifest.json").read_text() == before
    assert run("build", src, "--out", out, "--tokenizer", "offline:qwen3", "--stages", "3", "--overwrite").exit_code == 0
    assert len(json.loads((out / "manifest.json").read_text())["schedule"]["stage_fractions"]) == 3


def test_verbose_shows_traceback(tmp_path: Path) -> None:
    result = run("--verbose", "build", tmp_path / "nope.jsonl", "--out", tmp_path / "o", "--tokenizer", "offline:qwen3")
    assert result.exit_code == 1 and "Traceback" in result.output


def test_inspect_errors(tmp_path: Path, built: Path) -> None:
    result = run("inspect", tmp_path / "missing")
    assert result.exit_code == 1 and "Curriculum not found" in result.output
    result = run("inspect", built, "--row", "999", "--stage", "0")
    assert result.exit_code == 1 and "--row 999" in result.output
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text('{"format_version": 99}')
    result = run("inspect", tmp_path / "m")
    assert result.exit_code == 1 and "Unsupported curriculum format version 99" in result.output


def test_train_openrlhf_without_openrlhf_says_how_to_install(built: Path) -> None:
    from conftest import has_openrlhf

    if has_openrlhf():
        pytest.skip("OpenRLHF is installed here; tests/openrlhf covers the command")
    result = run("train", "openrlhf", "--curriculum", built, "--", "--rollout.batch_size", "2")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "pip install 'rtpo-data[openrlhf]'" in result.output


def test_cli_reports_leaks_and_their_limit(leaky_builds: dict, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from rtpo_data.cli.main import app

    from helpers import write_jsonl

    runner = CliRunner()
    path = str(leaky_builds["keep"].path)
    failed = runner.invoke(app, ["inspect", path, "--verify"])
    assert failed.exit_code == 1 and "2 rows flagged: only, sentence" in failed.output, failed.output
    passed = runner.invoke(app, ["inspect", path, "--verify", "--max-leak-rate", "0.9"])
    assert passed.exit_code == 0 and "All checks passed" in passed.output, passed.output
    data = json.loads(runner.invoke(app, ["inspect", path, "--verify", "--format", "json"]).output)
    assert not data["ok"] and [c["ok"] for c in data["checks"]] == [True, True, True, True, False]
    src = write_jsonl(tmp_path / "leaky.jsonl", LEAKY)
    built = runner.invoke(app, ["build", str(src), "--out", str(tmp_path / "t"), "--tokenizer", "offline:qwen3",
                                "--on-leak", "trim"])
    assert built.exit_code == 0 and "--on-leak trim: 2 rows trimmed before the statement of the answer, 1 dropped" in built.output
    assert "answer_leak_no_trace 1" in built.output
    shown = runner.invoke(app, ["inspect", str(tmp_path / "t")])
    assert "--on-leak trim: 2 rows trimmed" in shown.output, shown.output
    bad = runner.invoke(app, ["build", str(src), "--out", str(tmp_path / "u"), "--tokenizer", "offline:qwen3",
                              "--on-leak", "fix"])
    assert bad.exit_code == 1 and "on_leak='fix': use one of keep, trim, drop" in bad.output
