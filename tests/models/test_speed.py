"""Speed options change how the step is computed, not what: same losses, same names."""

from __future__ import annotations

import torch

from alos2fm.models.speed import apply_speed_options, enable_fused_attention
from alos2fm.train.config import resolve_config
from alos2fm.train.pretrain import pretrain_model_for


def _tiny_simmim() -> torch.nn.Module:
    torch.manual_seed(0)
    return pretrain_model_for(resolve_config("pretrain", "cpu-tiny-simmim"))


def test_fused_attention_gives_the_same_loss_and_gradients():
    plain, fused = _tiny_simmim(), _tiny_simmim()
    assert enable_fused_attention(fused) == 5  # one per Swin block (depths 1-1-2-1)
    x = torch.randn(2, 1, 64, 64)
    results = []
    for model in (plain, fused):
        torch.manual_seed(1)  # the same mask
        loss = model(x, torch.ones_like(x)).loss
        loss.backward()
        grad = model.encoder.patch_embed.proj.weight.grad
        results.append((loss.detach(), grad))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-7)
    assert enable_fused_attention(fused) == 0  # already on


def test_compile_keeps_parameter_names_for_checkpoints():
    model = _tiny_simmim()
    names = list(model.state_dict())
    apply_speed_options(model, fused_attention=False, compile=True)
    assert list(model.state_dict()) == names  # compiled in place, not wrapped
    assert model._compiled_call_impl is not None
