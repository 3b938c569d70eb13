"""Config resolution: defaults <- preset <- overrides, and the paper presets' exact numbers."""

from __future__ import annotations

import pytest
import yaml

from alos2fm.train.config import (
    ConfigError,
    FinetuneConfig,
    PretrainConfig,
    available_presets,
    load_config,
    parse_overrides,
    read_preset,
    resolve_config,
    save_config,
)
from alos2fm.train.optim import scaled_lr

SWIN_B = {"embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32)}


def _swin_b_at_256(model) -> None:
    assert model.arch == "swin_base"
    assert (model.embed_dim, model.depths, model.num_heads) == tuple(SWIN_B.values())
    assert (model.in_chans, model.img_size, model.window_size, model.ape) == (1, 256, 8, True)


def test_paper_simmim_is_the_published_recipe():
    cfg = resolve_config("pretrain", "paper-simmim")
    _swin_b_at_256(cfg.model)
    assert cfg.method == "simmim"
    assert (cfg.simmim.mask_unit, cfg.simmim.mask_ratio, cfg.simmim.loss) == (16, 0.6, "l1")
    s = cfg.schedule
    assert (s.epochs, s.warmup_epochs, s.kind, s.milestones, s.gamma) == (
        800,
        40,
        "multistep",
        (700,),
        0.1,
    )
    o = cfg.optim
    assert (o.base_lr, o.reference_batch, o.weight_decay, o.betas) == (
        1e-4,
        512,
        0.05,
        (0.9, 0.999),
    )
    assert cfg.trainer.gradient_clip_val == 5.0
    assert (cfg.data.batch_size, cfg.trainer.devices, cfg.data.hflip, cfg.data.vflip) == (
        256,
        8,
        True,
        True,
    )
    # 256 x 8 GPUs = 2048 images per step -> 1e-4 x 2048 / 512.
    assert scaled_lr(o.base_lr, o.reference_batch, 256 * 8) == pytest.approx(4e-4)


def test_paper_mixmae_is_the_published_recipe():
    cfg = resolve_config("pretrain", "paper-mixmae")
    model = cfg.model
    assert (model.embed_dim, model.depths, model.num_heads) == tuple(SWIN_B.values())
    # MixMIM's encoder: per-stage windows, no shifted windows, a fixed sin-cos APE.
    assert (model.window_size, model.shift, model.ape) == ((8, 8, 8, 4), False, "sincos")
    m = cfg.mixmae
    assert cfg.method == "mixmae"
    assert (m.mask_ratio, m.decoder_depth, m.decoder_dim, m.decoder_heads, m.norm_pix_loss) == (
        0.5,
        8,
        512,
        16,
        True,
    )
    o = cfg.optim
    assert (o.base_lr, o.reference_batch, o.weight_decay, o.betas) == (
        1.5e-4,
        256,
        0.05,
        (0.9, 0.95),
    )
    assert cfg.schedule.kind == "cosine" and cfg.schedule.warmup_epochs > 0
    assert cfg.schedule.train_epochs == 64  # the authors' best checkpoint of a 1024-epoch run
    assert cfg.schedule.epochs == 1024


def test_paper_seg_is_the_published_recipe():
    cfg = resolve_config("finetune", "paper-seg")
    _swin_b_at_256(cfg.model)
    assert cfg.model.drop_path_rate == 0.1 and cfg.decoder == "upernet"
    assert cfg.decoder_channels == 256
    assert (cfg.loss.name, cfg.loss.class_weights) == ("dice_focal", "stats")
    s = cfg.schedule
    assert (s.epochs, s.warmup_epochs, s.kind, s.train_epochs) == (100, 20, "cosine", 100)
    o = cfg.optim
    assert (o.base_lr, o.reference_batch, o.weight_decay, o.layer_decay) == (
        1.25e-4,
        512,
        0.05,
        0.8,
    )


def test_every_shipped_preset_resolves_for_its_stage():
    names = available_presets()
    assert {"paper-simmim", "paper-mixmae", "paper-seg", "cpu-tiny-simmim"} <= set(names)
    for name in names:
        stage = read_preset(name)["stage"]
        cfg = resolve_config(stage, name)
        assert isinstance(cfg, PretrainConfig if stage == "pretrain" else FinetuneConfig)


def test_overrides_parse_as_yaml_and_win_over_the_preset():
    assert parse_overrides(
        ["optim.base_lr=2e-4", "data.hflip=false", "model.depths=[1,1,1,1]"]
    ) == {
        "optim": {"base_lr": 2e-4},
        "data": {"hflip": False},
        "model": {"depths": [1, 1, 1, 1]},
    }
    cfg = resolve_config("pretrain", "paper-simmim", ["optim.base_lr=2e-4", "trainer.devices=2"])
    assert cfg.optim.base_lr == 2e-4 and cfg.trainer.devices == 2
    assert cfg.optim.weight_decay == 0.05  # untouched keys keep the preset's value


@pytest.mark.parametrize(
    ("stage", "preset", "overrides", "message"),
    [
        ("pretrain", None, ["optim.base_lrr=1"], "optim.base_lrr"),
        ("pretrain", None, ["schedule.warmup_epochs=900"], "warmup_epochs"),
        ("pretrain", None, ["model.img_size=250"], "mask_unit"),
        ("pretrain", "paper-seg", [], "finetune preset"),
        ("finetune", "no-such-preset", [], "unknown preset"),
        ("pretrain", None, ["optim.base_lr"], "not key=value"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(stage, preset, overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(stage, preset, overrides)


def test_config_is_frozen():
    cfg = resolve_config("finetune")
    with pytest.raises(Exception, match="frozen"):
        cfg.seed = 3


def test_saved_config_reloads_identically(tmp_path):
    cfg = resolve_config("finetune", "cpu-tiny-seg", ["data.label_fraction=0.25"])
    save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["stage"] == "finetune"
    assert load_config(tmp_path / "config.yaml") == cfg
