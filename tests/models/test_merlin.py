"""MERLIN's U-Net as a segmenter: its released weights load key by key, our layers compute
what MERLIN's forward computes, and its input is MERLIN's normalised ln-amplitude."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from alos2fm.models.merlin import (
    RELEASED_WEIGHTS,
    MerlinUnet,
    load_merlin_weights,
    merlin_db_standardisation,
    released_weights_path,
)
from alos2fm.models.segmenter import WeightsError, build_segmenter
from alos2fm.train.config import MERLIN_RELEASES, ConfigError, resolve_config
from alos2fm.train.data import Normalisation
from tests.tiny_models import fit_block_labels

installed = pytest.mark.skipif(
    importlib.util.find_spec("deepdespeckling") is None,
    reason="deepdespeckling (the optional extra alos2fm[merlin]) is not installed",
)

MERLIN = ["model.arch=merlin", "decoder=merlin", "optim.layer_decay=null"]


def _merlin_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with MERLIN's keys and shapes (its despeckling dec1 included)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"enc0": (48, 1)} | {f"enc{i}": (48, 48) for i in range(1, 7)}
    shapes |= {name: (96, 96) for name in ("dec5", "dec5b", "dec4b", "dec3b", "dec2b")}
    shapes |= {name: (96, 144) for name in ("dec4", "dec3", "dec2")}
    shapes |= {"dec1a": (64, 97), "dec1b": (32, 64), "dec1": (1, 32)}
    state = {}
    for name, (out, into) in shapes.items():
        state[f"{name}.weight"] = 0.1 * torch.randn(out, into, 3, 3, generator=generator)
        state[f"{name}.bias"] = 0.1 * torch.randn(out, generator=generator)
    return state


@installed
@pytest.mark.parametrize("name", sorted(RELEASED_WEIGHTS))
def test_the_released_weights_load_key_by_key(name):
    path = released_weights_path(name)
    model = MerlinUnet(num_classes=4)
    report = load_merlin_weights(model, name)
    assert report.path == path and report.loaded == 34  # 17 convolutions less dec1
    released = torch.load(path, weights_only=True, map_location="cpu")
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, released[key]), key
    assert "loaded 34 MERLIN tensors" in report.summary()


def test_the_config_knows_every_released_file():
    assert tuple(RELEASED_WEIGHTS) == MERLIN_RELEASES


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda s: s.pop("dec3b.bias"), r"dec3b\.bias is missing"),
        (lambda s: s.update({"enc2.weight": torch.zeros(48, 48, 5, 5)}), r"enc2\.weight has shape"),
        (lambda s: s.update({"dec0.weight": torch.zeros(1)}), r"unexpected keys.*dec0\.weight"),
    ],
)
def test_a_state_dict_that_is_not_merlins_is_refused_naming_the_key(tmp_path, change, named):
    state = _merlin_state_dict()
    change(state)
    torch.save(state, tmp_path / "other.pth")
    model = MerlinUnet(num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=named):
        load_merlin_weights(model, tmp_path / "other.pth")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_an_unknown_release_name_is_refused():
    with pytest.raises(WeightsError, match="unknown MERLIN weights 'stripmapp'"):
        load_merlin_weights(MerlinUnet(num_classes=2), "stripmapp")


def test_db_takes_merlins_ln_amplitude_scale_centred_on_the_dataset():
    # TerraSAR-X pair: M = 10.089038980848645, m = -1.429329123112601, M - m = 11.5183681;
    # one unit of input is 11.5183681 nepers of amplitude = 11.5183681 * 20 / ln 10
    # = 100.0473 dB. A dataset of mean -12 dB: -12 dB -> 0.5, -12 + 20 dB (amplitude x10,
    # +2.3025851 nepers) -> 0.5 + 2.3025851 / 11.5183681 = 0.6999056; -32 dB -> 0.3000944.
    mean_db, std_db = merlin_db_standardisation("stripmap", dataset_mean_db=-12.0)
    assert std_db == pytest.approx(100.0473, abs=1e-4)
    normalise = Normalisation(("HH",), (mean_db,), (std_db,))
    image_db = torch.tensor([-12.0, 8.0, -32.0]).view(1, 1, 1, 3)
    expected = torch.tensor([0.5, 0.6999056, 0.3000944]).view(1, 1, 1, 3)
    torch.testing.assert_close(normalise(image_db), expected, atol=1e-6, rtol=0)
    assert merlin_db_standardisation("spotlight", -12.0) == (mean_db, std_db)
    # Sentinel-TOPS pair as shipped: M_s = 12.385, m_s = -ln(0.001) = 6.9077553, so one
    # unit is 5.4772447 nepers = 47.5747 dB.
    mean_s, std_s = merlin_db_standardisation("sentinel_tops", -12.0)
    assert std_s == pytest.approx(47.5747, abs=1e-4)
    assert (-12.0 - mean_s) / std_s == pytest.approx(0.5)


def test_logits_have_the_inputs_size_for_sides_that_are_multiples_of_32():
    model = build_segmenter(
        {"encoder": {"arch": "merlin", "in_chans": 1}, "num_classes": 5, "decoder": "merlin"}
    )
    assert isinstance(model, MerlinUnet)
    assert model(torch.zeros(2, 1, 64, 32)).shape == (2, 5, 64, 32)


def test_more_than_one_band_is_refused():
    with pytest.raises(WeightsError, match="MERLIN takes one band"):
        MerlinUnet(num_classes=3, in_chans=2)
    with pytest.raises(ConfigError, match="MERLIN takes one band"):
        resolve_config("finetune", overrides=[*MERLIN, "model.in_chans=2"])


def test_the_config_pairs_merlin_settings():
    cfg = resolve_config("finetune", overrides=[*MERLIN, "merlin_weights=spotlight"])
    assert cfg.merlin_weights == "spotlight"
    assert resolve_config("finetune", overrides=[*MERLIN, "merlin_weights=m.pth"])
    for overrides, problem in [
        ([*MERLIN, "merlin_weights=stripmapp"], "none of"),
        (["model.arch=merlin", "optim.layer_decay=null"], "go together"),
        (["merlin_weights=stripmap"], "decoder=merlin only"),
        (["model.arch=merlin", "decoder=merlin"], "layer_decay=null"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            resolve_config("finetune", overrides=overrides)


def _merlin_forward_by_hand(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """MERLIN's despeckling forward, written out op by op: ``x - n``."""

    def conv(name, t):
        return F.leaky_relu(
            F.conv2d(t, state[f"{name}.weight"], state[f"{name}.bias"], padding=1), 0.1
        )

    def up(t):
        return F.interpolate(t, scale_factor=2, mode="nearest")

    e1 = F.max_pool2d(conv("enc1", conv("enc0", x)), 2)
    e2 = F.max_pool2d(conv("enc2", e1), 2)
    e3 = F.max_pool2d(conv("enc3", e2), 2)
    e4 = F.max_pool2d(conv("enc4", e3), 2)
    n = conv("enc6", F.max_pool2d(conv("enc5", e4), 2))
    n = conv("dec5b", conv("dec5", torch.cat([up(n), e4], 1)))
    n = conv("dec4b", conv("dec4", torch.cat([up(n), e3], 1)))
    n = conv("dec3b", conv("dec3", torch.cat([up(n), e2], 1)))
    n = conv("dec2b", conv("dec2", torch.cat([up(n), e1], 1)))
    n = conv("dec1b", conv("dec1a", torch.cat([up(n), x], 1)))
    n = F.conv2d(n, state["dec1.weight"], state["dec1.bias"], padding=1)
    return x - n


@pytest.mark.parametrize("source", ["synthetic", pytest.param("stripmap", marks=installed)])
def test_with_merlins_own_head_our_layers_despeckle_as_merlin_does(tmp_path, source):
    if source == "synthetic":
        torch.save(_merlin_state_dict(seed=3), tmp_path / "merlin.pth")
        weights = tmp_path / "merlin.pth"
        state = torch.load(weights, weights_only=True)
    else:
        weights = source
        state = torch.load(released_weights_path(source), weights_only=True, map_location="cpu")
    model = MerlinUnet(num_classes=1)
    load_merlin_weights(model, weights)
    model.head.load_state_dict({"weight": state["dec1.weight"], "bias": state["dec1.bias"]})
    x = torch.rand(2, 1, 64, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = x - model(x)  # our head predicts n; MERLIN returns x - n
        theirs = _merlin_forward_by_hand(state, x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_merlin_overfits_one_batch():
    torch.manual_seed(0)
    model = MerlinUnet(num_classes=2)
    first, last, accuracy = fit_block_labels(model, lr=1e-3, steps=60)
    assert last < 0.3 * first and accuracy > 0.9, (first, last, accuracy)
