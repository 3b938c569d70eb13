"""SimMIM: exact masks, mask token placement, masked-only loss, weights, overfitting."""

from __future__ import annotations

import pytest
import torch

from alos2fm.models import build_pretrain_model
from alos2fm.models.backbones import ModelConfigError, create_encoder
from alos2fm.models.simmim import SimMIM, random_unit_mask, repeat_grid
from tests.tiny_models import overfit_one_batch

TINY_SWIN = {
    "arch": "swin_tiny",
    "in_chans": 1,
    "img_size": 64,
    "window_size": 4,
    "ape": True,
    "embed_dim": 16,
    "depths": [1, 1, 2, 1],
    "num_heads": [1, 1, 2, 2],
}
TINY_VIT = {
    "arch": "vit_small",
    "in_chans": 2,
    "img_size": 64,
    "embed_dim": 48,
    "depth": 2,
    "num_heads": 2,
}


@pytest.mark.parametrize(
    ("grid", "ratio", "count"), [((16, 16), 0.6, 154), ((3, 3), 0.5, 5), ((4, 4), 0.6, 10)]
)
def test_random_unit_mask_has_exact_count(grid, ratio, count):
    torch.manual_seed(0)
    mask = random_unit_mask(6, grid, ratio)
    assert mask.shape == (6, *grid)
    assert mask.flatten(1).sum(dim=1).tolist() == [count] * 6
    assert not torch.equal(mask[0], mask[1])  # drawn independently per image


def test_forward_shapes_and_exact_masked_pixels():
    model = SimMIM(TINY_SWIN, mask_unit=16, mask_ratio=0.6)
    out = model(torch.randn(3, 1, 64, 64))
    assert out.pred.shape == (3, 1, 64, 64) and out.mask.shape == (3, 1, 64, 64)
    assert out.loss.ndim == 0
    # 16 units of 16 x 16 px, round(0.6 * 16) = 10 masked in every image
    assert out.mask.flatten(1).sum(dim=1).tolist() == [10 * 256] * 3


def _capture_first_block_input(module: torch.nn.Module) -> dict:
    captured = {}

    def hook(_module, args):
        captured["tokens"] = args[0].detach()

    module.register_forward_pre_hook(hook)
    return captured


def test_swin_mask_token_only_at_masked_patches():
    torch.manual_seed(1)
    model = SimMIM(TINY_SWIN, mask_unit=16)
    captured = _capture_first_block_input(model.encoder.layers[0])
    x = torch.randn(2, 1, 64, 64)
    out = model(x)

    masked = out.mask[:, 0, ::4, ::4].bool()  # (B, 16, 16) patch grid
    embed = model.encoder.patch_embed
    tokens = captured["tokens"]
    expected_visible = embed(x).detach()
    expected_masked = (model.mask_token + embed.absolute_pos_embed).detach().expand_as(tokens)
    torch.testing.assert_close(tokens[~masked], expected_visible[~masked])
    torch.testing.assert_close(tokens[masked], expected_masked[masked])


def test_vit_mask_token_only_at_masked_patches():
    torch.manual_seed(2)
    model = SimMIM(TINY_VIT, mask_unit=16)
    captured = _capture_first_block_input(model.encoder.blocks)
    x = torch.randn(2, 2, 64, 64)
    out = model(x)

    masked = out.mask[:, 0, ::16, ::16].flatten(1).bool()  # (B, 16) patches, row-major
    encoder = model.encoder
    tokens = captured["tokens"][:, encoder.num_prefix_tokens :]
    positions = encoder.pos_embed[:, encoder.num_prefix_tokens :].detach()
    expected_visible = encoder.patch_embed(x).detach() + positions
    expected_masked = (model.mask_token.detach() + positions).expand_as(tokens)
    torch.testing.assert_close(tokens[~masked], expected_visible[~masked])
    torch.testing.assert_close(tokens[masked], expected_masked[masked])
    assert out.pred.shape == (2, 2, 64, 64)


@pytest.mark.parametrize(("loss", "per_pixel"), [("l1", 2.0), ("mse", 4.0), ("huber", 1.5)])
def test_loss_counts_masked_pixels_only(loss, per_pixel):
    model = SimMIM(TINY_SWIN, loss=loss)
    x = torch.randn(2, 1, 64, 64)
    mask = repeat_grid(model.random_mask(2), 16).unsqueeze(1)
    pred = x + 2.0 * mask  # error 2 on masked pixels, 0 elsewhere
    assert model.forward_loss(x, pred, mask, None).item() == pytest.approx(per_pixel)
    # changing unmasked pixels leaves the loss alone; changing masked ones does not
    noisy_visible = pred + torch.randn_like(pred) * (1 - mask)
    assert model.forward_loss(x, noisy_visible, mask, None).item() == pytest.approx(per_pixel)
    assert model.forward_loss(x, pred + mask, mask, None).item() != pytest.approx(per_pixel)
    # a weight of 3 on every pixel triples it (the denominator counts pixels, not weights)
    weight = torch.full_like(x, 3.0)
    assert model.forward_loss(x, pred, mask, weight).item() == pytest.approx(3 * per_pixel)


def test_encoder_weights_rebuild_the_same_encoder():
    model = SimMIM(TINY_SWIN).eval()
    state = model.encoder_state_dict()
    assert not any("mask_token" in k or "decoder" in k for k in state)
    rebuilt = create_encoder(**model.encoder_config()).eval()
    rebuilt.load_state_dict(state, strict=True)
    x = torch.randn(1, 1, 64, 64)
    torch.testing.assert_close(rebuilt.forward_features(x), model.encoder.forward_features(x))
    assert {"mask_token", "encoder.patch_embed.absolute_pos_embed"} <= model.no_weight_decay()


def test_bad_settings_raise():
    with pytest.raises(ModelConfigError, match="multiple of the patch size"):
        SimMIM(TINY_SWIN, mask_unit=6)
    with pytest.raises(ModelConfigError, match="divide the image size"):
        SimMIM(TINY_SWIN, mask_unit=24)
    with pytest.raises(ModelConfigError, match="mask_ratio"):
        SimMIM(TINY_SWIN, mask_ratio=1.0)
    with pytest.raises(ModelConfigError, match="loss"):
        SimMIM(TINY_SWIN, loss="l3")


def test_build_pretrain_model_from_fields():
    model = build_pretrain_model({"method": "simmim", "encoder": TINY_SWIN, "mask_ratio": 0.5})
    assert isinstance(model, SimMIM) and model.mask_ratio == 0.5
    with pytest.raises(ModelConfigError, match="unknown pretraining method"):
        build_pretrain_model({"method": "mae", "encoder": TINY_SWIN})
    with pytest.raises(ModelConfigError, match="bad simmim settings"):
        build_pretrain_model({"method": "simmim", "encoder": TINY_SWIN, "mask_size": 8})


def _smooth_images(batch: int, channels: int, size: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = [torch.sin(3 * (i + 1) * xx) * torch.cos(2 * yy + i) for i in range(batch * channels)]
    return torch.stack(images).view(batch, channels, size, size)


@pytest.mark.parametrize("encoder", [TINY_SWIN, TINY_VIT], ids=["swin", "vit"])
def test_tiny_model_overfits_one_batch(encoder):
    torch.manual_seed(0)
    model = SimMIM(encoder)
    x = _smooth_images(2, encoder["in_chans"], 64)
    losses = overfit_one_batch(model, x, steps=150)
    assert sum(losses[-5:]) / 5 < 0.2 * losses[0]
