"""Evaluate a committed dataset against real reference data.

This module only wires data to the metrics in this package: it loads the synthetic
rows and the reference, runs the evaluators a recipe (or the CLI) asks for, and
returns one JSON-able result: a flat `summary` (what gates read), per-evaluator
`details`, and `notes` a reader must see (e.g. non-comparable FIDs).

References:
- point clouds: a synthloom dataset (its train/test splits), or a folder of real
  meshes `<folder>/<class>/<mesh>` that is sampled uniformly here;
- images: anything `synthloom.references` reads: a synthloom dataset with an `Image` column,
  `sklearn:digits`, `idx:<folder>` (MNIST-format files) or a folder of class folders of images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthloom import dataset as ds
from synthloom.errors import DatasetError, ModelError
from synthloom.features import Image, Points, decode_image, feature_of

from .gates import EVALUATORS, ON_REQUEST

# Chamfer metrics cost O((n_synth + n_ref)^2 * points^2): on a CPU, cap both (recipe params
# `max_clouds` and `points` of the fidelity evaluator raise them; PointFlow used 2048 points).
DEFAULT_MAX_CLOUDS = 100
CHAMFER_POINTS = 256


def evaluate_version(version_dir: str | Path, reference: str, evaluators: dict[str, dict] | None = None,
                     split: str = "train", out_dir: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Run `evaluators` ({kind: params}; default: all) on one split; write plots into `out_dir`."""
    version_dir = ds.resolve_version_dir(version_dir)
    manifest = ds.read_manifest(version_dir)
    asked_for_labels = bool(evaluators) and "labels" in evaluators
    evaluators = {kind: {} for kind in EVALUATORS if kind not in ON_REQUEST} if not evaluators else dict(evaluators)
    evaluators.pop("labels", None)
    clip = _clip_score(version_dir, evaluators.pop("clip_score"), split) if "clip_score" in evaluators else None
    out_dir = Path(out_dir) if out_dir else version_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    table = ds.read_table(version_dir, manifest, split)
    features = ds.read_features(table, manifest)  # the pipeline follows the feature type, not a column name
    # Label agreement (auto-labels vs ground truth) needs no reference: run it first, alone if asked alone.
    labels = _label_agreement(table, features, manifest, version_dir, required=asked_for_labels)
    if not evaluators:
        result = {"modality": "labels" if clip is None else "images", "summary": {}, "details": {}, "notes": []}
        _add_label_agreement(result, labels)
        _add_clip_score(result, clip)
        result.update(reference=str(reference) if reference else "none (label agreement and CLIP score score the "
                      "dataset against itself)", split=split,
                      evaluators=(["labels"] if labels is not None else []) + (["clip_score"] if clip else []))
        return result
    clouds = next((n for n in features.columns_of(Points) if features[n].dtype.startswith("float")), None)
    images = feature_of(features, Image)
    if clouds is not None:
        result = _evaluate_points(_canonical(table, clouds, "points"), reference, evaluators, out_dir, seed)
    elif images is not None:
        result = _evaluate_images(_canonical(table, images, "image"), reference, evaluators, out_dir, seed,
                                  version_dir.parent / ".cache")
    else:
        raise DatasetError(f"{version_dir}: nothing to evaluate (no Points or Image column)")
    _add_label_agreement(result, labels)
    _add_clip_score(result, clip)
    result.update(reference=str(reference), split=split,
                  evaluators=sorted(evaluators) + (["labels"] if labels is not None else []) +
                  (["clip_score"] if clip else []))
    return result


def _clip_score(version_dir: Path, params: dict[str, Any], split: str) -> dict[str, Any]:
    """CLIP score of the Image column against the Text column (evaluators/clip_score.py); params:
    `model` (a local CLIP folder, required), `limit` (rows scored), `batch_size`."""
    from .clip_score import clip_score_of_dataset

    params = dict(params or {})
    model = params.pop("model", None)
    if not model:
        raise ModelError("evaluator clip_score: give params.model, a local CLIP model folder "
                         "(CLIPModel + CLIPProcessor save_pretrained)")
    unknown = sorted(set(params) - {"limit", "batch_size"})
    if unknown:
        raise ModelError(f"evaluator clip_score: unknown params {unknown} (known: model, limit, batch_size)")
    result = clip_score_of_dataset(version_dir, model, split=split, limit=params.get("limit"),
                                   batch_size=params.get("batch_size", 32))
    result.pop("clip_score_per_image")
    return result


def _add_clip_score(result: dict[str, Any], clip: dict[str, Any] | None) -> None:
    if clip is None:
        return
    result["summary"]["clip_score"] = clip["clip_score"]
    result["details"]["clip_score"] = clip
    result["notes"].append(f"CLIP score uses {clip['clip_model']}: comparable only with scores from the same CLIP model")


def _label_agreement(table, features, manifest, version_dir: Path, required: bool) -> dict[str, Any] | None:
    """mAP of the auto-labelled boxes against the generator's ground truth (evaluators/label_agreement.py);
    None when the dataset lacks either and `labels` was not asked for by name."""
    from .label_agreement import agreement_columns, label_agreement

    columns = agreement_columns(features, manifest)
    if columns is None:
        if required:
            raise DatasetError(f"{version_dir}: label agreement needs ground-truth boxes and boxes a labeler wrote "
                               "(a BoundingBoxes column of the generator and one of a labeler such as owlv2)")
        return None
    return label_agreement(table, features, *columns)


def _add_label_agreement(result: dict[str, Any], labels: dict[str, Any] | None) -> None:
    if labels is None:
        return
    result["details"]["labels"] = labels
    result["summary"].update({k: labels[k] for k in ("label_map", "label_map_50", "label_map_75", "label_recall_100")})
    result["notes"].append(f"label agreement: COCO box mAP (pycocotools) of '{labels['predicted_column']}' "
                           f"(auto-labels) against '{labels['ground_truth_column']}' (generator ground truth) "
                           f"over {labels['images']} images")
    if labels["unscored_predicted_classes"]:
        result["notes"].append("label agreement cannot score predicted classes the ground truth lacks: "
                               + ", ".join(labels["unscored_predicted_classes"]))


def _feature_audits(evaluators, feature_name: str, synth_feats, synth_labels, train_feats, test_feats, real_labels,
                    content, summary: dict, details: dict) -> dict | None:
    """The memorization and diversity audits, the same for every modality once samples are feature rows.
    `content()` gives the raw samples whose hashes find exact duplicates (called only for diversity).
    Returns the memorization result, for its worst-pair picture (None when it was not asked for)."""
    from .diversity import diversity_audit
    from .memorization import memorization_audit

    memo = None
    if "memorization" in evaluators:
        memo = memorization_audit(synth_feats, train_feats, real_holdout_feats=test_feats, feature_name=feature_name,
                                  **evaluators["memorization"])
        details["memorization"] = memo
        summary["near_copy_fraction"] = memo["near_copy_fraction"]
    if "diversity" in evaluators:
        div = diversity_audit(synth_feats, synth_labels, real_feats=np.concatenate([train_feats, test_feats]),
                              real_labels=real_labels, content=content(), feature_name=feature_name,
                              **evaluators["diversity"])
        details["diversity"] = div
        summary["near_duplicate_rate"] = div["near_duplicate_rate"]
        summary["mode_collapse"] = div["flag_mode_collapse"]
    return memo


def _canonical(table, column: str, name: str):
    """The table with the typed column under the name the pipelines read."""
    if column == name:
        return table
    table = table.drop_columns([name]) if name in table.column_names else table
    return table.rename_columns([name if c == column else c for c in table.column_names])


# -- point clouds ------------------------------------------------------------------------------
def _clouds(table) -> tuple[np.ndarray, list[str]]:
    values, offsets = ds.fixed_list_to_numpy(table.column("points"))
    sizes = np.diff(offsets)
    if len(set(sizes.tolist())) != 1:
        raise DatasetError("clouds of different sizes cannot be evaluated together")
    labels = [str(v) for v in table.column("label_name").to_pylist()]
    return values.reshape(len(sizes), int(sizes[0]), 3).astype(np.float32), labels


def load_reference_clouds(reference: str, num_points: int, per_mesh: int = 16, seed: int = 0):
    """(train_points, train_labels, test_points, test_labels) of real clouds."""
    path = Path(reference)
    found = ds.find_version(path)
    if found is not None:
        version_dir, manifest = found
        return _split_reference(version_dir, manifest, _clouds)
    if not path.is_dir():
        raise DatasetError(f"{reference}: reference not found (a synthloom dataset or a folder of mesh classes)")
    from synthloom.generators.base import BuildContext
    from synthloom.generators.pointcloud import PointCloudGenerator, mesh_sampler

    generator = PointCloudGenerator({"source": str(path)})
    prepared = generator.prepare(BuildContext(cache_dir=path, on_error="skip"))
    rng = np.random.default_rng(seed)
    clouds, labels, parity = [], [], []
    for asset in prepared.assets:
        sampler = mesh_sampler(asset.path, asset.sha256)
        for k in range(per_mesh):
            points = sampler.sample_uniform(num_points, rng)[0]
            clouds.append(((points - sampler.center) / sampler.radius).astype(np.float32))
            labels.append(asset.label)
            parity.append(k % 2)
    clouds, parity = np.stack(clouds), np.array(parity)
    labels = np.array(labels)
    # Fresh samples of the same real meshes: even draws train the TRTR classifier, odd ones test.
    return clouds[parity == 0], list(labels[parity == 0]), clouds[parity == 1], list(labels[parity == 1])


def _subsample(clouds: np.ndarray, labels: list[str], count: int, points: int, rng) -> tuple[np.ndarray, list]:
    pick = np.sort(rng.choice(len(clouds), size=min(count, len(clouds)), replace=False))
    cols = np.sort(rng.choice(clouds.shape[1], size=min(points, clouds.shape[1]), replace=False))
    return clouds[pick][:, cols], [labels[i] for i in pick]


def _evaluate_points(table, reference, evaluators, out_dir: Path, seed: int) -> dict[str, Any]:
    from . import pointcloud_metrics
    from .cloud_features import cloud_attributes, d2_descriptor

    synth, synth_labels = _clouds(table)
    real_train, real_train_labels, real_test, real_test_labels = load_reference_clouds(
        reference, synth.shape[1], seed=seed)
    rng = np.random.default_rng(seed)
    summary: dict[str, Any] = {}
    details: dict[str, Any] = {}
    notes: list[str] = []
    counts = {c: synth_labels.count(c) for c in sorted(set(synth_labels))}
    summary["min_class_count"] = min(counts.values())

    if "fidelity" in evaluators:
        params = evaluators["fidelity"]
        max_clouds = int(params.get("max_clouds", DEFAULT_MAX_CLOUDS))
        points = int(params.get("points", CHAMFER_POINTS))
        a, _ = _subsample(synth, synth_labels, max_clouds, points, rng)
        b, _ = _subsample(np.concatenate([real_train, real_test]), real_train_labels + real_test_labels,
                          max_clouds, points, rng)
        fidelity = pointcloud_metrics.coverage_mmd(a, b, normalize="unit_sphere")
        details["fidelity"] = fidelity
        summary.update({k: fidelity[k] for k in ("cov_cd", "mmd_cd", "one_nna_cd")})
        notes.append(f"COV/MMD/1-NNA use Chamfer distance between {len(a)} synthetic and {len(b)} real clouds of "
                     f"{points} points, each normalised to the unit sphere; Chamfer is not rotation-invariant, "
                     "so randomly rotated synthetic clouds score worse against canonically posed references.")
    if "cas" in evaluators:
        params = {"epochs": 20, **evaluators["cas"]}
        shared = sorted(set(synth_labels) & set(real_test_labels))
        if not shared:
            raise DatasetError(f"{reference}: no class names in common with the synthetic data")
        keep = [i for i, c in enumerate(synth_labels) if c in shared]
        keep_tr = [i for i, c in enumerate(real_train_labels) if c in shared]
        keep_te = [i for i, c in enumerate(real_test_labels) if c in shared]
        # PointNet sees CHAMFER_POINTS points per cloud: enough to tell shapes apart, 4x cheaper than 2048.
        cols = np.sort(rng.choice(synth.shape[1], size=min(CHAMFER_POINTS, synth.shape[1]), replace=False))
        cas = pointcloud_metrics.pointcloud_cas(
            synth[keep][:, cols], [synth_labels[i] for i in keep], real_train[keep_tr][:, cols],
            [real_train_labels[i] for i in keep_tr], real_test[keep_te][:, cols],
            [real_test_labels[i] for i in keep_te], seed=seed, **params)
        details["cas"] = cas
        summary.update({k: cas[k] for k in ("cas", "trtr", "cas_ratio")})
        dropped = sorted(set(synth_labels) - set(shared))
        if dropped:
            notes.append(f"CAS ignores synthetic classes absent from the reference: {dropped}")
    if {"memorization", "diversity"} & set(evaluators):
        synth_feats, train_feats, test_feats = (d2_descriptor(c, seed=seed) for c in (synth, real_train, real_test))
        memo = _feature_audits(evaluators, "d2-shape-distribution-32", synth_feats, synth_labels, train_feats,
                               test_feats, real_train_labels + real_test_labels, lambda: [c.tobytes() for c in synth],
                               summary, details)
        if memo is not None:
            _plot_cloud_pairs(synth, real_train, memo["worst_pairs"][:8], out_dir / "worst_pairs.png")
    if "attributes" in evaluators:
        details["attributes"] = cloud_attributes(synth, np.concatenate([real_train, real_test]),
                                                 **evaluators["attributes"])
        summary["overly_consistent"] = details["attributes"]["overly_consistent"]
    return {"modality": "points", "summary": summary, "details": details, "notes": notes,
            "class_counts": counts}


def _plot_cloud_pairs(synth: np.ndarray, train: np.ndarray, pairs: list[dict], path: Path) -> None:
    from synthloom.preview import point_cloud_grid

    clouds, captions = [], []
    for pair in pairs[:8]:
        clouds += [synth[pair["synth_index"]], train[pair["train_index"]]]
        captions += [f"synthetic #{pair['synth_index']}", f"real #{pair['train_index']} d={pair['distance']:.3g}"]
    if clouds:
        point_cloud_grid(clouds, [None] * len(clouds), captions, path)


# -- images ------------------------------------------------------------------------------------
MAX_IMAGES_IN_MEMORY = 10_000  # CAS, attribute audit and plots use at most this many synthetic images
BATCH = 256


def _decode(items: list) -> torch.Tensor:
    # synthloom's one PNG decoder; the metrics take 1 (grayscale) or 3 channels, so alpha is dropped.
    stacked = np.stack([decode_image(item["bytes"])[:, :, :3] for item in items])
    return torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))).float() / 255.0


def _label_names(table) -> list[str]:
    column = "label_name" if "label_name" in table.column_names else "label"
    return [str(v) for v in table.column(column).to_pylist()]


def _image_batches(table, batch: int = BATCH):
    """Decode the PNG column a batch at a time, so metrics stream over any number of images."""
    for start in range(0, table.num_rows, batch):
        yield _decode(table.column("image").slice(start, batch).to_pylist())


def _images(table, limit: int | None = None, seed: int = 0) -> tuple[torch.Tensor, list[str], np.ndarray]:
    """(images, labels, row indices) of all rows, or of `limit` rows drawn at random."""
    rows = np.arange(table.num_rows)
    if limit is not None and table.num_rows > limit:
        rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=limit, replace=False))
    subset = table.take(rows)
    return _decode(subset.column("image").to_pylist()), _label_names(subset), rows


def load_reference_images(reference: str):
    """(train_images, train_labels, test_images, test_labels); images float NCHW in [0, 1]. Read by
    `synthloom.references`, the one reader generators train on too (sklearn:digits, idx:<folder>, a
    folder of class folders, a synthloom dataset)."""
    from synthloom.references import read_reference_images

    return read_reference_images(reference).as_tuple()


def _split_reference(version_dir: Path, manifest: dict[str, Any], decode):
    """A synthloom dataset as reference: (train_x, train_y, test_x, test_y) from its train and test
    splits, or from alternate rows of its one split. `decode(table)` returns (x, labels, ...)."""
    splits = {s["split"] for s in manifest["shards"]}
    x, y = decode(ds.read_table(version_dir, manifest, "train" if "train" in splits else None))[:2]
    if "test" in splits:
        test_x, test_y = decode(ds.read_table(version_dir, manifest, "test"))[:2]
        return x, y, test_x, test_y
    return x[0::2], y[0::2], x[1::2], y[1::2]


def _domain_extractor(images: torch.Tensor, labels: list[str], cache: Path, seed: int):
    """A small CNN trained on the reference train images, cached by their content hash."""
    from .features import DomainClassifierFeatures

    classes = sorted(set(labels))
    digest = hashlib.sha256(images.numpy().tobytes() + "|".join(labels).encode()).hexdigest()[:16]
    folder = cache / f"domain-cnn-{digest}"
    if (folder / DomainClassifierFeatures.CONFIG_NAME).exists():
        return DomainClassifierFeatures.from_pretrained(folder)
    size = max(16, (max(images.shape[-2:]) + 3) // 4 * 4)
    extractor = DomainClassifierFeatures(num_classes=len(classes), in_channels=images.shape[1],
                                         input_size=(size, size), dataset=f"reference-{digest[:8]}",
                                         class_names=classes)
    extractor.fit(images, torch.tensor([classes.index(c) for c in labels]), seed=seed)
    extractor.save_pretrained(folder)
    return extractor


def _load_extractor(spec: str):
    from .features import load_extractor

    try:
        return load_extractor(spec)
    except (ValueError, RuntimeError, OSError) as error:
        raise ModelError(f"feature extractor {spec!r}: {error}") from None


def _features(extractor, batches) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([extractor(batch) for batch in batches]).numpy()


def _evaluate_images(table, reference, evaluators, out_dir: Path, seed: int, cache: Path) -> dict[str, Any]:
    from .attributes import attribute_audit, plot_attribute_distributions
    from .cas import classification_accuracy_score
    from .image_metrics import evaluate_images
    from .memorization import plot_worst_pairs

    # Streamed: fidelity metrics and features see every image a batch at a time. In memory: at most
    # MAX_IMAGES_IN_MEMORY synthetic images, for CAS, the attribute audit and the worst-pair picture.
    synth, synth_labels, synth_rows = _images(table, MAX_IMAGES_IN_MEMORY, seed)
    all_labels = _label_names(table)
    real_train, real_train_labels, real_test, real_test_labels = load_reference_images(reference)
    summary: dict[str, Any] = {}
    details: dict[str, Any] = {}
    notes: list[str] = []
    counts = {c: all_labels.count(c) for c in sorted(set(all_labels))}
    summary["min_class_count"] = min(counts.values())
    if len(synth_rows) < table.num_rows:
        notes.append(f"CAS, attribute audit and worst-pair plot use {len(synth_rows)} of {table.num_rows} "
                     "synthetic images drawn at random; fidelity, memorization and diversity use all.")
    spec = evaluators.get("fidelity", {}).get("extractor", "domain")
    chosen = None if spec == "domain" else _load_extractor(spec)  # a bad path fails before any training
    domain = _domain_extractor(real_train, real_train_labels, cache, seed)
    extractor = chosen or domain
    if "fidelity" in evaluators:
        fidelity = evaluate_images(real_test, _image_batches(table), extractor=extractor, classifier=domain,
                                   seed=seed)
        details["fidelity"] = fidelity
        summary.update({k: fidelity.get(k) for k in ("fid", "kid_mean", "precision", "recall", "inception_score")})
        summary["extractor"] = fidelity["extractor"]
        notes += fidelity.get("notes", [])
    if "cas" in evaluators:
        cas = classification_accuracy_score(synth, synth_labels, real_train, real_train_labels, real_test,
                                            real_test_labels, seed=seed, **evaluators["cas"])
        details["cas"] = cas
        summary.update({k: cas[k] for k in ("cas", "trtr", "cas_ratio")})
    if {"memorization", "diversity"} & set(evaluators):
        synth_feats = _features(extractor, _image_batches(table))
        train_feats, test_feats = (_features(extractor, x.split(BATCH)) for x in (real_train, real_test))
        memo = _feature_audits(evaluators, extractor.name, synth_feats, all_labels, train_feats, test_feats,
                               real_train_labels + real_test_labels,
                               lambda: [item["bytes"] for item in table.column("image").to_pylist()], summary, details)
        if memo is not None:
            worst = memo["worst_pairs"][:16]
            shown = _decode(table.column("image").take([p["synth_index"] for p in worst]).to_pylist())
            plot_worst_pairs(shown, real_train, [(k, p["train_index"], p["distance"]) for k, p in enumerate(worst)],
                             str(out_dir / "worst_pairs.png"))
    if "attributes" in evaluators:
        attrs = attribute_audit(synth, torch.cat([real_train, real_test]), value_range=(0.0, 1.0),
                                **evaluators["attributes"])
        attrs.pop("histograms", None)
        details["attributes"] = attrs
        summary["overly_consistent"] = attrs["overly_consistent"]
        plot_attribute_distributions((synth, torch.cat([real_train, real_test])),
                                     str(out_dir / "attributes.png"), value_range=(0.0, 1.0))
    return {"modality": "images", "summary": summary, "details": details, "notes": notes, "class_counts": counts}
