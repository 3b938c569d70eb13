"""Segmenter on tiny Swin and ViT encoders; loading encoder weights; layer-wise LR decay."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from alos2fm.models.backbones import create_encoder, encoder_feature_info
from alos2fm.models.segmenter import (
    Segmenter,
    WeightsError,
    build_segmenter,
    encoder_layer_ids,
    load_encoder_weights,
)
from alos2fm.train.optim import layer_decay_groups
from tests.tiny_models import TINY_SEGMENTER

TINY_SWIN = dict(arch="swin_tiny", embed_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2])


def _swin(img_size: int = 64, window_size: int = 4, in_chans: int = 1, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = {**TINY_SWIN, **kw}
    arch = spec.pop("arch")
    return create_encoder(arch, in_chans, img_size, window_size=window_size, ape=True, **spec)


def _save_encoder(encoder: torch.nn.Module, path: Path, prefix: str = "", **extra) -> Path:
    tensors = {prefix + k: v.contiguous() for k, v in encoder.state_dict().items()}
    save_file({**tensors, **extra}, str(path))
    return path


def test_swin_segmenter_feeds_all_four_encoder_scales_to_upernet() -> None:
    encoder = _swin()
    model = Segmenter(encoder, num_classes=5, decoder_channels=16)
    channels = [stage.channels for stage in encoder_feature_info(encoder)]
    assert channels == [8, 16, 32, 64]
    assert model.decoder.in_channels == tuple(channels)
    assert model.neck is None
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5, 64, 64)


def test_vit_segmenter_builds_a_simple_feature_pyramid() -> None:
    torch.manual_seed(0)
    encoder = create_encoder("vit_small", 2, 64, embed_dim=32, depth=2, num_heads=2)
    model = Segmenter(encoder, num_classes=3, decoder_channels=16)
    assert model.decoder.in_channels == (8, 16, 32, 32)  # deconv x4, deconv x2, identity, pool
    pyramid = model.neck(torch.randn(1, 32, 4, 4))
    assert [tuple(f.shape[-2:]) for f in pyramid] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert model(torch.randn(1, 2, 64, 64)).shape == (1, 3, 64, 64)


def test_build_segmenter_from_a_stored_description() -> None:
    spec = {
        "encoder": {**TINY_SWIN, "in_chans": 1, "img_size": 64, "window_size": 4, "ape": True},
        "num_classes": 4,
        "decoder_channels": 16,
    }
    model = build_segmenter(spec)
    assert model.num_classes == 4 and model.decoder.classifier.in_channels == 4  # 16 / 4
    assert model.encoder.patch_embed.absolute_pos_embed is not None


# --- loading encoder.safetensors ----------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "encoder."])
def test_load_same_architecture_copies_every_tensor(tmp_path: Path, prefix: str) -> None:
    pretrained = _swin()
    path = _save_encoder(
        pretrained, tmp_path / "encoder.safetensors", prefix, mask_token=torch.zeros(1, 1, 8)
    )
    model = Segmenter(_swin(), num_classes=3, decoder_channels=16)
    with torch.no_grad():  # make sure the values really come from the file
        for p in model.encoder.parameters():
            p.zero_()
    report = load_encoder_weights(model, path)
    assert report.missing == [] and report.resized == []
    assert report.unexpected == ["mask_token"]
    for key, value in pretrained.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value)
    assert "unexpected (ignored): 1: mask_token" in report.summary()


def test_window_change_interpolates_relative_position_tables(tmp_path: Path) -> None:
    pretrained = _swin(window_size=4)  # tables of (2*4-1)^2 = 49 offsets
    key = "layers.0.blocks.0.attn.relative_position_bias_table"
    with torch.no_grad():
        pretrained.state_dict()[key].copy_(torch.randn(49, 1))
    path = _save_encoder(pretrained, tmp_path / "encoder.safetensors")
    model = Segmenter(_swin(window_size=2), num_classes=3, decoder_channels=16)  # 9 offsets
    report = load_encoder_weights(model, path)
    assert f"{key}: (49, 1) -> (9, 1)" in report.resized
    old, new = pretrained.state_dict()[key], model.encoder.state_dict()[key]
    # Bicubic resampling 7x7 -> 3x3 (half-pixel centres) samples the old grid exactly at
    # its centre, so the bias of offset (0, 0) carries over unchanged.
    assert new[4, 0].item() == pytest.approx(old[24, 0].item(), abs=1e-5)
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)


def test_input_size_change_interpolates_absolute_position_embedding(tmp_path: Path) -> None:
    pretrained = _swin(img_size=64)
    with torch.no_grad():  # a per-channel constant embedding must stay that constant
        pretrained.patch_embed.absolute_pos_embed.copy_(torch.arange(8.0).view(1, 1, 1, 8))
    path = _save_encoder(pretrained, tmp_path / "encoder.safetensors")
    model = Segmenter(_swin(img_size=128), num_classes=3, decoder_channels=16)
    report = load_encoder_weights(model, path)
    assert "patch_embed.absolute_pos_embed: (1, 16, 16, 8) -> (1, 32, 32, 8)" in report.resized
    ape = model.encoder.patch_embed.absolute_pos_embed
    torch.testing.assert_close(ape, torch.arange(8.0).view(1, 1, 1, 8).expand(1, 32, 32, 8))


def test_vit_position_embedding_keeps_class_token_and_resamples_grid(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pretrained = create_encoder("vit_small", 1, 64, embed_dim=32, depth=2, num_heads=2)
    path = _save_encoder(pretrained, tmp_path / "encoder.safetensors")
    model = Segmenter(
        create_encoder("vit_small", 1, 128, embed_dim=32, depth=2, num_heads=2),
        3,
        decoder_channels=16,
    )
    report = load_encoder_weights(model, path)
    assert report.resized == ["pos_embed: (1, 17, 32) -> (1, 65, 32)"]
    torch.testing.assert_close(model.encoder.pos_embed[:, :1], pretrained.pos_embed[:, :1])


def test_channel_count_mismatch_is_a_wrong_file(tmp_path: Path) -> None:
    path = _save_encoder(_swin(in_chans=2), tmp_path / "encoder.safetensors")
    model = Segmenter(_swin(in_chans=1), num_classes=3, decoder_channels=16)
    with pytest.raises(WeightsError, match=r"pretrained on 2 input channel\(s\), the model has 1"):
        load_encoder_weights(model, path)


def test_width_mismatch_is_a_wrong_file(tmp_path: Path) -> None:
    path = _save_encoder(_swin(embed_dim=16), tmp_path / "encoder.safetensors")
    model = Segmenter(_swin(), num_classes=3, decoder_channels=16)
    with pytest.raises(WeightsError, match="in the file but"):
        load_encoder_weights(model, path)


def test_mostly_foreign_keys_is_a_wrong_file(tmp_path: Path) -> None:
    path = tmp_path / "decoder.safetensors"
    save_file({"decoder.conv.weight": torch.zeros(2, 2)}, str(path))
    model = Segmenter(_swin(), num_classes=3, decoder_channels=16)
    with pytest.raises(WeightsError, match="only 0 of the encoder's"):
        load_encoder_weights(model, path)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "encoder.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="cannot read encoder weights"):
        load_encoder_weights(Segmenter(_swin(), num_classes=3, decoder_channels=16), path)


# --- layer-wise learning-rate decay -------------------------------------------------------


def test_layer_ids_follow_forward_order() -> None:
    model = Segmenter(_swin(), num_classes=3, decoder_channels=16)  # depths 1-1-2-1: 5 blocks
    ids, num_layers = encoder_layer_ids(model)
    assert num_layers == 6
    assert ids["encoder.patch_embed.proj.weight"] == 0
    assert ids["encoder.patch_embed.absolute_pos_embed"] == 0
    assert ids["encoder.layers.0.blocks.0.attn.qkv.weight"] == 1
    assert ids["encoder.layers.2.blocks.1.attn.qkv.weight"] == 4
    assert ids["encoder.layers.3.downsample.reduction.weight"] == 4  # after block 4
    assert ids["encoder.layers.3.blocks.0.mlp.fc1.weight"] == 5
    assert ids["decoder.classifier.weight"] == 6


def test_layer_decay_groups_scale_lr_and_split_weight_decay() -> None:
    model = Segmenter(_swin(), num_classes=3, decoder_channels=16)
    groups = layer_decay_groups(model, base_lr=1e-3, weight_decay=0.05, decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(by_param) == len(named) == sum(len(g["params"]) for g in groups)

    def group_of(name: str) -> dict:
        return by_param[id(named[name])]

    assert group_of("decoder.classifier.weight")["lr"] == pytest.approx(1e-3)
    assert group_of("encoder.layers.3.blocks.0.attn.qkv.weight")["lr"] == pytest.approx(5e-4)
    patch = group_of("encoder.patch_embed.proj.weight")
    assert patch["lr"] == pytest.approx(1e-3 * 0.5**6) and patch["lr_scale"] == 0.5**6
    assert patch["weight_decay"] == 0.05
    for no_decay in (
        "encoder.patch_embed.absolute_pos_embed",
        "encoder.layers.0.blocks.0.attn.relative_position_bias_table",
        "encoder.layers.0.blocks.0.norm1.weight",
        "decoder.classifier.bias",
    ):
        assert group_of(no_decay)["weight_decay"] == 0.0, no_decay
    assert math.isclose(group_of("encoder.layers.0.blocks.0.norm1.weight")["lr_scale"], 0.5**5)


def test_every_trainable_parameter_gets_a_gradient() -> None:
    # DDP fails on trainable parameters that take no part in the loss.
    model = build_segmenter(TINY_SEGMENTER).train()
    model(torch.randn(2, 1, 32, 32)).mean().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
