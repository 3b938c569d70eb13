"""UPerNet on synthetic four-scale pyramids with arbitrary channel counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alos2fm.models.upernet import UPerNetDecoder

CHANNELS = [8, 12, 20, 40]  # deliberately not Swin-B's (128, 256, 512, 1024)


def _pyramid(batch: int = 2, size: int = 64, requires_grad: bool = False) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [
        torch.randn(batch, c, size // s, size // s, requires_grad=requires_grad)
        for c, s in zip(CHANNELS, (4, 8, 16, 32), strict=True)
    ]


def test_logits_at_full_resolution_from_stride_four() -> None:
    decoder = UPerNetDecoder(CHANNELS, num_classes=5, channels=16)
    assert decoder(_pyramid(size=64)).shape == (2, 5, 64, 64)
    assert decoder(_pyramid(size=96)).shape == (2, 5, 96, 96)


def test_input_channels_come_from_the_argument() -> None:
    decoder = UPerNetDecoder(CHANNELS, num_classes=3, channels=16)
    assert [block[0].in_channels for block in decoder.lateral] == CHANNELS[:3]
    assert decoder.ppm.stages[0][1][0].in_channels == CHANNELS[3]
    assert decoder.ppm.bottleneck[0].in_channels == CHANNELS[3] + 4 * 16


def test_pyramid_pooling_bins_are_1_2_3_6() -> None:
    decoder = UPerNetDecoder(CHANNELS, num_classes=3, channels=16)
    assert [stage[0].output_size for stage in decoder.ppm.stages] == [1, 2, 3, 6]


def test_every_scale_including_stride_four_reaches_the_logits() -> None:
    decoder = UPerNetDecoder(CHANNELS, num_classes=3, channels=16)
    features = _pyramid(requires_grad=True)
    decoder(features).square().sum().backward()
    for f in features:
        assert f.grad is not None and f.grad.abs().sum() > 0


def test_group_norm_makes_each_sample_independent_of_its_batch() -> None:
    decoder = UPerNetDecoder(CHANNELS, num_classes=3, channels=16, dropout=0.0).train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in decoder.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in decoder.modules())
    assert any(isinstance(m, nn.GELU) for m in decoder.modules())
    features = _pyramid(batch=3)
    alone = decoder([f[:1] for f in features])
    together = decoder(features)[:1]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_wrong_number_of_maps() -> None:
    with pytest.raises(ValueError, match="four feature maps"):
        UPerNetDecoder(CHANNELS[:3], num_classes=3)
    with pytest.raises(ValueError, match="got 3"):
        UPerNetDecoder(CHANNELS, num_classes=3, channels=16)(_pyramid()[:3])
