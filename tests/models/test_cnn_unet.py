"""CNN encoders through timm features_only, with our U-Net decoder."""

from __future__ import annotations

import pytest
import torch

from alos2fm.models.cnn_unet import CnnUnet, create_cnn_encoder
from alos2fm.models.segmenter import build_segmenter
from tests.tiny_models import fit_block_labels


@pytest.mark.parametrize(
    ("arch", "strides", "channels"),
    [
        ("resnet18", (2, 4, 8, 16, 32), (64, 64, 128, 256, 512)),
        ("resnet34", (2, 4, 8, 16, 32), (64, 64, 128, 256, 512)),
        ("convnext_atto", (4, 8, 16, 32), (40, 80, 160, 320)),
        ("convnext_nano", (4, 8, 16, 32), (80, 160, 320, 640)),
    ],
)
def test_cnn_encoders_give_their_feature_pyramid_for_any_channel_count(arch, strides, channels):
    encoder = create_cnn_encoder({"arch": arch, "in_chans": 3})
    features = encoder(torch.zeros(1, 3, 64, 64))
    assert tuple(f.shape[1] for f in features) == channels
    assert tuple(64 // f.shape[-1] for f in features) == strides


def test_unet_maps_every_pixel_and_rebuilds_from_its_checkpoint_spec():
    spec = {"encoder": {"arch": "resnet18", "in_chans": 2}, "num_classes": 5, "decoder": "unet"}
    model = build_segmenter(spec | {"decoder_channels": 32})
    assert isinstance(model, CnnUnet)
    assert model(torch.zeros(2, 2, 64, 48)).shape == (2, 5, 64, 48)  # any size, /32 or not


def test_unet_overfits_one_batch():
    torch.manual_seed(0)
    model = CnnUnet({"arch": "resnet18", "in_chans": 1}, num_classes=2, decoder_channels=32)
    first, last, accuracy = fit_block_labels(model, lr=1e-2, steps=40)
    assert last < 0.3 * first and accuracy > 0.9
