"""The built-in evaluators, one class each, registered in pyproject.toml's `synthloom.evaluators` group.

Each is a thin seam over the metric functions of this package (image_metrics, pointcloud_metrics, cas,
augment, memorization, diversity, attributes, label_agreement, clip_score), which stay usable on their own.
Heavy imports (torch, torchmetrics, transformers) happen inside `compute`: the recipe loads these classes
to validate params and gate names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from synthloom.errors import DatasetError, EvaluatorError, ModelError

from .base import Evaluator, EvaluatorParams, EvaluatorResult, Gate

if TYPE_CHECKING:  # pragma: no cover  (evaluators.data imports torch: ~2 s a recipe's validation does not need)
    from .data import EvaluationData

# Chamfer metrics cost O((n_synth + n_ref)^2 * points^2): on a CPU, cap both (params `max_clouds`
# and `points` raise them; PointFlow used 2048 points).
DEFAULT_MAX_CLOUDS = 100
CHAMFER_POINTS = 256


def _subsample(clouds: np.ndarray, labels: list[str], count: int, points: int, rng) -> tuple[np.ndarray, list]:
    pick = np.sort(rng.choice(len(clouds), size=min(count, len(clouds)), replace=False))
    cols = np.sort(rng.choice(clouds.shape[1], size=min(points, clouds.shape[1]), replace=False))
    return clouds[pick][:, cols], [labels[i] for i in pick]


class FidelityParams(EvaluatorParams):
    extractor: str = Field(default="domain", description="images: feature space of FID/KID/precision/recall: "
                           "'domain' (a CNN trained on the reference), 'inception', or a local extractor folder")
    max_clouds: int = Field(default=DEFAULT_MAX_CLOUDS, gt=0, description="points: clouds per side for Chamfer")
    points: int = Field(default=CHAMFER_POINTS, gt=0, description="points: points per cloud for Chamfer")


class Fidelity(Evaluator):
    """How close the synthetic distribution is to the real one: FID, KID, precision/recall and Inception
    score for images (streamed over every image); COV/MMD/1-NNA under Chamfer distance for clouds."""

    name = "fidelity"
    Params = FidelityParams
    params: FidelityParams
    gates = {"fid_max": Gate("fid", "<="), "kid_max": Gate("kid_mean", "<="), "precision_min": Gate("precision", ">="),
             "recall_min": Gate("recall", ">="), "mmd_max": Gate("mmd_cd", "<="), "cov_min": Gate("cov_cd", ">="),
             "one_nna_max": Gate("one_nna_cd", "<=")}
    metrics = {"fid": "Fréchet distance of features, lower is better",
               "kid_mean": "kernel inception distance, lower is better",
               "precision": "share of synthetic samples on the real manifold, higher is better",
               "recall": "share of real samples covered by the synthetic ones, higher is better",
               "inception_score": "confidence and spread of class predictions, higher is better",
               "cov_cd": "coverage (Chamfer), higher is better",
               "mmd_cd": "minimum matching distance (Chamfer), lower is better",
               "one_nna_cd": "1-NN accuracy (Chamfer), 0.5 is best",
               "extractor": "feature extractor the distances are measured in"}

    def compute(self, data: EvaluationData) -> EvaluatorResult:
        if data.modality == "points":
            return self._clouds(data)
        from .image_metrics import evaluate_images

        chosen = data.extractor(self.params.extractor)  # a bad path fails before the domain CNN trains
        real_test = data.reference_images[2]
        fidelity = evaluate_images(real_test, data.image_batches(), extractor=chosen,
                                   classifier=data.domain_extractor, seed=data.seed)
        summary = {k: fidelity.get(k) for k in ("fid", "kid_mean", "precision", "recall", "inception_score")}
        summary["extractor"] = fidelity["extractor"]
        return EvaluatorResult(summary, fidelity, list(fidelity.get("notes", [])))

    def _clouds(self, data: EvaluationData) -> EvaluatorResult:
        from . import pointcloud_metrics

        rng = np.random.default_rng(data.seed)
        synth, labels = data.clouds
        train, train_labels, test, test_labels = data.reference_clouds
        points = self.params.points
        a, _ = _subsample(synth, labels, self.params.max_clouds, points, rng)
        b, _ = _subsample(np.concatenate([train, test]), train_labels + test_labels, self.params.max_clouds, points,
                          rng)
        fidelity = pointcloud_metrics.coverage_mmd(a, b, normalize="unit_sphere")
        note = (f"COV/MMD/1-NNA use Chamfer distance between {len(a)} synthetic and {len(b)} real clouds of "
                f"{points} points, each normalised to the unit sphere; Chamfer is not rotation-invariant, "
                "so randomly rotated synthetic clouds score worse against canonically posed references.")
        return EvaluatorResult({k: fidelity[k] for k in ("cov_cd", "mmd_cd", "one_nna_cd")}, fidelity, [note])


class CASParams(EvaluatorParams):
    classifier: Literal["logreg", "cnn"] = Field(default="logreg", description="images: the downstream classifier")
    C: float = Field(default=1.0, gt=0, description="images, logreg: inverse regularisation strength")
    cnn_epochs: int = Field(default=20, gt=0, description="images, cnn: training epochs")
    epochs: int = Field(default=20, gt=0, description="points: PointNet training epochs")
    batch_size: int = Field(default=32, gt=0, description="points: PointNet batch size")
    lr: float = Field(default=1e-3, gt=0, description="points: PointNet learning rate")
    augment: bool = Field(default=True, description="points: jitter/scale augmentation while training")
    rotate_z: bool = Field(default=False, description="points: random z rotations while training")


class CAS(Evaluator):
    """Classification accuracy score: a classifier trained on the synthetic data, tested on real test
    data, against the same classifier trained on real data (TRTR)."""

    name = "cas"
    Params = CASParams
    params: CASParams
    gates = {"cas_min": Gate("cas", ">="), "cas_ratio_min": Gate("cas_ratio", ">=")}
    metrics = {"cas": "accuracy on real test data of a classifier trained on synthetic data",
               "trtr": "the same classifier trained on real data (the ceiling for CAS)",
               "cas_ratio": "cas / trtr, 1 = synthetic trains as well as real"}

    def compute(self, data: EvaluationData) -> EvaluatorResult:
        p = self.params
        if data.modality == "points":
            return self._clouds(data)
        from .cas import classification_accuracy_score

        synth, labels, _ = data.image_sample
        train, train_labels, test, test_labels = data.reference_images
        cas = classification_accuracy_score(synth, labels, train, train_labels, test, test_labels, seed=data.seed,
                                            classifier=p.classifier, C=p.C, cnn_epochs=p.cnn_epochs)
        return EvaluatorResult({k: cas[k] for k in ("cas", "trtr", "cas_ratio")}, cas)

    def _clouds(self, data: EvaluationData) -> EvaluatorResult:
        from . import pointcloud_metrics

        p = self.params
        rng = np.random.default_rng(data.seed)
        synth, labels = data.clouds
        train, train_labels, test, test_labels = data.reference_clouds
        shared = sorted(set(labels) & set(test_labels))
        if not shared:
            raise DatasetError(f"{data.reference}: no class names in common with the synthetic data")

        def keep(names):
            return [i for i, c in enumerate(names) if c in shared]

        k, k_tr, k_te = keep(labels), keep(train_labels), keep(test_labels)
        # PointNet sees CHAMFER_POINTS points per cloud: enough to tell shapes apart, 4x cheaper than 2048.
        cols = np.sort(rng.choice(synth.shape[1], size=min(CHAMFER_POINTS, synth.shape[1]), replace=False))
        cas = pointcloud_metrics.pointcloud_cas(
            synth[k][:, cols], [labels[i] for i in k], train[k_tr][:, cols], [train_labels[i] for i in k_tr],
            test[k_te][:, cols], [test_labels[i] for i in k_te], seed=data.seed, epochs=p.epochs,
            batch_size=p.batch_size, lr=p.lr, augment=p.augment, rotate_z=p.rotate_z)
        dropped = sorted(set(labels) - set(shared))
        notes = [f"CAS ignores synthetic classes absent from the reference: {dropped}"] if dropped else []
        return EvaluatorResult({k: cas[k] for k in ("cas", "trtr", "cas_ratio")}, cas, notes)


class MemorizationParams(EvaluatorParams):
    extractor: str = Field(default="domain", description="images: the feature space distances are measured in")
    threshold_ratio: float = Field(default=0.5, gt=0, description="near copy: closer than this x the real "
                                   "holdout's nearest-neighbour distance")
    n_worst: int = Field(default=16, gt=0, description="worst pairs kept for the picture and the manifest")
    chunk_size: int = Field(default=1024, gt=0, description="rows per distance block (memory bound)")
    z_threshold: float = Field(default=-3.0, description="data-copying test: flag below this z score")


class Memorization(Evaluator):
    """Privacy audit: synthetic samples that sit closer to a training sample than real holdout samples do
    (near copies), and the Meehan et al. data-copying test; writes eval/worst_pairs.png."""

    name = "memorization"
    Params = MemorizationParams
    params: MemorizationParams
    gates = {"near_copy_max": Gate("near_copy_fraction", "<=")}
    metrics = {"near_copy_fraction": "synthetic samples closer to a training sample than real ones are, "
                                     "lower is better"}

    def compute(self, data: EvaluationData) -> EvaluatorResult:
        from .memorization import memorization_audit

        feature_name, synth, train, test = data.feature_rows(self.params.extractor)
        memo = memorization_audit(synth, train, real_holdout_feats=test, feature_name=feature_name,
                                  **self.params.model_dump(exclude={"extractor"}))
        self._plot(data, memo["worst_pairs"])
        return EvaluatorResult({"near_copy_fraction": memo["near_copy_fraction"]}, memo)

    @staticmethod
    def _plot(data: EvaluationData, worst: list[dict]) -> None:
        path = data.out_dir / "worst_pairs.png"
        if data.modality == "points":
            from synthloom.preview import point_cloud_grid

            synth, train = data.clouds[0], data.reference_clouds[0]
            clouds, captions = [], []
            for pair in worst[:8]:
                clouds += [synth[pair["synth_index"]], train[pair["train_index"]]]
                captions += [f"synthetic #{pair['synth_index']}",
                             f"real #{pair['train_index']} d={pair['distance']:.3g}"]
            if clouds:
                point_cloud_grid(clouds, [None] * len(clouds), captions, path)
            return
        from .memorization import plot_worst_pairs

        worst = worst[:16]
        shown = data.decode_images(data.table.take([p["synth_index"] for p in worst]))
        plot_worst_pairs(shown, data.reference_images[0],
                         [(k, p["train_index"], p["distance"]) for k, p in enumerate(worst)], str(path))


class DiversityParams(EvaluatorParams):
    extractor: str = Field(default="domain", description="images: the feature space distances are measured in")
    collapse_ratio: float = Field(default=0.5, gt=0, description="mode collapse: a class's spread below this x "
                                  "the real one's")
    near_dup_ratio: float = Field(default=0.05, gt=0, description="near duplicate: closer than this x the median "
                                  "pairwise distance")
    near_dup_threshold: float | None = Field(default=None, description="an absolute near-duplicate distance "
                                             "instead of near_dup_ratio")
    max_pairwise: int = Field(default=1000, gt=1, description="samples drawn for pairwise statistics")


class Diversity(Evaluator):
    """Duplicates and mode collapse: exact and near duplicates among the synthetic samples, and classes
    whose spread is far below the real one's."""

    name = "diversity"
    Params = DiversityParams
    params: DiversityParams
    gates = {"duplicate_rate_max": Gate("near_duplicate_rate", "<=")}
    metrics = {"near_duplicate_rate": "synthetic samples that duplicate another synthetic one, lower is better",
               "mode_collapse": "a class whose spread is far below the real one's"}

    def compute(self, data: EvaluationData) -> EvaluatorResult:
        from .diversity import diversity_audit

        feature_name, synth, train, test = data.feature_rows(self.params.extractor)
        content = [c.tobytes() for c in data.clouds[0]] if data.modality == "points" else data.image_bytes()
        div = diversity_audit(synth, data.labels, real_feats=np.concatenate([train, test]),
                              real_labels=data.reference_labels(), content=content, feature_name=feature_name,
                              **self.params.model_dump(exclude={"extractor"}))
        return EvaluatorResult({"near_duplicate_rate": div["near_duplicate_rate"],
                                "mode_collapse": div["flag_mode_collapse"]}, div)


class AttributesParams(EvaluatorParams):
    ks_threshold: float = Field(default=0.2, gt=0, description="shifted: Kolmogorov-Smirnov statistic above this")
    alpha: float = Field(default=0.01, gt=0, lt=1, description="shifted: KS test p-value below this")
    consistency_ratio: float = Field(default=0.5, gt=0, description="overly consistent: std below this x real std")
    fg_threshold: float = Field(default=0.2, ge=0, description="images: foreground = differs from the border "
                                "colour by more than this")
    border: int | None = Field(default=None, ge=1, description="images: border width the background is read from")
    bins: int = Field(default=30, gt=1, description="images: histogram bins of the plot")


class Attributes(Evaluator):
    """Overly consistent or shifted attributes (colour, brightness, object size and position for images;
    extent, spread and density for clouds) against the real data; writes eval/attributes.png for images."""

    name = "attributes"
    Params = AttributesParams
    params: AttributesParams
    metrics = {"overly_consistent": "attributes that vary much less than in real data"}

    def compute(self, data: EvaluationData) -> EvaluatorResult:
        p = self.params
        if data.modality == "points":
            from .cloud_features import cloud_attributes

            train, _, test, _ = data.reference_clouds
            attrs = cloud_attributes(data.clouds[0], np.concatenate([train, test]), ks_threshold=p.ks_threshold,
                                     alpha=p.alpha, consistency_ratio=p.consistency_ratio)
            return EvaluatorResult({"overly_consistent": attrs["overly_consistent"]}, attrs)
        import torch

        from .attributes import attribute_audit, plot_attribute_distributions

        synth = data.image_sample[0]
        real = torch.cat([data.reference_images[0], data.reference_images[2]])
        attrs = attribute_audit(synth, real, value_range=(0.0, 1.0), **p.model_dump())
        attrs.pop("histograms", None)
        plot_attribute_distributions((synth, real), str(data.out_dir / "attributes.png"), value_range=(0.0, 1.0))
        return EvaluatorResult({"overly_consistent": attrs["overly_consistent"]}, attrs)


class LabelAgreement(Evaluator):
    """mAP (pycocotools) of the boxes a labeler wrote against the generator's ground-truth boxes. Needs no
    reference; run by default whenever a dataset has both."""

    name = "labels"
    needs_reference = False
    gates = {"label_map_min": Gate("label_map", ">=")}
    metrics = {"label_map": "mAP of auto-labels against the generator's ground truth"}

    def unavailable(self, data: EvaluationData) -> str | None:
        from .label_agreement import agreement_columns

        if agreement_columns(data.features, data.manifest) is None:
            return (f"{data.version_dir}: label agreement needs ground-truth boxes and boxes a labeler wrote "
                    "(a BoundingBoxes column of the generator and one of a labeler such as owlv2)")
        return None

    def compute(self, data: EvaluationData) -> EvaluatorResult:
        from .label_agreement import agreement_columns, label_agreement

        labels = label_agreement(data.table, data.features, *agreement_columns(data.features, data.manifest))
        notes = [f"label agreement: COCO box mAP (pycocotools) of '{labels['predicted_column']}' (auto-labels) "
                 f"against '{labels['ground_truth_column']}' (generator ground truth) over {labels['images']} images"]
        if labels["unscored_predicted_classes"]:
            notes.append("label agreement cannot score predicted classes the ground truth lacks: "
                         + ", ".join(labels["unscored_predicted_classes"]))
        summary = {k: labels[k] for k in ("label_map", "label_map_50", "label_map_75", "label_recall_100")}
        return EvaluatorResult(summary, labels, notes)


class ClipScoreParams(EvaluatorParams):
    model: str = Field(description="a local CLIP model folder (CLIPModel + CLIPProcessor save_pretrained)")
    limit: int | None = Field(default=None, gt=0, description="rows scored (default: all)")
    batch_size: int = Field(default=32, gt=0)


class ClipScore(Evaluator):
    """Agreement of each image with its own prompt (the Text column) under a CLIP model. Needs no
    reference; runs only when asked for, since it needs a CLIP model folder."""

    name = "clip_score"
    Params = ClipScoreParams
    params: ClipScoreParams
    modalities = ("images",)
    needs_reference = False
    default = False
    gates = {"clip_score_min": Gate("clip_score", ">=")}
    metrics = {"clip_score": "agreement of images with their prompts, higher is better"}

    def __init__(self, params=None, where: str = ""):
        if not (params or {}).get("model"):
            raise ModelError(f"{where + ': ' if where else ''}evaluator clip_score: give params.model, a local "
                                 "CLIP model folder (CLIPModel + CLIPProcessor save_pretrained)")
        super().__init__(params, where)

    def compute(self, data: EvaluationData) -> EvaluatorResult:
        from .clip_score import clip_score_of_dataset

        result = clip_score_of_dataset(data.version_dir, self.params.model, split=data.split, limit=self.params.limit,
                                       batch_size=self.params.batch_size)
        result.pop("clip_score_per_image")
        return EvaluatorResult({"clip_score": result["clip_score"]}, result,
                               [f"CLIP score uses {result['clip_model']}: comparable only with scores from the same "
                                "CLIP model"])


class AugmentParams(EvaluatorParams):
    ratios: list[float] = Field(default=[1.0, 4.0], min_length=1, description="synthetic:real ratios of the "
                                "mixtures: 1 adds as many synthetic samples as there are real ones, 4 four times as many")
    seeds: int = Field(default=3, ge=2, le=100, description="runs per arm (a t-interval needs at least 2)")
    real_fraction: float | None = Field(default=None, gt=0, le=1, description="the real arm trains on this fraction "
                                        "of each class of the reference's train part (at least 1 per class); the "
                                        "generator must have been trained on the same subsample")
    real_fraction_seed: int = Field(default=0, ge=0, description="seed of the real_fraction subsample")
    epochs: int = Field(default=20, gt=0, description="epochs over the largest training set (with equal_steps; "
                        "else over each arm's own)")
    equal_steps: bool = Field(default=True, description="every arm trains the same number of gradient steps, so a "
                              "mixture does not win by training longer")
    min_steps: int = Field(default=500, ge=0, description="at least this many gradient steps per arm: on a few "
                           "hundred images, `epochs` alone stops before the classifier has learnt")
    batch_size: int = Field(default=32, gt=0, description="classifier batch size")
    lr: float = Field(default=1e-3, gt=0, description="points: PointNet learning rate")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="significance level of the paired t-test")
    schedule: Literal["mix", "pretrain"] = Field(
        default="mix", description="mix: each mixture arm trains on real and synthetic samples shuffled together; "
        "pretrain: on its synthetic draw first, then the same network fine-tunes on the real part alone, in the "
        "same gradient-step budget (split in proportion to the sample counts)")

    @field_validator("ratios")
    @classmethod
    def _positive_distinct(cls, value: list[float]) -> list[float]:
        if any(r <= 0 for r in value) or len(set(value)) != len(value):
            raise ValueError(f"ratios must be distinct and > 0, got {value}")
        return value


class Augment(Evaluator):
    """Does adding synthetic data help? The downstream classifier of CAS trained on the real train part
    alone, on real + synthetic at each ratio (mixed, or with `schedule: pretrain` synthetic first and then
    real) and on synthetic alone, `seeds` runs each, tested on real test data: accuracy per arm with a 95 %
    CI, the gain over real alone with its CI and a paired t-test, per class. Not run by default: it trains
    (2 + len(ratios)) x seeds classifiers (a pretrain arm trains one network in two phases, at the cost of
    one); the result records their number and the seconds they took (`classifier_trainings`, `seconds`)."""

    name = "augment"
    Params = AugmentParams
    params: AugmentParams
    default = False
    gates = {"augment_gain_min": Gate("augment_gain", ">="), "augment_gain_ci_low_min": Gate("augment_gain_ci_low", ">=")}
    metrics = {"augment_gain": "accuracy gain of real + synthetic (mixed, or synthetic then real with schedule: "
                               "pretrain) over real alone at the best ratio (mean over seeds)",
               "augment_gain_ci_low": "lower end of the gain's 95 % CI (paired by seed); > 0: a real gain",
               "augment_gain_p": "paired t-test p-value of the best ratio's gain",
               "augment_significant": "the best ratio's gain is positive with p x (number of ratios) < alpha "
                                      "(Bonferroni: the best of several ratios is a chosen one)",
               "augment_best_ratio": "synthetic:real ratio with the largest mean gain",
               "augment_real_accuracy": "accuracy of the classifier trained on the real train part alone",
               "augment_synthetic_accuracy": "accuracy trained on synthetic alone (the largest mixture's share)"}

    def check_recipe(self, recipe, recipe_dir: Path) -> str | None:
        from .augment import generator_training_subset, subset_mismatch

        subset = generator_training_subset(recipe.generator.kind, recipe.generator.params, recipe_dir)
        return subset_mismatch(self.params.real_fraction, self.params.real_fraction_seed, subset,
                               recipe.generator.kind, recipe.reference)

    def compute(self, data: EvaluationData) -> EvaluatorResult:
        from .augment import compare_on, generator_training_subset, plot_augmentation, subset_mismatch, summary_of, \
            table_of

        recipe = data.manifest.get("recipe", {})
        generator = data.manifest.get("generator") or {}
        if recipe.get("reference") and str(recipe["reference"]) == str(data.reference) and generator.get("kind"):
            # What the build recorded (its model paths resolved from the recipe's folder); a manifest written
            # before the record existed: the generator's params, relative paths from the working directory.
            subset = (generator["training_subset"] if "training_subset" in generator
                      else generator_training_subset(generator["kind"], generator.get("params") or {}))
            problem = subset_mismatch(self.params.real_fraction, self.params.real_fraction_seed, subset,
                                      generator["kind"], data.reference)
            if problem:
                raise EvaluatorError(f"{data.version_dir}: {problem}")
        result, notes = compare_on(data, self.params)
        plot_augmentation(result, data.out_dir / "augment.png")
        return EvaluatorResult(summary_of(result), result, notes, tables={"arms": table_of(result)})
