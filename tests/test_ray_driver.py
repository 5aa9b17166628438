"""The Ray engine's driver (rtpo_data/ray_build.py) without a cluster: its calls to Ray answered in
this process by :class:`InlineRay`, which runs every actor call when it is made and reports the
newest call done first. Every shard is then built before any is taken, not knowing what the shards
before it decide, so the driver must build again each shard that an earlier one changes: the
result is still the local build, byte for byte, whatever order shards finish in. (tests/test_build_ray.py
runs the engine on a real Ray cluster, where that order depends on timing.)"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest

from rtpo_data import BuildConfig, build, ray_build

from helpers import SHARDED, sharded_rows, write_jsonl


class _Ref:
    def __init__(self, method: str, call: Any) -> None:
        self.method = method
        try:
            self.value, self.error = call(), None
        except Exception as exc:  # raised again by get(), as Ray does
            self.value, self.error = None, exc


class _Handle:
    """An actor: ``handle.method.remote(*args)`` runs ``method`` now and returns its result's ref."""

    def __init__(self, ray: InlineRay, obj: Any) -> None:
        self._ray, self._obj = ray, obj

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._obj, name)

        class _Method:
            @staticmethod
            def remote(*args: Any) -> _Ref:
                self._ray.calls[name].append(args)
                return _Ref(name, lambda: method(*args))

        return _Method


class InlineRay:
    """What the driver calls of the ``ray`` module, answered in this process. ``wait`` reports
    workers ready first, then the newest call: every worker gets a shard before any shard is taken,
    and shards finish last to first."""

    class exceptions:  # noqa: N801 (the module's name in Ray)
        RayActorError = type("RayActorError", (Exception,), {})
        RayTaskError = type("RayTaskError", (Exception,), {})

    def __init__(self, cpus: int) -> None:
        self.cpus = cpus
        self.calls: dict[str, list[tuple]] = collections.defaultdict(list)

    def is_initialized(self) -> bool:
        return True

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": float(self.cpus)}

    def remote(self, **options: Any) -> Any:
        ray = self

        class _Class:
            def __init__(self, cls: type) -> None:
                self.cls = cls

            def remote(self, *args: Any) -> _Handle:
                return _Handle(ray, self.cls(*args))

        return _Class

    def wait(self, refs: list[_Ref], num_returns: int = 1, timeout: float | None = None) -> tuple[list, list]:
        started = [ref for ref in refs if ref.method == "ready"]
        done = started[:1] or refs[-1:]
        return done, [ref for ref in refs if ref not in done]

    def get(self, ref: _Ref, timeout: float | None = None) -> Any:
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, actor: Any) -> None:
        pass


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("src") / "rows.jsonl", sharded_rows())


def _manifest(out: Path) -> dict:
    data = json.loads((out / "manifest.json").read_text())
    for key in ("build_seconds", "created_at"):
        data.pop(key)
    for key in ("out", "engine", "workers", "ray_address"):
        data["config"].pop(key)
    return data


def test_shards_finished_out_of_order_are_built_again_with_what_came_before(source: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    build(BuildConfig(source=str(source), out=str(tmp_path / "local"), **SHARDED), progress=False)
    ray = InlineRay(cpus=5)  # one worker per shard: all five are built at once
    monkeypatch.setattr(ray_build, "import_ray", lambda: ray)
    build(BuildConfig(source=str(source), out=str(tmp_path / "ray"), engine="ray", **SHARDED), progress=False)
    assert _manifest(tmp_path / "ray") == _manifest(tmp_path / "local")
    built = collections.Counter(job.index for job, *_ in ray.calls["build"])
    # shard 1 and 4: their kept column was typed by their own first batch (numbers), not the build's
    # (text); shard 2 as well, and it holds a row whose id is shard 0's; shard 3 keeps no row
    assert built == {0: 1, 1: 2, 2: 2, 3: 1, 4: 2}
    rebuilt_2 = [args for args in ray.calls["build"] if args[0].index == 2][-1]
    assert rebuilt_2[2] == {44} and rebuilt_2[3].field("meta").type == "string"


def test_one_worker_builds_the_shards_in_order(source: Path, tmp_path: Path, monkeypatch) -> None:
    ray = InlineRay(cpus=1)
    monkeypatch.setattr(ray_build, "import_ray", lambda: ray)
    build(BuildConfig(source=str(source), out=str(tmp_path / "ray"), engine="ray", **SHARDED), progress=False)
    # Each shard is handed out knowing the kept columns' types; a row id repeated from an earlier
    # shard only the driver can see (it keeps the ids), so shard 2 is built again knowing row 44's.
    assert [(args[0].index, args[2]) for args in ray.calls["build"]] == [
        (0, set()), (1, set()), (2, set()), (2, {44}), (3, set()), (4, set())]


def test_a_worker_that_cannot_load_the_tokenizer_is_named(source: Path, tmp_path: Path, monkeypatch) -> None:
    from rtpo_data.errors import RtpoDataError

    class NoTokenizerHere:
        def __init__(self, *args: Any) -> None:
            raise RtpoDataError("Cannot load tokenizer '/models/qwen': no such folder.")

    ray = InlineRay(cpus=2)
    monkeypatch.setattr(ray_build, "import_ray", lambda: ray)
    monkeypatch.setattr(ray_build, "BatchProcessor", NoTokenizerHere)  # in the workers only: the driver's loads
    out = tmp_path / "ray"
    with pytest.raises(RtpoDataError, match=r"^A Ray worker could not load the tokenizer: Cannot load tokenizer "
                                            r"'/models/qwen': no such folder\. Every worker loads 'offline:qwen3' "
                                            r"itself: it must be installed or reachable on every node\.$"):
        build(BuildConfig(source=str(source), out=str(out), engine="ray", **SHARDED), progress=False)
    assert not out.exists() and not out.with_name("ray.incomplete").exists()
