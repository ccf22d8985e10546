"""Real-data check of the image evaluators on Fashion-MNIST (Debian's dataset-fashion-mnist).

Trains a DomainClassifierFeatures CNN on the Fashion-MNIST train set, then, on the 10,000 test
images, prints what each number means and whether it behaves as it must:

  (a) real-vs-real FID: two random halves of the test set (5,000 vs 5,000). Must be small
      next to the FIDs of degraded images (it is the noise floor of FID at this sample size).
  (b) FID and precision (k=3) of the second half after Gaussian pixel noise (sigma in [0, 1]
      units) and after Gaussian blur (sigma in pixels of the 28x28 image), against the first
      half: FID must rise and precision fall as the degradation grows (monotone? is printed).
  (c) CAS (train a logistic regression on a "synthetic" stand-in = a real train subset, test
      on the real test set) with the real labels and with random labels (chance = 0.1), TRTR
      (the same classifier trained on another, disjoint real train subset) and CAS/TRTR.
  (d) streaming FID over all 60,000 train images vs the 10,000 test images: images/s and peak
      RSS growth during the update loop for 10k and for 60k train images (must be flat: the
      FID state is O(D^2)), for our FID and for torchmetrics' FrechetInceptionDistance with the
      same extractor passed as ``feature=`` (same run, interleaved; ratio ours/torchmetrics),
      beside a keep-every-feature baseline whose growth must show (positive control).

The data: ``bash scripts/fetch_fashion_mnist.sh`` (apt-get install dataset-fashion-mnist) puts
four gzipped IDX files in /usr/share/datasets/fashion-mnist (or set FASHION_MNIST_DIR).
Every FID here uses the domain CNN: comparable only with FIDs from the very same weights (its
name is printed), never with published (Inception) FIDs.

    nice python benchmarks/bench_fashion_mnist.py              # ~2 min on 2 shared cores (1 thread)
    nice python benchmarks/bench_fashion_mnist.py --epochs 2 --cas-size 2000 --stream-repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fid_features import KeepAll, gc_collect, reset_peak, rss_kib  # noqa: E402

from synthloom.evaluators.cas import classification_accuracy_score  # noqa: E402
from synthloom.evaluators.features import DomainClassifierFeatures, gaussian_blur, to_float_images  # noqa: E402
from synthloom.evaluators.image_metrics import FID, precision_recall_from_features  # noqa: E402

DATA_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FETCH_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fetch_fashion_mnist.sh"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
NOISE_LEVELS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
BLUR_LEVELS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)

# ----------------------------------------------------------------------------- data

# The one IDX reader of synthloom (references.py): what `reference: idx:<folder>` recipes read too.
from synthloom.references import read_idx  # noqa: E402


def load_fashion_mnist(split: str = "train", root=DATA_DIR) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of split "train" (60k) or "test" (10k)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    root = Path(root)
    paths = [root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: run `bash {FETCH_SCRIPT}` (installs Debian's dataset-fashion-mnist)")
    images, labels = read_idx(paths[0]), read_idx(paths[1]).astype(np.int64)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"unexpected Fashion-MNIST shapes {images.shape} / {labels.shape} in {root}")
    return images, labels


# ----------------------------------------------------------------------------- pieces (the test uses them)


def train_extractor(images: np.ndarray, labels: np.ndarray, train_size: int = 60000, epochs: int = 4,
                    seed: int = 0) -> DomainClassifierFeatures:
    """DomainClassifierFeatures (16x16 input, 64-d features) trained on `train_size` images
    (a seeded random subset when smaller than the set)."""
    idx = np.arange(len(images))
    if train_size < len(images):
        idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:train_size])
    ext = DomainClassifierFeatures(num_classes=10, input_size=(16, 16), dataset="fashion-mnist", class_names=CLASS_NAMES)
    return ext.fit(torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]), epochs=epochs, seed=seed)


def degrade(images, kind: str, level: float, seed: int = 0) -> torch.Tensor:
    """Float NCHW [0, 1] copy of `images` with Gaussian noise (std `level`, clipped) or Gaussian blur
    (std `level` pixels); level 0 returns the images unchanged."""
    x = to_float_images(torch.as_tensor(images))
    if level <= 0:
        return x
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return (x + level * torch.randn(x.shape, generator=g)).clamp_(0, 1)
    if kind == "blur":
        return gaussian_blur(x, level)
    raise ValueError(f"unknown degradation {kind!r}")


@torch.no_grad()
def extract(ext, images, batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([ext(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def split_halves(n: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def degradation_sweep(ext, real_images, fake_images, noise_levels: Sequence[float] = NOISE_LEVELS,
                      blur_levels: Sequence[float] = BLUR_LEVELS, seed: int = 0) -> Dict[str, List[dict]]:
    """FID, precision and recall of degraded `fake_images` against `real_images` at each level
    (level 0 = the undegraded images = real-vs-real)."""
    real_feats = extract(ext, torch.as_tensor(real_images))
    fid = FID(ext, reset_real_features=False)
    fid.update_features(real_feats, real=True)
    out: Dict[str, List[dict]] = {}
    for kind, levels in (("noise", noise_levels), ("blur", blur_levels)):
        rows = []
        for level in levels:
            fake_feats = extract(ext, degrade(fake_images, kind, level, seed=seed))
            fid.reset()
            fid.update_features(fake_feats, real=False)
            p, r = precision_recall_from_features(real_feats, fake_feats, k=3)
            rows.append({"level": level, "fid": fid.compute()["fid"], "precision": p, "recall": r})
        out[kind] = rows
    return out


def cas_check(train_images, train_labels, test_images, test_labels, size: int = 5000, seed: int = 0) -> Dict[str, dict]:
    """CAS with a real-train subset of `size` images as the synthetic stand-in, once with its real
    labels and once with uniformly random labels; TRTR from a disjoint real-train subset of `size`."""
    perm = np.random.default_rng(seed).permutation(len(train_images))
    syn, real = perm[:size], perm[size : 2 * size]
    random_labels = np.random.default_rng(seed + 1).integers(0, 10, size)
    out = {}
    for name, y_syn in (("real labels", train_labels[syn]), ("random labels", random_labels)):
        out[name] = classification_accuracy_score(
            torch.from_numpy(train_images[syn]), y_syn, torch.from_numpy(train_images[real]), train_labels[real],
            torch.from_numpy(test_images), test_labels, num_classes=10, classifier="logreg", seed=seed)
    return out


def monotone(values: Sequence[float], increasing: bool = True) -> bool:
    pairs = list(zip(values, values[1:]))
    return all(b > a for a, b in pairs) if increasing else all(b < a for a, b in pairs)


# ----------------------------------------------------------------------------- streaming (d)


def stream_loop(make_metric, real_images: np.ndarray, fake_images: np.ndarray, batch_size: int):
    """Feed uint8 batches (real first, then fake) to a fresh metric. Returns (metric, images/s,
    peak RSS growth during the loop KiB, RSS still held after the loop KiB). The peak includes the
    per-batch working set (CNN activations); what is held after the loop is the metric's state."""
    gc_collect()
    m = make_metric()
    before = rss_kib("VmRSS")
    reset_peak()
    t = time.perf_counter()
    for real, images in ((True, real_images), (False, fake_images)):
        for i in range(0, len(images), batch_size):
            m.update(torch.from_numpy(images[i : i + batch_size]), real=real)
    dt = time.perf_counter() - t
    peak = rss_kib("VmHWM") - before
    gc_collect()
    return m, (len(real_images) + len(fake_images)) / dt, peak, rss_kib("VmRSS") - before


def metric_fid(m) -> float:
    r = m.compute()
    return float(r["fid"] if isinstance(r, dict) else r)


# ----------------------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Prints (a) real-vs-real FID, (b) FID/precision vs noise and blur, "
        "(c) CAS with real vs random labels, (d) streaming FID throughput and memory vs torchmetrics.",
        epilog="Data: `bash scripts/fetch_fashion_mnist.sh` first (or FASHION_MNIST_DIR). Run it under `nice`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data-dir", default=str(DATA_DIR), help="folder with the four *-ubyte.gz IDX files")
    ap.add_argument("--train-size", type=int, default=60000,
                    help="train images used to fit the domain CNN (a seeded random subset when < 60000)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of domain-CNN training (batch 32, Adam, cosine)")
    ap.add_argument("--model-dir", default=None,
                    help="load the domain CNN from this save_pretrained folder instead of training it; "
                         "with --save-model, save the trained one there")
    ap.add_argument("--save-model", action="store_true", help="save the trained CNN to --model-dir")
    ap.add_argument("--cas-size", type=int, default=5000,
                    help="images in the synthetic stand-in and in the disjoint TRTR train subset (logistic regression "
                         "on 784 pixels; its time grows faster than linearly)")
    ap.add_argument("--batch-size", type=int, default=500, help="images per update() in the streaming loop")
    ap.add_argument("--stream-sizes", default="10000,60000",
                    help="numbers of train images streamed against the 10k test images (memory must stay flat)")
    ap.add_argument("--stream-repeats", type=int, default=2,
                    help="interleaved rounds over all sizes and metrics (best throughput, least disturbed peak)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and BLAS threads; 1 was ~5-9x faster than 2 on the shared 2-core box (oversubscription)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    import torchmetrics
    from torchmetrics.image.fid import FrechetInceptionDistance

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import environment

    t_start = time.perf_counter()
    xtr, ytr = load_fashion_mnist("train", args.data_dir)
    xte, yte = load_fashion_mnist("test", args.data_dir)
    print(f"{environment()}, torchmetrics {torchmetrics.__version__}")
    print(f"data: {args.data_dir}: train {xtr.shape} uint8, test {xte.shape} uint8, 10 classes "
          f"(loaded with the numpy IDX reader in {time.perf_counter() - t_start:.1f}s)")

    t = time.perf_counter()
    if args.model_dir and not args.save_model:
        ext = DomainClassifierFeatures.from_pretrained(args.model_dir)
        how = f"loaded from {args.model_dir}"
    else:
        ext = train_extractor(xtr, ytr, args.train_size, args.epochs, args.seed)
        sub = "all" if args.train_size >= len(xtr) else f"a random subset of {args.train_size} of the"
        how = f"trained here on {sub} {len(xtr)} train images, {args.epochs} epochs, in {time.perf_counter() - t:.0f}s"
        if args.model_dir:
            ext.save_pretrained(args.model_dir)
    acc = ext.accuracy(torch.from_numpy(xte), torch.from_numpy(yte))
    print(f"extractor: {ext.name} (D={ext.num_features}, input 16x16; {how})")
    print(f"  its own test accuracy {acc:.4f} (how well its features separate the classes; not a metric of generated data)")
    print("  every FID below uses this CNN: comparable only with FIDs from the same weights, never with published FIDs")

    # (a) + (b)
    t = time.perf_counter()
    a, b = split_halves(len(xte), args.seed)
    sweep = degradation_sweep(ext, xte[a], xte[b], seed=args.seed)
    trace = float(torch.cov(extract(ext, torch.from_numpy(xte[a])).double().T).trace())
    base = sweep["noise"][0]
    noise02 = next((r["fid"] for r in sweep["noise"] if r["level"] == 0.2), float("nan"))
    print(f"\n(a) real-vs-real FID, test half A ({len(a)}) vs half B ({len(b)}), random split seed {args.seed}: "
          f"{base['fid']:.3f} ({100 * base['fid'] / trace:.2f}% of trace(cov_real) = {trace:.1f}, the features' total variance)")
    print(f"    precision {base['precision']:.3f} / recall {base['recall']:.3f} (k=3): the values two samples of the "
          f"same distribution get here; real-vs-real FID / noise-0.2 FID = {base['fid'] / noise02:.4f}")
    print("\n(b) half B degraded vs half A: FID must rise and precision fall with the level")
    for kind, unit in (("noise", "Gaussian noise std (pixel values in [0,1], clipped)"), ("blur", "Gaussian blur std (pixels, 28x28)")):
        rows = sweep[kind]
        print(f"    {unit}:")
        print(f"    {'level':>6} {'FID':>10} {'precision':>10} {'recall':>8}")
        for r in rows:
            print(f"    {r['level']:>6g} {r['fid']:>10.3f} {r['precision']:>10.3f} {r['recall']:>8.3f}")
        print(f"    monotone: FID increasing {monotone([r['fid'] for r in rows])}, "
              f"precision decreasing {monotone([r['precision'] for r in rows], increasing=False)}, "
              f"recall decreasing {monotone([r['recall'] for r in rows], increasing=False)}")
    print(f"    ({time.perf_counter() - t:.1f}s for (a)+(b))")

    # (c)
    t = time.perf_counter()
    cas = cas_check(xtr, ytr, xte, yte, args.cas_size, args.seed)
    r0 = cas["real labels"]
    print(f"\n(c) CAS, {r0['classifier']}, 28x28 pixels: synthetic stand-in = {args.cas_size} real train images, "
          f"TRTR trained on {args.cas_size} other train images, both tested on the {len(xte)} test images")
    for name, r in cas.items():
        print(f"    {name:>13}: CAS {r['cas']:.4f}  TRTR {r['trtr']:.4f}  CAS/TRTR {r['cas_ratio']:.4f}  "
              f"(chance {r['chance']:.2f}; |CAS - chance| = {abs(r['cas'] - r['chance']):.4f})")
    print("    real labels: CAS/TRTR ~ 1 (the stand-in is real data); random labels: CAS ~ chance")
    print(f"    ({time.perf_counter() - t:.1f}s for two CAS calls = 4 logistic regressions)")

    # (d)
    sizes = [int(s) for s in args.stream_sizes.split(",")]
    impls = {
        "ours (synthloom FID)": lambda: FID(ext),
        "torchmetrics FID": lambda: FrechetInceptionDistance(feature=ext),
        "keep-all baseline": lambda: KeepAll(ext),
    }
    t = time.perf_counter()
    for make in impls.values():  # warm-up: allocator, first-call overheads
        stream_loop(make, xte[:1000], xtr[:1000], args.batch_size)
    print(f"\n(d) streaming update loop, uint8 batches of {args.batch_size}: the 10000 test images (real) then N train "
          "images (fake), through each metric's update(); per cell: peak RSS growth during the loop / RSS still held "
          "after it (MiB):")
    print(f"    {'N train':>8} | " + " | ".join(f"{k:>24}" for k in impls))
    speeds: Dict[str, List[float]] = {k: [] for k in impls}
    peaks: Dict[str, Dict[int, List[float]]] = {k: {n: [] for n in sizes} for k in impls}
    helds: Dict[str, Dict[int, List[float]]] = {k: {n: [] for n in sizes} for k in impls}
    last = {}
    for _ in range(args.stream_repeats):  # interleaved: every size and metric once per round
        for n in sizes:
            for k, make in impls.items():
                m, ips, peak, held = stream_loop(make, xte, xtr[:n], args.batch_size)
                peaks[k][n].append(peak / 1024)
                helds[k][n].append(held / 1024)
                last[k] = m
                if n == sizes[-1]:
                    speeds[k].append(ips)
    # the peak moves by ~10-15 MiB from run to run (allocator): the least disturbed run (min) is shown
    growth = {k: {n: (min(peaks[k][n]), max(helds[k][n])) for n in sizes} for k in impls}
    for n in sizes:
        print(f"    {n:>8} | " + " | ".join(f"{growth[k][n][0]:7.1f} / {growth[k][n][1]:5.1f} MiB   " for k in impls))
    print(f"    (min peak / max held over {args.stream_repeats} interleaved rounds; the peak is mostly the per-batch "
          "CNN activations)")
    n = sizes[-1]
    fid_ours, fid_tm = metric_fid(last["ours (synthloom FID)"]), metric_fid(last["torchmetrics FID"])
    print(f"    throughput at 10000 + {n} images, best of {args.stream_repeats} interleaved runs:")
    for k in impls:
        print(f"      {k:<22} {max(speeds[k]):8.0f} images/s")
    ours, tm = max(speeds["ours (synthloom FID)"]), max(speeds["torchmetrics FID"])
    print(f"    ratio ours/torchmetrics = {ours / tm:.3f} (same extractor; the CNN forward dominates both, so ~1 is expected)")
    n0 = sizes[0]
    for k in impls:
        (p0, h0), (p1, h1) = growth[k][n0], growth[k][n]
        print(f"    {k}: peak growth {p0:.1f} -> {p1:.1f} MiB ({p1 - p0:+.1f}), held after the loop {h0:.1f} -> {h1:.1f} MiB "
              f"({h1 - h0:+.1f}) from {n0} to {n} train images")
    keep_bytes = (sizes[-1] - sizes[0]) * ext.num_features * 4 / 2**20
    print(f"    (the held memory of keep-all must grow by ~{keep_bytes:.1f} MiB = {sizes[-1] - sizes[0]} x {ext.num_features} float32; "
          f"the FID state is {2 * (ext.num_features ** 2 + ext.num_features) * 8 / 2**20:.2f} MiB float64 at any N)")
    print(f"    FID train ({n}) vs test (10000): ours {fid_ours:.4f}, torchmetrics {fid_tm:.4f}, "
          f"rel. diff {abs(fid_ours - fid_tm) / max(abs(fid_tm), 1e-12):.1e}")
    print(f"    ({time.perf_counter() - t:.1f}s for (d))")
    print(f"\ntotal {time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
    main()
