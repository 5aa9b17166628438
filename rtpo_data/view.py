"""``CurriculumView``: every row of a curriculum as seen at one training step, as a ``datasets.Dataset``.

The view is a real ``datasets.Dataset`` whose ``prompt`` column is rendered on access::

    view = cur.view(step=120)             # opening is O(1): no prompt is rendered
    view[3], view[10:20], view["prompt"]  # each access renders only the rows it returns
    view.column_names, view.features      # row_id, prompt, answer, the kept columns
    view.select(...), view.shuffle(...), view.filter(...), view.train_test_split(...)
    view.map(fn), view.to_pandas(), view.to_polars(), view.save_to_disk(path)
    view.with_format("torch")             # ids views give one tensor per row

How it is built: the Arrow table under the view holds the curriculum's own row columns (``row_id``,
``answer``, the kept columns), zero-copy over its memory maps, and row ``r`` of that table is
curriculum row ``offset + r``. Reading rows goes through :meth:`CurriculumView._getitem`,
``__iter__`` and ``iter``, which add the ``prompt`` column for exactly the rows read before datasets
formats them, so every format (python, numpy, torch, arrow, pandas, polars, a custom transform)
sees it. Row selection (``select``, ``shuffle``, ``filter``, ``sort`` on a stored column, ``skip``,
``take``, ``shard``, ``train_test_split``) keeps an indices mapping, as datasets always does, and
returns a view again. ``save_to_disk`` and ``to_pandas``/``to_polars`` render in batches of
:data:`BATCH_ROWS` rows.

Calls that rewrite the table itself (``map``, ``remove_columns``, ``rename_column``, ``cast``,
``to_json``, ...; :data:`RENDERED`) work on :meth:`CurriculumView.materialize`: the view written out
once, in batches, to an Arrow file in datasets' temporary cache directory and memory-mapped (so
memory stays bounded whatever the number of rows), then the call runs there as on any dataset.
Functions that read other datasets' Arrow tables directly (``datasets.concatenate_datasets``,
``interleave_datasets``) need ``view.materialize()`` passed to them.

Written against datasets 5.2, whose private primitives this class overrides (``_getitem``,
``_fast_select_column``, ``_select_contiguous``, ``_new_dataset_with_indices``, ``_estimate_nbytes``).
``tests/test_view.py`` checks that every public method of ``datasets.Dataset`` is handled here (in
:data:`NATIVE`, :data:`RENDERED` or by an override), so a datasets release that adds one fails there.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import pyarrow as pa
from datasets import DatasetInfo, Features, List, Value
from datasets.arrow_dataset import transmit_format
from datasets.arrow_writer import ArrowWriter
from datasets.fingerprint import fingerprint_transform, get_temporary_cache_files_directory
from datasets.formatting import format_table, get_format_type_from_alias, get_formatter, query_table
from datasets.table import InMemoryTable, MemoryMappedTable

if TYPE_CHECKING:
    from rtpo_data.curriculum import Curriculum

PROMPT = "prompt"
BATCH_ROWS = 256  # rows rendered at a time when a call walks the whole view
PROMPT_FEATURES = {
    "text": Value("string"),
    "ids": List(Value("int32")),
    "messages": List({"role": Value("string"), "content": Value("string")}),
}

# Public methods of datasets.Dataset that run on the materialized view (they rewrite or export the
# whole table). Everything else works on the view itself: see NATIVE and the overrides below.
RENDERED = (
    "map", "add_column", "add_item", "remove_columns", "rename_column", "rename_columns", "select_columns",
    "cast", "cast_column", "flatten", "flatten_indices", "unique", "class_encode_column",
    "align_labels_with_mapping", "repeat", "to_dict", "to_list", "to_json", "to_csv", "to_parquet", "to_sql",
    "to_iterable_dataset", "to_tf_dataset", "push_to_hub",
    "add_faiss_index", "add_faiss_index_from_external_arrays", "add_elasticsearch_index", "load_faiss_index",
    "load_elasticsearch_index", "save_faiss_index", "search", "search_batch", "get_nearest_examples",
    "get_nearest_examples_batch", "get_index", "drop_index", "is_index_initialized",
)
# Public methods and properties of datasets.Dataset that work unchanged on a view, because they read
# rows only through the overridden primitives, select rows through an indices mapping, or read
# metadata (checked by the tests against datasets' own list).
NATIVE = frozenset({
    "select", "shuffle", "filter", "skip", "take", "shard", "train_test_split", "batch", "save_to_disk",
    "with_format", "with_transform", "set_transform", "reset_format", "formatted_as", "format",
    "info", "split", "builder_name", "citation", "config_name", "dataset_size", "description",
    "download_checksums", "download_size", "homepage", "license", "size_in_bytes", "supervised_keys",
    "version", "num_rows", "data", "cache_files", "cleanup_cache_files", "features",
    # constructors and loaders: class- and static methods that build a new, plain dataset
    "from_buffer", "from_csv", "from_dict", "from_file", "from_generator", "from_json", "from_list",
    "from_pandas", "from_parquet", "from_polars", "from_spark", "from_sql", "from_text", "load_from_disk",
})


class _Prompts:
    """Renders the ``prompt`` column for curriculum rows; immutable, shared by every copy of a view."""

    def __init__(self, cur: Curriculum, stage: int | None, output: str) -> None:
        self.cur, self.stage, self.output = cur, stage, output
        self.feature = PROMPT_FEATURES[output]
        self.type = Features({PROMPT: self.feature}).arrow_schema.field(PROMPT).type

    def __deepcopy__(self, memo: dict) -> _Prompts:
        return self

    def array(self, rows: np.ndarray) -> pa.Array:
        if self.output == "text":
            return pa.array(self.cur.render(rows, self.stage, "text"), self.type)
        if self.output == "messages":
            return pa.array(self.cur.render(rows, self.stage, "messages"), self.type)
        arrays = self.cur.render(rows, self.stage, "arrays")
        offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        values = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))


class CurriculumView(datasets.Dataset):
    """A curriculum at one stage (or with no hint) as a ``datasets.Dataset``; see the module docstring.

    Make one with :meth:`Curriculum.view` or :meth:`Curriculum.eval_view`.
    """

    _prompts: _Prompts
    _offset: int
    _materialized: datasets.Dataset | None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def create(cls, cur: Curriculum, stage: int | None, output: str) -> CurriculumView:
        prompts = _Prompts(cur, stage, output)
        kept = list(cur.kept_columns)
        base = cur.table(["row_id", "answer", *kept])
        features = base.schema
        visible = Features({"row_id": Value("string"), PROMPT: prompts.feature,
                            **{c: f for c, f in Features.from_arrow_schema(features).items() if c != "row_id"}})
        # An explicit fingerprint: otherwise datasets hashes the whole table (O(rows)).
        fingerprint = f"{cur.fingerprint}-view-{stage}-{output}"
        return cls._build(prompts, base, None, 0, DatasetInfo(features=visible), None, fingerprint)

    @classmethod
    def _build(cls, prompts: _Prompts, base: pa.Table, indices: Any, offset: int, info: DatasetInfo,
               split: Any, fingerprint: str) -> CurriculumView:
        view = cls.__new__(cls)
        datasets.Dataset.__init__(view, InMemoryTable(base), split=split, indices_table=indices, fingerprint=fingerprint)
        view._info = info.copy()  # the features users see: the prompt column instead of the table's
        view._prompts, view._offset, view._materialized = prompts, offset, None
        return view

    def _derive(self, *, data: Any = None, indices: Any = ..., offset: int | None = None,
                fingerprint: str | None = None) -> CurriculumView:
        """A copy with another table slice, indices mapping or fingerprint (formats are kept)."""
        new = copy.copy(self)
        new._info = self._info.copy()
        if data is not None:
            new._data = data
        if indices is not ...:
            new._indices = indices
        if offset is not None:
            new._offset = offset
        if fingerprint is not None:
            new._fingerprint = fingerprint
        new._materialized = None
        new._indexes = {}
        return new

    def __copy__(self) -> CurriculumView:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict) -> CurriculumView:
        # Arrow tables and the renderer are immutable: share them; copy what set_format mutates.
        new = self.__copy__()
        new._info = copy.deepcopy(self._info, memo)
        new._format_kwargs = copy.deepcopy(self._format_kwargs, memo)
        new._format_columns = copy.copy(self._format_columns)
        new._materialized = None
        new._indexes = {}
        return new

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as the curriculum's path plus the selection: O(1), or O(rows selected) with an
        indices mapping; the Arrow table is taken from the curriculum's memory maps again."""
        state = {
            "base_columns": self._data.column_names, "length": self._data.num_rows, "offset": self._offset,
            "indices": self._indices, "info": self._info, "split": self._split, "fingerprint": self._fingerprint,
            "format": (self._format_type, self._format_kwargs, self._format_columns, self._output_all_columns),
        }
        return (_restore_view, (self._prompts, state))

    # -- what users see -------------------------------------------------------------------------

    @property
    def column_names(self) -> list[str]:
        return list(self._info.features)

    @property
    def num_columns(self) -> int:
        return len(self._info.features)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_rows, self.num_columns)

    # -- reading rows: the only places the prompt column is made --------------------------------

    def _rows(self, key: Any) -> np.ndarray:
        """Curriculum rows of ``key`` (an int, slice, range or iterable of ints, already checked)."""
        n = self.num_rows
        if isinstance(key, slice):
            positions = np.arange(*key.indices(n), dtype=np.int64)
        elif isinstance(key, (int, np.integer)):
            positions = np.array([int(key) % n], dtype=np.int64)
        else:
            positions = np.fromiter(key, dtype=np.int64) % max(n, 1)
        if self._indices is not None and len(positions):
            positions = self._indices.fast_gather(positions).column(0).to_numpy().astype(np.int64)
        return positions + self._offset

    def _query(self, key: Any, columns: list[str] | None = None) -> pa.Table:
        """The rows of ``key`` as an Arrow table of the visible columns (or of ``columns``)."""
        if not isinstance(key, (int, np.integer, slice, range, np.ndarray, list)):
            key = list(key)  # read once here: the key is used twice below (a generator would be spent)
        base = query_table(self._data, key, indices=self._indices)  # checks the key as datasets does
        names = list(self._info.features) if columns is None else list(columns)
        arrays = [
            pa.chunked_array([self._prompts.array(self._rows(key))], self._prompts.type) if name == PROMPT
            else base.column(name)
            for name in names
        ]
        schema = Features({name: self._info.features[name] for name in names}).arrow_schema
        return pa.Table.from_arrays(arrays, schema=schema)

    def _batches(self, columns: list[str] | None = None) -> Any:
        for start in range(0, self.num_rows, BATCH_ROWS):
            yield self._query(slice(start, start + BATCH_ROWS), columns)

    def _whole(self, columns: list[str] | None = None) -> pa.Table:
        tables = list(self._batches(columns))
        return pa.concat_tables(tables) if tables else self._query(slice(0, 0), columns)

    def _format_state(self, kwargs: dict[str, Any]) -> tuple[Any, list[str] | None, bool]:
        format_type = kwargs.get("format_type", self._format_type)
        format_columns = kwargs.get("format_columns", self._format_columns)
        output_all = kwargs.get("output_all_columns", self._output_all_columns)
        format_kwargs = kwargs.get("format_kwargs", self._format_kwargs) or {}
        formatter = get_formatter(format_type, features=self._info.features, **format_kwargs)
        return formatter, format_columns, output_all

    def _needed(self, format_columns: list[str] | None, output_all: bool) -> list[str] | None:
        """The columns a read must render: only the formatted ones, unless all are output."""
        return None if format_columns is None or output_all else list(format_columns)

    def _getitem(self, key: Any, **kwargs: Any) -> Any:
        if isinstance(key, bool):
            raise TypeError("dataset index must be int, str, slice or collection of int, not bool")
        formatter, format_columns, output_all = self._format_state(kwargs)
        if isinstance(key, str):  # a whole column (arrow, pandas and polars formats): rendered in batches
            if key not in self._info.features:
                raise KeyError(f"Column {key} not in the dataset. Current columns in the dataset: {self.column_names}")
            table = self._whole([key])
        else:
            table = self._query(key, self._needed(format_columns, output_all))
        return format_table(table, key, formatter=formatter, format_columns=format_columns, output_all_columns=output_all)

    def __iter__(self) -> Any:
        formatter, format_columns, output_all = self._format_state({})
        for table in self._batches(self._needed(format_columns, output_all)):
            for j in range(table.num_rows):
                yield format_table(table.slice(j, 1), 0, formatter=formatter, format_columns=format_columns,
                                   output_all_columns=output_all)

    def iter(self, batch_size: int, drop_last_batch: bool = False) -> Any:
        n = self.num_rows // batch_size * batch_size if drop_last_batch else self.num_rows
        for start in range(0, n, batch_size):
            yield self._getitem(slice(start, start + batch_size))

    def _fast_select_column(self, column_name: str) -> CurriculumView:
        """One column, for ``view[name]`` (datasets' ``Column``): the others are not rendered."""
        new = self._derive()
        new._info = DatasetInfo(features=Features({column_name: self._info.features[column_name]}))
        if new._format_columns is not None:
            new._format_columns = [c for c in new._format_columns if c == column_name]
        return new

    def to_pandas(self, batch_size: int | None = None, batched: bool = False) -> Any:
        """As ``datasets.Dataset.to_pandas``; the prompts are rendered :data:`BATCH_ROWS` at a time."""
        if batched:
            size = batch_size or datasets.config.DEFAULT_MAX_BATCH_SIZE
            return (self._plain(self._query(slice(s, s + size))).to_pandas()
                    for s in range(0, self.num_rows, size))
        return self._plain(self._whole()).to_pandas()

    def to_polars(self, batch_size: int | None = None, batched: bool = False, schema_overrides: dict | None = None,
                  rechunk: bool = True) -> Any:
        """As ``datasets.Dataset.to_polars``; the prompts are rendered :data:`BATCH_ROWS` at a time."""
        kwargs = {"schema_overrides": schema_overrides, "rechunk": rechunk}
        if batched:
            size = batch_size or datasets.config.DEFAULT_MAX_BATCH_SIZE
            return (self._plain(self._query(slice(s, s + size))).to_polars(**kwargs)
                    for s in range(0, self.num_rows, size))
        return self._plain(self._whole()).to_polars(**kwargs)

    def _plain(self, table: pa.Table) -> datasets.Dataset:
        return datasets.Dataset(InMemoryTable(table), info=DatasetInfo(features=self._info.features),
                                fingerprint=f"{self._fingerprint}-rows")

    def _estimate_nbytes(self) -> int:
        """Rendered bytes (``save_to_disk`` picks its number of shards from this), from a sample of rows."""
        n = self.num_rows
        if n == 0:
            return 0
        sample = np.unique(np.linspace(0, n - 1, num=min(n, BATCH_ROWS)).astype(np.int64))
        return int(self._query(sample.tolist()).nbytes * n / len(sample))

    # -- row selection: new views over the same table -------------------------------------------

    def _new_dataset_with_indices(self, indices_cache_file_name: str | None = None, indices_buffer: Any = None,
                                  fingerprint: str | None = None) -> CurriculumView:
        if indices_cache_file_name is None and indices_buffer is None:
            raise ValueError("At least one of indices_cache_file_name or indices_buffer must be provided.")
        if fingerprint is None:
            raise ValueError("please specify a fingerprint for the dataset with indices")
        if indices_cache_file_name is not None:
            indices = MemoryMappedTable.from_file(indices_cache_file_name)
        else:
            indices = InMemoryTable.from_buffer(indices_buffer)
        return self._derive(indices=indices, fingerprint=fingerprint)

    @transmit_format
    @fingerprint_transform(inplace=False)
    def _select_contiguous(self, start: int, length: int, new_fingerprint: str | None = None) -> CurriculumView:
        if self.list_indexes():
            raise datasets.arrow_dataset.DatasetTransformationNotAllowedError(
                "Using `.select` on a dataset with attached indexes is not allowed. You can first run "
                "`.drop_index() to remove your index and then re-add it."
            )
        if len(self) == 0:
            return self
        for value in (start, start + length - 1):
            if not 0 <= value < len(self):
                raise IndexError(f"Index {value} out of range for dataset of size {len(self)}.")
        if self._indices is None or length == 0:
            return self._derive(data=self._data.slice(start, length), indices=None, offset=self._offset + start,
                                fingerprint=new_fingerprint)
        return self._derive(indices=self._indices.slice(start, length), fingerprint=new_fingerprint)

    def sort(self, column_names: Any, *args: Any, **kwargs: Any) -> datasets.Dataset:
        """As ``datasets.Dataset.sort``: on stored columns it returns a view; sorting by ``prompt``
        renders every prompt first (on the materialized view)."""
        names = [column_names] if isinstance(column_names, str) else list(column_names)
        if PROMPT in names:
            return self.materialize().sort(column_names, *args, **kwargs)
        return super().sort(column_names, *args, **kwargs)

    # -- formats: checked against the visible columns -------------------------------------------

    @fingerprint_transform(inplace=True)
    def set_format(self, type: str | None = None, columns: list | None = None, output_all_columns: bool = False,
                   **format_kwargs: Any) -> None:
        """As ``datasets.Dataset.set_format``, with ``prompt`` among the columns it accepts."""
        format_kwargs.update(format_kwargs.pop("format_kwargs", {}))
        type = get_format_type_from_alias(type)
        get_formatter(type, features=self._info.features, **format_kwargs)
        if isinstance(columns, str):
            columns = [columns]
        if columns is not None:
            columns = list(columns)
            missing = set(columns) - set(self.column_names)
            if missing:
                raise ValueError(
                    f"Columns {list(missing)} not in the dataset. Current columns in the dataset: {self.column_names}"
                )
        self._format_type = type
        self._format_kwargs = format_kwargs
        self._format_columns = columns
        self._output_all_columns = output_all_columns

    # -- the whole view, written out ------------------------------------------------------------

    def materialize(self) -> datasets.Dataset:
        """This view as a plain ``datasets.Dataset`` with the ``prompt`` column stored.

        Written once per view, :data:`BATCH_ROWS` rows at a time, to an Arrow file in datasets'
        temporary cache directory (removed when the process exits) and memory-mapped: memory
        stays bounded whatever the number of rows. The view's format is carried over.
        """
        if self._materialized is None:
            path = Path(get_temporary_cache_files_directory()) / f"rtpo-view-{self._fingerprint}.arrow"
            if not path.exists():
                tmp = path.with_name(path.name + ".incomplete")
                with ArrowWriter(features=self._info.features, path=str(tmp), fingerprint=self._fingerprint) as writer:
                    for table in self._batches():
                        writer.write_table(table)
                    writer.finalize()
                os.replace(tmp, path)
            self._materialized = datasets.Dataset.from_file(str(path), info=self._info.copy(), split=self.split)
        ds = self._materialized
        ds.set_format(self._format_type, self._format_columns, self._output_all_columns, **self._format_kwargs)
        return ds

    def list_indexes(self) -> list[str]:
        # Indexes (faiss, elasticsearch) live on the materialized view, where their column is stored.
        return self._materialized.list_indexes() if self._materialized is not None else []


def _on_materialized(name: str) -> Any:
    method = getattr(datasets.Dataset, name)

    def call(self: CurriculumView, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.materialize(), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = (f"As ``datasets.Dataset.{name}``, on :meth:`CurriculumView.materialize` (every prompt "
                    f"rendered, in batches).\n\n{method.__doc__ or ''}")
    return call


for _name in RENDERED:
    setattr(CurriculumView, _name, _on_materialized(_name))


def _restore_view(prompts: _Prompts, state: dict[str, Any]) -> CurriculumView:
    base = prompts.cur.table(state["base_columns"]).slice(state["offset"], state["length"])
    view = CurriculumView._build(prompts, base, state["indices"], state["offset"], state["info"], state["split"],
                                 state["fingerprint"])
    view._format_type, view._format_kwargs, view._format_columns, view._output_all_columns = state["format"]
    return view
