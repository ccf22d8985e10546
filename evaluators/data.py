"""What evaluators score: one split of a committed version, its reference, and what several evaluators
need computed once (decoded samples, the reference, a trained feature extractor, feature rows).

Columns are found by feature type, never by name: the synthetic samples are the first `Image` column or
the first float `Points` column, the labels the first `ClassLabel` column (its class names).
"""

from __future__ import annotations

import hashlib
import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from synthloom import dataset as ds
from synthloom.errors import EvaluatorError, ModelError
from synthloom.features import Image, decode_image, feature_of

from synthloom.references import class_names_of, clouds_of, float_points_column, read_reference_clouds

log = logging.getLogger(__name__)

DOMAIN_CNN_CODE_VERSION = "1"  # bump when DomainClassifierFeatures' architecture or training changes
# Streamed: fidelity metrics and features see every image a batch at a time. In memory: at most
# MAX_IMAGES_IN_MEMORY synthetic images, for CAS, the attribute audit and the worst-pair picture.
MAX_IMAGES_IN_MEMORY = 10_000
BATCH = 256


class EvaluationData:
    """One split of a committed version, read once, with lazily computed shared parts."""

    def __init__(self, version_dir: str | Path, reference: str | None, split: str = "train",
                 out_dir: str | Path | None = None, seed: int = 0):
        self.version_dir = ds.resolve_version_dir(version_dir)
        self.manifest = ds.read_manifest(self.version_dir)
        self.reference = reference
        self.split = split
        self.seed = seed
        self.out_dir = Path(out_dir) if out_dir else self.version_dir / "eval"
        self.table = ds.read_table(self.version_dir, self.manifest, split)
        self.features = ds.read_features(self.table, self.manifest)
        self.notes: list[str] = []  # shared notes (a bounded sample was used), added once to the result
        self.images_column = feature_of(self.features, Image)
        self.points_column = float_points_column(self.features)
        self.modality = "points" if self.points_column else "images" if self.images_column else None
        self._cache: dict[Any, Any] = {}

    # -- columns and labels -----------------------------------------------------------------------
    def column_of(self, kind) -> str | None:
        """The first column whose feature is `kind` (a feature class, or a tuple of them)."""
        return feature_of(self.features, kind)

    def labels_of(self, table: pa.Table) -> list[str]:
        """Class names of `table`'s rows, from the first ClassLabel column ("" for a null)."""
        return class_names_of(table, self.features, str(self.version_dir))

    @cached_property
    def labels(self) -> list[str]:
        return self.labels_of(self.table)

    @cached_property
    def class_counts(self) -> dict[str, int]:
        return {c: self.labels.count(c) for c in sorted(set(self.labels))}

    def batches(self, size: int | None = None):
        """The split's rows, `size` (default BATCH) at a time."""
        size = size or BATCH
        for start in range(0, self.table.num_rows, size):
            yield self.table.slice(start, size)

    def require_reference(self, who: str) -> str:
        if not self.reference:
            raise EvaluatorError(f"evaluator {who} needs a reference (the real data to compare against)")
        return self.reference

    # -- images -----------------------------------------------------------------------------------
    def decode_images(self, table: pa.Table):
        """The Image column of `table` as a float NCHW tensor in [0, 1] (alpha dropped: the metrics take
        1 or 3 channels). synthloom's one PNG decoder."""
        import torch

        items = table.column(self.images_column).to_pylist()
        stacked = np.stack([decode_image(item["bytes"])[:, :, :3] for item in items])
        return torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))).float() / 255.0

    def image_batches(self):
        """Every synthetic image, decoded a batch at a time (metrics stream over any number)."""
        for batch in self.batches():
            yield self.decode_images(batch)

    def image_bytes(self) -> list[bytes]:
        return [item["bytes"] for item in self.table.column(self.images_column).to_pylist()]

    @cached_property
    def image_sample(self):
        """(images, labels, row indices): every row, or MAX_IMAGES_IN_MEMORY drawn at random."""
        rows = np.arange(self.table.num_rows)
        limit = MAX_IMAGES_IN_MEMORY
        if self.table.num_rows > limit:
            rows = np.sort(np.random.default_rng(self.seed).choice(self.table.num_rows, size=limit, replace=False))
            self.notes.append(f"CAS, attribute audit and worst-pair plot use {len(rows)} of {self.table.num_rows} "
                              "synthetic images drawn at random; fidelity, memorization and diversity use all.")
        subset = self.table.take(rows)
        return self.decode_images(subset), self.labels_of(subset), rows

    @cached_property
    def reference_images(self):
        """(train_images, train_labels, test_images, test_labels); images float NCHW in [0, 1]. Read by
        `synthloom.references`, the one reader generators train on too."""
        from synthloom.references import read_reference_images

        return read_reference_images(self.require_reference("on images")).as_tuple()

    @cached_property
    def domain_extractor(self):
        """A small CNN trained on the reference train images, kept in the model store under their content
        hash: trained once per reference and seed, whatever the dataset's name or output folder (20 epochs
        on Fashion-MNIST's 60,000 images take half an hour on 2 cores)."""
        from synthloom.models import ModelStore

        from .features import DomainClassifierFeatures

        images, labels = self.reference_images[:2]
        classes = sorted(set(labels))
        digest = hashlib.sha256(images.numpy().tobytes() + "|".join(labels).encode()).hexdigest()
        size = max(16, (max(images.shape[-2:]) + 3) // 4 * 4)
        inputs = {"kind": "domain-cnn", "reference_sha256": digest, "seed": self.seed, "input_size": size,
                  "code": DOMAIN_CNN_CODE_VERSION}

        def train(work: Path) -> None:
            import torch

            extractor = DomainClassifierFeatures(num_classes=len(classes), in_channels=images.shape[1],
                                                 input_size=(size, size), dataset=f"reference-{digest[:8]}",
                                                 class_names=classes)
            log.info("training the domain CNN on %d reference images (once per reference: kept in the model "
                     "store)", len(labels))
            extractor.fit(images, torch.tensor([classes.index(c) for c in labels]), seed=self.seed)
            extractor.save_pretrained(work)

        return DomainClassifierFeatures.from_pretrained(ModelStore().get_or_build(inputs, train).path)

    def extractor(self, spec: str = "domain"):
        """The feature extractor `spec` names: "domain" (the CNN above) or what `features.load_extractor`
        loads (inception, a local folder). Loaded once per spec; a bad spec is a one-line ModelError."""
        key = ("extractor", spec)
        if key not in self._cache:
            if spec == "domain":
                self._cache[key] = self.domain_extractor
            else:
                from .features import load_extractor

                try:
                    self._cache[key] = load_extractor(spec)
                except (ValueError, RuntimeError, OSError) as error:
                    raise ModelError(f"feature extractor {spec!r}: {error}") from None
        return self._cache[key]

    # -- point clouds -----------------------------------------------------------------------------
    @cached_property
    def clouds(self) -> tuple[np.ndarray, list[str]]:
        return clouds_of(self.table, self.features, str(self.version_dir))

    @cached_property
    def reference_clouds(self):
        """(train_points, train_labels, test_points, test_labels) of real clouds, as many points as ours."""
        return read_reference_clouds(self.require_reference("on point clouds"), self.clouds[0].shape[1],
                                     seed=self.seed).as_tuple()

    # -- shared feature rows (memorization and diversity) ----------------------------------------
    def feature_rows(self, spec: str = "domain") -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """(feature name, synthetic rows, reference train rows, reference test rows): images through the
        extractor `spec`, clouds as D2 shape distributions. Computed once per spec."""
        key = ("rows", self.modality, spec)
        if key not in self._cache:
            if self.modality == "points":
                from .cloud_features import d2_descriptor

                train, _, test, _ = self.reference_clouds
                self._cache[key] = ("d2-shape-distribution-32",
                                    *(d2_descriptor(c, seed=self.seed) for c in (self.clouds[0], train, test)))
            else:
                import torch

                extractor = self.extractor(spec)
                train, _, test, _ = self.reference_images

                def rows(batches):
                    with torch.inference_mode():
                        return torch.cat([extractor(batch) for batch in batches]).numpy()

                self._cache[key] = (extractor.name, rows(self.image_batches()), rows(train.split(BATCH)),
                                    rows(test.split(BATCH)))
        return self._cache[key]

    def reference_labels(self) -> list[str]:
        """Train + test labels of the reference, in `feature_rows` order."""
        ref = self.reference_clouds if self.modality == "points" else self.reference_images
        return list(ref[1]) + list(ref[3])
