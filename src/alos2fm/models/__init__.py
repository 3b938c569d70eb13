"""Encoders and self-supervised pretraining models (SimMIM, MixMAE, SAR-W weights)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alos2fm.models.backbones import (
    ARCHITECTURES,
    ENCODER_PRESETS,
    ModelConfigError,
    StageInfo,
    build_encoder,
    create_encoder,
    encoder_feature_info,
    encoder_features,
    encoder_no_weight_decay,
    resolve_encoder_config,
)
from alos2fm.models.mixmae import MixMAE
from alos2fm.models.sarw import sar_weights, weighted_masked_mean, weights_from_source
from alos2fm.models.simmim import PretrainModel, PretrainOutput, SimMIM

PRETRAIN_METHODS: dict[str, type[PretrainModel]] = {"simmim": SimMIM, "mixmae": MixMAE}


def build_pretrain_model(cfg: Mapping[str, Any] | Any) -> PretrainModel:
    """A SimMIM or MixMAE model from plain fields.

    ``cfg`` is a mapping (or a pydantic model, dumped to one) with ``method``
    (``"simmim"`` or ``"mixmae"``), ``encoder`` (preset name or encoder config dict) and the
    method's own keyword arguments, e.g.
    ``{"method": "simmim", "encoder": "swin_base_w8_256_ape_1ch", "mask_ratio": 0.6}``.
    Unknown keys raise ``ModelConfigError``.
    """
    fields = dict(cfg.model_dump() if hasattr(cfg, "model_dump") else cfg)
    method = fields.pop("method", None)
    if method not in PRETRAIN_METHODS:
        raise ModelConfigError(
            f"unknown pretraining method {method!r}", hint=f"use one of {sorted(PRETRAIN_METHODS)}"
        )
    try:
        return PRETRAIN_METHODS[method](**fields)
    except TypeError as error:
        raise ModelConfigError(f"bad {method} settings: {error}") from error


__all__ = [
    "ARCHITECTURES",
    "ENCODER_PRESETS",
    "PRETRAIN_METHODS",
    "MixMAE",
    "ModelConfigError",
    "PretrainModel",
    "PretrainOutput",
    "SimMIM",
    "StageInfo",
    "build_encoder",
    "build_pretrain_model",
    "create_encoder",
    "encoder_feature_info",
    "encoder_features",
    "encoder_no_weight_decay",
    "resolve_encoder_config",
    "sar_weights",
    "weighted_masked_mean",
    "weights_from_source",
]
