"""The one reference-image reader: sklearn digits, IDX files, image folders, synthloom datasets, and
one clear line for each kind of bad input."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from synthloom.errors import DatasetError
from synthloom.references import read_idx, read_reference_images


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    """LeCun's IDX format: 0, 0, dtype code (0x08 = uint8), ndim, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def idx_folder(folder, n_train=12, n_test=6, gz=True, size=5):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    parts = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 3).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz)
        parts[prefix] = (images, labels)
    return parts


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_gives_train_and_t10k(tmp_path, gz):
    parts = idx_folder(tmp_path / "mnistlike", gz=gz)
    ref = read_reference_images(f"idx:{tmp_path / 'mnistlike'}")
    assert ref.train_images.shape == (12, 1, 5, 5) and ref.test_images.shape == (6, 1, 5, 5)
    assert torch.equal((ref.train_images[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(parts["train"][0]))
    assert ref.train_labels == [str(v) for v in parts["train"][1]]
    assert ref.classes == ["0", "1", "2"]
    # The same folder without the prefix is recognised; one prefix alone is split by alternation.
    assert read_reference_images(str(tmp_path / "mnistlike")).sha256 == ref.sha256
    single = read_reference_images(f"idx:{tmp_path / 'mnistlike' / 't10k'}")
    assert len(single.train_images) == 3 and len(single.test_images) == 3
    assert torch.equal(single.train_images, ref.test_images[[0, 1, 2]])


def test_idx_errors_name_the_file(tmp_path):
    idx_folder(tmp_path / "d", gz=False)
    images = tmp_path / "d" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])  # truncated
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte: header says shape"):
        read_reference_images(f"idx:{tmp_path / 'd'}")
    images.write_bytes(b"")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(images)
    (tmp_path / "d" / "train-labels-idx1-ubyte").unlink()
    write_idx(images, np.zeros((12, 5, 5), np.uint8))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte\[.gz\] not found"):
        read_reference_images(f"idx:{tmp_path / 'd'}")


def write_folder(root, classes=("cat", "dog"), per_class=4, size=(6, 7), mode="L"):
    rng = np.random.default_rng(1)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def test_image_folder_reference(tmp_path):
    root = write_folder(tmp_path / "pets")
    (root / "notes.txt").write_text("not a class")  # files beside class folders are ignored
    ref = read_reference_images(str(root))
    assert ref.classes == ["cat", "dog"]
    assert ref.train_images.shape == (4, 1, 7, 6) and ref.test_images.shape == (4, 1, 7, 6)
    assert ref.train_labels == ["cat", "cat", "dog", "dog"]
    first = np.array(Image.open(root / "cat" / "000.png"))
    assert torch.equal((ref.train_images[0, 0] * 255).round().to(torch.uint8), torch.from_numpy(first))
    # resolve() makes a recipe-relative path work
    assert read_reference_images("pets", resolve=lambda p: tmp_path / p).sha256 == ref.sha256


def test_mixed_modes_are_converted_and_noted(tmp_path):
    root = write_folder(tmp_path / "mixed")
    Image.fromarray(np.full((7, 6, 4), 200, np.uint8), "RGBA").save(root / "dog" / "rgba.png")
    ref = read_reference_images(str(root))
    assert ref.train_images.shape[1] == 3
    assert any("converted to RGB" in note for note in ref.notes)


@pytest.mark.parametrize("damage, message", [
    ("zero", "zero-byte"),
    ("truncated", "truncated or not an image"),
    ("size", r"big\.png: 9x9 pixels, but most images of .* are 6x7; resize"),
    ("empty", r"dog: empty class folder"),
])
def test_bad_image_folders_are_one_line(tmp_path, damage, message):
    root = write_folder(tmp_path / "bad")
    if damage == "zero":
        (root / "cat" / "000.png").write_bytes(b"")
    elif damage == "truncated":
        data = (root / "cat" / "001.png").read_bytes()
        (root / "cat" / "001.png").write_bytes(data[: len(data) // 2])
    elif damage == "size":
        Image.fromarray(np.zeros((9, 9), np.uint8)).save(root / "dog" / "big.png")
    else:
        for f in (root / "dog").iterdir():
            f.unlink()
    with pytest.raises(DatasetError, match=message) as info:
        read_reference_images(str(root))
    assert "\n" not in str(info.value)


def test_unknown_references_are_one_line(tmp_path):
    with pytest.raises(DatasetError, match="reference not found"):
        read_reference_images(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="unknown scikit-learn reference"):
        read_reference_images("sklearn:iris")
    with pytest.raises(DatasetError, match="no class folders"):
        read_reference_images(str(tmp_path))


def test_digits_keep_the_even_odd_split():
    from sklearn.datasets import load_digits

    ref = read_reference_images("sklearn:digits")
    digits = load_digits()
    assert ref.train_images.shape == (899, 1, 8, 8) and ref.test_images.shape == (898, 1, 8, 8)
    assert np.allclose(ref.test_images[:, 0].numpy(), digits.images[1::2] / 16.0)
    assert ref.classes == [str(i) for i in range(10)]


def _mesh_classes(root):
    import trimesh

    for name, mesh in (("box", trimesh.creation.box(extents=(2.0, 1.0, 0.5))),
                       ("ball", trimesh.creation.icosphere(subdivisions=2, radius=3.0))):
        (root / name).mkdir(parents=True)
        mesh.export(root / name / f"{name}.ply")
    return root


def test_a_mesh_folder_reads_as_normalised_clouds_split_by_draw(tmp_path):
    from synthloom.references import read_reference_clouds

    ref = read_reference_clouds(str(_mesh_classes(tmp_path / "meshes")), num_points=64, per_mesh=6, seed=3)
    train_x, train_y, test_x, test_y = ref.as_tuple()
    assert train_x.shape == test_x.shape == (6, 64, 3) and train_x.dtype == np.float32
    assert sorted(train_y) == sorted(test_y) == ["ball"] * 3 + ["box"] * 3
    radius = np.linalg.norm(np.concatenate([train_x, test_x]), axis=2)
    assert radius.max() <= 1.0 + 1e-5 and radius.max() > 0.9  # each mesh scaled into the unit sphere
    balls = train_x[[y == "ball" for y in train_y]]
    assert np.allclose(np.linalg.norm(balls, axis=2), radius[:3].max(), atol=0.05)  # a sphere stays a sphere
    again = read_reference_clouds(str(tmp_path / "meshes"), num_points=64, per_mesh=6, seed=3)
    assert np.array_equal(again.train_points, train_x)
    other = read_reference_clouds(str(tmp_path / "meshes"), num_points=64, per_mesh=6, seed=4)
    assert not np.array_equal(other.train_points, train_x)


def test_a_bad_reference_mesh_is_named(tmp_path):
    from synthloom.errors import SynthloomError
    from synthloom.references import read_reference_clouds

    root = _mesh_classes(tmp_path / "meshes")
    (root / "box" / "broken.obj").write_text("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(SynthloomError, match="broken.obj"):
        read_reference_clouds(str(root), num_points=16)
    (root / "box" / "broken.obj").unlink()
    (root / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: class folder has no mesh files"):
        read_reference_clouds(str(root), num_points=16)
    with pytest.raises(DatasetError, match="reference not found"):
        read_reference_clouds(str(tmp_path / "nowhere"), num_points=16)
