"""The evaluator seam: one class per evaluator, registered under the `synthloom.evaluators` entry-point
group, like a torchmetrics metric: validated `Params`, the modalities it accepts, streaming
`update`/`compute`, and the quality gates it owns.

    class MeanBrightness(Evaluator):
        name = "brightness"
        modalities = ("images",)
        gates = {"brightness_min": Gate("mean_brightness", ">=")}
        metrics = {"mean_brightness": "mean pixel value in [0, 1]"}

        class Params(EvaluatorParams):
            channel: int | None = None

        def reset(self): self.total, self.count = 0.0, 0
        def update(self, batch, data):             # every synthetic row, a batch at a time
            images = data.decode_images(batch)     # NCHW float in [0, 1]
            self.total += float(images.sum()); self.count += images.numel()
        def compute(self, data):
            return EvaluatorResult(summary={"mean_brightness": self.total / self.count})

    [project.entry-points."synthloom.evaluators"]
    brightness = "mypackage.evaluators:MeanBrightness"

The runner (`evaluate.py`) streams the split's rows through `update` of every evaluator, then calls
`compute`; what several evaluators need (the reference, a trained feature extractor, feature rows) is
computed once by `EvaluationData` (`data.py`) and shared. No torch at import: the recipe validates
evaluator params and gate names by loading these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from synthloom.errors import EvaluatorError, describe_validation_error

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from synthloom.recipe import Recipe

    from .data import EvaluationData

MODALITIES = ("images", "points")


class Gate(NamedTuple):
    """A recipe gate: the summary metric it reads and the comparison the metric must satisfy."""

    metric: str
    op: Literal["<=", ">="]


class EvaluatorParams(BaseModel):
    """Base for each evaluator's params: unknown keys are errors, and types are strict (a bool is not an
    int, a string is not a number), so a typo or a wrong type never falls back to a default."""

    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass
class EvaluatorResult:
    """What `compute` returns: headline numbers for the summary (what gates read), the evaluator's
    details (JSON-able; the manifest and report.html show them), notes a reader must see, and tables
    ({name: rows, each a dict of scalars}): the manifest keeps them, report.html and the card show them
    and the evaluate flow publishes each as a Prefect table artifact."""

    summary: dict[str, Any] = field(default_factory=dict)
    details: Any = None
    notes: list[str] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class Evaluator:
    """Base class. Subclasses set `name` and, where they differ from the defaults, `Params`,
    `modalities`, `needs_reference`, `default`, `gates` and `metrics`; they implement `compute`
    and, to see every row as it streams by, `reset` and `update`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[EvaluatorParams]] = EvaluatorParams
    modalities: ClassVar[tuple[str, ...]] = MODALITIES  # which datasets it can score
    needs_reference: ClassVar[bool] = True  # False: scores the dataset against itself
    default: ClassVar[bool] = True  # run when a recipe or the CLI asks for no evaluator by name
    gates: ClassVar[dict[str, Gate]] = {}  # gate name -> the summary metric it reads
    metrics: ClassVar[dict[str, str]] = {}  # summary metric -> how to read it (report.html's "meaning")

    def __init__(self, params: dict[str, Any] | None = None, where: str = ""):
        try:
            self.params = self.Params.model_validate(params or {})
        except ValidationError as error:
            prefix = f"{where}: " if where else ""
            raise EvaluatorError(prefix + "; ".join(describe_validation_error(
                error, f"evaluator {self.name} param"))) from None
        self.reset()

    def unavailable(self, data: EvaluationData) -> str | None:
        """Why this evaluator cannot score `data` (None when it can). Asked for by name, the reason is the
        error; run by default, the evaluator is skipped."""
        if data.modality not in self.modalities:
            return (f"evaluator {self.name} scores {' or '.join(self.modalities)}; {data.version_dir} has "
                    f"{'no Image or Points column' if data.modality is None else data.modality}")
        return None

    def check_recipe(self, recipe: Recipe, recipe_dir: Path) -> str | None:
        """A problem of the recipe this evaluator is part of (None: none), found when the recipe is
        validated, before anything runs: e.g. a generator trained on other real data than it compares.
        `recipe_dir`: the recipe file's folder (relative input paths), the working directory without one."""
        return None

    def reset(self) -> None:
        """Clear the streaming state (called on construction)."""

    def update(self, batch: pa.Table, data: EvaluationData) -> None:
        """See a batch of the split's rows (typed Arrow columns; find them with `data.column_of`)."""

    def compute(self, data: EvaluationData) -> EvaluatorResult:
        raise NotImplementedError
