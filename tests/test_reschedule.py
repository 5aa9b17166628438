"""``reschedule``: the curriculum a build with the new schedule gives, without tokenizing again."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rtpo_data import BuildConfig, Curriculum, build
from rtpo_data.cli.main import app
from rtpo_data.errors import ArtifactError, ConfigError, RtpoDataError
from rtpo_data.reschedule import reschedule
from rtpo_data.verify import verify

from helpers import make_tokenizer

EXAMPLE = str(Path(__file__).resolve().parents[1] / "rtpo_data" / "examples" / "mixed_math.jsonl")
BASE = {"source": EXAMPLE, "tokenizer": "offline:qwen3", "keep_columns": ("source",), "shard_rows": 10}
# What may differ between a rescheduled curriculum's manifest and a build's with the same options.
TIMINGS = ("created_at", "build_seconds")


def _build(out: Path, **options: Any) -> Path:
    build(BuildConfig(out=str(out), **{**BASE, **options}), progress=False)
    return out


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def _same_as_build(child: Path, built: Path) -> None:
    """Byte-identical cut shards, and manifests equal apart from timings, ``parent`` and the output."""
    a, b = _manifest(child), _manifest(built)
    assert a.pop("parent")["rows"] in ("linked", "rewritten")
    b.pop("parent", None)
    for m in (a, b):
        for key in TIMINGS:
            m.pop(key)
        m["config"].pop("out")
    assert a == b
    for info in b["shards"]["cuts"]:
        assert (child / info["name"]).read_bytes() == (built / info["name"]).read_bytes()
    for info in b["shards"]["rows"]:
        assert (child / info["name"]).read_bytes() == (built / info["name"]).read_bytes()


@pytest.fixture(scope="module")
def parents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The built-in example built on the token and word units (cosine, 6 stages)."""
    root = tmp_path_factory.mktemp("parents")
    return {unit: _build(root / unit, unit=unit, schedule="cosine", stages=6, total_steps=300)
            for unit in ("token", "word")}


_CURVES = st.fixed_dictionaries(
    {"schedule": st.sampled_from(["linear", "cosine", "exponential"]), "stages": st.integers(2, 12),
     "direction": st.sampled_from(["down", "up"])})
_STAGED = st.lists(st.sampled_from([0.9, 0.75, 0.5, 0.3, 0.1]), min_size=1, max_size=4, unique=True).map(
    lambda xs: {"schedule": "staged", "fractions": (1.0, *sorted(xs, reverse=True), 0.0)})
_SCHEDULES = st.one_of(_CURVES, _STAGED, st.just({}))  # {}: keep the parent's schedule


# Each example builds twice; shrinking a failure would take minutes, so a failure is reported as found.
@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(source_unit=st.sampled_from(["token", "word"]), schedule=_SCHEDULES,
       unit=st.sampled_from(["token", "word", "line", "sentence", "paragraph", r"regex:\$", None]),
       measure=st.sampled_from(["tokens", "units", None]), total_steps=st.sampled_from([None, 120, 300]))
def test_reschedule_equals_a_build_with_the_new_schedule(parents: dict[str, Path], tmp_path_factory, source_unit: str,
                                                         schedule: dict[str, Any], unit: str | None,
                                                         measure: str | None, total_steps: int | None) -> None:
    from rtpo_data.cuts import CutUnit, narrows

    if unit is not None and not narrows(CutUnit.parse(source_unit), CutUnit.parse(unit)):
        with pytest.raises(ConfigError, match=re.escape(f"Build with --unit {unit} instead")):
            reschedule(parents[source_unit], tmp_path_factory.mktemp("refused") / "cur", unit=unit)
        return
    changes = {**schedule, **{k: v for k, v in (("unit", unit), ("measure", measure)) if v is not None}}
    if total_steps is not None:
        changes["total_steps"] = total_steps
    work = tmp_path_factory.mktemp("r")
    child = work / "child"
    reschedule(parents[source_unit], child, **changes)
    # The same options given to a build: the parent's, with the schedule replaced when one is given.
    options = {"unit": source_unit, "total_steps": 300, "schedule": "cosine", "stages": 6}
    if schedule:
        options = {"unit": source_unit, "total_steps": 300}
    _same_as_build(child, _build(work / "built", **{**options, **changes}))


def test_shards_of_a_source_with_dropped_rows_end_where_the_builds_do(tmp_path: Path) -> None:
    """A build's shards are fixed ranges of source rows, so dropped rows leave them unequal: the new
    cut shards (and rewritten row shards) end where the parent's row shards end, as a build's do."""
    rows = [json.loads(line) for line in Path(EXAMPLE).read_text().splitlines()]
    for i in (3, 4, 15):
        rows[i]["question"] = ""
    src = tmp_path / "dropped.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parent = _build(tmp_path / "parent", source=str(src), unit="word")
    assert [s["rows"] for s in _manifest(parent)["shards"]["rows"]] == [8, 9, 4]
    for unit in ("word", "line"):
        child = tmp_path / f"child-{unit}"
        reschedule(parent, child, stages=3, unit=unit)
        _same_as_build(child, _build(tmp_path / f"built-{unit}", source=str(src), unit=unit, stages=3))


def test_result_opens_renders_and_verifies(parents: dict[str, Path], tmp_path: Path) -> None:
    child = tmp_path / "child"
    reschedule(parents["token"], child, schedule="linear", stages=4, unit="sentence")
    built = _build(tmp_path / "built", schedule="linear", stages=4, unit="sentence", total_steps=300)
    a, b = Curriculum.open(child), Curriculum.open(built)
    rows = list(range(len(a)))
    for stage in range(a.num_stages):
        assert a.render(rows, stage) == b.render(rows, stage)
        assert a.render(rows, stage, "ids") == b.render(rows, stage, "ids")
    assert verify(child).ok


def test_row_shards_are_hard_links_that_outlive_the_parent(tmp_path: Path) -> None:
    parent = _build(tmp_path / "parent", unit="word")
    child = tmp_path / "child"
    result = reschedule(parent, child, stages=3)
    assert result.manifest.parent["rows"] == "linked"
    assert result.manifest.parent["fingerprint"] == Curriculum.open(parent).fingerprint
    for info in result.manifest.shards["rows"]:
        assert os.stat(child / info["name"]).st_ino == os.stat(parent / info["name"]).st_ino
    expected = Curriculum.open(child).render(range(5), 1)
    shutil.rmtree(parent)
    assert Curriculum.open(child).render(range(5), 1) == expected
    assert verify(child).ok


def test_across_filesystems_the_parent_is_referenced_and_its_loss_detected(tmp_path: Path, monkeypatch) -> None:
    parent = _build(tmp_path / "parent", unit="word")

    def no_links(src: Any, dst: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    child = tmp_path / "child"
    result = reschedule(parent, child, stages=3)
    assert result.manifest.parent["rows"] == "referenced"
    assert not list(child.glob("rows-*"))
    assert verify(child).ok
    # A parent shard changed in place (same size): the checksums name it.
    shard = parent / result.manifest.shards["rows"][0]["name"]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = verify(child)
    assert not report.ok and "sha256 differs" in str(report.to_dict())
    # The parent deleted: opening says so, and what to do.
    shutil.rmtree(parent)
    with pytest.raises(ArtifactError, match="parent curriculum was moved or deleted"):
        Curriculum.open(child)
    assert "moved or deleted" in str(verify(child).to_dict())


def test_refuses_what_needs_tokenizing(parents: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ConfigError) as info:
        reschedule(parents["word"], tmp_path / "c", placement="user", answer_format="boxed", stages=3)
    message = str(info.value)
    assert "placement" in message and "answer_format" in message and "build with it instead" in message
    with pytest.raises(ConfigError, match="was cut on 'word' boundaries.*Build with --unit token"):
        reschedule(parents["word"], tmp_path / "c", unit="token")
    # Another tokenizer (none of this curriculum's is remembered on this machine): refused.
    monkeypatch.setenv("RTPO_DATA_CACHE", str(tmp_path / "empty-cache"))
    other = make_tokenizer(tmp_path / "other")
    with pytest.raises(RtpoDataError, match="not the one .* was built with"):
        reschedule(parents["word"], tmp_path / "c", tokenizer=other, stages=3)
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.incomplete").exists()


def test_without_a_remembered_tokenizer_it_loads_the_built_one(parents: dict[str, Path], tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.setenv("RTPO_DATA_CACHE", str(tmp_path / "empty-cache"))
    child = reschedule(parents["word"], tmp_path / "c", stages=3).path
    assert _manifest(child)["checks"]["sample_prompts"] == 24
    assert list((tmp_path / "empty-cache" / "backends").glob("*.json"))  # remembered for next time


def test_output_rules(parents: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(RtpoDataError, match="another folder"):
        reschedule(parents["word"], parents["word"], stages=3)
    (tmp_path / "taken").mkdir()
    with pytest.raises(RtpoDataError, match="Pass --overwrite"):
        reschedule(parents["word"], tmp_path / "taken", stages=3)
    # Interrupted while writing: nothing is left that looks like a curriculum.
    from rtpo_data import reschedule as module

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "cuts_from_boundaries", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reschedule(parents["word"], tmp_path / "new", stages=3)
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.incomplete").exists()


def test_command_line(parents: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["reschedule", str(parents["token"]), "--out", str(tmp_path / "c"), "--schedule",
                                 "staged", "--fractions", "1,0.5,0", "--unit", "line"])
    assert result.exit_code == 0, result.output
    assert "Rescheduled" in result.output and "nothing tokenized" in result.output
    assert Curriculum.open(tmp_path / "c").stage_fractions == [1.0, 0.5, 0.0]
    result = runner.invoke(app, ["reschedule", str(parents["token"]), "--out", str(tmp_path / "d"), "--placement", "user"])
    assert result.exit_code == 2 and "No such option: --placement" in result.output
    result = runner.invoke(app, ["reschedule", str(parents["word"]), "--out", str(tmp_path / "d"), "--unit", "token"])
    assert result.exit_code == 1 and "Build with --unit token" in result.output
    result = runner.invoke(app, ["reschedule", str(parents["word"]), "--stages", "3"])
    assert result.exit_code == 1 and "reschedule needs --out" in result.output
