"""DCGAN: training throughput against the classic PyTorch example loop, and usefulness on Fashion-MNIST.

(1) throughput: the same networks and batch size trained by our loop (synthloom.generators.dcgan.training:
    preloaded tensor, one randperm per epoch, BCE-with-logits) and by the loop of the classic PyTorch
    DCGAN example (pytorch/examples dcgan/main.py: a DataLoader over a dataset, a Sigmoid output and
    nn.BCELoss, label tensors filled per step), interleaved in the same run; images/s and the ratio.
(2) fashion: train a class-conditional DCGAN on the Fashion-MNIST train split for at most --minutes,
    generate --count images (balanced classes) with its EMA generator, score them with the
    discriminator calibrated by Platt scaling (generators/dcgan/calibration.py) on the first --calibration
    test images against as many generated ones, and report on the other test images: CAS and TRTR with the small CNN of
    evaluators/cas.py (same classifier and epochs for both), FID and precision/recall with a domain CNN
    trained on the train split (named; not comparable with Inception FIDs), the memorization audit's
    near-copy fraction; then the same with min_quality 0.5 / 0.7 / 0.9 (samples redrawn until accepted).

    flock /work/wt/heavy.lock python benchmarks/bench_dcgan.py throughput
    flock /work/wt/heavy.lock python benchmarks/bench_dcgan.py fashion --minutes 10
    flock /work/wt/heavy.lock python benchmarks/bench_dcgan.py fashion --reuse /tmp/bench-dcgan  # no training
(3) ablation: the digits demo's techniques (hinge loss, spectral norm, label smoothing, EMA of G, class-
    balanced batches, TTUR) one at a time on sklearn:digits: CAS/TRTR (CNN) and FID (domain CNN) per row.

    flock /work/wt/heavy.lock python benchmarks/bench_dcgan.py ablation --epochs 60 --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment  # noqa: E402

from synthloom.generators.dcgan.calibration import calibrate, discriminator_logits  # noqa: E402
from synthloom.generators.dcgan.training import CHECKPOINT, TrainConfig, TrainData, Trainer, render, train_step  # noqa: E402
from synthloom.references import read_reference_images  # noqa: E402

FASHION = "idx:/usr/share/datasets/fashion-mnist"
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def _data(reference: str):
    ref = read_reference_images(reference)
    labels = torch.tensor([ref.classes.index(c) for c in ref.train_labels])
    return ref, ref.train_images * 2 - 1, labels


# -- (1) throughput --------------------------------------------------------------------------------
def ours(cfg: TrainConfig, images, labels, steps: int) -> float:
    g, d = cfg.nets()
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    gen = torch.Generator().manual_seed(0)
    noise = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    order = torch.randperm(len(images), generator=gen)
    for step in range(steps):
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        train_step(g, d, opt_g, opt_d, images[idx], labels[idx], cfg, noise)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def classic(cfg: TrainConfig, images, labels, steps: int) -> float:
    """The loop of pytorch/examples dcgan/main.py, conditioned on labels like ours."""
    g, d = cfg.nets()
    criterion = nn.BCELoss()
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=cfg.batch_size,
                                         shuffle=True, drop_last=True)
    real_label, fake_label = 1.0, 0.0
    start = time.perf_counter()
    for i, (real, y) in enumerate(loader):
        if i == steps:
            break
        d.zero_grad()
        label = torch.full((real.size(0),), real_label)
        output = torch.sigmoid(d(real, y))
        err_real = criterion(output, label)
        err_real.backward()
        noise = torch.randn(real.size(0), cfg.nz)
        fake = g(noise, y)
        label.fill_(fake_label)
        output = torch.sigmoid(d(fake.detach(), y))
        err_fake = criterion(output, label)
        err_fake.backward()
        opt_d.step()
        g.zero_grad()
        label.fill_(real_label)
        output = torch.sigmoid(d(fake, y))
        err_g = criterion(output, label)
        err_g.backward()
        opt_g.step()
    return steps * cfg.batch_size / (time.perf_counter() - start)


def throughput(args) -> None:
    _, images, labels = _data(args.reference)
    cfg = TrainConfig(resolution=28, channels=1, num_classes=10, ngf=args.ngf, ndf=args.ndf, batch_size=args.batch)
    print(f"{environment()}\nthroughput: {args.reference} 28x28, conditional DCGAN ngf={args.ngf} ndf={args.ndf}, "
          f"batch {args.batch}, {args.steps} steps per run, {args.rounds} interleaved rounds (best kept)")
    ours(cfg, images, labels, 5), classic(cfg, images, labels, 5)  # warm-up
    best = {"ours": 0.0, "classic": 0.0}
    for _ in range(args.rounds):
        best["ours"] = max(best["ours"], ours(cfg, images, labels, args.steps))
        best["classic"] = max(best["classic"], classic(cfg, images, labels, args.steps))
    print(f"  ours    {best['ours']:8.0f} images/s\n  classic {best['classic']:8.0f} images/s\n"
          f"  ratio ours/classic = {best['ours'] / best['classic']:.3f}")


# -- (2) Fashion-MNIST -------------------------------------------------------------------------------
@torch.no_grad()
def generate(g, d, calibration, nz: int, per_class: int, classes: int, min_quality, max_tries: int, seed: int):
    """`per_class` images of each class whose calibrated D real-probability is >= min_quality (redrawn until so);
    min_quality: None, one threshold, or one per class."""
    gen = torch.Generator().manual_seed(seed)
    images, labels, quality, drawn = [], [], [], {}
    for c in range(classes):
        kept, k, tries = [], 0, 0
        while k < per_class:
            n = min(4096, max(256, 2 * (per_class - k)))
            if tries > max_tries * per_class:
                return None, f"class {c} cannot reach {per_class} (accepted {k} of {tries})"
            y = torch.full((n,), c)
            x = render(g, torch.randn(n, nz, generator=gen), y, "cpu", batch=1024)
            q = calibration.probability(discriminator_logits(d, x, y, "cpu", batch=1024), y)
            threshold = min_quality[c] if isinstance(min_quality, list) else min_quality
            ok = q >= threshold if threshold is not None else torch.ones(n, dtype=torch.bool)
            tries += n
            kept.append((x[ok], q[ok]))
            k += int(ok.sum())
        x = torch.cat([a for a, _ in kept])[:per_class]
        q = torch.cat([b for _, b in kept])[:per_class]
        images.append(x), labels.append(torch.full((per_class,), c)), quality.append(q)
        drawn[c] = k / tries  # accepted / drawn (the last batch's surplus counts as accepted, not rejected)
    return (torch.cat(images), torch.cat(labels), torch.cat(quality), drawn), None


@torch.no_grad()
def acceptance_probe(g, d, calibration, nz: int, classes: int, thresholds: list[float], n: int = 4096, seed: int = 7):
    """Per class, the fraction of `n` fresh draws whose calibrated quality is >= each threshold."""
    gen = torch.Generator().manual_seed(seed)
    table = {}
    for c in range(classes):
        y = torch.full((n,), c)
        x = render(g, torch.randn(n, nz, generator=gen), y, "cpu", batch=1024)
        q = calibration.probability(discriminator_logits(d, x, y, "cpu", batch=1024), y)
        table[c] = {t: float((q >= t).float().mean()) for t in thresholds} | {"mean": float(q.mean()), "q": q}
    return table


def fashion(args) -> None:
    from synthloom.evaluators.cas import _fit_predict
    from synthloom.evaluators.features import DomainClassifierFeatures
    from synthloom.evaluators.image_metrics import FID, precision_recall_from_features
    from synthloom.evaluators.memorization import memorization_audit

    t0 = time.perf_counter()
    ref, images, labels = _data(args.reference)
    cfg = TrainConfig(resolution=28, channels=1, num_classes=10, ngf=args.ngf, ndf=args.ndf, epochs=args.train_epochs or 1000,
                      batch_size=args.batch, loss=args.loss, spectral_norm=args.sn, ema=args.ema,
                      balanced=args.balanced, lr_g=args.lr_g, lr_d=args.lr_d, beta1=args.beta1, beta2=args.beta2,
                      seed=args.seed)
    work = Path(args.work)
    import shutil

    minutes = args.minutes
    if args.reuse:  # the checkpoint of an earlier run: its config, no training (a zero time limit)
        state = torch.load(Path(args.reuse) / CHECKPOINT, map_location="cpu", weights_only=False)
        cfg, minutes = TrainConfig(**state["config"]), 0
        work = Path(args.reuse)
    else:
        shutil.rmtree(work, ignore_errors=True)  # a fresh run, not a resumed one
    print(f"{environment()}\nfashion: {args.reference}, train {tuple(images.shape)}, config {json.dumps(cfg.model_dump())}"
          + (f", reused from {args.reuse}" if args.reuse else ""))
    t = time.perf_counter()
    result = Trainer(cfg, TrainData(images, labels, ref.classes), work).run(time_limit_s=minutes * 60)
    history = result["history"]
    train_s = time.perf_counter() - t
    print(f"  trained {len(history)} epochs in {train_s:.0f}s (wall, incl. per-epoch monitoring), training loop "
          f"{np.mean([h['images_per_s'] for h in history]):.0f} images/s; last loss D {history[-1]['loss_d']:.3f} "
          f"G {history[-1]['loss_g']:.3f}, min class spread/real {history[-1]['min_spread_ratio']:.3f}; grids in {work}")
    g, d = result["generator"].eval(), result["discriminator"].eval()

    x_tr = ref.train_images
    y_tr = torch.tensor([int(c) for c in ref.train_labels])
    # The first --calibration test images calibrate D (images it never trained on); the rest evaluate.
    n_cal = args.calibration
    x_cal, y_cal = ref.test_images[:n_cal], torch.tensor([int(c) for c in ref.test_labels[:n_cal]])
    x_te = ref.test_images[n_cal:]
    y_te = torch.tensor([int(c) for c in ref.test_labels[n_cal:]])
    calibration = calibrate(g, d, x_cal, y_cal, cfg.nz, 10, "cpu", seed=4)
    print(f"  calibration (Platt, per class where >= 30 held-out images; {n_cal} test images vs {n_cal} generated): "
          f"{json.dumps(calibration.diagnostics)}; own fits {sum(calibration.per_class)}/10")
    t = time.perf_counter()
    ext = DomainClassifierFeatures(num_classes=10, input_size=(16, 16), dataset="fashion-mnist")
    ext.fit(x_tr[:args.extractor_size], y_tr[:args.extractor_size], epochs=2, seed=0)
    feats = lambda x: torch.cat([ext(x[i:i + 2000]) for i in range(0, len(x), 2000)])  # noqa: E731
    f_te, f_tr = feats(x_te), feats(x_tr)
    print(f"  extractor {ext.name} (trained on {args.extractor_size} train images, 2 epochs, "
          f"{time.perf_counter() - t:.0f}s; test accuracy {ext.accuracy(x_te, y_te):.3f})")
    t = time.perf_counter()
    # TRTR and every CAS: the CNN of evaluators/cas.py (what classification_accuracy_score(classifier="cnn")
    # trains), same seed and epochs; TRTR once, since its data is the same for every row.
    classifier = f"small-cnn(epochs={args.cnn_epochs})"
    trtr = float((_fit_predict("cnn", x_tr, y_tr.numpy(), x_te, 10, args.seed, 1.0, args.cnn_epochs)
                  == y_te.numpy()).mean())
    print(f"  TRTR {trtr:.4f} ({classifier}, {len(y_tr)} train images, tested on {len(y_te)}; "
          f"{time.perf_counter() - t:.0f}s)", flush=True)
    thresholds = [float(v) for v in args.thresholds.split(",") if v]
    probe = acceptance_probe(g, d, calibration, cfg.nz, 10, thresholds)
    print("  acceptance probe (4,096 draws per class; fraction with calibrated quality >= t):")
    for c, row in probe.items():
        print(f"    class {c} ({FASHION_NAMES[c]}): mean quality {row['mean']:.3f}, "
              + ", ".join(f">= {t}: {row[t]:.3f}" for t in thresholds))
    # Rows: unfiltered at --count (the 60,000) and at --filter-count; the calibrated thresholds and
    # per-class top fractions (thresholds = that quantile of the probe's qualities) at --filter-count.
    rows = [("off", None, args.count), ("off", None, args.filter_count)]
    rows += [(f"min_quality {t}", t, args.filter_count) for t in thresholds]
    for f in [float(v) for v in args.top.split(",") if v]:
        cut = [float(torch.quantile(probe[c]["q"], 1 - f)) for c in range(10)]
        rows.append((f"top {f:.0%} per class (min_quality {min(cut):.3f}-{max(cut):.3f})", cut, args.filter_count))
    for name, threshold, count in rows:
        t = time.perf_counter()
        short = [c for c, row in probe.items() if isinstance(threshold, float) and row[threshold] < 1 / args.max_tries]
        if short:
            print(f"  {name}: class(es) {short} accept fewer than 1 in max_tries {args.max_tries} draws (probe "
                  "above): cannot reach their count; not generated")
            continue
        out, problem = generate(g, d, calibration, cfg.nz, count // 10, 10, threshold, args.max_tries, seed=1 + args.seed)
        if out is None:
            print(f"  {name}: {problem}")
            continue
        x, y, q, acceptance = out
        # CAS: the same seeded classifier and epochs as TRTR above (trained once: same real data every row).
        pred = _fit_predict("cnn", x, y.numpy(), x_te, 10, args.seed, 1.0, args.cnn_epochs)
        cas_value = float((pred == y_te.numpy()).mean())
        cas = {"cas": cas_value, "trtr": trtr, "cas_ratio": cas_value / trtr, "classifier": classifier}
        f_x = feats(x)
        fid = FID(ext)
        fid.update_features(f_te, real=True), fid.update_features(f_x, real=False)
        sub = torch.randperm(len(f_x), generator=torch.Generator().manual_seed(0))[:5000]
        precision, recall = precision_recall_from_features(f_te[:5000], f_x[sub], k=3)
        memo = memorization_audit(f_x[sub].numpy(), f_tr.numpy(), real_holdout_feats=f_te.numpy())
        print(f"  {name}: {len(y)} images, mean quality {q.mean():.3f}, acceptance per class "
              f"{[round(v, 3) for v in acceptance.values()]}; CAS {cas['cas']:.4f} TRTR {cas['trtr']:.4f} "
              f"CAS/TRTR {cas['cas_ratio']:.3f} ({cas['classifier']}); FID {fid.compute()['fid']:.2f}, precision "
              f"{precision:.3f} recall {recall:.3f} (k=3, 5000 vs 5000); near-copy fraction "
              f"{memo['near_copy_fraction']:.4f} (baseline {memo['baseline_near_copy_fraction']:.4f}); "
              f"{time.perf_counter() - t:.0f}s", flush=True)
    print(f"total {time.perf_counter() - t0:.0f}s")


# -- (3) techniques one at a time on sklearn:digits ----------------------------------------------------
# The digits demo's recipe (configs/dcgan-digits.yaml) is "full"; each row changes one thing.
DIGITS_FULL = dict(resolution=8, channels=1, num_classes=10, nz=64, ngf=32, ndf=32, batch_size=32, lr_g=2e-4,
                   lr_d=2e-4, beta1=0.0, beta2=0.9, loss="hinge", spectral_norm=True, label_smoothing=0.0,
                   ema=0.99, balanced=True)
ABLATIONS = {
    "full (hinge, SN, EMA 0.99, balanced, lr 2e-4 both)": {},
    "hinge -> bce": {"loss": "bce"},
    "bce + label smoothing 0.1": {"loss": "bce", "label_smoothing": 0.1},
    "no spectral norm": {"spectral_norm": False},
    "no EMA": {"ema": 0.0},
    "no class-balanced batches": {"balanced": False},
    "+ TTUR (lr_g 1e-4, lr_d 4e-4)": {"lr_g": 1e-4, "lr_d": 4e-4},
    "plain DCGAN (bce, no SN/EMA/balance, Adam 0.5/0.999)": {"loss": "bce", "spectral_norm": False, "ema": 0.0,
                                                            "balanced": False, "beta1": 0.5, "beta2": 0.999},
}


def ablation(args) -> None:
    from synthloom.evaluators.cas import classification_accuracy_score
    from synthloom.evaluators.features import DomainClassifierFeatures
    from synthloom.evaluators.image_metrics import FID

    t0 = time.perf_counter()
    ref = read_reference_images("sklearn:digits")
    y_tr = torch.tensor([int(c) for c in ref.train_labels])
    y_te = torch.tensor([int(c) for c in ref.test_labels])
    # FID features: the fidelity evaluator's domain CNN (trained on the reference's train part, 16 px).
    ext = DomainClassifierFeatures(num_classes=10, input_size=(16, 16), dataset="sklearn-digits")
    ext.fit(ref.train_images, y_tr, seed=0)
    f_te = ext(ref.test_images)
    print(f"{environment()}\nablation: sklearn:digits, train {len(y_tr)} (GAN, TRTR), test {len(y_te)} (CAS, FID); "
          f"{args.epochs} epochs per run, seeds {args.seeds}; {args.per_class} images per class generated (EMA G "
          f"when EMA is on); CAS/TRTR with small-cnn(epochs={args.cnn_epochs}); FID with {ext.name}")
    print("| config | seed | CAS | TRTR | CAS/TRTR | FID | min class spread / real | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    only = [v for v in args.only.split(",") if v] if args.only else None
    scores: dict[str, dict[int, tuple[float, float]]] = {}  # config -> seed -> (CAS/TRTR, FID)
    for i, (name, change) in enumerate(ABLATIONS.items()):
        if only is not None and str(i) not in only:
            continue
        for seed in [int(v) for v in args.seeds.split(",")]:
            cfg = TrainConfig(**{**DIGITS_FULL, **change}, epochs=args.epochs, seed=seed)
            work = Path(args.work) / f"ablation-{i}-{seed}"
            import shutil

            shutil.rmtree(work, ignore_errors=True)
            t = time.perf_counter()
            result = Trainer(cfg, TrainData(ref.train_images * 2 - 1, y_tr, ref.classes), work).run()
            train_s = time.perf_counter() - t
            labels = torch.arange(10).repeat_interleave(args.per_class)
            z = torch.randn(len(labels), cfg.nz, generator=torch.Generator().manual_seed(100 + seed))
            x = render(result["generator"].eval(), z, labels, "cpu")
            cas = classification_accuracy_score(x, labels, ref.train_images, y_tr, ref.test_images, y_te,
                                                num_classes=10, classifier="cnn", cnn_epochs=args.cnn_epochs, seed=0)
            fid = FID(ext)
            fid.update_features(f_te, real=True), fid.update_features(ext(x), real=False)
            fid_value = fid.compute()["fid"]
            scores.setdefault(name, {})[seed] = (cas["cas_ratio"], fid_value)
            print(f"| {name} | {seed} | {cas['cas']:.3f} | {cas['trtr']:.3f} | {cas['cas_ratio']:.3f} | "
                  f"{fid_value:.1f} | {result['history'][-1]['min_spread_ratio']:.2f} | {train_s:.0f} |",
                  flush=True)
    print_ablation_summary(scores)
    print(f"total {time.perf_counter() - t0:.0f}s")


def print_ablation_summary(scores: dict[str, dict[int, tuple[float, float]]]) -> None:
    """Mean ± 95 % t-interval per config over seeds, and the paired difference (same seeds) from the
    first config, "full", with a paired t-test: one seed cannot tell the techniques apart (issue 27)."""
    from synthloom.evaluators.augment import paired_gain, t_interval

    if not scores or max(len(by_seed) for by_seed in scores.values()) < 2:
        return
    base_name = next(iter(scores))
    base = scores[base_name]

    def cell(values, digits):
        ci = t_interval(values)
        return f"{ci['mean']:.{digits}f} ± {ci['ci_high'] - ci['mean']:.{digits}f}"

    print(f"\nover seeds: mean ± half-width of the 95 % t-interval; difference from '{base_name}' paired by seed")
    print("| config | seeds | CAS/TRTR | FID | CAS/TRTR - full [95 % CI] (p) | FID - full [95 % CI] (p) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, by_seed in scores.items():
        seeds = sorted(set(by_seed) & set(base))
        ratio, fid = [by_seed[s][0] for s in seeds], [by_seed[s][1] for s in seeds]
        cells = [cell(ratio, 3), cell(fid, 1)]
        for k, digits in ((0, 3), (1, 1)):
            if name == base_name:
                cells.append("-")
                continue
            g = paired_gain([by_seed[s][k] for s in seeds], [base[s][k] for s in seeds])
            cells.append(f"{g['mean']:+.{digits}f} [{g['ci_low']:+.{digits}f}, {g['ci_high']:+.{digits}f}] "
                         f"({g['p_value']:.2f})")
        print(f"| {name} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["throughput", "fashion", "ablation"])
    ap.add_argument("--epochs", type=int, default=60, help="ablation: epochs per run")
    ap.add_argument("--seeds", default="0", help="ablation: training seeds, comma-separated")
    ap.add_argument("--seed", type=int, default=0, help="fashion: seed of training, generation (+1) and the CAS/TRTR "
                    "classifier (0 reproduces the runs recorded before seeds were varied)")
    ap.add_argument("--per-class", type=int, default=100, help="ablation: generated images per class")
    ap.add_argument("--only", default="", help="ablation: row numbers to run, comma-separated (default all)")
    ap.add_argument("--reference", default=FASHION)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--ndf", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--train-epochs", type=int, default=0, help="fashion: stop after this many epochs (0: only the "
                    "--minutes limit); a fixed count keeps seeds comparable on a machine whose load varies")
    ap.add_argument("--loss", default="hinge")
    ap.add_argument("--sn", type=int, default=1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--balanced", type=int, default=1)
    ap.add_argument("--lr-g", type=float, default=1e-4)
    ap.add_argument("--lr-d", type=float, default=4e-4)
    ap.add_argument("--beta1", type=float, default=0.0)
    ap.add_argument("--beta2", type=float, default=0.9)
    ap.add_argument("--count", type=int, default=60000)
    ap.add_argument("--thresholds", default="0.5,0.7,0.9")
    ap.add_argument("--filter-count", type=int, default=10000, help="images per filtered row (and one unfiltered)")
    ap.add_argument("--top", default="0.5,0.1", help="per-class top fractions by quality, as more rows")
    ap.add_argument("--max-tries", type=int, default=50)
    ap.add_argument("--cnn-epochs", type=int, default=3)
    ap.add_argument("--extractor-size", type=int, default=20000)
    ap.add_argument("--work", default="/tmp/bench-dcgan")
    ap.add_argument("--reuse", default=None, help="a --work folder of an earlier run: evaluate its checkpoint")
    ap.add_argument("--calibration", type=int, default=2000, help="test images that calibrate D (the rest evaluate)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"throughput": throughput, "fashion": fashion, "ablation": ablation}[args.part](args)


if __name__ == "__main__":
    main()
