"""The Ray engine (rtpo_data/ray_build.py) on a local Ray cluster: the local build's artifact byte for
byte from jsonl and parquet sources (dropped rows, duplicate ids across shards, a shard that keeps
nothing, kept columns typed by the first batch), a bad row named with its shard, a worker killed
mid-shard (built again, once), a worker that keeps dying, and a driver killed mid-build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from rtpo_data import ArtifactError, BuildConfig, Curriculum, RtpoDataError, build
from rtpo_data.artifact import sha256_file
from rtpo_data.ray_build import CRASH_FILE_ENV
from rtpo_data.verify import verify

from helpers import SHARDED, mixed_rows, sharded_rows, write_jsonl

# One cluster for the module; under xdist, scripts/test.sh keeps the module on one worker (--dist loadgroup).
pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-CPU Ray cluster started here; its workers end their process when the crash file says so."""
    crash = tmp_path_factory.mktemp("crash") / "crash.json"
    address = os.environ.pop("RAY_ADDRESS", None)  # never a cluster of the machine's
    if ray.is_initialized():  # left connected by another test module
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 << 20, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false", CRASH_FILE_ENV: str(crash)}})
    yield {"crash": crash, "address": ray.get_runtime_context().gcs_address}
    ray.shutdown()
    if address is not None:
        os.environ["RAY_ADDRESS"] = address


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("sources")
    rows = sharded_rows()
    parquet = folder / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=7)  # row groups across shard starts
    return {"jsonl": write_jsonl(folder / "rows.jsonl", rows), "parquet": parquet}


# parquet is read up to a limit that ends inside shard 4
EXTRA = {"jsonl": {}, "parquet": {"limit": 90}}


@pytest.fixture(scope="module")
def local_builds(sources, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("local")
    for kind, src in sources.items():
        build(BuildConfig(source=str(src), out=str(out / kind), **SHARDED, **EXTRA[kind]), progress=False)
    return {kind: out / kind for kind in sources}


def manifest(out: Path) -> dict:
    data = json.loads((out / "manifest.json").read_text())
    for timing in ("build_seconds", "created_at"):
        data.pop(timing)
    for option in ("out", "engine", "ray_address", "workers"):
        data["config"].pop(option)
    return data


def assert_same_curriculum(ray_out: Path, local_out: Path) -> None:
    assert manifest(ray_out) == manifest(local_out)  # stats, checks, dropped rows, shard names and sha256
    for infos in json.loads((ray_out / "manifest.json").read_text())["shards"].values():
        for info in infos:
            assert sha256_file(ray_out / info["name"]) == info["sha256"]
    assert sorted(p.name for p in ray_out.iterdir()) == sorted(p.name for p in local_out.iterdir())


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_ray_builds_the_local_curriculum_byte_for_byte(cluster, sources, local_builds, tmp_path, kind) -> None:
    out = tmp_path / "ray"
    result = build(BuildConfig(source=str(sources[kind]), out=str(out), engine="ray", workers=2, **SHARDED,
                               **EXTRA[kind]), progress=False)
    assert result.manifest.config["engine"] == "ray"
    local = Curriculum.open(local_builds[kind])
    stats = local.manifest.stats
    # what the comparison covers: every reason to drop a row, four shards of five ranges, the sample
    assert stats["rows_dropped"] == {"empty_prompt": 21, "null_trace": 1, "empty_trace": 1, "duplicate_id": 2}
    assert [s["rows"] for s in local.manifest.shards["rows"]] == [19, 18, 18, 20 if kind == "jsonl" else 10]
    assert local.manifest.checks["sample_rows"] == 29 and local.manifest.keep_columns == ["meta"]
    assert local.table().schema.field("meta").type == "string"
    assert_same_curriculum(out, local_builds[kind])
    assert verify(out).ok
    assert not out.with_name("ray.incomplete").exists()


def test_a_bad_row_is_named_with_its_shard(cluster, tmp_path) -> None:
    rows = mixed_rows(60)
    rows[27]["solution"] = None
    src = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "ray"
    with pytest.raises(RtpoDataError, match=r"^shard 1 \(source rows 20-39\): bad.jsonl row 27, column 'solution': "
                                            r"the trace is null \(null_trace\) \(use --on-invalid skip"):
        build(BuildConfig(source=str(src), out=str(out), engine="ray", on_invalid="error", tokenizer="offline:qwen3",
                          shard_rows=20, batch_size=6), progress=False)
    assert not out.exists() and not out.with_name("ray.incomplete").exists()


def test_a_worker_killed_mid_shard_is_replaced_and_its_shard_built_once(cluster, sources, local_builds,
                                                                        tmp_path) -> None:
    cluster["crash"].write_text(json.dumps({"shard": 1, "after_batches": 2}))
    out = tmp_path / "ray"
    build(BuildConfig(source=str(sources["jsonl"]), out=str(out), engine="ray", workers=2, **SHARDED), progress=False)
    assert not cluster["crash"].exists()  # the worker building shard 1 ended its process after 2 batches
    assert_same_curriculum(out, local_builds["jsonl"])
    ids = Curriculum.open(out).table().column("row_id").to_pylist()
    assert len(ids) == len(set(ids)) == 75


def test_a_worker_that_keeps_dying_stops_the_build_naming_shard_and_row(cluster, sources, tmp_path) -> None:
    cluster["crash"].write_text(json.dumps({"shard": 1, "after_batches": 2, "times": 3}))
    out = tmp_path / "ray"
    try:
        with pytest.raises(RtpoDataError, match=r"shard 1 \(source rows 20-39\): its Ray worker died 3 times, the "
                                                r"last time after source row 31 "):
            build(BuildConfig(source=str(sources["jsonl"]), out=str(out), engine="ray", **SHARDED), progress=False)
    finally:
        cluster["crash"].unlink(missing_ok=True)
    assert not out.exists() and not out.with_name("ray.incomplete").exists()


def test_a_driver_killed_mid_build_leaves_nothing_and_a_rerun_succeeds(cluster, tmp_path) -> None:
    src = write_jsonl(tmp_path / "big.jsonl", mixed_rows(4000))
    out = tmp_path / "cur"
    options = ["--tokenizer", "offline:qwen3", "--shard-rows", "100", "--check-sample", "0"]
    # the driver connects to this cluster: killing it ends its job, not the cluster
    cmd = [sys.executable, "-m", "rtpo_data.cli.main", "build", str(src), "--out", str(out), *options,
           "--engine", "ray", "--ray-address", cluster["address"]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    incomplete = out.with_name("cur.incomplete")
    while not list(incomplete.glob(".shards-*/00000-1")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)  # until the first shard is being built
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert incomplete.exists() and not out.exists()
    with pytest.raises(ArtifactError, match="did not finish"):
        Curriculum.open(out)
    result = build(BuildConfig(source=str(src), out=str(out), tokenizer="offline:qwen3", shard_rows=100, check_sample=0,
                               engine="ray"), progress=False)
    assert result.stats["rows_read"] == 4000 and len(result.manifest.shards["rows"]) == 40
    assert verify(out).ok and not incomplete.exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
