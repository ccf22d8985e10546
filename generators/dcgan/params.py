"""The `dcgan` generator's params: every training hyper-parameter's default and bounds are declared here,
once. The training loop's `TrainConfig` (training.py) reuses these field declarations, and the generator
builds it with `TrainConfig.from_params`, so no default is copied between the two.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..base import GeneratorParams


class DCGANParams(GeneratorParams):
    resolution: Literal[8, 16, 28, 32, 64] = Field(default=32, description="Side of the square images, pixels.")
    channels: Literal["auto", 1, 3] = Field(default="auto", description="1 (grayscale), 3 (RGB) or the reference's.")
    conditional: bool = Field(default=True, description="Class-conditional (labels from the reference's classes).")
    nz: int = Field(default=100, ge=2, le=1024)
    ngf: int = Field(default=64, ge=2, le=1024, description="Generator width (DCGAN's ngf).")
    ndf: int = Field(default=64, ge=2, le=1024, description="Discriminator width (DCGAN's ndf).")
    epochs: int = Field(default=25, ge=1, le=100_000)
    batch_size: int = Field(default=64, ge=2, le=65_536)
    lr_g: float = Field(default=2e-4, gt=0)
    lr_d: float = Field(default=2e-4, gt=0, description="TTUR: a larger lr_d than lr_g (Heusel et al. 2017).")
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    loss: Literal["bce", "hinge"] = "bce"
    spectral_norm: bool = False
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5)
    ema: float = Field(default=0.0, ge=0, lt=1, description="EMA decay of the generator used to generate; 0 = off.")
    balanced: bool = Field(default=False, description="Class-balanced training batches.")
    diffaugment: str = Field(default="", description="DiffAugment policy (Zhao et al. 2020): a comma-separated "
                             "subset of color, translation, cutout applied to real and generated images before D, "
                             "in D's and G's steps; the standard fix for a GAN trained on a few hundred images. "
                             "\"\" = off.")
    train_seed: int = Field(default=0, ge=0, description="Seed of initialisation and data order.")
    max_train_images: int | None = Field(default=None, ge=1, description="Train on at most this many (a seeded subset).")
    real_fraction: float | None = Field(default=None, gt=0, le=1,
                                        description="Train only on this fraction of each class of the reference's "
                                                    "train part (synthloom.references.per_class_subsample; at least "
                                                    "1 per class): the low-data regime the `augment` evaluator "
                                                    "measures with the same real_fraction and seed.")
    real_fraction_seed: int = Field(default=0, ge=0, description="Seed of the real_fraction subsample.")
    calibration_holdout: float = Field(default=0.1, gt=0, le=0.5,
                                       description="Fraction of each class's training images kept out of GAN "
                                                   "training to calibrate `quality` (Platt scaling of D).")
    calibration: Literal["per_class", "global"] = Field(
        default="per_class", description="One Platt fit per class (classes with >= 30 held-out images) or one.")
    # -- generation (not part of the trained model's key)
    min_quality: float | None = Field(default=None, ge=0, le=1,
                                      description="Keep only samples the discriminator scores >= this (off by default).")
    max_tries: int = Field(default=50, ge=1, description="Draws per sample before its class is given up.")
    collapse_ratio: float = Field(default=0.5, gt=0, le=1,
                                  description="Class spread / real spread below which a class counts as collapsed.")
    on_collapse: Literal["error", "warn"] = "error"
    batch: int = Field(default=256, ge=1, description="Images per forward pass when generating.")

    GENERATION_ONLY: ClassVar[tuple[str, ...]] = ("min_quality", "max_tries", "on_collapse", "batch")

    @field_validator("diffaugment")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        from .diffaugment import POLICIES, parse_policy

        try:
            return ",".join(parse_policy(value))
        except ValueError:  # the one-line error adds the value itself
            raise ValueError(f"must be a comma-separated subset of {','.join(POLICIES)}, or \"\" for off") from None

    @model_validator(mode="after")
    def _hinge_has_no_smoothing(self) -> "DCGANParams":
        if self.loss == "hinge" and self.label_smoothing:
            raise ValueError("label_smoothing applies to loss: bce only")
        return self

    def training_params(self) -> dict[str, Any]:
        # Without real_fraction the key is what it was before the field existed: stored models stay valid.
        unset = {"real_fraction", "real_fraction_seed"} if self.real_fraction is None else set()
        unset |= {"diffaugment"} if not self.diffaugment else set()  # likewise: off keeps the old key
        return self.model_dump(mode="json", exclude=set(self.GENERATION_ONLY) | unset)
