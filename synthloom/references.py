"""The one reader of real references, images and point clouds, for the evaluators and for generators
that train on them.

A reference is named by one string (a recipe's `reference`, `synthloom evaluate --reference`). Images:

    sklearn:digits                 scikit-learn's 1,797 8x8 digits (ships with the package)
    idx:<folder>                   MNIST-format IDX files: <folder>/train-images-idx3-ubyte[.gz] and
                                   train-labels-idx1-ubyte[.gz] are the train part, t10k-* (if present)
                                   the held-out test part (Fashion-MNIST, MNIST, KMNIST use these names)
    idx:<folder>/<prefix>          one pair <prefix>-images-idx3-ubyte[.gz] + <prefix>-labels-idx1-ubyte[.gz]
    <folder of class folders>      <folder>/<class>/<image>; any format PIL reads
    <synthloom dataset>            a version folder (or its parent with `latest`): its train/test splits

A folder of IDX files is recognised without the `idx:` prefix too. Every reference gives a train part
(what a generator trains on, and the TRTR classifier) and a held-out test part (what CAS is tested on).
A source without its own test part is split by alternating images of each class (even -> train, odd
-> test), so the split is deterministic and class-balanced.

Bad input is one line naming the file: mixed sizes (resize them first), an empty class folder, a
zero-byte or truncated image, an IDX file whose header disagrees with its length. Mixed channel counts
are converted (grayscale -> RGB, alpha dropped) and said so in `notes`.

Point clouds (`read_reference_clouds`):

    <synthloom dataset>            its first float Points column and its ClassLabel, train/test splits
    <folder of mesh classes>       <folder>/<class>/<mesh>.<obj|ply|stl|off|glb|gltf>, each mesh sampled
                                   uniformly (`synthloom.meshes.MeshSurface`) `per_mesh` times, normalised
                                   into the unit sphere as the pointcloud generator does; even draws are
                                   the train part, odd ones the test part

A dataset reference's columns are found by feature type (Image, Points, ClassLabel), never by name.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import DatasetError, FeatureError
from .made_by import hint

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_TRAIN, IDX_TEST = "train", "t10k"


@dataclass(frozen=True)
class ReferenceImages:
    """Real images, float32 NCHW in [0, 1], with string class labels, in a train and a test part."""

    source: str
    train_images: torch.Tensor
    train_labels: list[str]
    test_images: torch.Tensor
    test_labels: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """Class names, numeric ones in numeric order ("2" before "10")."""
        names = set(self.train_labels) | set(self.test_labels)
        return sorted(names, key=lambda n: (0, int(n), n) if n.isdigit() else (1, 0, n))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    @cached_property
    def sha256(self) -> str:
        """Hash of the content (pixels and labels of both parts): what a model trained on it depends on."""
        digest = hashlib.sha256()
        for images, labels in ((self.train_images, self.train_labels), (self.test_images, self.test_labels)):
            digest.update(str(tuple(images.shape)).encode())
            digest.update(np.ascontiguousarray(images.numpy()).tobytes())
            digest.update("\0".join(labels).encode())
        return digest.hexdigest()

    def as_tuple(self):
        return self.train_images, self.train_labels, self.test_images, self.test_labels

    def subsample(self, fraction: float | None, seed: int = 0) -> "ReferenceImages":
        """This reference with its train part cut to `fraction` of each class (`per_class_subsample`);
        the test part is kept whole. None: unchanged."""
        if fraction is None:
            return self
        keep = per_class_subsample(self.train_labels, fraction, seed)
        note = (f"{self.source}: train part subsampled to real_fraction {fraction} (seed {seed}): "
                f"{len(keep)} of {len(self.train_labels)} images")
        return ReferenceImages(self.source, self.train_images[torch.from_numpy(keep)],
                               [self.train_labels[i] for i in keep], self.test_images, self.test_labels,
                               notes=[*self.notes, note])


def per_class_subsample(labels: Sequence, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of `fraction` of each class's items (at least 1 per class), seeded: the low-data
    regime measured from a full reference. The `augment` evaluator and the generators that train on a
    reference call this one function, so "1 % of the train part, seed 0" names the same images for both.

    Each class (in sorted order) is shuffled once by a generator seeded with `seed` and its first
    max(1, round(fraction * n)) items kept, so for one seed a smaller fraction is a subset of a larger one.
    """
    if not 0 < fraction <= 1:
        raise DatasetError(f"real_fraction must be in (0, 1], got {fraction}")
    labels = np.asarray([str(label) for label in labels])
    rng = np.random.default_rng(seed)
    kept = [np.zeros(0, dtype=np.int64)]
    for name in sorted(set(labels.tolist())):
        members = rng.permutation(np.flatnonzero(labels == name))
        kept.append(members[:max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(kept))


def read_reference_images(spec: str, resolve: Callable[[str], Path] | None = None) -> ReferenceImages:
    """The reference `spec` names (see the module doc). `resolve` turns a relative path into one
    (a recipe's folder); default: as given."""
    spec = str(spec)
    if spec == "sklearn:digits":
        return _sklearn_digits()
    if spec.startswith("sklearn:"):
        raise DatasetError(f"{spec}: unknown scikit-learn reference (known: sklearn:digits)")
    is_idx = spec.startswith("idx:")
    raw = spec[4:] if is_idx else spec
    path = resolve(raw) if resolve else Path(raw).expanduser()
    if is_idx or _idx_files(path):
        return _idx_reference(spec, path)
    if not path.exists():
        raise DatasetError(f"{spec}: reference not found (sklearn:digits, idx:<folder>, a folder of class "
                           f"folders of images, or a synthloom dataset){hint(raw)}")
    from . import dataset as ds

    found = ds.find_version(path)
    if found is not None:
        version_dir, manifest = found
        return _dataset_reference(spec, version_dir, manifest)
    if path.is_dir():
        return _folder_reference(spec, path)
    raise DatasetError(f"{spec}: not a reference (a file; expected a folder, idx:<folder> or sklearn:digits)")


def _alternate(images: torch.Tensor, labels: list[str]):
    """Even images of each class -> train, odd -> test (class-balanced, deterministic)."""
    seen: dict[str, int] = {}
    parity = []
    for label in labels:
        parity.append(seen.get(label, 0) % 2)
        seen[label] = seen.get(label, 0) + 1
    parity = np.array(parity)
    train, test = np.flatnonzero(parity == 0), np.flatnonzero(parity == 1)
    return images[train], [labels[i] for i in train], images[test], [labels[i] for i in test]


def _sklearn_digits() -> ReferenceImages:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)
    names = [str(int(v)) for v in digits.target]
    # Even rows train, odd rows test: the split the evaluators have always used for digits.
    return ReferenceImages("sklearn:digits", images[0::2], names[0::2], images[1::2], names[1::2])


# -- IDX (LeCun's MNIST format) ------------------------------------------------------------------
def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzipped if its name ends in .gz) as a numpy array in native byte order."""
    path = Path(path)
    try:
        with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:  # gzip raises these on a truncated stream
        raise DatasetError(f"{path}: cannot read IDX file ({error})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an IDX file (magic {data[:4].hex() or 'empty'})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: IDX header is truncated")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = len(data) - 4 - 4 * ndim
    if body != expected:
        raise DatasetError(f"{path}: header says shape {shape} ({expected} bytes), file holds {body} bytes "
                           "(truncated or not IDX)")
    array = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_files(path: Path) -> bool:
    return path.is_dir() and _idx_file(path, IDX_TRAIN, "images-idx3-ubyte") is not None


def _idx_pair(folder: Path, prefix: str, spec: str) -> tuple[torch.Tensor, list[str]]:
    images_path = _idx_file(folder, prefix, "images-idx3-ubyte")
    labels_path = _idx_file(folder, prefix, "labels-idx1-ubyte")
    if images_path is None or labels_path is None:
        missing = f"{prefix}-images-idx3-ubyte[.gz]" if images_path is None else f"{prefix}-labels-idx1-ubyte[.gz]"
        raise DatasetError(f"{spec}: {folder / missing} not found")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise DatasetError(f"{images_path}: expected uint8 images (N, H, W[, C]), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"{labels_path}: {labels.shape} labels for {len(images)} images in {images_path.name}")
    tensor = torch.from_numpy(images)
    tensor = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
    return tensor.float().div(255.0), [str(int(v)) for v in labels]


def _idx_reference(spec: str, path: Path) -> ReferenceImages:
    if path.is_dir():  # the train/t10k pair of a standard distribution
        train_x, train_y = _idx_pair(path, IDX_TRAIN, spec)
        if _idx_file(path, IDX_TEST, "images-idx3-ubyte") is not None:
            test_x, test_y = _idx_pair(path, IDX_TEST, spec)
            return ReferenceImages(spec, train_x, train_y, test_x, test_y)
        return ReferenceImages(spec, *_alternate(train_x, train_y),
                               notes=[f"{spec}: no t10k-* files; alternate images of each class are held out"])
    if not path.parent.is_dir():
        raise DatasetError(f"{spec}: {path.parent} is not a folder of IDX files")
    images, labels = _idx_pair(path.parent, path.name, spec)
    return ReferenceImages(spec, *_alternate(images, labels),
                           notes=[f"{spec}: one IDX pair; alternate images of each class are held out"])


# -- a folder of class folders -------------------------------------------------------------------
def _read_image_file(path: Path) -> np.ndarray:
    from .features import decode_image

    data = path.read_bytes()
    if not data:
        raise DatasetError(f"{path}: empty (zero-byte) image file")
    try:
        array = decode_image(data)
    except FeatureError as error:
        raise DatasetError(f"{path}: truncated or not an image ({str(error).removeprefix('not a readable image ')})") \
            from None
    return array[:, :, :3] if array.shape[2] == 4 else array[:, :, :1] if array.shape[2] == 2 else array


def _folder_reference(spec: str, folder: Path) -> ReferenceImages:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{spec}: no class folders in {folder} (expected {folder}/<class>/<image>)")
    arrays, labels, files = [], [], []
    for class_dir in classes:
        found = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DatasetError(f"{class_dir}: empty class folder (no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS[:4])} "
                               "images); remove it or add images")
        for path in found:
            arrays.append(_read_image_file(path))
            labels.append(class_dir.name)
            files.append(path)
    sizes = [a.shape[:2] for a in arrays]
    common = max(set(sizes), key=sizes.count)
    for path, size in zip(files, sizes):
        if size != common:
            raise DatasetError(f"{path}: {size[1]}x{size[0]} pixels, but most images of {folder} are "
                               f"{common[1]}x{common[0]}; resize the images to one size")
    notes = []
    channels = {a.shape[2] for a in arrays}
    if channels == {1, 3}:
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
        notes.append(f"{spec}: grayscale and colour images mixed; grayscale ones converted to RGB")
    images = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy()).float().div(255.0)
    return ReferenceImages(spec, *_alternate(images, labels), notes=notes)


# -- a synthloom dataset ---------------------------------------------------------------------------
def float_points_column(features) -> str | None:
    """The first Points column of positions (float): the clouds an evaluator scores."""
    from .features import Points

    return next((n for n in features.columns_of(Points) if features[n].dtype.startswith("float")), None)


def class_names_of(table, features, where: str) -> list[str]:
    """Class names of `table`'s rows, from the first ClassLabel column ("" for a null)."""
    from .features import ClassLabel, feature_of

    column = feature_of(features, ClassLabel)
    if column is None:
        raise DatasetError(f"{where}: no ClassLabel column; per-class metrics need one")
    names = features[column].names
    return ["" if v is None else (names[v] if 0 <= v < len(names) else str(v))
            for v in table.column(column).to_pylist()]


def clouds_of(table, features, where: str) -> tuple[np.ndarray, list[str]]:
    """(clouds (n, points, 3) float32, class names) of a dataset table: the synthetic data or a reference."""
    from . import dataset as ds

    column = float_points_column(features)
    if column is None:
        raise DatasetError(f"{where}: no Points column of float positions")
    values, offsets = ds.fixed_list_to_numpy(table.column(column))
    sizes = np.diff(offsets)
    if len(set(sizes.tolist())) != 1:
        raise DatasetError(f"{where}: clouds of different sizes cannot be evaluated together")
    clouds = values[:, :3].reshape(len(sizes), int(sizes[0]), 3).astype(np.float32)
    return clouds, class_names_of(table, features, where)


def images_of(table, features, where: str) -> tuple[torch.Tensor, list[str]]:
    """(images float NCHW in [0, 1], class names) of a dataset table's first Image column."""
    from .features import Image, decode_image, feature_of

    column = feature_of(features, Image)
    if column is None:
        raise DatasetError(f"{where}: the reference dataset has no Image column")
    stacked = np.stack([decode_image(item["bytes"])[:, :, :3] for item in table.column(column).to_pylist()])
    images = torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))).float() / 255.0
    return images, class_names_of(table, features, where)


def _dataset_parts(version_dir: Path, manifest: dict, decode) -> tuple:
    """(train_x, train_y, test_x, test_y) of a dataset: its train and test splits, or alternate rows of
    its one split. `decode(table, features, where)` returns (x, class names)."""
    from . import dataset as ds

    def read(split):
        table = ds.read_table(version_dir, manifest, split)
        return decode(table, ds.read_features(table, manifest), str(version_dir))

    splits = {s["split"] for s in manifest["shards"]}
    x, y = read("train" if "train" in splits else None)
    if "test" in splits:
        return (x, y, *read("test"))
    return x[0::2], y[0::2], x[1::2], y[1::2]


def _dataset_reference(spec: str, version_dir: Path, manifest: dict) -> ReferenceImages:
    return ReferenceImages(spec, *_dataset_parts(version_dir, manifest, images_of))


# -- point clouds ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceClouds:
    """Real point clouds, float32 (n, points, 3), with string class labels, in a train and a test part."""

    source: str
    train_points: np.ndarray
    train_labels: list[str]
    test_points: np.ndarray
    test_labels: list[str]

    def as_tuple(self):
        return self.train_points, self.train_labels, self.test_points, self.test_labels


def read_reference_clouds(spec: str, num_points: int, per_mesh: int = 16, seed: int = 0,
                          resolve: Callable[[str], Path] | None = None) -> ReferenceClouds:
    """The point-cloud reference `spec` names (see the module doc); a mesh folder is sampled at
    `num_points` points per cloud, `per_mesh` clouds per mesh, from `seed`."""
    from . import dataset as ds

    spec = str(spec)
    path = resolve(spec) if resolve else Path(spec).expanduser()
    found = ds.find_version(path)
    if found is not None:
        version_dir, manifest = found
        return ReferenceClouds(spec, *_dataset_parts(version_dir, manifest, clouds_of))
    if not path.is_dir():
        raise DatasetError(f"{spec}: reference not found (a synthloom dataset or a folder of mesh classes)")
    return ReferenceClouds(spec, *_mesh_folder_clouds(path, num_points, per_mesh, seed))


def _mesh_folder_clouds(folder: Path, num_points: int, per_mesh: int, seed: int) -> tuple:
    from .meshes import TRIMESH_EXTENSIONS, MeshSurface, load_mesh_file, mesh_class_folders

    rng = np.random.default_rng(seed)
    clouds, labels, parity = [], [], []
    for class_dir in mesh_class_folders(folder, str(folder)):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower().lstrip(".") in TRIMESH_EXTENSIONS)
        if not files:
            raise DatasetError(f"{class_dir}: class folder has no mesh files "
                               f"({', '.join('.' + e for e in TRIMESH_EXTENSIONS)})")
        for path in files:
            surface = MeshSurface(load_mesh_file(path))
            for k in range(per_mesh):
                points = surface.sample_uniform(num_points, rng)[0]
                clouds.append(((points - surface.center) / surface.radius).astype(np.float32))
                labels.append(class_dir.name)
                parity.append(k % 2)
    clouds, parity, labels = np.stack(clouds), np.array(parity), np.array(labels)
    # Fresh samples of the same real meshes: even draws train the TRTR classifier, odd ones test.
    return clouds[parity == 0], list(labels[parity == 0]), clouds[parity == 1], list(labels[parity == 1])
