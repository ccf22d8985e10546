"""Quality of the small Fashion-MNIST base model (`make base-model`) and of LoRA-DreamBooth on the class
it never saw ("ankle boot", held out of its training).

1. A real-trained classifier: the small CNN of `evaluators/cas.py`, trained on the 60,000 real train
   images (all 10 classes), the same classifier and epochs as the DCGAN Fashion-MNIST bench.
2. Base model: images from the `diffusion` generator itself ("a photo of a {class}", class-balanced,
   per-image seeds), centre-cropped 32 -> 28 px and turned grey. Reported: the real-trained classifier's
   accuracy per class, and CAS/TRTR on the 9 classes the base model was trained on (same CNN, same epochs
   on both sides; the real train/test images of the held-out class are left out of both).
3. LoRA-DreamBooth through the generator's `dreambooth:` option on `--instances` real ankle-boot train
   images, instance prompt "a photo of a ankle boot" (the captions' template), prior preservation on the
   base model's own images of every class it knows (the option's default) or of some (--class-prompts
   sneaker). The same prompts and seeds are generated again: the
   real-trained classifier's accuracy on the new prompt before vs after, and on the other 9 classes
   before vs after (forgetting). Also: how many generated boots are nearest (pixels) to one of the
   instance images among all real train ankle boots (copying, rather than learning, the class).

    python benchmarks/bench_fashion_diffusion_cas.py --model models/fashion-sd [--per-class 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))  # training-only builders (not installed)
from _common import environment  # noqa: E402
from bench_fashion_mnist import load_fashion_mnist  # noqa: E402
from fashion_base_model import CLASS_NAMES, caption  # noqa: E402

from synthloom.evaluators.cas import classification_accuracy_score, train_cnn_classifier  # noqa: E402
from synthloom.evaluators.features import to_float_images  # noqa: E402
from synthloom.generators.base import BuildContext, ShardSpec  # noqa: E402
from synthloom.generators.diffusion import DiffusionGenerator  # noqa: E402
from synthloom.models import ModelStore  # noqa: E402

HELD_OUT = CLASS_NAMES.index("ankle boot")


def generate(params: dict, count: int, seed: int, ctx: BuildContext) -> tuple[np.ndarray, np.ndarray, dict]:
    generator = DiffusionGenerator(params)
    prepared = generator.prepare(ctx)
    generator.load(prepared)
    rows = list(generator.generate(ShardSpec("train", 0, 1, 0, count, root_seed=seed)))
    images = np.stack([r["image"][2:30, 2:30].mean(axis=-1) for r in rows]).round().astype(np.uint8)
    return images, np.array([r["label"] for r in rows]), prepared.info


def per_class_accuracy(classifier, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    _, logits = classifier.features_and_logits(to_float_images(images))
    predicted = logits.argmax(1).numpy()
    return np.array([(predicted[labels == c] == c).mean() for c in range(len(CLASS_NAMES))]), predicted


def base_model_images(params: dict, per_class: int, seed: int, ctx: BuildContext, model: str) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` base-model images of each class, cached in ctx.cache_dir by model, count, steps, guidance, seed."""
    count = per_class * len(CLASS_NAMES)
    t = time.perf_counter()
    key = f"{Path(model).resolve().parent.name[:12]}-{per_class}-{params['steps']}-{params['guidance_scale']}-{seed}"
    cached = Path(ctx.cache_dir) / f"base-{key}.npz"
    from_cache = cached.is_file()
    if from_cache:
        with np.load(cached) as data:
            images, labels = data["images"], data["labels"]
    else:
        images, labels, _ = generate(params, count, seed, ctx)
        np.savez(cached, images=images, labels=labels)
    seconds = time.perf_counter() - t
    made = f"loaded from {cached}" if from_cache else f"in {seconds:.0f} s ({count / seconds:.1f} images/s)"
    print(f"base model: {count} images ({per_class} per class, DDIM {params['steps']} steps, guidance "
          f"{params['guidance_scale']}) {made}")
    return images, labels


def class_spread(images: np.ndarray, labels: np.ndarray, per_class: int = 100) -> dict[int, tuple[float, float]]:
    """class -> (mean pairwise L2 distance between its first `per_class` images, mean pixel value), in [0, 1]."""
    out = {}
    for c in np.unique(labels):
        x = images[labels == c][:per_class].reshape(-1, 28 * 28).astype(np.float64) / 255
        squared = (x ** 2).sum(1)[:, None] - 2 * x @ x.T + (x ** 2).sum(1)[None]
        pairs = np.sqrt(np.clip(squared[np.triu_indices(len(x), 1)], 0, None))
        out[int(c)] = (float(pairs.mean()), float(x.mean()))
    return out


def write_instances(folder: Path, images: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):  # as the base model was trained: padded 28 -> 32, grey as RGB
        Image.fromarray(np.repeat(np.pad(image, 2)[..., None], 3, axis=2)).save(folder / f"{i:02d}.png")


def grid(images: np.ndarray, labels: np.ndarray, per_row: int, path: Path) -> None:
    from PIL import Image

    rows = [images[labels == c][:per_row] for c in range(len(CLASS_NAMES))]
    canvas = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    Image.fromarray(canvas).resize((canvas.shape[1] * 2, canvas.shape[0] * 2), Image.NEAREST).save(path)


def add_base_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The base model, its sampling, the classifier and the cache: shared with bench_cas_like_for_like.py."""
    parser.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "models" / "fashion-sd"))
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps per image")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--cnn-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/fashion-diffusion-bench", help="cache of classifiers and images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_base_model_arguments(parser)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--db-steps", type=int, default=400)
    parser.add_argument("--db-lr", type=float, default=1e-3)
    parser.add_argument("--db-rank", type=int, default=8)
    parser.add_argument("--db-batch", type=int, default=4)
    parser.add_argument("--db-text-encoder", action="store_true", help="LoRA on the text encoder too")
    parser.add_argument("--db-method", choices=["lora", "full"], default="lora")
    parser.add_argument("--db-targets", default=None,
                        help="comma-separated UNet modules for LoRA (default: the attention projections)")
    parser.add_argument("--class-images", type=int, default=100, help="prior-preservation images in all")
    parser.add_argument("--class-prompts", default="all",
                        help="prior-preservation classes: 'all' (the dreambooth option's default: 'a photo of a "
                             "{class}' over the generator's classes but ankle boot, the 9 the base model knows) or "
                             "comma-separated class names ('sneaker': one class, the first measurement)")
    parser.add_argument("--prior-weight", type=float, default=1.0)
    parser.add_argument("--skip-cas", action="store_true")
    parser.add_argument("--real-limit", type=int, default=None, help="fewer real train images (smoke tests only)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(environment())
    t0 = time.perf_counter()
    train_x, train_y = load_fashion_mnist("train")
    train_x, train_y = train_x[:args.real_limit], train_y[:args.real_limit]
    test_x, test_y = load_fashion_mnist("test")
    trained = np.array([c for c in range(len(CLASS_NAMES)) if c != HELD_OUT])

    import torch

    t = time.perf_counter()
    saved = out / f"classifier-{args.cnn_epochs}-{args.seed}.pt"  # reused by a later run with other DreamBooth args
    reused = saved.is_file()
    if reused:
        classifier = torch.load(saved, weights_only=False)
    else:
        classifier = train_cnn_classifier(to_float_images(train_x), train_y, len(CLASS_NAMES), args.cnn_epochs,
                                          args.seed)
        torch.save(classifier, saved)
    real_acc, _ = per_class_accuracy(classifier, test_x, test_y)
    print(f"real-trained classifier small-cnn(epochs={args.cnn_epochs}) on {len(train_x)} real train images "
          f"({'loaded from ' + str(saved) if reused else 'trained in'} {time.perf_counter() - t:.0f} s): accuracy "
          f"{(real_acc.mean()):.3f} on the real test images; per class "
          + ", ".join(f"{n} {a:.2f}" for n, a in zip(CLASS_NAMES, real_acc)))

    store = ModelStore(out / "store")
    ctx = BuildContext(cache_dir=out, models=store)
    params = {"model": args.model, "classes": CLASS_NAMES, "templates": ["a photo of a {class}"], "attributes": {},
              "steps": args.steps, "guidance_scale": args.guidance, "batch_size": 100}
    count = args.per_class * len(CLASS_NAMES)
    before, labels = base_model_images(params, args.per_class, args.seed, ctx, args.model)
    acc_before, _ = per_class_accuracy(classifier, before, labels)
    grid(before, labels, 10, out / "base.png")

    if not args.skip_cas:
        t = time.perf_counter()
        keep_fake, keep_train, keep_test = np.isin(labels, trained), np.isin(train_y, trained), np.isin(test_y, trained)
        cas = classification_accuracy_score(before[keep_fake], labels[keep_fake], train_x[keep_train],
                                            train_y[keep_train], test_x[keep_test], test_y[keep_test],
                                            num_classes=len(CLASS_NAMES), classifier="cnn",
                                            cnn_epochs=args.cnn_epochs, seed=args.seed)
        print(f"CAS on the {len(trained)} trained classes (train on {keep_fake.sum()} generated, test on "
              f"{keep_test.sum()} real): {cas['cas']:.3f}; TRTR (train on {keep_train.sum()} real): {cas['trtr']:.3f}; "
              f"CAS/TRTR {cas['cas_ratio']:.3f}; {cas['classifier']}; {time.perf_counter() - t:.0f} s")
        # The same with as many real train images as generated ones (TRTR at equal size).
        few = np.flatnonzero(keep_train)[np.random.default_rng(args.seed).permutation(keep_train.sum())[:keep_fake.sum()]]
        small = classification_accuracy_score(before[keep_fake], labels[keep_fake], train_x[few], train_y[few],
                                              test_x[keep_test], test_y[keep_test], num_classes=len(CLASS_NAMES),
                                              classifier="cnn", cnn_epochs=args.cnn_epochs, seed=args.seed)
        print(f"  with {len(few)} real train images for TRTR (as many as generated): TRTR {small['trtr']:.3f}, "
              f"CAS/TRTR {small['cas_ratio']:.3f}")

    # -- LoRA-DreamBooth on the held-out class ------------------------------------------------------
    boots = np.flatnonzero(train_y == HELD_OUT)
    picked = np.random.default_rng(args.seed).choice(boots, args.instances, replace=False)
    write_instances(out / "instances", train_x[picked])
    prior = {}  # 'all': the option's default class_prompt, "a photo of a {class}" over the classes not named
    if args.class_prompts == "all":  # in the instance prompt: the 9 the base model was trained on
        prior_classes = [c for c in range(len(CLASS_NAMES)) if c != HELD_OUT]
    else:
        prior_classes = [CLASS_NAMES.index(name) for name in args.class_prompts.split(",")]
        prior["class_prompt"] = caption(prior_classes[0]) if len(prior_classes) == 1 else [caption(c) for c in prior_classes]
    dreambooth = {"instance_dir": str(out / "instances"), "instance_prompt": caption(HELD_OUT),
                  **prior, "num_class_images": args.class_images,
                  "prior_loss_weight": args.prior_weight, "steps": args.db_steps, "learning_rate": args.db_lr,
                  "rank": args.db_rank, "batch_size": args.db_batch, "train_text_encoder": args.db_text_encoder,
                  "checkpoint_every": 0, "seed": args.seed, "method": args.db_method}
    if args.db_targets:
        dreambooth["unet_targets"] = args.db_targets.split(",")
    t = time.perf_counter()
    after, labels_after, info = generate({**params, "dreambooth": dreambooth}, count, args.seed, ctx)
    adapter = info["adapters"][0]
    print(f"{args.db_method} DreamBooth: {args.instances} instance images, {json.dumps(dreambooth)}; training "
          f"{adapter['train_seconds']:.0f} s, loss first {adapter['loss_first']:.4f} last {adapter['loss_last']:.4f}; "
          f"with class images and generation {time.perf_counter() - t:.0f} s")
    assert (labels_after == labels).all()
    acc_after, predicted_after = per_class_accuracy(classifier, after, labels_after)
    grid(after, labels_after, 10, out / "dreambooth.png")
    print(f"real-trained classifier's accuracy on generated images, base model -> after {args.db_method} DreamBooth:")
    for c, name in enumerate(CLASS_NAMES):
        mark = "  (held out of base training; DreamBooth's class)" if c == HELD_OUT else \
            "  (prior-preservation class)" if c in prior_classes and len(prior_classes) < len(trained) else ""
        print(f"  {name:10s} {acc_before[c]:.2f} -> {acc_after[c]:.2f}{mark}")
    print(f"new prompt '{caption(HELD_OUT)}': {acc_before[HELD_OUT]:.3f} -> {acc_after[HELD_OUT]:.3f}; other 9 "
          f"classes (mean): {acc_before[trained].mean():.3f} -> {acc_after[trained].mean():.3f}; worst other class "
          f"after: {CLASS_NAMES[trained[acc_after[trained].argmin()]]} {acc_after[trained].min():.2f}")

    # Accuracy misses images that are still recognisable but all alike: the spread within each class
    # (mean pairwise pixel distance) and its mean brightness, base model -> after, real test images beside.
    spread = {name: class_spread(x, y) for name, (x, y) in
              {"real": (test_x, test_y), "base": (before, labels), "after": (after, labels_after)}.items()}
    print("within-class spread (mean pairwise distance of [0, 1] pixels) and mean brightness, real test / base / after:")
    for c in trained:
        print(f"  {CLASS_NAMES[c]:10s} spread {spread['real'][c][0]:.2f} / {spread['base'][c][0]:.2f} / "
              f"{spread['after'][c][0]:.2f}; brightness {spread['real'][c][1]:.3f} / {spread['base'][c][1]:.3f} / "
              f"{spread['after'][c][1]:.3f}")
    ratio = np.mean([spread["after"][c][0] / spread["base"][c][0] for c in trained])
    print(f"other 9 classes: spread after / base {ratio:.3f} (mean of per-class ratios); base / real "
          f"{np.mean([spread['base'][c][0] / spread['real'][c][0] for c in trained]):.3f}")

    # Copying check: for each generated boot, its nearest real train ankle boot (pixels): an instance?
    gen_boots = after[labels_after == HELD_OUT].reshape(-1, 28 * 28).astype(np.float32)
    real_boots = train_x[boots].reshape(-1, 28 * 28).astype(np.float32)
    d = (gen_boots ** 2).sum(1)[:, None] - 2 * gen_boots @ real_boots.T + (real_boots ** 2).sum(1)[None]
    nearest = boots[d.argmin(1)]
    print(f"generated ankle boots whose nearest of the {len(boots)} real train ankle boots is one of the "
          f"{args.instances} instances: {np.isin(nearest, picked).mean():.2f} (by chance {args.instances / len(boots):.4f})")
    print(f"grids: {out / 'base.png'}, {out / 'dreambooth.png'}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
