"""`dcgan`: a (class-conditional) DCGAN trained on the recipe's `reference`, with a discriminator filter.

`prepare` reads the reference through `synthloom.references` (the evaluators' reader), trains the GAN
on its train part (the held-out test part stays unseen, for CAS) and stores it in the model store
keyed by (reference content hash, training params, code version): later builds reuse it, and a killed
training resumes from its last epoch checkpoint. A collapsed generator (the diversity audit on a fixed
noise batch after the last epoch) stops the build unless `on_collapse: warn`.

Rows: `image`, `label` (conditional), `quality` = the discriminator's calibrated real-probability of
the image (Platt scaling of D's logit, fitted after training on `calibration_holdout` of each class's
training images, which the GAN never saw, against as many generated ones: see calibration.py; 0.5
means D cannot tell it from a real image), `attempts` (draws until accepted) and `seed`. With `min_quality` a sample redraws its
noise (from its own seeded stream, so rows stay deterministic) until D scores it at least that, at most
`max_tries` times; a class that runs out of tries stops the build with a message naming it. Acceptance
per class goes into each shard's record and the manifest (`generator.stats`).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from synthloom.errors import DatasetError, GeneratorError, ModelRejectedError
from synthloom.features import ClassLabel, Features, Image, Value
from synthloom.models import load_pretrained_state, save_pretrained
from synthloom.planning import png_row_bytes
from synthloom.provenance import sha256_file

from ..base import Asset, BuildContext, Generator, Prepared, ShardSpec, input_fingerprint
from .calibration import CALIBRATION, Calibration, calibrate, discriminator_logits
from .nets import DCGANDiscriminator, DCGANGenerator
from .params import DCGANParams
from .training import HISTORY, TrainConfig, TrainData, Trainer, collapse_check, render, to_uint8

log = logging.getLogger(__name__)
MAX_UPSCALE = 4  # a reference smaller than resolution / 4 is refused: the GAN would learn blur
MIN_PER_CLASS = 2


def _prepare_images(images: torch.Tensor, resolution: int, channels: int) -> torch.Tensor:
    """Reference images (float [0, 1]) at the training size and channel count, in [-1, 1]."""
    if images.shape[1] != channels:
        images = images.mean(1, keepdim=True) if channels == 1 else images.expand(-1, 3, -1, -1)
    if tuple(images.shape[-2:]) != (resolution, resolution):
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False,
                               antialias=images.shape[-1] > resolution)
    return images.clamp(0, 1) * 2 - 1


class DCGAN(Generator):
    name = "dcgan"
    Params = DCGANParams
    params: DCGANParams
    code_version = "2"  # 2: calibrated quality (calibration.json, a held-out part of the training images)
    resources = {"gpu": 1}
    _reference_channels: int | None = None  # set by check_inputs, for bytes_per_sample

    # -- preflight -----------------------------------------------------------------------------
    def _reference(self, ctx: BuildContext):
        from synthloom.references import read_reference_images

        if not ctx.reference:
            raise GeneratorError("dcgan: the recipe needs `reference` (the real images to train on)")
        try:
            ref = read_reference_images(ctx.reference, resolve=lambda p: ctx.resolve_path(p))
            # real_fraction: the GAN sees only this per-class subsample (the one the augment evaluator uses)
            ref = ref.subsample(self.params.real_fraction, self.params.real_fraction_seed)
        except DatasetError as error:
            raise GeneratorError(f"dcgan reference: {error}") from None
        _, h, w = ref.image_shape
        res = self.params.resolution
        if min(h, w) * MAX_UPSCALE < res:
            raise GeneratorError(f"dcgan: reference {ctx.reference} has {w}x{h} images, too small for resolution {res} "
                                 f"(at most {MAX_UPSCALE}x upscaling: use resolution <= {min(h, w) * MAX_UPSCALE})")
        counts = {c: ref.train_labels.count(c) for c in ref.classes}
        few = {c: n for c, n in counts.items() if n < MIN_PER_CLASS}
        if few:
            raise GeneratorError(f"dcgan: reference {ctx.reference} is too small: class(es) {sorted(few)} have "
                                 f"{sorted(set(few.values()))} training image(s); at least {MIN_PER_CLASS} each")
        labels = torch.tensor([ref.classes.index(c) for c in ref.train_labels])
        trainable = len(labels) - len(_calibration_split(labels, self.params.calibration_holdout, self.params.train_seed))
        if trainable < self.params.batch_size:
            raise GeneratorError(f"dcgan: reference {ctx.reference} has {trainable} training images after holding out "
                                 f"calibration_holdout {self.params.calibration_holdout}, fewer than batch_size "
                                 f"{self.params.batch_size}")
        return ref

    def training_subset(self, recipe_dir: Path | None = None) -> dict[str, Any]:
        return {"real_fraction": self.params.real_fraction, "real_fraction_seed": self.params.real_fraction_seed}

    def check_inputs(self, ctx: BuildContext) -> None:
        self._reference_channels = self._reference(ctx).image_shape[0]

    def bytes_per_sample(self) -> int | None:
        # The channels "auto" will give; 3 (the most) when check_inputs has not read the reference.
        channels = self.params.channels if self.params.channels != "auto" else self._reference_channels or 3
        return png_row_bytes(self.params.resolution, self.params.resolution, 3 if channels == 4 else channels)

    # -- prepare: train or reuse -----------------------------------------------------------------
    def prepare(self, ctx: BuildContext) -> Prepared:
        p = self.params
        ref = self._reference(ctx)
        classes = ref.classes if p.conditional else []
        channels = ref.image_shape[0] if p.channels == "auto" else p.channels
        channels = 3 if channels == 4 else channels
        images = _prepare_images(ref.train_images, p.resolution, channels)
        labels = torch.tensor([ref.classes.index(c) for c in ref.train_labels])
        held = _calibration_split(labels, p.calibration_holdout, p.train_seed)
        held_out = ((images[held] + 1) / 2, labels[held] if classes else None)
        rest = np.setdiff1d(np.arange(len(labels)), held)
        images, labels = images[rest], labels[rest]
        if p.max_train_images and p.max_train_images < len(labels):
            keep = np.sort(np.random.default_rng(p.train_seed).permutation(len(labels))[:p.max_train_images])
            images, labels = images[keep], labels[keep]
        cfg = TrainConfig.from_params(p, channels=channels, num_classes=len(classes))
        inputs = {"generator": self.name, "code_version": self.code_version, "data_sha256": ref.sha256,
                  "classes": classes, "training": p.training_params()}
        data = TrainData(images, labels if classes else torch.zeros(len(labels), dtype=torch.long), classes)
        stored = ctx.models.get_or_build(inputs, lambda work: self._train(cfg, data, held_out, work, ctx.device))
        history = json.loads((stored.path / HISTORY).read_text())
        final = history["epochs"][-1]
        if final["flag_mode_collapse"]:  # a model stored by a build with on_collapse: warn
            message = self._collapse_message(final, classes) + f" (samples in {stored.path / 'samples'})"
            if p.on_collapse == "error":
                raise GeneratorError(message + "; train longer/differently, or set on_collapse: warn")
            log.warning(message)
        reference_asset = Asset(path=ref.source, sha256=ref.sha256, role="reference")
        outputs = [Asset(path=str(stored.path / name), sha256=stored.files[name], role="weights")
                   for name in ("generator/model.safetensors", "discriminator/model.safetensors")]
        outputs.append(Asset(path=str(stored.path / CALIBRATION), sha256=stored.files[CALIBRATION], role="calibration"))
        calibration = Calibration.load(stored.path / CALIBRATION)
        self.prepared = Prepared(
            generator=self.name, classes=classes, assets=[reference_asset], outputs=outputs,
            input_fingerprint=input_fingerprint(self.name, p, self.code_version, [reference_asset]),
            info={"model_dir": str(stored.path), "model_key": stored.key, "reused": stored.reused,
                  "channels": channels, "train_images": len(labels), **self.training_subset(), "epochs": len(history["epochs"]),
                  "resumed_from_epoch": history.get("resumed_from_epoch"),
                  "final": {k: final[k] for k in ("loss_d", "loss_g", "min_spread_ratio", "collapsed_classes")},
                  "calibration": calibration.diagnostics,
                  "reference_notes": ref.notes})
        return self.prepared

    def _train(self, cfg: TrainConfig, data: TrainData, held_out, work: Path, device: str) -> None:
        trainer = Trainer(cfg, data, work, device=device, on_epoch=_epoch_artifact(work))
        with _EpochBar(cfg.epochs) as bar:
            result = trainer.run(progress=bar.update)
        g, d = result["generator"], result["discriminator"]
        arch = {k: getattr(cfg, k) for k in ("resolution", "channels", "num_classes", "nz")}
        save_pretrained(g, {**arch, "ngf": cfg.ngf, "architecture": "DCGANGenerator", "classes": data.classes},
                        work / "generator")
        save_pretrained(d, {**arch, "ndf": cfg.ndf, "spectral_norm": cfg.spectral_norm,
                            "architecture": "DCGANDiscriminator", "classes": data.classes}, work / "discriminator")
        real, real_labels = result["monitor_real"]
        save_pretrained(_Tensors(images=real, labels=real_labels), {"what": "real images the collapse check compares"},
                        work / "monitor")
        final = result["history"][-1]
        if final["flag_mode_collapse"] and self.params.on_collapse == "error":
            # Store only what passed: a collapsed model is not kept, so the next build trains afresh.
            raise ModelRejectedError(self._collapse_message(final, data.classes) + "; nothing was stored; train "
                                     "longer/differently, or set on_collapse: warn")
        calibrate(g, d, *held_out, cfg.nz, cfg.num_classes, device, seed=cfg.seed + 4,
                  per_class=self.params.calibration == "per_class").save(work / CALIBRATION)

    def _collapse_message(self, final: dict, classes: list[str]) -> str:
        return (f"dcgan: mode collapse after epoch {final['epoch']}: class(es) "
                f"{[classes[int(c)] if classes else c for c in final['collapsed_classes']]} have less than "
                f"{self.params.collapse_ratio} of the real images' spread (min ratio {final['min_spread_ratio']:.3f})")

    # -- load once per worker, generate ----------------------------------------------------------
    def load(self, prepared: Prepared, device: str = "cpu") -> None:
        super().load(prepared, device)
        folder = Path(prepared.info["model_dir"])
        for asset in prepared.outputs:
            if not Path(asset.path).is_file() or sha256_file(asset.path) != asset.sha256:
                raise GeneratorError(f"{asset.path}: dcgan weights are missing or changed since prepare")
        gcfg, gstate = load_pretrained_state(folder / "generator", device)
        dcfg, dstate = load_pretrained_state(folder / "discriminator", device)
        self.g = DCGANGenerator(gcfg["nz"], gcfg["num_classes"], gcfg["channels"], gcfg["resolution"], gcfg["ngf"])
        self.d = DCGANDiscriminator(dcfg["num_classes"], dcfg["channels"], dcfg["resolution"], dcfg["ndf"],
                                    dcfg["spectral_norm"])
        self.g.load_state_dict(gstate)
        self.d.load_state_dict(dstate)
        self.g.to(device).eval()
        self.d.to(device).eval()
        _, mstate = load_pretrained_state(folder / "monitor", "cpu")
        self.monitor = (mstate["images"], mstate["labels"])
        self.calibration = Calibration.load(folder / CALIBRATION)
        self.nz = gcfg["nz"]
        self._stats: dict[str, Any] | None = None

    def features(self) -> Features:
        if self.prepared is None:
            raise GeneratorError("dcgan: features() needs prepare() first (class names come from the reference)")
        columns: dict[str, Any] = {"image": Image()}
        if self.prepared.classes:
            columns["label"] = ClassLabel(self.prepared.classes)
        columns.update({"quality": Value("float32"), "attempts": Value("int32"), "seed": Value("int64")})
        return Features(columns)

    @torch.no_grad()
    def _score(self, z: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images in [0, 1], D's calibrated real-probability) for a batch of noise."""
        images = render(self.g, z, y, self.device, batch=self.params.batch)
        logits = discriminator_logits(self.d, images, y, self.device, batch=self.params.batch)
        return images, self.calibration.probability(logits, y)

    def generate(self, shard: ShardSpec) -> Iterable[dict[str, Any]]:
        p, classes = self.params, self.prepared.classes
        n = shard.size
        seeds = [shard.sample_seed(i) for i in range(n)]
        streams = [torch.Generator().manual_seed(s) for s in seeds]  # one noise stream per sample
        labels = torch.tensor([(shard.start + i) % len(classes) for i in range(n)]) if classes else None
        images = [None] * n
        quality = torch.zeros(n)
        attempts = torch.zeros(n, dtype=torch.int32)
        pending = list(range(n))
        while pending:
            z = torch.stack([torch.randn(self.nz, generator=streams[i]) for i in pending])
            y = labels[pending] if labels is not None else None
            batch_images, batch_quality = self._score(z, y)
            still = []
            for k, i in enumerate(pending):
                attempts[i] += 1
                if p.min_quality is None or batch_quality[k] >= p.min_quality:
                    images[i], quality[i] = batch_images[k], batch_quality[k]
                elif attempts[i] >= p.max_tries:
                    self._give_up(i, labels, attempts, pending, shard)
                else:
                    still.append(i)
            pending = still
        stacked = torch.stack(images)
        self._stats = self._shard_stats(stacked, labels, attempts, shard)
        pixels = to_uint8(stacked)
        for i in range(n):
            row = {"image": pixels[i], "quality": float(quality[i]), "attempts": int(attempts[i]), "seed": seeds[i]}
            if labels is not None:
                row["label"] = int(labels[i])
            yield row

    def _give_up(self, i: int, labels, attempts, pending, shard: ShardSpec):
        classes = self.prepared.classes
        name = classes[int(labels[i])] if labels is not None else "(unconditional)"
        same = [j for j in pending if labels is None or labels[j] == labels[i]]
        raise GeneratorError(
            f"dcgan: class {name!r} cannot reach its count with min_quality {self.params.min_quality}: a sample of "
            f"shard {shard.filename} was rejected {int(attempts[i])} times (max_tries) and {len(same)} sample(s) of "
            "the class are still pending; lower min_quality, raise max_tries or train longer")

    def _shard_stats(self, images01: torch.Tensor, labels, attempts, shard: ShardSpec) -> dict[str, Any]:
        classes = self.prepared.classes or ["(all)"]
        idx = labels.numpy() if labels is not None else np.zeros(len(attempts), int)
        per_class = {classes[c]: {"accepted": int((idx == c).sum()), "drawn": int(attempts.numpy()[idx == c].sum())}
                     for c in np.unique(idx)}
        stats: dict[str, Any] = {"per_class": per_class}
        real, real_labels = self.monitor
        check = collapse_check(images01, labels, real, real_labels, self.params.collapse_ratio)
        collapsed = [classes[int(c)] if labels is not None else c for c in check["collapsed_classes"]]
        stats["mode_collapse"] = collapsed
        stats["min_spread_ratio"] = check["min_spread_ratio"]
        if collapsed:
            message = (f"dcgan: shard {shard.filename}: class(es) {collapsed} look collapsed (spread ratio "
                       f"{check['min_spread_ratio']:.3f} < {self.params.collapse_ratio} of the real images')")
            if self.params.on_collapse == "error":
                raise GeneratorError(message + "; set on_collapse: warn to write it anyway")
            log.warning(message)
        return stats

    def shard_stats(self) -> dict[str, Any] | None:
        return self._stats

    @classmethod
    def merge_stats(cls, shard_stats: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Acceptance per class over the build (accepted / drawn), and the shards that looked collapsed."""
        if not shard_stats:
            return None
        totals: dict[str, dict[str, int]] = {}
        for stats in shard_stats:
            for name, counts in stats["per_class"].items():
                entry = totals.setdefault(name, {"accepted": 0, "drawn": 0})
                entry["accepted"] += counts["accepted"]
                entry["drawn"] += counts["drawn"]
        return {"acceptance_rate": {name: c["accepted"] / c["drawn"] for name, c in totals.items()},
                "per_class": totals,
                "collapsed_shards": sum(1 for s in shard_stats if s.get("mode_collapse"))}


def _calibration_split(labels: torch.Tensor, fraction: float, seed: int) -> np.ndarray:
    """Indices of `fraction` of each class (at least one, leaving MIN_PER_CLASS - 1 to train on), seeded."""
    rng = np.random.default_rng(seed + 5)
    held = []
    for c in np.unique(labels.numpy()):
        members = rng.permutation(np.flatnonzero(labels.numpy() == c))
        held.append(members[:min(max(1, round(fraction * len(members))), len(members) - MIN_PER_CLASS + 1)])
    return np.sort(np.concatenate(held))


class _Tensors(torch.nn.Module):
    """Plain tensors saved through save_pretrained (safetensors)."""

    def __init__(self, **tensors: torch.Tensor):
        super().__init__()
        for key, value in tensors.items():
            self.register_buffer(key, value.contiguous())


def _epoch_artifact(work: Path):
    """A Prefect artifact per epoch (one key, new version each epoch): loss curve and sample grid
    embedded as data: URIs (the UI cannot load file:// links); nothing outside a Prefect run."""
    from prefect.context import TaskRunContext, FlowRunContext

    if TaskRunContext.get() is None and FlowRunContext.get() is None:
        return None

    def publish(record: dict[str, Any], grid: Path) -> None:
        from prefect.artifacts import create_markdown_artifact

        flag = " **MODE COLLAPSE?** " + str(record["collapsed_classes"]) if record["flag_mode_collapse"] else ""
        create_markdown_artifact(
            key="dcgan-training",
            markdown=(f"**DCGAN epoch {record['epoch']}**: loss D {record['loss_d']:.3f}, G {record['loss_g']:.3f}, "
                      f"{record['images_per_s']:.0f} images/s, min class spread / real "
                      f"{record['min_spread_ratio']}{flag}\n\n{embedded_png(work / 'loss.png', 'loss curves')}\n\n"
                      f"{embedded_png(grid, 'samples')}\n\n`{work}`"),
            description=f"DCGAN training, epoch {record['epoch']}")

    return publish


def embedded_png(path: Path, alt: str, width: int = 480) -> str:
    """A PNG as a markdown image with a data: URI, downscaled to `width` pixels at most."""
    import base64
    import io

    from PIL import Image as PILImage

    with PILImage.open(path) as image:
        image.thumbnail((width, width * 4))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


class _EpochBar:
    """A progress bar over epochs on a terminal; log lines otherwise (Prefect logs, CI)."""

    def __init__(self, total: int):
        self.total = total
        self.progress = None

    def __enter__(self):
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("dcgan training"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("epochs {task.fields[losses]}"), TimeRemainingColumn())
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.total, losses="")
        return self

    def update(self, epoch: int, total: int, record: dict[str, Any]) -> None:
        losses = f"D {record['loss_d']:.3f} G {record['loss_g']:.3f}"
        if self.progress is not None:
            self.progress.update(self.task, completed=epoch, losses=losses)
        log.info("dcgan epoch %d/%d: %s, %.0f images/s", epoch, total, losses, record["images_per_s"] or 0)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
