"""The authors' released layouts -> our timm encoders: safe loading, strict conversion,
identical outputs, and the invariants a round trip through our own inverse cannot catch."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from alos2fm.interop.authors import convert, convert_encoder, infer_encoder_config, unwrap
from alos2fm.interop.safe_load import CheckpointReadError, load_checkpoint_safely
from alos2fm.models.backbones import create_encoder, encoder_features
from alos2fm.models.segmenter import WeightsError
from tests.interop.standins import (
    save_mixmae_checkpoint,
    save_simmim_checkpoint,
    swin_relative_position_index,
    to_authors_layout,
)

TINY = dict(arch="swin_tiny", embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2])


def _simmim_encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_encoder(in_chans=1, img_size=64, window_size=4, ape=True, **TINY).eval()


def _mixmae_encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_encoder(
        in_chans=2, img_size=64, window_size=[4, 4, 4, 2], ape="sincos", shift=False, **TINY
    ).eval()


def _assert_same_function(a: torch.nn.Module, b: torch.nn.Module, channels: int) -> None:
    x = torch.randn(2, channels, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a.forward_features(x), b.forward_features(x), rtol=0, atol=0)
        for fa, fb in zip(encoder_features(a, x), encoder_features(b, x), strict=True):
            torch.testing.assert_close(fa, fb, rtol=0, atol=0)


def test_simmim_checkpoint_converts_to_an_encoder_with_identical_outputs(tmp_path: Path) -> None:
    original = _simmim_encoder()
    path = save_simmim_checkpoint(original, tmp_path / "ckpt_epoch_799.pth")
    conversion = convert(load_checkpoint_safely(path), path)
    assert conversion.format == "simmim"
    assert conversion.encoder_config["shift"] is True and conversion.encoder_config["ape"] is True
    rebuilt = create_encoder(**conversion.encoder_config).eval()
    rebuilt.load_state_dict(conversion.encoder_state, strict=True)
    _assert_same_function(original, rebuilt, 1)
    reasons = dict(conversion.dropped)
    assert reasons["mask_token"].startswith("mask token")
    assert "timm recomputes" in reasons["layers.0.blocks.1.attn_mask"]
    assert "decoder.0.weight" in reasons


def test_mixmae_checkpoint_converts_to_an_unshifted_encoder_with_identical_outputs(
    tmp_path: Path,
) -> None:
    original = _mixmae_encoder()
    path = save_mixmae_checkpoint(original, tmp_path / "benv1_pretrain_checkpoint_64.pth", 1)
    conversion = convert(load_checkpoint_safely(path), path)
    config = conversion.encoder_config
    assert conversion.format == "mixmae"
    assert (config["shift"], config["ape"], config["window_size"]) == (
        False,
        "sincos",
        [4, 4, 4, 2],
    )
    rebuilt = create_encoder(**config).eval()
    rebuilt.load_state_dict(conversion.encoder_state, strict=True)
    _assert_same_function(original, rebuilt, 2)
    assert not rebuilt.patch_embed.absolute_pos_embed.requires_grad  # fixed sin-cos stays fixed
    # The same weights in a stock (shifted) Swin compute another function.
    shifted = create_encoder(**{**config, "shift": True}).eval()
    shifted.load_state_dict(conversion.encoder_state, strict=True)
    x = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        assert (shifted.forward_features(x) - rebuilt.forward_features(x)).abs().max() > 1e-3


def test_paper_swin_b_files_have_the_published_entry_counts(tmp_path: Path) -> None:
    encoder = create_encoder("swin_base", 1, 256, window_size=8, ape=True)
    path = save_simmim_checkpoint(encoder, tmp_path / "simmim.pth")
    content = load_checkpoint_safely(path)
    assert len(content["model"]) == 366
    assert len([k for k in content["model"] if k.startswith("encoder.")]) == 364  # + mask token
    conversion = convert(content, path)
    assert len(conversion.encoder_state) == 328
    dropped = [key for key, _ in conversion.dropped]
    assert sum(k.endswith("relative_position_index") for k in dropped) == 24
    assert sum(k.endswith("attn_mask") for k in dropped) == 11
    assert conversion.encoder_config["window_size"] == [8, 8, 8, 8]

    mixmim = create_encoder(
        "swin_base", 2, 128, window_size=[8, 8, 8, 4], ape="sincos", shift=False
    )
    path = save_mixmae_checkpoint(mixmim, tmp_path / "benv2_pretrain_checkpoint_64.pth")
    content = load_checkpoint_safely(path)
    assert len(content["model"]) == 456
    conversion = convert(content, path)
    assert len(conversion.encoder_state) + 24 == 352
    assert (
        conversion.encoder_config["img_size"] == 128 and conversion.encoder_config["in_chans"] == 2
    )


def test_container_objects_load_without_their_packages_and_nothing_else_unpickles(
    tmp_path: Path,
) -> None:
    path = save_simmim_checkpoint(_simmim_encoder(), tmp_path / "simmim.pth")
    content = load_checkpoint_safely(path)  # yacs is not importable here
    assert content["config"]["MODEL"]["TYPE"] == "swin"
    assert isinstance(
        load_checkpoint_safely(save_mixmae_checkpoint(_mixmae_encoder(), tmp_path / "m.pth", 1))[
            "args"
        ],
        argparse.Namespace,
    )

    witness = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (witness,))

    torch.save({"model": {}, "extra": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointReadError, match="refused to unpickle"):
        load_checkpoint_safely(tmp_path / "evil.pth")
    assert not witness.exists()


def test_a_missing_encoder_key_is_an_error_not_a_random_layer(tmp_path: Path) -> None:
    state = to_authors_layout(_simmim_encoder())
    config = infer_encoder_config(state, "simmim", tmp_path)
    without_ape = {k: v for k, v in state.items() if k != "absolute_pos_embed"}
    with pytest.raises(WeightsError, match=r"1 missing \(e.g. patch_embed.absolute_pos_embed\)"):
        convert_encoder(without_ape, config, tmp_path)
    without_merge = {k: v for k, v in state.items() if k != "layers.0.downsample.reduction.weight"}
    with pytest.raises(WeightsError, match="layers.1.downsample.reduction.weight"):
        convert_encoder(without_merge, config, tmp_path)


def test_a_timm_layout_dict_is_refused_rather_than_shifted_into_the_wrong_stages(
    tmp_path: Path,
) -> None:
    encoder = _simmim_encoder()
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    with pytest.raises(WeightsError, match="does not match its architecture"):
        convert({"model": state, "config": {}}, tmp_path / "timm.pth")


def test_ape_tokens_are_read_row_major(tmp_path: Path) -> None:
    state = to_authors_layout(_simmim_encoder())
    tokens = state["absolute_pos_embed"].shape[1]  # 16 x 16 grid
    state["absolute_pos_embed"] = (
        torch.arange(float(tokens)).view(1, tokens, 1).expand(1, tokens, 8)
    )
    converted, _ = convert_encoder(state, infer_encoder_config(state, "simmim", tmp_path), tmp_path)
    grid = converted["patch_embed.absolute_pos_embed"]
    assert grid.shape == (1, 16, 16, 8)
    assert grid[0, 3, 5, 0] == 3 * 16 + 5  # token index = h * width + w


def test_patch_merging_concatenates_in_microsofts_order() -> None:
    """x0 even-row/even-col, x1 odd-row/even-col, x2 even-row/odd-col, x3 odd-row/odd-col,
    so that the microsoft reduction matrix means the same in timm."""
    encoder = _simmim_encoder()
    merge = encoder.layers[1].downsample
    x = torch.randn(1, 8, 8, 8)
    x0, x1 = x[:, 0::2, 0::2], x[:, 1::2, 0::2]
    x2, x3 = x[:, 0::2, 1::2], x[:, 1::2, 1::2]
    microsoft = merge.reduction(merge.norm(torch.cat([x0, x1, x2, x3], dim=-1)))
    with torch.no_grad():
        torch.testing.assert_close(merge(x), microsoft)


def test_relative_position_index_is_swins_and_a_foreign_index_is_refused(tmp_path: Path) -> None:
    encoder = _simmim_encoder()
    attn = encoder.layers[0].blocks[0].attn
    assert torch.equal(attn.relative_position_index.long(), swin_relative_position_index(4))
    state = to_authors_layout(encoder)
    key = "layers.0.blocks.0.attn.relative_position_index"
    state[key] = state[key].T.contiguous()
    with pytest.raises(WeightsError, match="differs from Swin's relative position index"):
        convert_encoder(state, infer_encoder_config(state, "simmim", tmp_path), tmp_path)


def test_shifted_windows_only_where_the_format_has_them(tmp_path: Path) -> None:
    unshifted = _mixmae_encoder()
    assert all(
        block.shift_size == (0, 0) and block.attn_mask is None
        for stage in unshifted.layers
        for block in stage.blocks
    )
    # A SimMIM file (shift masks) forced through the MixMAE format is refused.
    path = save_simmim_checkpoint(_simmim_encoder(), tmp_path / "simmim.pth")
    with pytest.raises(WeightsError, match="shifts its windows, the encoder's does not"):
        convert(load_checkpoint_safely(path), path, "mixmae")


def test_unwrap_accepts_a_bare_state_dict_with_or_without_prefix(tmp_path: Path) -> None:
    state = to_authors_layout(_simmim_encoder())
    for prefix in ("", "encoder."):
        bare = {prefix + k: v for k, v in state.items()}
        assert unwrap(bare, tmp_path) == state
        assert convert(bare, tmp_path).format == "simmim"  # told apart by its shift masks
