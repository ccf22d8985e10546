"""The recipe: one YAML file that says what to build, validated by pydantic.

Every default lives here. Unknown keys are errors that name the key and the file,
so a typo (``shard_sise``) never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import RecipeError

SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratorSpec(StrictModel):
    kind: str = Field(description="Registered generator name, e.g. 'pointcloud'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Generator parameters, validated by the generator.")


class ComponentSpec(StrictModel):
    """A labeler or evaluator entry: a registered kind plus its parameters."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


class Recipe(StrictModel):
    name: str = Field(description="Dataset name: the folder under `output`.")
    version: str = Field(default="1.0.0", description="Dataset version: the folder under `<output>/<name>`.")
    description: str = ""
    license: str = "cc-by-4.0"
    seed: int = Field(default=0, ge=0, lt=2**63, description="Root seed; every sample's seed derives from it.")
    output: str = Field(default="datasets", description="Local folder the dataset is written under.")
    generator: GeneratorSpec
    count: dict[str, int] = Field(description="Number of samples per split, e.g. {train: 800, test: 200}.")
    shard_size: int = Field(default=256, gt=0, description="Samples per Parquet shard (one Prefect task each).")
    on_error: Literal["fail", "skip"] = Field(
        default="fail", description="A bad input asset (corrupt mesh): fail the build, or skip it and count it."
    )
    labelers: list[ComponentSpec] = Field(default_factory=list)
    evaluators: list[ComponentSpec] = Field(default_factory=list)
    reference: str | None = Field(default=None, description="Real data used to train generators and score them.")
    schedule: str | None = Field(default=None, description="Cron string for `synthloom serve`.")
    gates: dict[str, float] = Field(
        default_factory=dict, description="Quality thresholds, e.g. {cas_ratio_min: 0.8, near_copy_max: 0.01}."
    )

    @field_validator("gates")
    @classmethod
    def _known_gates(cls, value: dict[str, float]) -> dict[str, float]:
        from synthloom.evaluators.gates import GATES

        unknown = sorted(set(value) - set(GATES))
        if unknown:
            raise ValueError(f"unknown gate(s) {unknown}; known: {sorted(GATES)}")
        return value

    @field_validator("evaluators")
    @classmethod
    def _known_evaluators(cls, value: list[ComponentSpec]) -> list[ComponentSpec]:
        from synthloom.evaluators.gates import EVALUATORS

        unknown = sorted({spec.kind for spec in value} - set(EVALUATORS))
        if unknown:
            raise ValueError(f"unknown evaluator(s) {unknown}; known: {list(EVALUATORS)}")
        return value

    @model_validator(mode="after")
    def _evaluation_needs_reference(self) -> "Recipe":
        if (self.evaluators or self.gates) and not self.reference:
            raise ValueError("`evaluators` and `gates` need `reference` (the real data to compare against)")
        return self

    @field_validator("name", "version")
    @classmethod
    def _is_a_folder_name(cls, value: str) -> str:
        if not FOLDER_NAME.match(value):
            raise ValueError("must be letters, digits, '.', '_', '+' or '-' (it becomes a folder name)")
        return value

    @field_validator("count")
    @classmethod
    def _count_is_positive(cls, value: dict[str, int]) -> dict[str, int]:
        if not value:
            raise ValueError("needs at least one split, e.g. {train: 100}")
        for split, n in value.items():
            if not SPLIT_NAME.match(split):
                raise ValueError(f"split name {split!r} must be letters, digits or '_'")
            if n <= 0:
                raise ValueError(f"split {split!r} must have a positive count, got {n}")
        return value

    def fingerprint(self) -> str:
        """sha256 of the canonical recipe: what decides whether two builds are the same.

        `output` is left out: where a dataset is written does not change a byte of it."""
        canonical = json.dumps(self.model_dump(mode="json", exclude={"output"}), sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def version_dir(self) -> Path:
        return Path(self.output) / self.name / self.version


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, naming the key path and the file."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "<top level>"
        if item["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{where}'")
        elif item["type"] == "missing":
            lines.append(f"{source}: missing required key '{where}'")
        else:
            lines.append(f"{source}: '{where}': {item['msg']} (got {item.get('input')!r})")
    return "; ".join(lines)


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise RecipeError(format_validation_error(error, source)) from None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}:{where} is not valid YAML: {getattr(error, 'problem', error)}") from None
    recipe = parse_recipe(data, str(path))
    # Relative output paths are relative to where the user runs the command, like every CLI.
    return recipe
