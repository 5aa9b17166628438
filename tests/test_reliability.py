"""Reliability of builds: no half-written curricula (SIGKILL and Ctrl-C at random moments, a crash
at every write point), and one winner when builds race."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtpo_data import ArtifactError, BuildConfig, Curriculum, RtpoDataError, build
from rtpo_data.verify import verify

from helpers import gsm8k_rows, make_tokenizer, write_jsonl

CLI = [sys.executable, "-m", "rtpo_data.cli.main"]


@pytest.fixture(scope="module")
def big_source(tmp_path_factory) -> Path:
    rows = [{"id": f"{k}-{r['id']}", "question": r["question"], "solution": r["answer"]} for k in range(3) for r in gsm8k_rows()]
    return write_jsonl(tmp_path_factory.mktemp("src") / "gsm8k_x3.jsonl", rows)


def _build_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [*CLI, "build", str(src), "--out", str(out), "--tokenizer", "offline:qwen3", "--batch-size", "64",
            "--shard-rows", "500", "--check-sample", "0", *extra]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _stages(manifest: dict) -> int:
    return len(manifest["schedule"]["stage_fractions"])


def _complete(out: Path) -> bool:
    report = verify(out)
    return {c.name: c.ok for c in report.checks}.get("checksums", False) and report.ok


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_builds_leave_old_or_nothing(big_source: Path, tmp_path: Path, sig: int) -> None:
    out = tmp_path / "cur"
    t0 = time.perf_counter()
    subprocess.run(_build_cmd(big_source, out, "--stages", "3"), check=True, capture_output=True)
    full = time.perf_counter() - t0
    old = _manifest(out)
    rng = random.Random(int(sig))
    kills = said = 0
    for quarter in range(4):  # one kill at a random moment in each quarter of a build's time
        delay = (quarter + rng.random()) / 4 * full
        killed = False
        while not killed:  # a build that ran faster than the first one is tried again, killed sooner
            proc = subprocess.Popen(_build_cmd(big_source, out, "--stages", "5", "--overwrite"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(sig)
                kills += 1
                killed = True
            delay /= 2
            stdout, stderr = proc.communicate(timeout=120)
            # The output is the old complete curriculum or the new complete one: never a partial one.
            assert out.is_dir()
            m = _manifest(out)
            assert _stages(m) in (3, 5) and Curriculum.open(out).manifest["num_rows"] == old["num_rows"]
            if _stages(m) == 5:
                old = m
            if sig == signal.SIGINT and b"Interrupted" in stderr:
                # Ctrl-C inside the build command: it says so, exits 130 and leaves nothing behind.
                assert b"nothing was written" in stderr and proc.returncode == 130, (proc.returncode, stderr[-2000:])
                assert not out.with_name("cur.incomplete").exists()
                said += 1
            elif sig == signal.SIGINT:
                # Otherwise the build had finished (0, the new curriculum), or Python was still importing
                # the command line (-2, Python's own exit on Ctrl-C) or Typer was parsing it (130).
                assert proc.returncode in (0, 130, -signal.SIGINT), (proc.returncode, stderr[-2000:])
                assert proc.returncode != 0 or _stages(m) == 5
            # Put the 3-stage curriculum back for the next round.
            subprocess.run(_build_cmd(big_source, out, "--stages", "3", "--overwrite"), check=True,
                           capture_output=True)
    assert kills == 4 and (sig != signal.SIGINT or said >= 1)
    assert _complete(out)


def _build_with(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    """Run ``rtpo-data build`` on a one-row source through ``script``, a CLI entry point that
    prepares an interrupt and then runs the app."""
    src = write_jsonl(tmp_path / "rows.jsonl", [{"question": "q?", "solution": "Yes. #### 1"}])
    (tmp_path / "interrupted_cli.py").write_text(script)
    return subprocess.run([sys.executable, "-m", "interrupted_cli", "build", str(src), "--out", str(tmp_path / "cur"),
                           "--tokenizer", "offline:qwen3"], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def _assert_stopped_cleanly(proc: subprocess.CompletedProcess, out: Path) -> None:
    """What a user sees after a Ctrl-C in a build: the message, exit status 130, no curriculum."""
    assert proc.returncode == 130, proc.stderr
    assert "Interrupted: nothing was written." in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_ctrl_c_surfacing_through_a_string_exec_still_exits_130(tmp_path: Path) -> None:
    """CPython marks a KeyboardInterrupt that leaves ``exec(str)`` as unhandled even when it is
    caught, and under ``python -m`` then dies of SIGINT (-2) instead of the exit status chosen. A
    build interrupted while ``transformers`` imports lazily (``dataclasses`` runs ``exec(str)``)
    hit this now and then; here the interrupt is placed there on purpose."""
    script = (
        "import importlib\n"
        "def build(*args, **kwargs):\n"
        "    exec('raise KeyboardInterrupt', {})\n"
        "importlib.import_module('rtpo_data.build').build = build\n"
        "from rtpo_data.cli.main import app\n"
        "app()\n"
    )
    proc = _build_with(tmp_path, script)
    _assert_stopped_cleanly(proc, tmp_path / "cur")


def test_ctrl_c_while_the_tokenizer_loads_is_held_until_it_has_loaded(tmp_path: Path) -> None:
    """Loading the tokenizer imports torch (through transformers), and a KeyboardInterrupt raised
    while torch's C++ code runs Python aborts the process (SIGABRT, no message) instead of stopping
    it. So a Ctrl-C during loading is held and raised once loading is over: the build stops with its
    message and exit status 130, and loading was never cut short. The abort itself cannot be staged
    without torch's internals; here the Ctrl-C arrives at a known point inside loading."""
    loaded = tmp_path / "loaded"
    script = (
        "import signal, transformers\n"
        "original = transformers.AutoTokenizer.from_pretrained\n"
        "def from_pretrained(*args, **kwargs):\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "    tok = original(*args, **kwargs)\n"
        f"    open({str(loaded)!r}, 'w').close()\n"
        "    return tok\n"
        "transformers.AutoTokenizer.from_pretrained = from_pretrained\n"
        "from rtpo_data.cli.main import app\n"
        "app()\n"
    )
    proc = _build_with(tmp_path, script)
    assert loaded.exists(), "the Ctrl-C was raised inside tokenizer loading, not after it"
    _assert_stopped_cleanly(proc, tmp_path / "cur")


@pytest.mark.slow
def test_first_build_killed_leaves_no_curriculum_and_rerun_cleans_up(big_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "cur"
    proc = subprocess.Popen(_build_cmd(big_source, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not out.with_name("cur.incomplete").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.kill()
    proc.communicate()
    assert not out.exists()
    with pytest.raises(ArtifactError, match="did not finish"):
        Curriculum.open(out)
    rerun = subprocess.run([*CLI, "--verbose", *_build_cmd(big_source, out)[len(CLI):]], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "left over by a build that did not finish" in rerun.stderr
    assert not out.with_name("cur.incomplete").exists() and _complete(out)


# Every place a build touches the disk, in order: a crash just before any of them must leave the old
# curriculum (or nothing) at the output, never a partial one.
_WRITE_POINTS = [
    ("rtpo_data.artifact", "ShardWriter", "write"),
    ("rtpo_data.artifact", "HashingFile", "__init__"),  # a shard file is created
    ("rtpo_data.artifact", "HashingFile", "write"),
    ("rtpo_data.artifact", "ShardWriter", "finish"),
    ("rtpo_data.artifact", "HashingFile", "close"),
    ("rtpo_data.build", None, "write_manifest"),
    ("rtpo_data.build", None, "publish"),
    ("rtpo_data.artifact", None, "swap_dirs"),
    ("os", None, "rename"),
]


class _Crash(BaseException):
    pass


def _crash_at(monkeypatch, point: int, crash) -> list[str]:
    """Make the ``point``-th write point (1-based; 0 = none) call ``crash``; returns the points seen."""
    import importlib

    seen: list[str] = []
    for module, owner, name in _WRITE_POINTS:
        target = importlib.import_module(module)
        target = getattr(target, owner) if owner else target
        original = getattr(target, name)

        label = f"{owner or module.rsplit('.', 1)[-1]}.{name}"

        def wrapped(*args, _original=original, _name=label, **kwargs):
            seen.append(_name)
            if len(seen) == point:
                crash()
            return _original(*args, **kwargs)

        monkeypatch.setattr(target, name, wrapped)
    return seen


def test_a_crash_at_every_write_point_leaves_the_old_curriculum(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C (KeyboardInterrupt, cleanup runs) and a hard kill (``os._exit`` in a forked child: no
    cleanup at all, as SIGKILL) before each disk operation of an ``--overwrite`` build, one by one."""
    tok = make_tokenizer(tmp_path / "tok")
    rows = [{"id": f"r{i}", "question": f"What is {i} + {i}?", "solution": f"Add them. {i} + {i} = {2 * i}. #### {2 * i}"}
            for i in range(60)]
    src = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "cur"

    def config(stages: int) -> BuildConfig:
        return BuildConfig(source=str(src), out=str(out), tokenizer=tok, stages=stages, batch_size=8, shard_rows=20,
                           overwrite=True, check_sample=0)

    build(config(3), progress=False)
    old = _manifest(out)
    with monkeypatch.context() as m:
        points = _crash_at(m, 0, lambda: None)
        build(config(5), progress=False)
        total = list(points)
    assert len(total) > 30 and {"build.write_manifest", "build.publish", "os.rename"} <= set(total)
    build(config(3), progress=False)
    old = _manifest(out)

    def interrupt() -> None:
        raise KeyboardInterrupt

    for point in range(1, len(total) + 1):
        where = (point, total[point - 1])
        with monkeypatch.context() as m:  # Ctrl-C: the build cleans up after itself
            _crash_at(m, point, interrupt)
            with pytest.raises(KeyboardInterrupt):
                build(config(5), progress=False)
        assert not out.with_name("cur.incomplete").exists(), where
        assert _manifest(out) == old and Curriculum.open(out).num_stages == 3, where
        pid = os.fork()
        if pid == 0:  # the child dies at the point without running any cleanup, as under SIGKILL
            try:
                with monkeypatch.context() as m:
                    _crash_at(m, point, lambda: os._exit(137))
                    build(config(5), progress=False)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 137, where
        assert _manifest(out) == old and Curriculum.open(out).num_stages == 3, where
    # after the last kill, a rerun succeeds and removes what the dead build left behind
    build(config(5), progress=False)
    assert _stages(_manifest(out)) == 5 and _complete(out)
    assert not out.with_name("cur.incomplete").exists()


def test_concurrent_builds_one_wins(big_source: Path, tmp_path: Path) -> None:
    from rtpo_data.artifact import exclusive_build

    src = write_jsonl(tmp_path / "s.jsonl", [{"question": "q?", "solution": "Yes. #### 1"}])
    out = tmp_path / "cur"
    with exclusive_build(out), pytest.raises(RtpoDataError, match="Another build is writing"):
        build(BuildConfig(source=str(src), out=str(out), tokenizer="offline:qwen3"))
    procs = [subprocess.Popen(_build_cmd(big_source, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "Another build is writing" in loser or "already exists" in loser
    assert _complete(out)
