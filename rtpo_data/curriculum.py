"""``Curriculum``: the built artifact, opened for random access by (row, stage) or (row, step).

Opening memory-maps the shards (nothing is copied, whatever the number of rows); rendering a prompt
is string concatenation and slicing by stored offsets, never tokenizing or decoding (the formula is
in :mod:`rtpo_data.render`). The public surface::

    cur = Curriculum.open(path)
    cur.stage_at(step, total_steps)        # the schedule's clock (cur.clock(total_steps) for more)
    cur.prompt(i, stage)                   # one row: text, exact ids and hint, a few microseconds
    cur.prompt_ids(i, stage)
    cur.hint(i, stage)
    cur.render(rows, stages, output)       # a batch; stages: one, one per row, or None (no hint)
    cur.view(step) / cur.eval_view()       # every row as a datasets.Dataset
    cur.cut / cuts / hint_tokens / lengths / longest_prompt_tokens / table / value   # what is stored

A ``Curriculum`` pickles as its path and reopens its memory maps on the other side, so it can be
handed to dataloader workers, Ray actors and other processes.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from rtpo_data.artifact import TABLES, Manifest, open_shard, read_manifest
from rtpo_data.errors import ArtifactError, RtpoDataError
from rtpo_data.render import OUTPUTS, PromptTable
from rtpo_data.schedule import Clock

if TYPE_CHECKING:
    from rtpo_data.view import CurriculumView

__all__ = ["OUTPUTS", "Curriculum"]

VIEW_OUTPUTS = ("text", "ids", "messages")


class Curriculum(PromptTable):
    """A built curriculum, memory-mapped. See the module docstring for its methods."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path)
        num_stages = self.manifest.num_stages
        self.stage_fractions: list[float] = self.manifest.stage_fractions
        tables: dict[str, list[pa.Table]] = {}
        for name in TABLES:
            infos = self.manifest.shards.get(name, [])
            tables[name] = [self._open_shard(info) for info in infos]
            for table, info in zip(tables[name], infos):
                if table.num_rows != info["rows"]:
                    raise ArtifactError(
                        f"Shard {info['name']} in {self.path} is damaged: {table.num_rows} rows, the manifest "
                        f"says {info['rows']}. Rebuild the curriculum."
                    )
        rows = pa.concat_tables(tables["rows"]) if tables["rows"] else None
        if rows is None or rows.num_rows != self.manifest.num_rows:
            raise ArtifactError(f"{self.path}: the row shards do not add up to num_rows. Rebuild the curriculum.")
        # The cut table as one (rows x stages) NumPy view per record batch, zero-copy over the memory map.
        cut_tokens = [_fixed(c, num_stages) for t in tables["cuts"] for c in t.column("hint_tokens").chunks]
        cut_chars = [_fixed(c, num_stages) for t in tables["cuts"] for c in t.column("hint_chars").chunks]
        if sum(len(x) for x in cut_tokens) != self.manifest.num_rows:
            raise ArtifactError(f"{self.path}: the cut shards do not add up to num_rows. Rebuild the curriculum.")
        prompt = self.manifest.prompt
        super().__init__(rows, cut_tokens, cut_chars, num_stages, prompt["placement"], prompt.get("hint_label") or "")
        self.kept_columns: list[str] = list(self.manifest.keep_columns)

    def _open_shard(self, info: dict[str, Any]) -> pa.Table:
        path = self.manifest.shard_path(self.path, info)
        if info.get("path") and not path.is_file():
            raise ArtifactError(
                f"{self.path} reuses the row shards of {path.parent}, and {path.name} is no longer there (the "
                "parent curriculum was moved or deleted). Restore it, or rebuild or reschedule into a folder on "
                "the same filesystem as its parent (hard links survive the parent's deletion)."
            )
        return open_shard(path, info["bytes"])

    # -- construction & pickling ------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> Curriculum:
        return cls(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Curriculum, (str(self.path),))

    def __repr__(self) -> str:
        return f"Curriculum({str(self.path)!r}, rows={len(self)}, stages={self.num_stages})"

    @property
    def fingerprint(self) -> str:
        """Identity of the content: a hash of the shards' sha256s from the manifest (no data is read)."""
        shas = [s["sha256"] for table in TABLES for s in self.manifest.shards.get(table, [])]
        return hashlib.sha256("".join(shas).encode()).hexdigest()[:32]

    @property
    def total_steps(self) -> int | None:
        return self.manifest.total_steps

    # -- the schedule clock --------------------------------------------------------------------------

    def clock(self, total_steps: int | None = None) -> Clock:
        """The schedule's clock over ``total_steps`` steps (default: the build's ``--total-steps``).

        Trainers choose ``total_steps`` with :func:`rtpo_data.schedule.resolve_horizon`.
        """
        total = total_steps if total_steps is not None else self.total_steps
        if total is None:
            raise RtpoDataError(
                f"{self.path} was built without --total-steps, so the schedule's horizon is unknown: "
                "pass total_steps= (the number of training steps) or rebuild with --total-steps."
            )
        return Clock(tuple(self.stage_fractions), total)

    def stage_at(self, step: int, total_steps: int | None = None) -> int:
        """The stage in force at training ``step`` (0-based): ``self.clock(total_steps).stage_at(step)``."""
        return self.clock(total_steps).stage_at(step)

    # -- datasets views ----------------------------------------------------------------------------

    def view(self, step: int | None = None, total_steps: int | None = None, output: str = "text", *,
             stage: int | None = None) -> CurriculumView:
        """Every row as seen at training ``step`` (or at ``stage=``), as a ``datasets.Dataset`` (a
        :class:`~rtpo_data.view.CurriculumView`).

        Columns: ``row_id``, ``prompt`` (text, chat messages or token ids per ``output``), ``answer``
        and the kept columns. Making the view renders nothing; each access renders the rows it returns.
        """
        if (step is None) == (stage is None):
            raise RtpoDataError("view() takes a training step or stage=, one of the two.")
        return self._view(self._check_stage(stage) if stage is not None else self.stage_at(step, total_steps), output)

    def eval_view(self, output: str = "text") -> CurriculumView:
        """Every row with no hint at all (the prompt the model gets when it reasons alone), as :meth:`view`."""
        return self._view(None, output)

    def _view(self, stage: int | None, output: str) -> CurriculumView:
        from rtpo_data.view import CurriculumView

        if output not in VIEW_OUTPUTS:
            raise RtpoDataError(f"output={output!r}: a view renders one of {', '.join(VIEW_OUTPUTS)}")
        return CurriculumView.create(self, stage, output)

    # -- names of earlier releases -------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Called only for names the class does not have: the render methods of earlier releases
        # keep working, with a warning that names their replacement.
        if name not in _RENAMED:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        replacement, call = _RENAMED[name]

        def renamed(*args: Any, **kwargs: Any) -> Any:
            warnings.warn(f"Curriculum.{name} is deprecated: use Curriculum.{replacement}.", FutureWarning,
                          stacklevel=2)
            return call(self, *args, **kwargs)

        return renamed


def _fixed(chunk: pa.FixedSizeListArray, k: int) -> np.ndarray:
    return chunk.values.to_numpy(zero_copy_only=True)[chunk.offset * k: (chunk.offset + len(chunk)) * k].reshape(-1, k)


def _stage_view(cur: Curriculum, stage: int, output: str = "text") -> CurriculumView:
    return cur.view(stage=stage, output=output)


_RENAMED: dict[str, tuple[str, Any]] = {
    "prompts": ("render(rows, stages)", lambda c, rows, stage: c.render(rows, stage)),
    "eval_prompts": ("render(rows, None)", lambda c, rows: c.render(rows, None)),
    "prompt_ids_batch": ("render(rows, stages, 'arrays')", lambda c, rows, stage: c.render(rows, stage, "arrays")),
    "messages_batch": ("render(rows, stages, 'messages')", lambda c, rows, stage: c.render(rows, stage, "messages")),
    "messages": ("render([i], stage, 'messages')[0]", lambda c, i, stage: c.render([i], stage, "messages")[0]),
    "hint_tokens_at": ("cuts(rows, stages)[0]", lambda c, rows, stage: c.cuts(rows, stage)[0]),
    "stage_view": ("view(stage=...)", _stage_view),
}
