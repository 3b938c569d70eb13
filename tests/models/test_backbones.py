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
