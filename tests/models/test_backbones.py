"""Encoders: every architecture builds for SAR inputs and exposes a four-map pyramid."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from alos2fm.models.backbones import (
    ARCHITECTURES,
    ModelConfigError,
    build_encoder,
    create_encoder,
    encoder_feature_info,
    encoder_features,
    encoder_no_weight_decay,
    resolve_encoder_config,
)

TINY_SWIN = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}
TINY_VIT = {"embed_dim": 16, "depth": 4, "num_heads": 2}


def _tiny(arch: str, **kw):
    overrides = TINY_SWIN if arch.startswith("swin") else TINY_VIT
    window = {"window_size": 4} if arch.startswith("swin") else {}
    return create_encoder(arch, in_chans=2, img_size=64, **window, **overrides, **kw)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_arch_gives_four_maps_matching_feature_info(arch):
    encoder = _tiny(arch).eval()
    maps = encoder_features(encoder, torch.randn(2, 2, 64, 64))
    info = encoder_feature_info(encoder)
    assert len(maps) == len(info) == 4
    for feature, stage in zip(maps, info, strict=True):
        assert feature.shape == (2, stage.channels, 64 // stage.stride, 64 // stage.stride)
    if arch.startswith("swin"):
        assert [(s.channels, s.stride) for s in info] == [(16, 4), (32, 8), (64, 16), (128, 32)]
    else:
        assert [(s.channels, s.stride) for s in info] == [(16, 16)] * 4


def test_swin_ape_is_added_after_patch_embedding():
    with_ape = _tiny("swin_tiny", ape=True).eval()
    without = _tiny("swin_tiny").eval()
    assert with_ape.patch_embed.absolute_pos_embed.shape == (1, 16, 16, 16)
    assert "patch_embed.absolute_pos_embed" not in without.state_dict()

    x = torch.randn(1, 2, 64, 64)
    before = with_ape.patch_embed(x)
    torch.testing.assert_close(
        before, with_ape.patch_embed.project(x) + with_ape.patch_embed.absolute_pos_embed
    )
    with torch.no_grad():
        with_ape.patch_embed.absolute_pos_embed.add_(1.0)
    torch.testing.assert_close(with_ape.patch_embed(x), before + 1.0)


def test_drop_path_rate_reaches_deepest_block():
    encoder = _tiny("swin_tiny", drop_path_rate=0.3)
    assert encoder.layers[-1].blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)
    assert isinstance(_tiny("swin_tiny").layers[-1].blocks[-1].drop_path1, torch.nn.Identity)


def test_window_defaults_to_last_stage_grid():
    assert (
        resolve_encoder_config({"arch": "swin_base", "in_chans": 1, "img_size": 256})["window_size"]
        == 8
    )
    encoder = create_encoder("swin_tiny", 1, 224, **TINY_SWIN)
    assert encoder.layers[0].blocks[0].window_size == (7, 7)


@pytest.mark.parametrize(
    ("arch", "kwargs", "problem"),
    [
        ("swin_huge", {}, "unknown encoder architecture"),
        ("swin_tiny", {"img_size": 100}, "not a multiple of the total stride 32"),
        ("swin_tiny", {"img_size": 96, "window_size": 7}, "does not tile stage 0"),
        ("vit_small", {"window_size": 8}, "window_size=8 given for vit_small"),
    ],
)
def test_inconsistent_configs_raise(arch, kwargs, problem):
    arguments = {"in_chans": 1, "img_size": 64, **kwargs}
    with pytest.raises(ModelConfigError, match=problem):
        create_encoder(arch, **arguments)


def test_config_resolution_is_complete_json_and_stable():
    config = resolve_encoder_config({"preset": "swin_nano_w4_128_ape_1ch", "in_chans": 2})
    assert config["in_chans"] == 2 and config["window_size"] == 4 and config["ape"] is True
    assert resolve_encoder_config(json.loads(json.dumps(config))) == config
    with pytest.raises(ModelConfigError, match="unknown encoder preset"):
        resolve_encoder_config("swin_giant")
    with pytest.raises(ModelConfigError, match="lacks"):
        resolve_encoder_config({"arch": "swin_tiny"})


def test_no_weight_decay_names():
    names = encoder_no_weight_decay(_tiny("swin_tiny", ape=True))
    assert "patch_embed.absolute_pos_embed" in names
    assert sum("relative_position_bias_table" in n for n in names) == 4  # one per block
    assert encoder_no_weight_decay(_tiny("vit_small")) == {"pos_embed", "cls_token"}


@pytest.mark.slow
def test_paper_swin_base_parameter_count():
    """The paper's Swin-B = timm's ImageNet Swin-B, minus the 1000-class head, with one
    input channel instead of three, window 8 instead of 7 and a 64 x 64 x 128 APE."""
    ours = build_encoder("swin_base_w8_256_ape_1ch")
    reference = timm.create_model("swin_base_patch4_window7_224", pretrained=False)
    head = 1024 * 1000 + 1000
    patch_conv = 128 * 4 * 4 * (3 - 1)
    heads_per_block = 2 * 4 + 2 * 8 + 18 * 16 + 2 * 32
    relative_tables = (15**2 - 13**2) * heads_per_block
    ape = 64 * 64 * 128
    expected = (
        sum(p.numel() for p in reference.parameters()) - head - patch_conv + relative_tables + ape
    )
    assert sum(p.numel() for p in ours.parameters()) == expected
    features = encoder_features(ours.eval(), torch.zeros(1, 1, 256, 256))
    assert [f.shape[1:] for f in features] == [
        (128, 64, 64),
        (256, 32, 32),
        (512, 16, 16),
        (1024, 8, 8),
    ]


def test_mixmae_encoder_options_per_stage_windows_no_shift_frozen_sincos_ape():
    two_blocks = {**TINY_SWIN, "depths": [2, 2, 2, 2]}  # odd blocks are the shifted ones
    encoder = create_encoder(
        "swin_tiny", 1, 64, window_size=[4, 4, 2, 2], ape="sincos", shift=False, **two_blocks
    )
    assert [stage.blocks[0].window_size for stage in encoder.layers] == [
        (4, 4),
        (4, 4),
        (2, 2),
        (2, 2),
    ]
    assert all(
        b.shift_size == (0, 0) and b.attn_mask is None for s in encoder.layers for b in s.blocks
    )
    ape = encoder.patch_embed.absolute_pos_embed
    assert ape.shape == (1, 16, 16, 16) and not ape.requires_grad
    assert "patch_embed.absolute_pos_embed" in encoder.state_dict()  # loads and saves
    # A sin-cos table: every value in [-1, 1], and positions differ from one another.
    assert ape.abs().max() <= 1.0 and not torch.equal(ape[0, 0, 0], ape[0, 0, 1])
    shifted = create_encoder("swin_tiny", 1, 64, window_size=4, **two_blocks)
    assert any(any(b.shift_size) for s in shifted.layers for b in s.blocks)
    with pytest.raises(ModelConfigError, match="3 window sizes for 4 stages"):
        create_encoder("swin_tiny", 1, 64, window_size=[4, 4, 4], **TINY_SWIN)
    with pytest.raises(ModelConfigError, match="shift=False given for vit_small"):
        create_encoder("vit_small", 1, 64, shift=False, **TINY_VIT)
    config = resolve_encoder_config({"arch": "swin_tiny", "in_chans": 1, "img_size": 64})
    assert config["shift"] is True  # encoder.json files written before the option rebuild as before
