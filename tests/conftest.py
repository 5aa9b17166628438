"""Hermetic test setup (nothing is fetched from a model hub, and caches live under the test's tmp dir)
and the curricula several test modules share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import LEAKY, gsm8k_rows, mixed_rows, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("caches")
    os.environ["RTPO_DATA_CACHE"] = str(root / "rtpo-data")
    os.environ["HF_DATASETS_CACHE"] = str(root / "datasets")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The render methods of earlier releases still work, with a FutureWarning naming their
    # replacement; the tests use the current names, so such a warning is an error in any test (the
    # one test of the old names catches them with pytest.warns).
    for item in items:
        item.add_marker(pytest.mark.filterwarnings(r"error:Curriculum\.\w+ is deprecated:FutureWarning"))


@pytest.fixture(scope="session")
def qwen3():
    from rtpo_data.tokenizer import load_tokenizer

    return load_tokenizer("offline:qwen3")


def has_openrlhf() -> bool:
    import importlib.util

    try:  # a submodule, so the tests/openrlhf folder itself never passes for the package
        return importlib.util.find_spec("openrlhf.cli.train_ppo_ray") is not None
    except (ImportError, ValueError):
        return False


# OpenRLHF's tests run in their own environment (scripts/test_openrlhf.sh); without it, skip the folder.
collect_ignore = [] if has_openrlhf() else ["openrlhf"]


def has_verl() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("verl.trainer.ppo.v1") is not None
    except (ImportError, ValueError):
        return False


# verl's tests run in their own environment too (scripts/test_verl.sh).
if not has_verl():
    collect_ignore.append("verl")


# -- curricula shared by several test modules -----------------------------------------------------------


@pytest.fixture(scope="session")
def gsm8k_file(tmp_path_factory) -> Path:
    """The real GSM8K test set (1,319 rows) as a jsonl source, the gold answer in a column ``gold``."""
    path = tmp_path_factory.mktemp("gsm8k") / "gsm8k_test.jsonl"
    rows = [{"id": r["id"], "question": r["question"], "solution": r["answer"], "gold": r["short_answer"]} for r in gsm8k_rows()]
    return write_jsonl(path, rows)


@pytest.fixture(scope="session")
def gsm8k_curriculum(gsm8k_file, tmp_path_factory):
    """GSM8K built with Qwen3: 8 stages over 100 steps, 3 shards, ``gold`` kept."""
    from rtpo_data import BuildConfig, Curriculum, build

    out = tmp_path_factory.mktemp("cur") / "gsm8k"
    build(BuildConfig(source=str(gsm8k_file), out=str(out), tokenizer="offline:qwen3", keep_columns=("gold",),
                      total_steps=100, shard_rows=500))
    return Curriculum.open(out)


@pytest.fixture(scope="session", params=["assistant", "user"])
def curriculum(request, tmp_path_factory):
    """97 rows of :func:`helpers.mixed_rows` in 5 shards of several record batches each, 5 stages over
    50 steps, with the hint in the assistant turn or in the user turn."""
    from rtpo_data import BuildConfig, Curriculum, artifact, build

    tmp = tmp_path_factory.mktemp("view")
    src = write_jsonl(tmp / "rows.jsonl", mixed_rows(97))
    # 7-row tokenization batches written as they come, and 20-row shards: 5 shards of several record
    # batches each (a real build gathers rows into batches of 64 MB)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(artifact, "RECORD_BATCH_BYTES", 1)
        build(BuildConfig(source=str(src), out=str(tmp / "cur"), tokenizer="offline:qwen3", stages=5, total_steps=50,
                          placement=request.param, batch_size=7, shard_rows=20, unit="word"), progress=False)
    cur = Curriculum.open(tmp / "cur")
    assert len(cur.manifest["shards"]["rows"]) == 5 and cur.table().column("trace").num_chunks > 5
    return cur


@pytest.fixture(scope="session")
def leaky_builds(tmp_path_factory) -> dict:
    """:data:`helpers.LEAKY` built with each ``--on-leak`` (keep, trim, drop): their build results."""
    from rtpo_data import BuildConfig, build

    tmp = tmp_path_factory.mktemp("leaks")
    src = write_jsonl(tmp / "leaky.jsonl", LEAKY)
    return {mode: build(BuildConfig(source=str(src), out=str(tmp / mode), tokenizer="offline:qwen3", unit="line",
                                    stages=4, on_leak=mode), progress=False) for mode in ("keep", "trim", "drop")}

