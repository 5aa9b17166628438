"""Reliability: no half-written curricula (SIGKILL and Ctrl-C at random moments), one winner when
builds race, damaged files named on open and by --verify, every bad input answered clearly, and
fuzzed sources that either build exact curricula or fail with a clear error."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
        proc = subprocess.Popen(_build_cmd(big_source, out, "--stages", "5", "--overwrite"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep((quarter + rng.random()) / 4 * full)
        if proc.poll() is None:
            proc.send_signal(sig)
            kills += 1
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
        subprocess.run(_build_cmd(big_source, out, "--stages", "3", "--overwrite"), check=True, capture_output=True)
    assert kills >= 2 and (sig != signal.SIGINT or said >= 1)
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


# ---------------------------------------------------------------------------------------------
# The catalogue of bad inputs (docs/bad-inputs.md lists each with its message)
# ---------------------------------------------------------------------------------------------


def _one(tmp_path: Path, rows: list[dict], **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = write_jsonl(tmp_path / "d.jsonl", rows)
    return build(BuildConfig(source=str(src), out=str(tmp_path / "cur"), tokenizer=kw.pop("tokenizer", "offline:qwen3"), **kw))


def test_wrong_types_nulls_and_empty_strings_are_counted(tmp_path: Path) -> None:
    rows = [{"question": "ok?", "solution": "Fine. #### 2"}, {"question": "q", "solution": 42}, {"question": {"a": 1}, "solution": "x"},
            {"question": None, "solution": "x"}, {"question": "q", "solution": None}, {"question": "   ", "solution": "x"}]
    stats = _one(tmp_path, rows).stats
    assert stats["rows_kept"] == 1
    assert stats["rows_dropped"] == {"non_text_trace": 1, "non_text_prompt": 1, "null_prompt": 1, "null_trace": 1, "empty_prompt": 1}


def test_crlf_traces_and_mixed_chat_and_plain_prompts(tmp_path: Path) -> None:
    rows = [{"question": "Plain?", "solution": "Line one.\r\nLine two.\r\n#### 5"},
            {"question": [{"role": "user", "content": "Chat?"}], "solution": "Step.\r\nMore.\r\n#### 6"}]
    res = _one(tmp_path, rows, unit="line", stages=3)
    cur = Curriculum.open(res.path)
    assert cur.trace(0) == "Line one.\r\nLine two." and cur.hint(0, 1) == "Line one.\r\n"
    assert "Chat?" in cur.prompt(1, 0) and verify(res.path).ok


def test_messages_missing_role_and_duplicate_ids(tmp_path: Path) -> None:
    rows = [{"id": 7, "question": [{"content": "no role"}], "solution": "x"}, {"id": 8, "question": "a?", "solution": "A. #### 1"},
            {"id": 8, "question": "b?", "solution": "B. #### 2"}]
    stats = _one(tmp_path, rows).stats
    assert stats["rows_dropped"] == {"bad_messages": 1, "duplicate_id": 1} and stats["rows_kept"] == 1
    with pytest.raises(RtpoDataError, match="row 1: id column 'id' repeats"):
        _one(tmp_path / "e", rows[1:], on_invalid="error")


def test_traces_without_answer_marker_are_kept_whole(tmp_path: Path) -> None:
    res = _one(tmp_path, [{"question": "q?", "solution": "Just reasoning, no final line."}])
    assert res.stats["answer_split"] == {"none": 1} and res.stats["answers_derived"] == 0
    assert Curriculum.open(res.path).answer(0) is None


def test_template_that_raises(tmp_path: Path) -> None:
    template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}{{ messages[0]['content'] }}"
    tok = make_tokenizer(tmp_path / "tok", template=template)
    with pytest.raises(RtpoDataError, match="chat template .* failed on row 0: .*no system role"):
        _one(tmp_path, [{"question": "q?", "solution": "x. #### 1"}], tokenizer=tok, system_prompt="Be brief.")


def test_schedule_that_never_empties_is_warned(tmp_path: Path) -> None:
    res = _one(tmp_path, [{"question": "q?", "solution": "A b c d. #### 1"}], schedule="constant", value=0.5)
    assert res.manifest["schedule"]["warnings"] and "ends at 0.5" in " ".join(res.manifest["schedule"]["warnings"])


def test_more_stages_than_tokens(tmp_path: Path) -> None:
    res = _one(tmp_path, [{"question": "q?", "solution": "Two words. #### 1"}], stages=12, unit="token")
    cur = Curriculum.open(res.path)
    hints = [cur.cut(0, s)[0] for s in range(12)]
    assert hints[0] == cur.trace_tokens([0])[0] < 12  # fewer tokens than stages: cuts repeat
    assert hints == sorted(hints, reverse=True) and hints[-1] == 0 and verify(res.path).ok


def test_enormous_row(tmp_path: Path) -> None:
    trace = "\n".join(f"Step {i}: we add {i} and {i + 1} to get {2 * i + 1}." for i in range(12_000))  # ~200k tokens
    res = _one(tmp_path, [{"question": "Sum?", "solution": trace + "\n#### 7"}], unit="line")
    assert res.stats["trace_tokens"]["max"] > 150_000
    cur = Curriculum.open(res.path)
    assert cur.trace(0).startswith(cur.hint(0, 3)) and cur.hint(0, 3).endswith("\n")


# ---------------------------------------------------------------------------------------------
# Fuzzing: build + view over random rows either works exactly or fails clearly
# ---------------------------------------------------------------------------------------------

PIECES = ["Step 1: ", "x = 3.", " ", "\n", "\r\n", "\n\n", "word", "≡", "🙂", "日本", "42", "\\boxed{7}", "#### 9",
          "<think>", "</think>", "$x$", "\t", "é"]
text = st.lists(st.sampled_from(PIECES), max_size=25).map("".join)
prompt = st.one_of(text, st.none(), st.integers(), st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": text}), max_size=2))
row = st.fixed_dictionaries({"question": prompt, "solution": st.one_of(text, st.none())})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=6), unit=st.sampled_from(["token", "word", "line", "sentence", "paragraph"]),
       placement=st.sampled_from(["assistant", "user", "none"]), stages=st.integers(2, 6))
def test_fuzz_build_and_view(tmp_path_factory, qwen3, rows, unit, placement, stages) -> None:
    tmp = tmp_path_factory.mktemp("fz")
    src = write_jsonl(tmp / "f.jsonl", rows)
    try:
        build(BuildConfig(source=str(src), out=str(tmp / "cur"), tokenizer="offline:qwen3", unit=unit,
                          placement=placement, stages=stages, check_sample=0), progress=False)
    except RtpoDataError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return
    report = verify(tmp / "cur", tokenizer=qwen3)
    by = {c.name: c for c in report.checks}
    assert by["invariants"].ok and by["token_exact"].ok and by["checksums"].ok, report.to_dict()
    cur = Curriculum.open(tmp / "cur")
    for i in range(len(cur)):
        for s in range(stages):
            assert cur.trace(i).startswith(cur.hint(i, s))


def test_slow_tokenizer_is_refused(tmp_path: Path) -> None:
    from transformers import CTRLTokenizer  # a tokenizer transformers still implements in Python only

    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2, "<unk>": 3}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    CTRLTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")).save_pretrained(tmp_path / "slow")
    with pytest.raises(RtpoDataError, match="is a slow \\(Python\\) tokenizer"):
        _one(tmp_path / "b", [{"question": "ab?", "solution": "ab. #### 1"}], tokenizer=str(tmp_path / "slow"))
