"""The recipe: one YAML file that says what to build, validated by pydantic.

Every default lives here. Unknown keys are errors that name the key and the file,
so a typo (``shard_sise``) never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import RecipeError, describe_validation_error

# ASCII only, and \Z, not $: `$` also matches before a final newline, which a quoted YAML string can hold.
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+\Z")
FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# The split names Hugging Face `datasets` knows; others must be declared in `custom_splits`,
# so a typo (`trian`) is an error instead of a new split.
HF_SPLITS = ("train", "validation", "test")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratorSpec(StrictModel):
    kind: str = Field(description="Registered generator name, e.g. 'pointcloud'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Generator parameters, validated by the generator.")


class ComponentSpec(StrictModel):
    """A labeler or evaluator entry: a registered kind plus its parameters. A bare name (`cas`) is
    accepted as `{kind: cas}`."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value


class RunnerSpec(StrictModel):
    """Where shard tasks run (`--runner/--address` win): a bare name (`dask`) is `{kind: dask}`."""

    kind: Literal["local", "processes", "ray", "dask"]
    address: str | None = Field(default=None, description="A running cluster: tcp://host:8786 (Dask), "
                                                          "ray://host:10001 (Ray); none: start one here.")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value


def _registered(group: str, specs: list[ComponentSpec]) -> list[ComponentSpec]:
    from .registry import available

    known = available(group)
    unknown = sorted({spec.kind for spec in specs} - set(known))
    if unknown:
        raise ValueError(f"unknown {group[:-1]}(s) {unknown}; registered: {sorted(known)}")
    return specs


class Recipe(StrictModel):
    name: str = Field(description="Dataset name: the folder under `output`.")
    version: str = Field(default="1.0.0", description="Dataset version: the folder under `<output>/<name>`.")
    description: str = ""
    license: str = "cc-by-4.0"
    seed: int = Field(default=0, ge=0, lt=2**63, description="Root seed; every sample's seed derives from it.")
    output: str = Field(default="datasets", description="Folder the dataset is written under (`file://` URLs too), or an object-store URL (`s3://bucket/prefix`).")
    generator: GeneratorSpec
    count: dict[str, int] = Field(description="Number of samples per split, e.g. {train: 800, test: 200}.")
    custom_splits: list[str] = Field(
        default_factory=list, description=f"Split names besides {', '.join(HF_SPLITS)} that `count` may use."
    )
    device: str = Field(default="auto", description="auto (cuda if available, else cpu) | cpu | cuda | cuda:N.")
    runner: RunnerSpec | None = Field(
        default=None, description="local | processes | ray | dask, or {kind, address}: where shard tasks run.")
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

    @field_validator("output")
    @classmethod
    def _file_url_is_a_folder(cls, value: str) -> str:
        from .storage import local_path

        # `file:///data/out` names the folder /data/out (storage.is_url treats it as local); without this it
        # became a relative folder called "file:".
        return str(local_path(value)) if value.startswith("file://") else value

    @field_validator("gates")
    @classmethod
    def _known_gates(cls, value: dict[str, float]) -> dict[str, float]:
        from .gates import known_gates

        known = known_gates()  # from the registered evaluators: a plugin's gates are valid too
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown gate(s) {unknown}; known: {sorted(known)}")
        return value

    @field_validator("evaluators")
    @classmethod
    def _known_evaluators(cls, value: list[ComponentSpec]) -> list[ComponentSpec]:
        return _registered("evaluators", value)  # params: `parse_recipe`, by each evaluator's own Params

    @field_validator("labelers")
    @classmethod
    def _known_labelers(cls, value: list[ComponentSpec]) -> list[ComponentSpec]:
        return _registered("labelers", value)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE.match(value):
            raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
        return value

    @model_validator(mode="after")
    def _evaluation_needs_reference(self) -> "Recipe":
        # Evaluators that score the dataset against itself (label agreement: auto-labels vs the generator's
        # ground truth; CLIP score: images vs their own prompts) and their gates alone need no reference.
        from .gates import known_gates
        from .registry import load

        gates = known_gates()
        needs = [e for e in self.evaluators if getattr(load("evaluators", e.kind), "needs_reference", True)] + \
            [g for g in self.gates if gates[g].needs_reference]
        if needs and not self.reference:
            raise ValueError("`evaluators` and `gates` need `reference` (the real data to compare against)")
        return self

    @field_validator("name", "version")
    @classmethod
    def _is_a_folder_name(cls, value: str) -> str:
        if not FOLDER_NAME.match(value):
            raise ValueError("must be ASCII letters, digits, '.', '_', '+' or '-', starting with a letter or "
                             "digit (it becomes a folder name)")
        return value

    @field_validator("count")
    @classmethod
    def _count_is_positive(cls, value: dict[str, int]) -> dict[str, int]:
        if not value:
            raise ValueError("needs at least one split, e.g. {train: 100}")
        for split, n in value.items():
            if not SPLIT_NAME.match(split):
                raise ValueError(f"split name {split!r} must be ASCII letters, digits or '_'")
            if n <= 0:
                raise ValueError(f"split {split!r} must have a positive count, got {n}")
        return value

    @model_validator(mode="after")
    def _declared_splits(self) -> "Recipe":
        known = list(HF_SPLITS) + list(self.custom_splits)
        for split in self.count:
            if split not in known:
                close = difflib.get_close_matches(split, known, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ValueError(f"count: unknown split '{split}'; {hint}splits are {', '.join(HF_SPLITS)}, "
                                 "or names listed in `custom_splits`")
        return self

    def fingerprint(self) -> str:
        """sha256 of the canonical recipe: what decides whether two builds are the same recipe.

        `output` and `runner` are left out: where a dataset is written or built does not change a byte of it."""
        return _sha256_json(self.model_dump(mode="json", exclude={"output", "runner"}))

    # What decides the generated rows' bytes. Description, license, evaluators, gates, schedule,
    # reference (unless a generator trains on it: then its hash is in the prepared input fingerprint),
    # device, runner and output do not, so editing them regenerates nothing. Labelers do not either: they
    # label generated shards in their own cached step, so editing them relabels without regenerating
    # (a committed version compares its labelers separately, see `same_rows`).
    GENERATION_FIELDS: ClassVar[tuple[str, ...]] = ("generator", "seed", "count", "shard_size", "on_error")

    def generation_fingerprint(self) -> str:
        """sha256 of what makes the generated rows: generator kind and params, seed, counts, shard size."""
        return _sha256_json(self.model_dump(mode="json", include=set(self.GENERATION_FIELDS)))

    def same_rows(self, manifest: dict[str, Any]) -> bool:
        """Whether a committed version (its manifest) holds the rows this recipe makes: the same
        generation and the same labelers with the same params, in the same order."""
        return (manifest.get("generation_sha256") == self.generation_fingerprint()
                and _validated_labelers(manifest.get("recipe", {}).get("labelers", []))
                == self.model_dump(mode="json")["labelers"])

    def total_samples(self) -> int:
        return sum(self.count.values())

    def version_dir(self) -> Path:
        return Path(self.output) / self.name / self.version


def _validated_labelers(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A manifest's labelers as this version validates them (manifests before 2026-12 kept raw params);
    as recorded when a kind is no longer registered or its params no longer validate."""
    try:
        return [{"kind": s["kind"], "params": validated_params("labelers", s["kind"], s.get("params") or {})}
                for s in specs]
    except RecipeError:
        return specs


def _sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, naming the key path and the file."""
    return "; ".join(f"{source}: {line}" for line in describe_validation_error(error))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's spec forbids duplicate keys but PyYAML keeps the last one silently; refuse them."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice (lines {seen[key]} and {line})", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        raise RecipeError(format_validation_error(error, source)) from None
    # Labelers and evaluators check their own params (no unknown keys, no wrong types) before anything
    # runs, and the recipe keeps the values they validated, every default written out: what the
    # fingerprints and the manifest record is what runs, and writing a default out changes nothing.
    for group in ("labelers", "evaluators"):
        specs = getattr(recipe, group)
        for index, spec in enumerate(specs):
            spec.params = validated_params(group, spec.kind, spec.params, f"{source}: {group}.{index} ({spec.kind})")
    _check_evaluators_against_recipe(recipe, source)
    return recipe


def _check_evaluators_against_recipe(recipe: Recipe, source: str) -> None:
    """Each evaluator's `check_recipe` (e.g. augment: the generator trains on the real images it compares
    with); the first problem is one RecipeError line naming the evaluator. Relative input paths are found
    from the recipe file's folder, as the build's preflight finds them (`source` is its path)."""
    from .registry import load

    recipe_dir = Path(source).resolve().parent if Path(source).is_file() else Path.cwd()
    for index, spec in enumerate(recipe.evaluators):
        where = f"{source}: evaluators.{index} ({spec.kind})"
        check = getattr(load("evaluators", spec.kind)(spec.params, where=where), "check_recipe", None)
        problem = check(recipe, recipe_dir) if check else None
        if problem:
            raise RecipeError(f"{where}: {problem}")


def validated_params(group: str, kind: str, params: dict[str, Any], where: str = "") -> dict[str, Any]:
    """The params a labeler or evaluator runs with: validated by its own `Params`, defaults filled in,
    as JSON. One RecipeError line naming `where` when they are invalid."""
    from .errors import SynthloomError
    from .registry import load

    cls = load(group, kind)
    try:
        part = cls(params, where=where) if group == "evaluators" else cls(params)
    except SynthloomError as error:
        message = str(error)
        raise RecipeError(message if group == "evaluators" or not where else f"{where}: {message}") from None
    return part.params.model_dump(mode="json")


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory, not a recipe file")
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found" if not path.exists() else f"{path}: not a regular file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RecipeError(f"{path}: not a UTF-8 YAML file (byte {error.start}: {error.reason})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}:{where} is not valid YAML: {getattr(error, 'problem', error)}") from None
    recipe = parse_recipe(data, str(path))
    # Relative output paths are relative to where the user runs the command, like every CLI.
    return recipe
