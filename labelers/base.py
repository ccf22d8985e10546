"""What every labeler implements: the mirror of the generator lifecycle (generators/base.py).

A labeler adds (or replaces) columns of generated shards: boxes from a detector, captions, measured
attributes. The build flow calls, in order:

1. `Labeler(params)`: params validated by the labeler's pydantic `Params` (unknown keys are errors).
2. `check_inputs(input_features)`: in the build preflight, before any flow run: does the dataset have
   the columns this labeler reads ("needs an Image or Points column")? One line naming what is missing.
3. `features(input_features) -> Features`: the columns it declares (it may depend on what it reads).
4. `prepare(ctx) -> Prepared`: once per build; loads or caches models in the model store (`ctx.models`).
   A labeler without weights needs nothing here: the default returns a `Prepared` with its input
   fingerprint (kind, params, code version).
5. `load(prepared, device)`: once per worker process; the loaded labeler serves every shard there.
6. `label(batch, features) -> {column: [value per row]}`: one batch of rows (an Arrow table with the
   shard's typed `features`), returning every declared column.

`apply_labeler` runs steps 5-6 over a whole shard table in batches and returns the labelled table.
A labeler that `expects_labels` and returns nothing (every declared value null, NaN or empty) for a
whole shard is an error naming the shard and the labeler: a detector that silently found nothing in
a thousand images is a broken detector, not a dataset.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from synthloom.dataset import COMMON_HEAD, COMMON_TAIL
from synthloom.errors import FeatureError, LabelerError, describe_validation_error
from synthloom.features import Features
from synthloom.lifecycle import Asset, BuildContext, PreparedPart, fingerprint, input_fingerprint
from synthloom.params import PartParams


class LabelerParams(PartParams):
    """Base for each labeler's params: unknown keys are errors, a bool is not a number (synthloom/params.py)."""


class Prepared(PreparedPart):
    """What a labeler's `prepare` returns (`synthloom.lifecycle.PreparedPart`): its name besides the
    shared fields; the input fingerprint hashes what determines the labels."""

    labeler: str


def labeler_fingerprint(kind: str, params: BaseModel, code_version: str, assets: list[Asset] = (),
                        **extra: Any) -> str:
    """The input fingerprint of a labeler: `input_fingerprint`, marked as a labeler's so a labeler and a
    generator of the same name never share one."""
    return input_fingerprint(kind, params, code_version, list(assets), role="labeler", **extra)


class Labeler:
    """Base class. Subclasses set `name`, `Params`, and implement `check_inputs`, `features`, `label`
    (and `prepare`/`load` when they use a model)."""

    name: ClassVar[str]
    Params: ClassVar[type[LabelerParams]] = LabelerParams
    # Bump when the same inputs would now give different labels: it is part of every label cache key.
    code_version: ClassVar[str] = "1"
    # What one labelling task occupies, e.g. {"gpu": 1}: at most one such task per device at a time.
    resources: ClassVar[dict[str, int]] = {}
    # Rows per `label` call.
    batch_size: ClassVar[int] = 256
    # Whether a whole shard without any label is an error (see the module docstring).
    expects_labels: ClassVar[bool] = True

    def __init__(self, params: dict[str, Any] | LabelerParams | None = None):
        if isinstance(params, LabelerParams):
            self.params = params
        else:
            try:
                self.params = self.Params.model_validate(params or {})
            except ValidationError as error:
                problems = describe_validation_error(error, "labeler param")
                raise LabelerError(f"labeler {self.name}: " + "; ".join(problems)) from None
        self.prepared: Prepared | None = None
        self.device = "cpu"

    def check_inputs(self, input_features: Features) -> None:
        """Raise LabelerError naming what is missing when the dataset lacks what this labeler reads."""

    def features(self, input_features: Features) -> Features:
        """The columns this labeler adds (or replaces), given the columns it reads."""
        raise NotImplementedError

    def prepare(self, ctx: BuildContext) -> Prepared:
        """Load or cache what labelling needs (models go in `ctx.models`). Default: no weights."""
        return Prepared(labeler=self.name,
                        input_fingerprint=labeler_fingerprint(self.name, self.params, self.code_version))

    def load(self, prepared: Prepared, device: str = "cpu") -> None:
        """Make the labeler ready: called once per worker process. Subclasses that load models override
        it (and call super)."""
        self.prepared = prepared
        self.device = device

    def label(self, batch: pa.Table, features: Features) -> dict[str, list]:
        """Label one batch: {declared column: one value per row of `batch`}."""
        raise NotImplementedError


def _empty(value: Any) -> bool:
    """Whether one labelled value says nothing: null, NaN, an empty string/list/array, or a dict
    (e.g. {"boxes", "labels"}) of empty values."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    if isinstance(value, dict):
        return all(_empty(v) for v in value.values())
    if isinstance(value, np.ndarray):
        return value.size == 0
    if isinstance(value, (str, bytes, list, tuple)):
        return len(value) == 0
    return False


def apply_labeler(labeler: Labeler, table: pa.Table, shard: str = "<table>") -> pa.Table:
    """Label a whole shard table in batches of `labeler.batch_size` rows; return the table with the
    declared columns added (before the provenance columns) or replaced (in place), and the schema
    metadata of the resulting features. `shard` names the shard in errors."""
    where = f"labeler {labeler.name} on shard {shard}"
    features = Features.from_arrow_schema(table.schema)
    declared = labeler.features(features)
    reserved = [name for name in declared if name in COMMON_HEAD + COMMON_TAIL]
    if reserved:
        raise LabelerError(f"{where}: declares reserved column(s) {reserved}; the writer adds them")
    values: dict[str, list] = {name: [] for name in declared}
    for start in range(0, table.num_rows, max(1, labeler.batch_size)):
        batch = table.slice(start, labeler.batch_size)
        out = labeler.label(batch, features)
        missing = [name for name in declared if name not in out]
        extra = [name for name in out if name not in declared]
        if missing or extra:
            raise LabelerError(f"{where}: label() returned {sorted(out)}, but the labeler declares "
                               f"{sorted(declared)} (missing {missing}, undeclared {extra})")
        for name in declared:
            column = list(out[name])
            if len(column) != batch.num_rows:
                raise LabelerError(f"{where}: column '{name}' has {len(column)} values for a batch of "
                                   f"{batch.num_rows} rows (rows {start}..{start + batch.num_rows - 1})")
            values[name] += column
    if labeler.expects_labels and table.num_rows and all(_empty(v) for column in values.values() for v in column):
        raise LabelerError(f"{where}: no labels for any of its {table.num_rows} rows "
                           f"(every value of {', '.join(declared)} is empty)")
    arrays = {}
    for name, feature in declared.items():
        try:
            arrays[name] = feature.encode(values[name])
        except FeatureError as error:
            raise LabelerError(f"{where}: column '{name}': {error}") from None
    return _with_columns(table, features, declared, arrays)


def merge_features(features: Features, declared: Features) -> Features:
    """The features after a labeler: declared columns replace same-named ones in place, new ones go
    before the provenance tail (`generator`, `generation_sha256`)."""
    names = list(features)
    tail_at = next((i for i, n in enumerate(names) if n in COMMON_TAIL), len(names))
    order = names[:tail_at] + [n for n in declared if n not in features] + names[tail_at:]
    return Features({n: declared[n] if n in declared else features[n] for n in order})


def check_chain(labelers: list[Labeler], features: Features) -> list[list[str]]:
    """Check that each labeler, in order, finds what it reads (earlier labelers' columns included);
    return the columns each declares. Raises LabelerError naming the labeler and what is missing."""
    declared_by = []
    for labeler in labelers:
        labeler.check_inputs(features)
        declared = labeler.features(features)
        reserved = [name for name in declared if name in COMMON_HEAD + COMMON_TAIL]
        if reserved:
            raise LabelerError(f"labeler {labeler.name}: declares reserved column(s) {reserved}; the writer adds them")
        declared_by.append(list(declared))
        features = merge_features(features, declared)
    return declared_by


def _with_columns(table: pa.Table, features: Features, declared: Features, arrays: dict[str, pa.Array]) -> pa.Table:
    """`table` with `arrays` as the declared columns, and the schema metadata of the merged features."""
    schema = merge_features(features, declared).arrow_schema()
    return pa.Table.from_arrays([_storage(arrays[f.name] if f.name in arrays else table.column(f.name), f.type)
                                 for f in schema], schema=schema)


def _storage(column: pa.Array | pa.ChunkedArray, arrow: pa.DataType) -> pa.ChunkedArray:
    """A column as its plain Arrow storage: a process that imported `datasets` reads fixed-shape
    arrays back as HF extension types, which must not leak into the written schema."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return pa.chunked_array([c.storage if isinstance(c, pa.ExtensionArray) else c for c in chunks], type=arrow)


def chain_fingerprint(labelers: list[tuple[str, dict[str, Any], str, str]]) -> str:
    """One fingerprint for an ordered chain of labelers: (kind, params, prepared input fingerprint,
    code version) each. A label-shard task is cached by it and the generated shard's sha256."""
    return fingerprint([list(item) for item in labelers])


def float_column(values: np.ndarray) -> list[float | None]:
    """A numpy vector as a column of Python floats, NaN (undefined) as null."""
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=np.float64)]
