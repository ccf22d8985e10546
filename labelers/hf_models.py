"""What the model-backed labelers (owlv2, blip) share: finding a transformers model offline, checking
it is the architecture the labeler needs, hashing its weights for provenance, loading it, and turning
a batch's image column into RGB arrays.

Models load with `from_pretrained(local_dir)` and `local_files_only=True`: machines here reach no
model hub, so a missing model must fail in a second with a line naming the path or id, never hang on
retries. A hub id is looked up in the Hugging Face cache (where `huggingface-cli download` puts it).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa

from synthloom.errors import FeatureError, LabelerError
from synthloom.features import Features, Image
from synthloom.generators.base import Asset, BuildContext

from .base import Labeler, Prepared, labeler_fingerprint

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _looks_like_path(model: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else (./x, /x, ~/x, a/b/c) is meant as a folder."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


def resolve_model_dir(labeler: str, model: str, base: Path | None = None) -> Path:
    """The local folder of `model`: a directory (relative paths against `base` too), or a hub id found
    in the Hugging Face cache. One LabelerError line naming `model` when it is neither."""
    candidates = [Path(model).expanduser()]
    if base is not None and not candidates[0].is_absolute():
        candidates.append(base / candidates[0])
    for path in candidates:
        if path.is_dir():
            return path.resolve()
        if path.exists():
            raise LabelerError(f"labeler {labeler}: model '{model}' is a file, not a model directory "
                               "(a folder with config.json and weights, as save_pretrained writes it)")
    if _looks_like_path(model):
        raise LabelerError(f"labeler {labeler}: model directory '{model}' does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not in the cache (offline), or not a valid id
        looked = " or ".join(dict.fromkeys(str(path.resolve()) for path in candidates))  # base may be the cwd
        raise LabelerError(f"labeler {labeler}: model '{model}' is no local directory ({looked}) and not in the "
                           f"Hugging Face cache (offline); run `huggingface-cli download {model}` on a connected "
                           "machine or pass a local directory") from None


def check_architecture(labeler: str, folder: Path, model_types: Sequence[str], needs: str,
                       architecture: str | None = None) -> dict[str, Any]:
    """The folder's config.json, after checking its `model_type` is one of `model_types` and, when the
    config lists its architectures, that `architecture` is among them (BLIP captioning and VQA models
    share a model_type; loading one as the other would silently initialise missing heads at random)."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise LabelerError(f"labeler {labeler}: {folder} has no config.json; not a transformers model "
                           "directory") from None
    except (OSError, ValueError) as error:
        raise LabelerError(f"labeler {labeler}: {config_path} is unreadable ({error})") from None
    found = config.get("model_type")
    if found not in model_types:
        architectures = ", ".join(config.get("architectures") or []) or "no architectures listed"
        raise LabelerError(f"labeler {labeler}: {folder} holds a '{found}' model ({architectures}); "
                           f"{labeler} needs {needs} (model_type '{model_types[0]}')")
    listed = config.get("architectures") or []
    if architecture is not None and listed and architecture not in listed:
        raise LabelerError(f"labeler {labeler}: {folder} holds a {', '.join(listed)}; {labeler} needs {needs}")
    return config


def weight_assets(labeler: str, folder: Path) -> list[Asset]:
    """sha256 of every weights file of a model folder (what provenance records), sorted by name."""
    from synthloom.provenance import sha256_file

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise LabelerError(f"labeler {labeler}: {folder} has no weights file "
                           f"({', '.join('*' + s for s in WEIGHT_SUFFIXES)})")
    return [Asset(path=str(p), sha256=sha256_file(p), role="weights") for p in files]


def weights_sha256(assets: Sequence[Asset]) -> str:
    """One hash of a model's weights: the file's own sha256 when there is one file (what the hub shows
    for it), else the sha256 of the sorted (file name, sha256) list."""
    weights = [a for a in assets if a.role == "weights"]
    if len(weights) == 1:
        return weights[0].sha256
    listing = sorted((Path(a.path).name, a.sha256) for a in weights)
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def require_transformers(labeler: str) -> None:
    """One line instead of an ImportError when the `models` extra is not installed."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise LabelerError(f"labeler {labeler}: needs transformers; pip install 'synthloom[models]'") from None


def load_pretrained(labeler: str, folder: Path, model_class, processor_class, device: str):
    """(processor, model in eval mode on `device`), loaded offline from `folder`."""
    try:
        processor = processor_class.from_pretrained(str(folder), local_files_only=True)
        model = model_class.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # transformers raises OSError, ValueError, KeyError... for bad folders
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LabelerError(f"labeler {labeler}: cannot load {model_class.__name__} from {folder}: {first}") from None
    return processor, model.eval().to(device)


# -- images ------------------------------------------------------------------------------------
def image_column(labeler: str, features: Features, chosen: str | None) -> str:
    """The Image column a labeler reads: `chosen`, or the first Image column."""
    if chosen is None:
        name = next(iter(features.columns_of(Image)), None)
        if name is None:
            raise LabelerError(f"labeler {labeler}: needs an Image column (columns: "
                               + ", ".join(f"{n}: {f.describe()}" for n, f in features.items()) + ")")
        return name
    if chosen not in features:
        raise LabelerError(f"labeler {labeler}: image column '{chosen}' not found (columns: {', '.join(features)})")
    if not isinstance(features[chosen], Image):
        raise LabelerError(f"labeler {labeler}: column '{chosen}' is {features[chosen].describe()}, not an Image")
    return chosen


def check_output_column(labeler: str, features: Features, column: str, overwrite: bool) -> None:
    """Refuse to replace an existing column (ground truth, often) unless asked to."""
    if column in features and not overwrite:
        raise LabelerError(f"labeler {labeler}: the dataset already has a column '{column}' "
                           f"({features[column].describe()}); set `column:` to another name to keep it, "
                           "or `overwrite: true` to replace it")


def rgb_images(labeler: str, batch: pa.Table, features: Features, column: str, min_side: int) -> list[np.ndarray | None]:
    """The batch's images as (H, W, 3) uint8 arrays (None for a null image). Grayscale is repeated to
    three channels and alpha dropped, as PIL's convert("RGB") does; an image whose shorter side is
    below `min_side` pixels is an error naming its row."""
    try:
        rows = features[column].decode(batch.column(column))
        images = [rows.numpy(i) for i in range(batch.num_rows)]
    except FeatureError as error:
        raise LabelerError(f"labeler {labeler}: column '{column}': {error}") from None
    ids = batch.column("id").to_pylist() if "id" in batch.column_names else list(range(batch.num_rows))
    out: list[np.ndarray | None] = []
    for row_id, image in zip(ids, images):
        if image is None:
            out.append(None)
            continue
        if min(image.shape[:2]) < min_side:
            raise LabelerError(f"labeler {labeler}: image of row {row_id} is {image.shape[1]}x{image.shape[0]} "
                               f"pixels, smaller than min_side={min_side}; upscale the images or lower min_side")
        channels = image.shape[2]
        if channels == 1:
            image = np.repeat(image, 3, axis=2)
        elif channels == 4:
            image = image[:, :, :3]
        out.append(np.ascontiguousarray(image))
    return out


class PretrainedLabeler(Labeler):
    """A labeler backed by one transformers model folder: the model check, `prepare` (weights hashed into
    the fingerprint and provenance) and `load` that every such labeler shares. A subclass names its model
    (MODEL_TYPES, MODEL_CLASS, PROCESSOR_CLASS, NEEDS, ARCHITECTURE) and the params its provenance
    records (INFO_PARAMS); its params have `model` and `batch_size`."""

    MODEL_TYPES: ClassVar[tuple[str, ...]]
    MODEL_CLASS: ClassVar[str]  # a transformers class name
    PROCESSOR_CLASS: ClassVar[str]
    NEEDS: ClassVar[str]  # what the error says the labeler needs
    ARCHITECTURE: ClassVar[str | None] = None  # checked when model types are shared (BLIP captioning / VQA)
    INFO_PARAMS: ClassVar[tuple[str, ...]] = ()
    # A device slot only on a GPU (set in load): on CPU the Prefect concurrency lease cost ~1.7 s per
    # shard here and protects nothing.
    resources: dict[str, int] = {}
    code_version = "1"

    def __init__(self, params: Any = None):
        super().__init__(params)
        self.batch_size = self.params.batch_size

    def check_model(self, base: Path | None = None) -> Path:
        """The model folder, checked to hold the right architecture: cheap (reads config.json), so the
        `label` preflight runs it before any flow run. `base`: where relative paths may also be found."""
        folder = resolve_model_dir(self.name, self.params.model, base)
        check_architecture(self.name, folder, self.MODEL_TYPES, self.NEEDS, self.ARCHITECTURE)
        return folder

    def prepare(self, ctx: BuildContext) -> Prepared:
        folder = self.check_model(ctx.recipe_dir)
        require_transformers(self.name)
        assets = weight_assets(self.name, folder)
        info = {"model": self.params.model, "model_dir": str(folder), "weights_sha256": weights_sha256(assets),
                **{name: getattr(self.params, name) for name in self.INFO_PARAMS}}
        # The batch size changes no label: it is not part of the fingerprint (cache keys survive tuning it).
        params = self.params.model_copy(update={"batch_size": 1})
        return Prepared(labeler=self.name, assets=assets, info=info,
                        input_fingerprint=labeler_fingerprint(self.name, params, self.code_version, assets))

    def load(self, prepared: Prepared, device: str = "cpu") -> None:
        import transformers

        super().load(prepared, device)
        self.resources = {"gpu": 1} if device.startswith("cuda") else {}
        self.processor, self.model = load_pretrained(self.name, Path(prepared.info["model_dir"]),
                                                     getattr(transformers, self.MODEL_CLASS),
                                                     getattr(transformers, self.PROCESSOR_CLASS), device)
