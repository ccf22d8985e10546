"""Does adding synthetic data to a little real data train a better classifier than the real data alone?

The comparison (`augmentation_comparison`): the same downstream classifier (CAS's: the small CNN for
images, PointNet for clouds) trained on

- `real`: the real train part (optionally cut to `real_fraction` of each class, seeded),
- `real+synthetic r:1` for each ratio r: the real part plus r synthetic samples per real one, drawn per
  class so the class balance of the real part is kept,
- `synthetic`: the synthetic part of the largest mixture alone,

each `seeds` times (seed i: the classifier's initialisation and data order, and the synthetic draw), all
tested on the held-out real test part. Accuracies get a 95 % t-interval over seeds; the gain of a mixture
over `real` is paired by seed (the same seed gives both arms the same initialisation), with a t-interval
on the per-seed differences and a paired t-test (scipy.stats.ttest_rel).

Schedule (`schedule`): `mix` (the default) trains each mixture arm on the real and synthetic samples
shuffled together. `pretrain` replaces each mixture arm by `synthetic then real r:1`: the classifier trains
on that arm's synthetic draw first, then the same network is fine-tuned on the real part alone (a fresh
optimiser and learning-rate schedule), within the same gradient-step budget as the other arms, split in
proportion to the sample counts (r:1 gives r / (r + 1) of the steps to the synthetic phase: each sample
is visited as often as in the r:1 mixture). The real and synthetic-alone arms do not depend on it.

Equal budget: by default every arm trains the same number of gradient steps (`epochs` epochs of the
largest training set, at least `min_steps`), so a mixture does not win merely by training longer on more
samples. Measured on 44 real digits (tests/test_augment.py's setting): 10 epochs each (unequal steps)
left the real arm at 0.145 accuracy, untrained; the same budget in steps gave it 0.72.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .jsonable import json_float

log = logging.getLogger(__name__)  # one line per classifier run: the Prefect UI shows how far it is

__all__ = ["t_interval", "paired_gain", "ratio_label", "mixture_arm", "synthetic_draw", "augmentation_comparison",
           "summary_of", "table_of", "plot_augmentation"]

REAL, SYNTHETIC = "real", "synthetic"


def ratio_label(ratio: float) -> str:
    """`real+synthetic 4:1` style name of a synthetic:real ratio."""
    return f"{ratio:g}:1"


SCHEDULES = ("mix", "pretrain")


def mixture_arm(ratio: float, schedule: str = "mix") -> str:
    """The arm of ratio `ratio`: `real+synthetic 4:1` (mixed) or `synthetic then real 4:1` (pretrain)."""
    return f"{'synthetic then real' if schedule == 'pretrain' else 'real+synthetic'} {ratio_label(ratio)}"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float | None]:
    """Mean, sample standard deviation and the two-sided Student-t interval of the mean (n - 1 degrees
    of freedom); the interval is None for fewer than 2 values."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    mean = float(v.mean()) if n else float("nan")
    if n < 2:
        return {"n": n, "mean": json_float(mean), "std": None, "ci_low": None, "ci_high": None}
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_gain(treated: Sequence[float], control: Sequence[float], confidence: float = 0.95,
                alpha: float = 0.05) -> dict[str, Any]:
    """Gain treated - control paired by index (seed): t-interval of the differences, two-sided paired
    t-test. Identical differences (zero spread) give p = 1 when they are 0 and 0 otherwise, the limit of
    the t statistic, where scipy returns NaN."""
    from scipy import stats

    a, b = np.asarray(treated, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_gain needs as many treated as control values, got {len(a)} and {len(b)}")
    diff = a - b
    out = t_interval(diff, confidence)
    if len(diff) < 2:
        p = None
    elif np.allclose(diff, diff[0], rtol=0, atol=1e-12):
        p = 1.0 if abs(diff[0]) <= 1e-12 else 0.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    out.update(p_value=p, significant=p is not None and p < alpha,
               per_seed=[float(d) for d in diff])
    return out


def synthetic_draw(real_labels: np.ndarray, synth_labels: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Indices of synthetic samples for one mixture: round(ratio * real count) of each real class (all
    there are when fewer), a seeded shuffle per class; for one seed a smaller ratio's draw is a prefix of
    a larger one's."""
    rng = np.random.default_rng([seed, 7])  # its own stream: not the classifier's seed stream
    picked = [np.zeros(0, dtype=np.int64)]
    for c in np.unique(real_labels):
        pool = rng.permutation(np.flatnonzero(synth_labels == c))
        picked.append(pool[:int(round(ratio * int((real_labels == c).sum())))])
    return np.sort(np.concatenate(picked))


def augmentation_comparison(
    fit_predict: Callable[..., tuple[np.ndarray, Any]],
    concat: Callable[[Any, Any], Any],
    real_x, real_y: np.ndarray, synth_x, synth_y: np.ndarray, test_x, test_y: np.ndarray,
    classes: list[str], ratios: Sequence[float], seeds: int, epochs: int, batch_size: int,
    equal_steps: bool = True, min_steps: int = 0, budget_steps: int | None = None, confidence: float = 0.95,
    alpha: float = 0.05, schedule: str = "mix",
) -> dict[str, Any]:
    """The comparison of the module doc. `fit_predict(x, y, seed, epochs, steps=None, init=None)` trains the
    classifier (`steps`: exactly that many gradient steps instead of `epochs`; `init`: a model it returned
    before, to train further) and returns (its predictions on `test_x`, the model); `concat(a, b)` joins two
    sample sets (tensors or arrays); `*_y` are class indices into `classes`. `budget_steps` fixes the
    equal-steps budget (comparisons of several synthetic sets against one real arm)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"augment schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    started = time.perf_counter()
    real_y, synth_y, test_y = (np.asarray(v, dtype=np.int64) for v in (real_y, synth_y, test_y))
    ratios = sorted(set(float(r) for r in ratios))
    draws = {seed: {r: synthetic_draw(real_y, synth_y, r, seed) for r in ratios} for seed in range(seeds)}
    largest = max(ratios)
    # The step budget is the mixtures' (real + synthetic) whatever the schedule: the same number either way.
    mixed_sizes = {r: len(real_y) + len(draws[0][r]) for r in ratios}
    sizes = {REAL: len(real_y), **{mixture_arm(r, schedule): mixed_sizes[r] for r in ratios},
             SYNTHETIC: len(draws[0][largest])}
    steps = lambda n: max(1, math.ceil(n / batch_size))  # noqa: E731
    budget = budget_steps or max(epochs * steps(max(sizes.values())), min_steps)
    arm_epochs = {arm: (max(1, round(budget / steps(n))) if equal_steps else max(epochs, math.ceil(min_steps / steps(n))))
                  for arm, n in sizes.items()}
    arm_steps = {arm: arm_epochs[arm] * steps(n) for arm, n in sizes.items()}
    phases: dict[str, tuple[int, int]] = {}  # pretrain arm -> (synthetic steps, real steps)
    if schedule == "pretrain":
        for r in ratios:
            arm = mixture_arm(r, schedule)
            total = budget if equal_steps else arm_steps[arm]  # what the r:1 mixture would train
            first = int(round(total * len(draws[0][r]) / mixed_sizes[r]))
            phases[arm] = (first, total - first)
            arm_steps[arm] = total

    calls = [0]

    def fit_predict_counted(*args, **kw):
        calls[0] += 1
        return fit_predict(*args, **kw)

    mixture_ratio = {mixture_arm(r, schedule): r for r in ratios}
    runs: dict[str, list[np.ndarray]] = {arm: [] for arm in sizes}  # arm -> predictions per seed
    seconds = {arm: 0.0 for arm in sizes}
    def finished(arm: str, seed: int, since: float) -> None:
        seconds[arm] += time.perf_counter() - since
        log.info("augment: seed %d/%d, arm %s: accuracy %.4f (%.0f s)", seed + 1, seeds, arm,
                 float((runs[arm][-1] == test_y).mean()), time.perf_counter() - since)

    for seed in range(seeds):
        for arm in sizes:
            t = time.perf_counter()
            if arm == REAL:
                x, y = real_x, real_y
            elif arm == SYNTHETIC:
                pick = draws[seed][largest]
                x, y = synth_x[pick], synth_y[pick]
            elif schedule == "pretrain":
                pick = draws[seed][mixture_ratio[arm]]
                first, second = phases[arm]
                model = None
                if len(pick) and first:
                    _, model = fit_predict_counted(synth_x[pick], synth_y[pick], seed, arm_epochs[arm], steps=first)
                pred, _ = fit_predict_counted(real_x, real_y, seed, arm_epochs[arm], steps=second, init=model)
                runs[arm].append(np.asarray(pred))
                finished(arm, seed, t)
                continue
            else:
                pick = draws[seed][mixture_ratio[arm]]
                x, y = concat(real_x, synth_x[pick]), np.concatenate([real_y, synth_y[pick]])
            if len(y) == 0:
                runs[arm].append(np.full(len(test_y), -1))  # nothing to train on: every prediction wrong
                continue
            runs[arm].append(np.asarray(fit_predict_counted(x, y, seed, arm_epochs[arm])[0]))
            finished(arm, seed, t)

    def accuracy(pred, mask=None):
        m = np.ones(len(test_y), bool) if mask is None else mask
        return float((pred[m] == test_y[m]).mean()) if m.any() else float("nan")

    arms, per_class_acc = {}, {}
    for arm, preds in runs.items():
        acc = [accuracy(p) for p in preds]
        arms[arm] = {"train_size": sizes[arm], "epochs": arm_epochs[arm], "steps": arm_steps[arm],
                     **t_interval(acc, confidence), "accuracy": acc, "seconds": round(seconds[arm], 2)}
        per_class_acc[arm] = {name: [accuracy(p, test_y == c) for p in preds] for c, name in enumerate(classes)}
    for r in ratios:
        arm = mixture_arm(r, schedule)
        arms[arm]["synthetic"] = len(draws[0][r])
        arms[arm]["ratio"] = r
        if arm in phases:  # epochs mean nothing here: the two phases are counted in steps
            arms[arm].update(epochs=None, synthetic_steps=phases[arm][0], real_steps=phases[arm][1])
    gains = {}
    for r in ratios:
        arm = mixture_arm(r, schedule)
        gain = paired_gain(arms[arm]["accuracy"], arms[REAL]["accuracy"], confidence, alpha)
        gains[ratio_label(r)] = {"ratio": r, "achieved_ratio": len(draws[0][r]) / max(1, len(real_y)), **gain}
    best = max(ratios, key=lambda r: gains[ratio_label(r)]["mean"])
    gain_per_class = {name: {ratio_label(r): json_float(np.nanmean(np.subtract(per_class_acc[mixture_arm(r, schedule)][name],
                                                                                 per_class_acc[REAL][name])))
                             for r in ratios}
                      for name in classes if (test_y == classes.index(name)).any()}
    missing = sorted(set(classes[c] for c in np.unique(real_y)) - set(classes[c] for c in np.unique(synth_y)))
    return {"arms": arms, "gains": gains, "best_ratio": best, "gain_per_class": gain_per_class,
            "classes": list(classes), "seeds": seeds, "ratios": ratios, "schedule": schedule,
            "confidence": confidence, "alpha": alpha,
            "equal_steps": equal_steps, "gradient_steps_per_arm": budget if equal_steps else None, "min_steps": min_steps,
            "batch_size": batch_size, "num_real_train": len(real_y), "num_real_test": len(test_y),
            "num_synthetic_pool": len(synth_y), "classes_missing_in_synthetic": missing,
            "classifier_trainings": calls[0],
            "seconds": round(time.perf_counter() - started, 2)}


def summary_of(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers gates read: the best ratio's gain, its interval's lower end, its p-value.
    The best of k ratios is a chosen one, so `augment_significant` asks its p-value times k (Bonferroni)
    to be below alpha; the interval and p-value themselves are the best ratio's own."""
    best = result["gains"][ratio_label(result["best_ratio"])]
    k = len(result["ratios"])
    return {"augment_gain": best["mean"], "augment_gain_ci_low": best["ci_low"], "augment_gain_p": best["p_value"],
            "augment_significant": bool(best["p_value"] is not None and best["p_value"] * k < result["alpha"]
                                        and best["mean"] > 0),
            "augment_best_ratio": result["best_ratio"], "augment_real_accuracy": result["arms"][REAL]["mean"],
            "augment_synthetic_accuracy": result["arms"][SYNTHETIC]["mean"]}


def table_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per arm: what the Prefect table artifact and report.html show."""
    pct = int(round(100 * result["confidence"]))

    def interval(low, high):
        return "–" if low is None else f"[{low:.4f}, {high:.4f}]"

    rows = []
    for arm, a in result["arms"].items():
        gain = result["gains"].get(ratio_label(a["ratio"])) if "ratio" in a else None
        rows.append({"arm": arm, "train_size": a["train_size"], "epochs": a["epochs"],
                     "accuracy": round(a["mean"], 4), f"accuracy_{pct}ci": interval(a["ci_low"], a["ci_high"]),
                     "gain": None if gain is None else round(gain["mean"], 4),
                     f"gain_{pct}ci": "" if gain is None else interval(gain["ci_low"], gain["ci_high"]),
                     "paired_p": None if gain is None or gain["p_value"] is None else float(f"{gain['p_value']:.4g}"),
                     # gradient steps; a pretrain arm's as synthetic + real (results before `steps` existed: "")
                     "steps": (f"{a['synthetic_steps']} + {a['real_steps']}" if "synthetic_steps" in a
                               else str(a.get("steps", "")))})
    return rows


def plot_augmentation(result: dict[str, Any], path) -> str:
    """Accuracy (mean and t-interval over seeds) against the synthetic:real ratio; real alone at 0 and
    synthetic alone as a separate point at the right."""
    from .plots import new_figure, save_figure

    ratios = [0.0] + list(result["ratios"])
    schedule = result.get("schedule", "mix")
    arms = [result["arms"][REAL]] + [result["arms"][mixture_arm(r, schedule)] for r in result["ratios"]]
    fig = new_figure(4.6, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    positions = np.arange(len(ratios))  # evenly spaced: ratios 0.25 ... 4 would crowd a linear axis

    def errors(items):
        lows = [a["mean"] - a["ci_low"] if a["ci_low"] is not None else 0 for a in items]
        highs = [a["ci_high"] - a["mean"] if a["ci_high"] is not None else 0 for a in items]
        return [lows, highs]

    ax.errorbar(positions, [a["mean"] for a in arms], yerr=errors(arms), marker="o", capsize=4,
                label="synthetic, then real" if schedule == "pretrain" else "real + synthetic")
    synth = result["arms"][SYNTHETIC]
    ax.errorbar([len(ratios)], [synth["mean"]], yerr=errors([synth]), marker="s", capsize=4, color="tab:red",
                linestyle="none", label="synthetic alone")
    ax.axhline(arms[0]["mean"], color="gray", linewidth=0.8, linestyle="--")
    ax.set_xticks(list(positions) + [len(ratios)])
    ax.set_xticklabels(["real"] + [ratio_label(r) for r in result["ratios"]] + ["synth"], fontsize=8)
    ax.set_xlabel("synthetic : real")
    ax.set_ylabel("test accuracy (real test part)")
    ax.set_title(f"mean and {int(round(100 * result['confidence']))} % CI over {result['seeds']} seeds", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def _describe_subset(fraction: float | None, seed: int | None) -> str:
    return "the whole train part" if fraction is None else f"real_fraction {fraction:g} (real_fraction_seed {seed})"


def generator_training_subset(generator_kind: str, generator_params: dict[str, Any],
                              recipe_dir: Path | None = None) -> dict[str, Any] | None:
    """`Generator.training_subset` of a recipe's generator (relative model paths found from `recipe_dir`, as
    the build finds them); None for bad params: the build reports those itself, with their own message."""
    from synthloom.errors import SynthloomError
    from synthloom.registry import make_generator

    try:
        return make_generator(generator_kind, generator_params).training_subset(recipe_dir)
    except SynthloomError:
        return None


def subset_mismatch(fraction: float | None, seed: int, subset: dict[str, Any] | None, generator_kind: str,
                    reference: str | None) -> str | None:
    """Why a generator's training data (`subset`, from `Generator.training_subset`) does not match the real
    arm's (None when it does, or when the generator does not train on the reference): a generator that saw
    real images the real arm did not would make the synthetic arms leak them."""
    if subset is None:
        return None
    theirs = subset.get("real_fraction")
    their_seed = subset.get("real_fraction_seed", 0) if theirs is not None else None
    if (fraction, seed if fraction is not None else None) == (theirs, their_seed):
        return None  # without a fraction the seed picks nothing
    return (f"evaluator augment compares with {_describe_subset(fraction, seed)} of reference {reference}, but "
            f"generator {generator_kind} trains on {_describe_subset(theirs, their_seed)}: give both the same "
            "real_fraction and real_fraction_seed (a generator trained on other real images leaks them into the "
            "synthetic arms)")


# -- the evaluator's two modalities (EvaluationData in, the comparison out) -------------------------
def _class_order(names) -> list[str]:
    """Numeric class names in numeric order ("2" before "10"), as `ReferenceImages.classes`."""
    return sorted(set(names), key=lambda n: (0, int(n), n) if n.isdigit() else (1, 0, n))


def _subsample_train(train, train_labels: list[str], params) -> tuple[Any, list[str], list[str]]:
    from synthloom.references import per_class_subsample

    if params.real_fraction is None:
        return train, train_labels, []
    keep = per_class_subsample(train_labels, params.real_fraction, params.real_fraction_seed)
    note = (f"augment: the real arm trains on real_fraction {params.real_fraction:g} of each class of the reference's "
            f"train part (seed {params.real_fraction_seed}): {len(keep)} of {len(train_labels)} images")
    return train[keep], [train_labels[i] for i in keep], [note]


def compare_on(data, params) -> tuple[dict[str, Any], list[str]]:
    """(the comparison, notes) for the split `data` holds (EvaluationData) with the evaluator's params."""
    if data.modality == "points":
        synth, synth_names = data.clouds
        train, train_names, test, test_names = data.reference_clouds
        from .builtin import CHAMFER_POINTS

        # PointNet sees CHAMFER_POINTS points per cloud, as CAS does.
        cols = np.sort(np.random.default_rng(data.seed).choice(synth.shape[1], size=min(CHAMFER_POINTS, synth.shape[1]),
                                                               replace=False))
        synth, train, test = synth[:, cols], train[:, cols], test[:, cols]
    else:
        synth, synth_names, _ = data.image_sample
        train, train_names, test, test_names = data.reference_images
    train, train_names, notes = _subsample_train(train, list(train_names), params)
    classes = _class_order(list(train_names) + list(test_names))
    index = {c: i for i, c in enumerate(classes)}
    keep = np.array([n in index for n in synth_names], bool)
    dropped = sorted(set(n for n, k in zip(synth_names, keep) if not k))
    if dropped:
        notes.append(f"augment ignores synthetic classes absent from the reference: {dropped}")
    keep_rows = np.flatnonzero(keep)
    synth, synth_names = synth[keep_rows], [synth_names[i] for i in keep_rows]
    y_tr, y_syn, y_te = (np.array([index[n] for n in names], dtype=np.int64)
                         for names in (train_names, synth_names, test_names))
    if data.modality == "points":
        fit_predict, concat, name = _pointnet(test, len(classes), params)
    else:
        fit_predict, concat, name, synth, train = _cnn(synth, train, test, len(classes), params)
    result = augmentation_comparison(fit_predict, concat, train, y_tr, synth, y_syn, test, y_te, classes,
                                     params.ratios, params.seeds, params.epochs, params.batch_size,
                                     equal_steps=params.equal_steps, min_steps=params.min_steps, alpha=params.alpha,
                                     schedule=params.schedule)
    result.update(classifier=name, real_fraction=params.real_fraction,
                  real_fraction_seed=params.real_fraction_seed if params.real_fraction is not None else None)
    if result["classes_missing_in_synthetic"]:
        notes.append(f"augment: the synthetic data has no samples of {result['classes_missing_in_synthetic']}; "
                     "the mixtures add none for them")
    if params.schedule == "pretrain":
        notes.append("augment: schedule pretrain: each 'synthetic then real' arm trains on its synthetic draw, then "
                     "fine-tunes on the real part alone, its steps split in proportion to the sample counts")
    notes.append(f"augment: {result['classifier_trainings']} classifier trainings in {result['seconds']:.0f} s")
    short = [g for g, v in result["gains"].items() if v["achieved_ratio"] < 0.99 * v["ratio"]]
    if short:
        notes.append(f"augment: too few synthetic samples for ratio(s) {short}: achieved "
                     f"{[round(result['gains'][g]['achieved_ratio'], 3) for g in short]}")
    return result, notes


def _cnn(synth, train, test, num_classes: int, params):
    """CAS's small CNN (evaluators/cas.py), at the real test images' size and channels."""
    import torch

    from .cas import _prep, train_cnn_classifier
    from .features import to_float_images

    x_te = to_float_images(test)
    channels, size = x_te.shape[1], tuple(x_te.shape[-2:])
    synth, train = _prep(synth, channels, size), _prep(train, channels, size)

    def fit_predict(x, y, seed, epochs, steps=None, init=None):
        net = train_cnn_classifier(x, y, num_classes, epochs, seed=seed, batch_size=params.batch_size, steps=steps,
                                   init=init)
        with torch.inference_mode():
            pred = torch.cat([net.features_and_logits(chunk)[1].argmax(1) for chunk in x_te.split(1024)]).numpy()
        return pred, net

    return fit_predict, lambda a, b: torch.cat([a, b]), f"small-cnn(batch {params.batch_size})", synth, train


def _pointnet(test, num_classes: int, params):
    """CAS's PointNet (evaluators/pointcloud_metrics.py)."""
    from .pointcloud_metrics import _predict, train_pointnet

    def fit_predict(x, y, seed, epochs, steps=None, init=None):
        model = train_pointnet(x, y, num_classes, epochs=epochs, batch_size=params.batch_size, lr=params.lr,
                               seed=seed, augment=True, steps=steps, init=init)
        return _predict(model, test, "unit_sphere").numpy(), model

    return fit_predict, lambda a, b: np.concatenate([a, b]), f"pointnet(batch {params.batch_size})"
