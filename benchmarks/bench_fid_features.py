"""Throughput and memory of our streaming FID update vs torchmetrics' FrechetInceptionDistance.

Both metrics get the same extractor module and the same image batches in the same run
(images are synthesised on the fly from scikit-learn digits + noise, so nothing but the metric
state can grow). Printed: images/s of both update loops and the ratio ours/torchmetrics (goal
>= 1), the FID of both (must agree), and peak-RSS growth during each loop for several numbers of
images (should be flat), next to a deliberately non-streaming baseline that keeps every feature
(positive control: its growth must show up).

    python benchmarks/bench_fid_features.py                      # domain CNN, ~1 min on 2 shared cores
    python benchmarks/bench_fid_features.py --extractor inception --sizes 64,128 --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import torch

from synthloom.evaluators.features import DomainClassifierFeatures, InceptionV3Features, sklearn_digits
from synthloom.evaluators.image_metrics import FID


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def batches(images: torch.Tensor, n: int, batch_size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        idx = torch.randint(0, len(images), (b,), generator=g)
        yield (images[idx] + 0.05 * torch.randn(images[idx].shape, generator=g)).clamp(0, 1)
        done += b


class KeepAll:
    """Non-streaming baseline: keeps every feature vector (what KID/PR or a naive FID do)."""

    def __init__(self, extractor):
        self.extractor, self.real, self.fake = extractor, [], []

    def update(self, images, real):
        (self.real if real else self.fake).append(self.extractor(images))


def run(make_metric, images, n, batch_size, seed):
    gc_collect()
    m = make_metric()
    before = rss_kib("VmRSS")
    reset_peak()
    t = time.perf_counter()
    for i, b in enumerate(batches(images, n, batch_size, seed)):
        m.update(b, real=(i % 2 == 0))
    dt = time.perf_counter() - t
    growth = rss_kib("VmHWM") - before
    return m, n / dt, growth


def gc_collect():
    """Free garbage and hand freed heap pages back to the OS, so that memory a previous loop
    freed cannot hide this loop's growth (glibc keeps freed blocks for reuse otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--extractor", choices=["domain", "inception"], default="domain")
    ap.add_argument("--sizes", default="1000,4000,16000", help="numbers of images per loop (half real, half fake)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5, help="timing repeats at the largest size (best-of)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable on a shared 2-core box)")
    ap.add_argument("--model-dir", default=None, help="DomainClassifierFeatures.save_pretrained dir (else trained here)")
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    from torchmetrics.image.fid import FrechetInceptionDistance
    import torchmetrics

    images, labels = sklearn_digits()
    t = time.perf_counter()
    if args.extractor == "inception":
        ext = InceptionV3Features()
        setup = f"loaded in {time.perf_counter() - t:.1f}s"
    elif args.model_dir:
        ext = DomainClassifierFeatures.from_pretrained(args.model_dir)
        setup = f"loaded from {args.model_dir}"
    else:
        ext = DomainClassifierFeatures(num_classes=10, dataset="sklearn-digits").fit(images, labels, epochs=12)
        setup = f"trained here in {time.perf_counter() - t:.1f}s"
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"torch {torch.__version__}, torchmetrics {torchmetrics.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, threads={args.threads}")
    print(f"extractor: {ext.name} (D={ext.num_features}; {setup}); batch size {args.batch_size}")

    impls = {
        "ours (synthloom FID)": lambda: FID(ext),
        "torchmetrics FID": lambda: FrechetInceptionDistance(feature=ext),
        "keep-all baseline": lambda: KeepAll(ext),
    }
    # warm-up (allocator, first-call overheads)
    for make in impls.values():
        run(make, images, min(sizes[0], 2 * args.batch_size), args.batch_size, seed=123)

    print(f"\n{'images':>7} | " + " | ".join(f"{k:>22}" for k in impls) + "   (peak RSS growth during the loop, MiB)")
    speeds = {k: [] for k in impls}
    last = {}
    for n in sizes:
        cells = []
        for k, make in impls.items():
            m, ips, growth = run(make, images, n, args.batch_size, seed=n)
            cells.append(f"{growth / 1024:>14.1f} MiB    ")
            last[k] = m
            if n == sizes[-1]:
                speeds[k].append(ips)
        print(f"{n:>7} | " + " | ".join(f"{c:>22}" for c in cells))

    n = sizes[-1]
    for _ in range(args.repeats - 1):  # interleaved repeats at the largest size
        for k, make in impls.items():
            _, ips, _ = run(make, images, n, args.batch_size, seed=n)
            speeds[k].append(ips)
    print(f"\nthroughput at {n} images, best of {args.repeats} interleaved runs (median in brackets):")
    for k in impls:
        print(f"  {k:<22} {max(speeds[k]):>10.0f} images/s  ({statistics.median(speeds[k]):.0f})")
    ratio = max(speeds["ours (synthloom FID)"]) / max(speeds["torchmetrics FID"])
    ratio_med = statistics.median(speeds["ours (synthloom FID)"]) / statistics.median(speeds["torchmetrics FID"])
    print(f"  ratio ours/torchmetrics = {ratio:.3f} best, {ratio_med:.3f} median  (goal >= 1; same extractor)")

    # metric overhead alone: the same precomputed features fed to both update loops
    class Identity(torch.nn.Module):
        num_features = ext.num_features

        def forward(self, x):
            return x

    feats = [ext(b) for b in batches(images, n, args.batch_size, seed=7)]
    over = {"ours": [], "torchmetrics": []}
    for _ in range(args.repeats):
        for k in over:
            m = FID(ext) if k == "ours" else FrechetInceptionDistance(feature=Identity())
            t = time.perf_counter()
            for i, f in enumerate(feats):
                if k == "ours":
                    m.update_features(f, real=(i % 2 == 0))
                else:
                    m.update(f, real=(i % 2 == 0))
            over[k].append(n / (time.perf_counter() - t))
    print(f"metric update alone (features precomputed, {n} feature vectors, best of {args.repeats}):")
    for k, v in over.items():
        print(f"  {k:<22} {max(v):>10.0f} vectors/s  ({statistics.median(v):.0f})")
    print(f"  ratio ours/torchmetrics = {max(over['ours']) / max(over['torchmetrics']):.3f} best, "
          f"{statistics.median(over['ours']) / statistics.median(over['torchmetrics']):.3f} median")

    t = time.perf_counter()
    ours = last["ours (synthloom FID)"].compute()["fid"]
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = float(last["torchmetrics FID"].compute())
    t_ref = time.perf_counter() - t
    print(f"FID of the last loop (random real/fake halves of the same stream): ours {ours:.6f} "
          f"({t_ours:.2f}s compute), torchmetrics {ref:.6f} ({t_ref:.2f}s compute), "
          f"rel. diff {abs(ours - ref) / max(abs(ref), 1e-12):.1e}")
    d = ext.num_features
    print(f"FID state: {2 * (d * d + d) * 8 / 2**20:.2f} MiB float64 whatever the number of images; "
          f"keep-all stores {d * 4} bytes per image")


if __name__ == "__main__":
    main()
