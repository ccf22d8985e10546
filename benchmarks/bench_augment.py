"""Does adding DCGAN samples to a little real Fashion-MNIST train a better classifier? (issue 27)

For one real fraction (1 %: 600 images, 10 %: 6,000): cut the Fashion-MNIST train part to that fraction of
each class (`synthloom.references.per_class_subsample`, seed 0, what `real_fraction` does in a recipe),
train a class-conditional DCGAN on that subsample only, for at most --gan-minutes, exactly as the `dcgan`
generator does (its calibration split held out of the same subsample, then Platt calibration of D), generate
a pool of samples per class, and run the `augment` evaluator's comparison
(`synthloom.evaluators.augment.augmentation_comparison`, CAS's small CNN, equal gradient steps per arm) on
the 10,000 test images, >= 3 seeds, for each variant of the synthetic data:

- `plain`: the EMA generator's samples, as drawn;
- `top<q>`: the discriminator filter, kept at the top q of each class by calibrated quality (fixed
  min_quality thresholds are out of reach for this D, see RESULTS.md's DCGAN filter section; the per-class
  top fraction is the feasible form of the same filter);
- `no-collapsed`: the classes the mode-collapse check flags (spread below collapse_ratio of the real
  images') get no synthetic samples (run only when a class is flagged).

Levers (issue 27: what moves the gain at 1 %):

- `--diffaugment POLICY` (repeatable): train one more DCGAN per policy with DiffAugment (Zhao et al.
  2020; e.g. `color,translation,cutout`; `off` = none), each --gan-minutes; its variants are named
  `da-<policy> plain`, `da-<policy> top0.5`, ...;
- `--schedule mix,pretrain`: each variant's mixtures trained mixed, and as `synthetic then real`
  (synthetic draw first, then fine-tuned on the real images, the same step budget split by sample counts);
- `--seeds N`: classifier seeds (the paired t-test has N - 1 degrees of freedom).

The baseline is the real arm, measured in the same run with the same seeds (shared by every variant and
schedule: the same real images, seeds and step budget give the same classifier, so it is trained once per
seed; likewise a variant's synthetic-alone arm across schedules).

    OMP_NUM_THREADS=2 flock /tmp/synthloom-heavy.lock python benchmarks/bench_augment.py --fraction 0.01
    OMP_NUM_THREADS=2 flock /tmp/synthloom-heavy.lock python benchmarks/bench_augment.py --fraction 0.1 --epochs 2
    # the 1 % GAN again, no training: only the classes a stricter collapse check flags dropped
    OMP_NUM_THREADS=2 flock /tmp/synthloom-heavy.lock python benchmarks/bench_augment.py --fraction 0.01 --reuse \
        --collapse-ratio 0.8 --variants no-collapsed
    # the levers: a plain and a DiffAugment DCGAN, mixed and pretrain schedules, 10 seeds
    OMP_NUM_THREADS=2 flock /tmp/synthloom-heavy.lock python benchmarks/bench_augment.py --fraction 0.01 \
        --diffaugment off --diffaugment color,translation,cutout --schedule mix,pretrain --seeds 10 --top ""
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AUGMENT_TABLE_HEADER, augment_data, augment_setting, augment_table_row, environment  # noqa: E402

from synthloom.evaluators.augment import REAL, SCHEDULES, _cnn, augmentation_comparison, ratio_label  # noqa: E402
from synthloom.generators.dcgan.diffaugment import parse_policy  # noqa: E402
from synthloom.generators.dcgan.calibration import calibrate, discriminator_logits  # noqa: E402
from synthloom.generators.dcgan.generator import _calibration_split, _prepare_images  # noqa: E402
from synthloom.generators.dcgan.training import CHECKPOINT, TrainConfig, TrainData, Trainer, collapse_check, render  # noqa: E402

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def train_gan(sub, args, policy: str = ""):
    """The dcgan generator's prepare, on the subsample: calibration split held out, Trainer, Platt fit;
    `policy`: its DiffAugment policy ("" = off)."""
    classes = sub.classes
    images = _prepare_images(sub.train_images, 28, 1)
    labels = torch.tensor([classes.index(c) for c in sub.train_labels])
    held = _calibration_split(labels, 0.1, 0)
    rest = np.setdiff1d(np.arange(len(labels)), held)
    cfg = TrainConfig(resolution=28, channels=1, num_classes=10, ngf=args.ngf, ndf=args.ndf, epochs=100_000,
                      batch_size=args.batch, loss="hinge", spectral_norm=True, ema=args.ema, balanced=True,
                      lr_g=1e-4, lr_d=4e-4, beta1=0.0, beta2=0.9, diffaugment=policy)
    work = Path(args.work) / (f"gan-{args.fraction:g}" + (f"-da-{policy.replace(',', '-')}" if policy else ""))
    minutes = args.gan_minutes
    if args.reuse:  # an earlier run's checkpoint, its config, no training (a zero time limit)
        cfg = TrainConfig(**torch.load(work / CHECKPOINT, map_location="cpu", weights_only=False)["config"])
        minutes = 0
        print(f"  reusing the DCGAN checkpoint in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)  # a fresh run, not a resumed one
    t = time.perf_counter()
    result = Trainer(cfg, TrainData(images[rest], labels[rest], classes), work).run(time_limit_s=minutes * 60)
    history = result["history"]
    g, d = result["generator"].eval(), result["discriminator"].eval()
    calibration = calibrate(g, d, (images[held] + 1) / 2, labels[held], cfg.nz, 10, "cpu", seed=4)
    print(f"  DCGAN (diffaugment {cfg.diffaugment or 'off'}) on {len(rest)} images ({len(held)} held out to calibrate D): {len(history)} epochs in "
          f"{time.perf_counter() - t:.0f}s; last loss D {history[-1]['loss_d']:.3f} G {history[-1]['loss_g']:.3f}; "
          f"min class spread / real {history[-1]['min_spread_ratio']:.3f}, collapsed at the last epoch: "
          f"{[NAMES[int(c)] for c in history[-1]['collapsed_classes']]}; calibration {json.dumps(calibration.diagnostics)}; "
          f"grids in {work}", flush=True)
    return g, d, calibration, cfg, (images[rest] + 1) / 2, labels[rest]


@torch.no_grad()
def pool(g, d, calibration, nz: int, per_class: int, seed: int = 1):
    """`per_class` samples of each class with their calibrated D quality."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(10).repeat_interleave(per_class)
    x = render(g, torch.randn(len(y), nz, generator=gen), y, "cpu", batch=1024)
    q = calibration.probability(discriminator_logits(d, x, y, "cpu", batch=1024), y)
    return x, y, q


def top_per_class(y: torch.Tensor, q: torch.Tensor, fraction: float) -> np.ndarray:
    keep = []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        keep.append(idx[torch.argsort(q[idx], descending=True)[:int(round(fraction * len(idx)))]])
    return torch.sort(torch.cat(keep)).values.numpy()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fraction", type=float, default=0.01, help="real_fraction of each class of the train part")
    ap.add_argument("--subsample-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3, help="classifier runs per arm (e.g. 10: the paired t-test has "
                    "seeds - 1 degrees of freedom)")
    ap.add_argument("--ratios", default="0.25,0.5,1,4", help="synthetic:real ratios")
    ap.add_argument("--epochs", type=int, default=20, help="classifier epochs over the largest training set")
    ap.add_argument("--min-steps", type=int, default=500)
    ap.add_argument("--gan-minutes", type=float, default=5.0)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--ndf", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64, help="GAN batch size")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--top", default="0.5", help="discriminator filter variants: per-class top fractions")
    ap.add_argument("--collapse-ratio", type=float, default=0.5)
    ap.add_argument("--reuse", action="store_true", help="use the GAN checkpoint of an earlier run in --work")
    ap.add_argument("--variants", default="", help="only these variants, comma-separated (default: all)")
    ap.add_argument("--diffaugment", action="append", default=None, metavar="POLICY",
                    help="one DCGAN per policy (repeatable): a DiffAugment policy, e.g. color,translation,cutout, "
                    "or 'off' (default: one DCGAN, off)")
    ap.add_argument("--schedule", default="mix", help="mix, pretrain or mix,pretrain (both against one real arm)")
    ap.add_argument("--work", default="/tmp/bench-augment")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ratios = [float(v) for v in args.ratios.split(",")]
    schedules = [v.strip() for v in args.schedule.split(",") if v.strip()]
    bad = [v for v in schedules if v not in SCHEDULES]
    if bad or not schedules:
        ap.error(f"--schedule: use mix, pretrain or mix,pretrain, got {args.schedule!r}")
    try:
        policies = [",".join(parse_policy("" if v == "off" else v)) for v in (args.diffaugment or ["off"])]
    except ValueError as error:
        ap.error(f"--diffaugment: {error}")
    ref, sub, classes, y_real, y_test = augment_data(args.fraction, args.subsample_seed)
    data, arms = augment_setting(args, ref, sub, ratios)
    print(f"{environment()}\naugment bench: {data}; {arms}, schedules {schedules}, DCGAN diffaugment "
          f"{[p or 'off' for p in policies]}, {args.threads} threads", flush=True)

    need = int(round(max(ratios) * np.bincount(y_real).max()))  # per class, for the largest ratio
    tops = [float(v) for v in args.top.split(",") if v]
    variants: dict[str, tuple[torch.Tensor, np.ndarray]] = {}  # name -> (synthetic images, labels)
    gan_seconds = 0.0
    for policy in policies:
        t = time.perf_counter()
        g, d, calibration, cfg, gan_real, gan_real_y = train_gan(sub, args, policy)
        x_pool, y_pool, q_pool = pool(g, d, calibration, cfg.nz, int(np.ceil(need / min(tops + [1.0]))))
        gan_seconds += time.perf_counter() - t
        collapse = collapse_check(x_pool[::max(1, len(x_pool) // 5000)], y_pool[::max(1, len(x_pool) // 5000)],
                                  gan_real, gan_real_y, args.collapse_ratio)
        collapsed = [int(c) for c in collapse["collapsed_classes"]]
        print(f"  pool: {len(y_pool)} samples, mean calibrated quality {q_pool.mean():.3f}; collapse check on the "
              f"pool (collapse_ratio {args.collapse_ratio}): min spread ratio {collapse['min_spread_ratio']:.3f}, "
              f"collapsed {[NAMES[c] for c in collapsed]}", flush=True)
        rows = {"plain": np.concatenate([torch.nonzero(y_pool == c).flatten()[:need].numpy() for c in range(10)])}
        for f in tops:
            rows[f"top{f:g}"] = top_per_class(y_pool, q_pool, f)
        if collapsed:
            plain = rows["plain"]
            rows["no-collapsed"] = plain[~np.isin(y_pool[plain].numpy(), collapsed)]
        if args.variants:
            rows = {k: v for k, v in rows.items() if k in args.variants.split(",")}
        prefix = f"da-{policy.replace(',', '+')} " if policy else ""
        variants.update({prefix + k: (x_pool[v], y_pool[v].numpy()) for k, v in rows.items()})

    params = SimpleNamespace(batch_size=32)
    fit_predict, concat, name, _, real_x = _cnn(x_pool[:1], sub.train_images, ref.test_images, 10, params)
    memo: dict = {}
    trainings = [0, 0.0]  # classifier trainings run, their seconds

    def digest(v) -> str:
        return hashlib.sha1(np.ascontiguousarray(v.numpy() if isinstance(v, torch.Tensor) else v).tobytes()).hexdigest()

    def shared(x, y, seed, epochs, steps=None, init=None):
        # One training set, seed and budget give one classifier: the real arm (every variant and schedule) and
        # a variant's synthetic-alone arm (every schedule) are trained once. Not the pretrain phases: their
        # model is trained further in place.
        key = (digest(x), digest(y), seed, epochs) if steps is None and init is None else None
        if key is not None and key in memo:
            return memo[key], None
        t = time.perf_counter()
        pred, model = fit_predict(x, y, seed, epochs, steps=steps, init=init)
        trainings[0] += 1
        trainings[1] += time.perf_counter() - t
        if key is not None:
            memo[key] = pred
        return pred, model

    # One step budget for every variant (the plain one's: epochs of its largest set), so the real arm is the same.
    largest = len(y_real) + int(round(max(ratios) * len(y_real)))
    budget = max(args.epochs * -(-largest // 32), args.min_steps)
    print("\n" + AUGMENT_TABLE_HEADER)
    results, printed = {}, set()
    for variant, (x_syn, y_syn) in variants.items():
        for schedule in schedules:
            t = time.perf_counter()
            result = augmentation_comparison(shared, concat, real_x, y_real, x_syn, y_syn, ref.test_images, y_test,
                                             classes, ratios, args.seeds, args.epochs, 32, budget_steps=budget,
                                             schedule=schedule)
            results[(variant, schedule)] = result
            for arm, a in result["arms"].items():
                shown = "-" if arm == REAL else variant
                if (shown, arm) in printed:  # the shared real / synthetic-alone rows: once
                    continue
                printed.add((shown, arm))
                gain = result["gains"].get(ratio_label(a["ratio"])) if "ratio" in a else None
                print(augment_table_row(shown, f"{arm}{' (baseline)' if arm == REAL else ''}", a, gain), flush=True)
            best = result["gains"][ratio_label(result["best_ratio"])]
            steps = {k: (f"{v['synthetic_steps']}+{v['real_steps']}" if "synthetic_steps" in v else v["steps"])
                     for k, v in result["arms"].items()}
            print(f"  ({variant}, {schedule}: {time.perf_counter() - t:.1f}s; best ratio "
                  f"{ratio_label(result['best_ratio'])}: gain {best['mean']:+.4f}, per seed "
                  f"{[round(v, 4) for v in best['per_seed']]}; steps per arm {steps})", flush=True)
    print("\nper-class gain at 1:1 (mean over seeds), per variant and schedule:")
    for (variant, schedule), result in results.items():
        per = result["gain_per_class"]
        print(f"  {variant} ({schedule}): " + ", ".join(f"{NAMES[int(c)]} {per[c][ratio_label(1.0)]:+.3f}" for c in per
                                                         if ratio_label(1.0) in per[c]))
    wall = time.perf_counter() - t0
    print(f"\ncost: {trainings[0]} classifier trainings in {trainings[1]:.1f} s "
          f"({trainings[1] / max(1, trainings[0]):.1f} s each; a pretrain arm is two, at one arm's steps), "
          f"GAN training and sampling {gan_seconds:.1f} s")
    print(f"total wall time {wall:.1f} s")


if __name__ == "__main__":
    main()
