"""DiffAugment for the dcgan generator (generators/dcgan/diffaugment.py): the reference policy's
transforms are differentiable, keep the shape, follow the torch seed and change images; the `diffaugment`
param is validated and keys the model only when on; a tiny training run with it resumes bit-exactly; the
calibration of D scores images un-augmented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from synthloom.generators.dcgan.diffaugment import color, cutout, diff_augment, parse_policy, translation
from synthloom.generators.dcgan.params import DCGANParams
from synthloom.generators.dcgan.training import CHECKPOINT, TrainConfig, TrainData, Trainer

FULL = "color,translation,cutout"


def images(n: int = 16, c: int = 3, side: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_gradients_reach_the_input_and_the_shape_is_kept():
    x = images().requires_grad_(True)
    out = diff_augment(x, FULL, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    x.grad = None
    diff_augment(x, "translation,cutout", torch.Generator().manual_seed(1)).sum().backward()
    # without color's means coupling all pixels: pixels cut out or shifted off get no gradient, the rest 1
    assert set(x.grad.unique().tolist()) == {0.0, 1.0} and 0.3 < (x.grad != 0).float().mean() < 1


def test_draws_follow_the_generator_or_the_global_torch_seed_and_change_images():
    x = images()
    a = diff_augment(x, FULL, torch.Generator().manual_seed(3))
    assert torch.equal(a, diff_augment(x, FULL, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, diff_augment(x, FULL, torch.Generator().manual_seed(4)))
    torch.manual_seed(7)
    b = diff_augment(x, FULL)
    torch.manual_seed(7)
    assert torch.equal(b, diff_augment(x, FULL))
    for policy in ("color", "translation", "cutout"):  # each transform changes (almost) every image
        changed = (diff_augment(x, policy, torch.Generator().manual_seed(5)) != x).flatten(1).any(1)
        assert changed.float().mean() >= 0.75, policy
    assert diff_augment(x, "") is x or torch.equal(diff_augment(x, ""), x)


def test_translation_shifts_by_at_most_an_eighth_of_the_side_with_zero_fill():
    x = torch.full((200, 1, 28, 28), -1.0)
    x[:, :, 13, 14] = 1.0  # one bright pixel on a dark image
    out = translation(x, torch.Generator().manual_seed(0))
    peak = out.flatten(1).argmax(1)
    dy, dx = peak // 28 - 13, peak % 28 - 14
    assert dy.abs().max() == dx.abs().max() == 4  # int(28 / 8 + 0.5): the reference's range
    assert (dy < 0).any() and (dy > 0).any() and (dx < 0).any() and (dx > 0).any()
    shifted = torch.stack([torch.roll(x[i], (int(dy[i]), int(dx[i])), (1, 2)) for i in range(len(x))])
    inside = out != 0  # the zero-filled border aside, the output is the input rolled
    assert torch.equal(out[inside], shifted[inside])
    assert ((out == 0).flatten(1).sum(1) == 28 * dy.abs() + 28 * dx.abs() - dy.abs() * dx.abs()).all()


def test_cutout_zeroes_one_square_of_half_the_side_clipped_at_the_border():
    out = cutout(torch.ones(300, 1, 28, 28), torch.Generator().manual_seed(0))
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() == 14 * 14 and zeros.min() >= 7 * 7  # a centre anywhere in the image
    assert ((out == 0) | (out == 1)).all()


def test_color_keeps_a_grayscale_image_grayscale_and_moves_brightness_and_contrast():
    x = images(64, 1)
    out = color(x, torch.Generator().manual_seed(0))
    mean_shift = (out.mean((1, 2, 3)) - x.mean((1, 2, 3)))
    assert mean_shift.abs().max() <= 0.5 + 1e-5 and mean_shift.std() > 0.1  # brightness: U(-0.5, 0.5) per image
    ratio = out.std((1, 2, 3)) / x.std((1, 2, 3))
    assert 0.5 - 1e-4 <= ratio.min() and ratio.max() <= 1.5 + 1e-4  # contrast x U(0.5, 1.5); saturation: no-op


def test_the_param_is_validated_normalised_and_keys_the_model_only_when_on():
    assert DCGANParams(diffaugment=" color, cutout ").diffaugment == "color,cutout"
    with pytest.raises(ValidationError, match=r"must be a comma-separated subset of color,translation,cutout"):
        DCGANParams(diffaugment="color,zoom")
    with pytest.raises(ValueError, match="got 'color,color'"):
        parse_policy("color,color")
    assert "diffaugment" not in DCGANParams().training_params()  # off: the key stored models were made with
    assert DCGANParams(diffaugment=FULL).training_params()["diffaugment"] == FULL
    assert TrainConfig.from_params(DCGANParams(diffaugment="cutout"), 1, 10).diffaugment == "cutout"
    assert "DiffAugment" in DCGANParams.model_fields["diffaugment"].description


def test_a_generator_with_a_bad_policy_is_one_line():
    from synthloom.errors import GeneratorError
    from synthloom.generators.dcgan import DCGAN

    with pytest.raises(GeneratorError) as error:
        DCGAN({"diffaugment": "flip"})
    assert str(error.value) == ("dcgan: generator param 'diffaugment': must be a comma-separated subset of "
                                "color,translation,cutout, or \"\" for off (got 'flip')")


def digits_data() -> TrainData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:256], dtype=torch.float32)[:, None] / 16 * 2 - 1
    return TrainData(x, torch.tensor(d.target[:256]), [str(i) for i in range(10)])


def run(cfg: TrainConfig, work: Path) -> dict:
    return Trainer(cfg, digits_data(), work).run()


def test_training_with_diffaugment_runs_differs_from_plain_and_resumes_bit_exactly(tmp_path, one_torch_thread):
    base = dict(resolution=8, channels=1, num_classes=10, nz=16, ngf=8, ndf=8, batch_size=32, loss="hinge",
                spectral_norm=True)
    on = TrainConfig(**base, epochs=2, diffaugment=FULL)
    straight = run(on, tmp_path / "straight")
    assert len(straight["history"]) == 2 and all(torch.isfinite(torch.tensor(
        [h["loss_d"], h["loss_g"]])).all() for h in straight["history"])
    plain = run(TrainConfig(**base, epochs=2), tmp_path / "plain")
    assert straight["history"][0]["loss_d"] != plain["history"][0]["loss_d"]  # D saw augmented images
    # one epoch, then resume to two: the augmentation RNG is in the checkpoint, so the weights match
    run(TrainConfig(**base, epochs=1, diffaugment=FULL), tmp_path / "resumed")
    assert (tmp_path / "resumed" / CHECKPOINT).is_file()
    resumed = run(on, tmp_path / "resumed")
    for a, b in zip(straight["discriminator"].state_dict().values(), resumed["discriminator"].state_dict().values()):
        assert torch.equal(a, b)


def test_calibration_scores_images_unaugmented(tmp_path, one_torch_thread):
    from synthloom.generators.dcgan.calibration import discriminator_logits

    cfg = TrainConfig(resolution=8, channels=1, num_classes=10, nz=16, ngf=8, ndf=8, batch_size=32, epochs=1,
                      loss="hinge", spectral_norm=True, diffaugment=FULL)
    d = run(cfg, tmp_path)["discriminator"]
    data = digits_data()
    x01, y = (data.images[:64] + 1) / 2, data.labels[:64]
    logits = discriminator_logits(d, x01, y, "cpu")
    assert torch.equal(logits, discriminator_logits(d, x01, y, "cpu"))  # no random augmentation in the path
    d.eval()
    with torch.no_grad():
        assert torch.allclose(logits, d(x01 * 2 - 1, y).flatten(), atol=1e-6)
