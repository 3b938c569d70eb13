"""MixMAE: per-image attention inside mixed windows, unmixing, losses, overfitting."""

from __future__ import annotations

import pytest
import torch

from alos2fm.models import MixMAE, build_pretrain_model
from alos2fm.models.backbones import ModelConfigError, create_encoder
from alos2fm.models.simmim import repeat_grid
from tests.tiny_models import overfit_one_batch

# 64 px, patch 4, window 4: stage grids 16, 8, 4, 2. Stages 0 and 1 have shifted blocks whose
# windows straddle the 32 px mask units; stage 2 is one window holding both images' tokens.
TINY_SWIN = {
    "arch": "swin_tiny",
    "in_chans": 1,
    "img_size": 64,
    "window_size": 4,
    "ape": True,
    "embed_dim": 16,
    "depths": [2, 2, 2, 2],
    "num_heads": [1, 1, 2, 2],
}
TINY_DECODER = {"decoder_depth": 1, "decoder_dim": 32, "decoder_heads": 2}
# last-stage grid 2 x 2: image i keeps the diagonal, its partner fills the anti-diagonal
GRID_MASK = torch.tensor([[0.0, 1.0], [1.0, 0.0]])


def _model(**kw) -> MixMAE:
    torch.manual_seed(0)
    return MixMAE(TINY_SWIN, **{**TINY_DECODER, **kw}).eval()


def _pixels(grid_mask: torch.Tensor) -> torch.Tensor:
    return repeat_grid(grid_mask, 32).bool()  # (64, 64)


def test_mix_takes_masked_pixels_from_the_flipped_batch():
    model = _model()
    x = torch.randn(3, 1, 64, 64)
    mixed = model.mix(x, GRID_MASK)
    partner = _pixels(GRID_MASK)
    for i, j in [(0, 2), (1, 1), (2, 0)]:
        assert torch.equal(mixed[i, :, ~partner], x[i, :, ~partner])
        assert torch.equal(mixed[i, :, partner], x[j, :, partner])


def test_tokens_of_an_image_ignore_the_partner_sharing_their_windows():
    model = _model()
    x = torch.randn(2, 1, 64, 64)
    partner = _pixels(GRID_MASK)
    changed = x.clone()
    changed[1, :, partner] += torch.randn(int(partner.sum()))  # in image 0's mixed input

    with torch.no_grad():
        latent = model.forward_encoder(model.mix(x, GRID_MASK), GRID_MASK)
        latent_changed = model.forward_encoder(model.mix(changed, GRID_MASK), GRID_MASK)
    own = ~GRID_MASK.bool()  # last-stage tokens of image 0 itself
    torch.testing.assert_close(latent_changed[0][own], latent[0][own], rtol=0, atol=1e-6)
    assert not torch.allclose(latent_changed[0][~own], latent[0][~own])

    # Control: the same encoder without the restriction does mix the two images.
    with torch.no_grad():
        plain = model.encoder.forward_features(model.mix(x, GRID_MASK))
        plain_changed = model.encoder.forward_features(model.mix(changed, GRID_MASK))
    assert not torch.allclose(plain_changed[0][own], plain[0][own], atol=1e-4)


def test_decoder_streams_each_depend_on_one_image_only():
    model = _model()
    x = torch.randn(2, 1, 64, 64)

    def streams(images):
        with torch.no_grad():
            latent = model.forward_encoder(model.mix(images, GRID_MASK), GRID_MASK)
            return model.forward_decoder(latent, GRID_MASK)  # (4, C, H, W)

    reference = streams(x)
    partner_changed = x.clone()
    partner_changed[1] += torch.randn(1, 64, 64)
    own_changed = x.clone()
    own_changed[0] += torch.randn(1, 64, 64)
    # index 0: image 0's own stream; index 2: sample 0's partner stream = image 1
    torch.testing.assert_close(streams(partner_changed)[0], reference[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(streams(own_changed)[2], reference[2], rtol=0, atol=1e-5)
    assert not torch.allclose(streams(own_changed)[0], reference[0])
    assert not torch.allclose(streams(partner_changed)[2], reference[2])


def test_unmixing_returns_each_reconstruction_to_its_own_image(monkeypatch):
    model = _model(norm_pix_loss=False)
    x = torch.randn(2, 1, 64, 64)
    # A perfect decoder: the own stream is each image, the partner stream the flipped batch.
    monkeypatch.setattr(model, "forward_decoder", lambda latent, mask: torch.cat([x, x.flip(0)]))
    out = model(x)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(out.pred, x)
    # The same decoder with the partner stream not flipped is wrong, and the loss says so.
    monkeypatch.setattr(model, "forward_decoder", lambda latent, mask: torch.cat([x, x]))
    assert model(x).loss.item() > 0.1


def test_sar_weights_follow_the_image_each_stream_reconstructs(monkeypatch):
    model = _model(norm_pix_loss=False)
    x = torch.randn(2, 1, 64, 64)
    error = torch.zeros(4, 1, 64, 64)
    error[2] = 1.0  # only sample 0's partner stream (image 1) is off, by 1
    monkeypatch.setattr(
        model, "forward_decoder", lambda latent, mask: torch.cat([x, x.flip(0)]) + error
    )
    weight = torch.stack([torch.ones(1, 64, 64), torch.full((1, 64, 64), 3.0)])
    # image 1 (weight 3) is wrong on the 2048 pixels hidden in that stream; the mean runs
    # over all 2 x 4096 hidden pixels of the 4 streams
    assert model(x, weight).loss.item() == pytest.approx(3 * 2048 / 8192)
    assert model(x).loss.item() == pytest.approx(2048 / 8192)


def test_norm_pix_loss_targets_and_prediction_units():
    model = _model()
    target = torch.randn(2, 1, 64, 64) * 3 + 5
    mask = torch.ones(2, 1, 64, 64)
    patches = target.view(2, 1, 2, 32, 2, 32)
    mean = patches.mean(dim=(3, 5), keepdim=True)
    std = (patches.var(dim=(3, 5), keepdim=True) + 1e-6).sqrt()
    normalised = ((patches - mean) / std).view(2, 1, 64, 64)
    loss, pred = model.forward_loss(target, normalised, mask, None)
    assert loss.item() == pytest.approx(0.0, abs=1e-8)
    torch.testing.assert_close(pred, target)  # back in the input's units
    loss, _ = model.forward_loss(target, normalised + 1.0, mask, None)
    assert loss.item() == pytest.approx(1.0)


def test_forward_shapes_and_shared_half_mask():
    model = _model()
    out = model(torch.randn(4, 1, 64, 64), torch.ones(4, 1, 64, 64))
    assert out.pred.shape == out.mask.shape[:1] + (1, 64, 64) and out.loss.ndim == 0
    assert out.mask.shape == (4, 1, 64, 64)
    assert out.mask.sum().item() == 4 * 2 * 32 * 32  # 2 of 4 last-stage tokens per image
    assert all(torch.equal(out.mask[0], m) for m in out.mask)


def test_encoder_weights_load_into_a_plain_encoder():
    model = _model()
    model(torch.randn(2, 1, 64, 64))
    state = model.encoder_state_dict()
    assert not any("decoder" in k or "mask_token" in k for k in state)
    rebuilt = create_encoder(**model.encoder_config()).eval()
    rebuilt.load_state_dict(state, strict=True)
    x = torch.randn(2, 1, 64, 64)
    # outside forward_encoder the hooks are inert: the encoder is plain Swin
    torch.testing.assert_close(model.encoder.forward_features(x), rebuilt.forward_features(x))
    assert {"mask_token", "encoder.patch_embed.absolute_pos_embed"} <= model.no_weight_decay()


def test_vit_and_bad_ratio_rejected():
    vit = {
        "arch": "vit_small",
        "in_chans": 1,
        "img_size": 64,
        "embed_dim": 16,
        "depth": 1,
        "num_heads": 1,
    }
    with pytest.raises(ModelConfigError, match="Swin"):
        MixMAE(vit, **TINY_DECODER)
    with pytest.raises(ModelConfigError, match="mask_ratio"):
        MixMAE(TINY_SWIN, mask_ratio=0.0, **TINY_DECODER)
    model = build_pretrain_model({"method": "mixmae", "encoder": TINY_SWIN, **TINY_DECODER})
    assert isinstance(model, MixMAE)


def test_tiny_model_overfits_one_batch():
    model = _model().train()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    x = torch.stack([torch.sin(3 * xx) * torch.cos(2 * yy), torch.cos(5 * yy + xx)]).unsqueeze(1)
    losses = overfit_one_batch(model, x, steps=100)
    assert sum(losses[-5:]) / 5 < 0.2 * losses[0]


@pytest.mark.slow
def test_paper_mixmae_builds_and_runs_a_step():
    model = MixMAE("swin_base_w8_256_ape_1ch")
    encoder = sum(p.numel() for p in model.encoder.parameters())
    decoder = sum(p.numel() for p in model.parameters()) - encoder
    # decoder: embed 1024->512, mask token, 8 blocks of width 512, norm, 512 -> 32*32*1
    block = 4 * 512 * 512 + 4 * 512 + 2 * 512 * 2048 + 2048 + 512 + 4 * 512
    expected = 1024 * 512 + 512 + 512 + 8 * block + 2 * 512 + 512 * 1024 + 1024
    assert decoder == expected
    out = model(torch.randn(2, 1, 256, 256))
    out.loss.backward()
    assert out.pred.shape == (2, 1, 256, 256) and torch.isfinite(out.loss)
