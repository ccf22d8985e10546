"""Real point clouds to compare with: a synthloom dataset (its train/test splits), or a folder of real
meshes `<folder>/<class>/<mesh>` sampled uniformly here. Images are read by `synthloom.references`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from synthloom import dataset as ds
from synthloom.errors import DatasetError, EvaluatorError
from synthloom.features import ClassLabel, Features, Points, feature_of


def float_points_column(features: Features) -> str | None:
    """The first Points column of positions (float): the clouds an evaluator scores."""
    return next((n for n in features.columns_of(Points) if features[n].dtype.startswith("float")), None)


def class_names_of(table: pa.Table, features: Features, where: str) -> list[str]:
    """Class names of `table`'s rows, from the first ClassLabel column ("" for a null)."""
    column = feature_of(features, ClassLabel)
    if column is None:
        raise EvaluatorError(f"{where}: no ClassLabel column; per-class metrics need one")
    names = features[column].names
    return ["" if v is None else (names[v] if 0 <= v < len(names) else str(v))
            for v in table.column(column).to_pylist()]


def clouds_of(table: pa.Table, features: Features, where: str) -> tuple[np.ndarray, list[str]]:
    """(clouds (n, points, 3) float32, class names) of a dataset table: the synthetic data or a reference."""
    values, offsets = ds.fixed_list_to_numpy(table.column(float_points_column(features)))
    sizes = np.diff(offsets)
    if len(set(sizes.tolist())) != 1:
        raise EvaluatorError(f"{where}: clouds of different sizes cannot be evaluated together")
    clouds = values[:, :3].reshape(len(sizes), int(sizes[0]), 3).astype(np.float32)
    return clouds, class_names_of(table, features, where)


def load_reference_clouds(reference: str, num_points: int, per_mesh: int = 16, seed: int = 0):
    """(train_points, train_labels, test_points, test_labels) of real clouds."""
    path = Path(reference)
    found = ds.find_version(path)
    if found is not None:
        version_dir, manifest = found
        return split_reference(version_dir, manifest,
                               lambda table: clouds_of(table, ds.read_features(table, manifest), str(version_dir)))
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


def split_reference(version_dir: Path, manifest: dict[str, Any], decode):
    """A synthloom dataset as reference: (train_x, train_y, test_x, test_y) from its train and test
    splits, or from alternate rows of its one split. `decode(table)` returns (x, labels, ...)."""
    splits = {s["split"] for s in manifest["shards"]}
    x, y = decode(ds.read_table(version_dir, manifest, "train" if "train" in splits else None))[:2]
    if "test" in splits:
        test_x, test_y = decode(ds.read_table(version_dir, manifest, "test"))[:2]
        return x, y, test_x, test_y
    return x[0::2], y[0::2], x[1::2], y[1::2]
