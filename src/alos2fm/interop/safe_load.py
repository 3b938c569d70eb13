"""Reading foreign PyTorch checkpoints without arbitrary unpickling.

The authors' training checkpoints hold, beside tensors, one non-tensor object each: a yacs
``CfgNode`` (SimMIM) or an ``argparse.Namespace`` (MixMAE). ``torch.load(weights_only=True)``
refuses both. Both are plain attribute bags, so they are allow-listed: ``Namespace`` as
itself (standard library; its state only sets attributes), ``CfgNode`` through
:class:`CfgNodeAsDict`. torch's weights-only unpickler fills only exact dicts, never a
dict subclass such as ``CfgNode``, so the stand-in, registered under yacs' name, builds an
``OrderedDict`` instead: the configuration's keys and values arrive, yacs need not be
installed, and none of its code runs. Any other class stays refused and the error says
which: there is no fallback to full unpickling.
"""

from __future__ import annotations

import argparse
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from alos2fm.contract import refused_unpickling
from alos2fm.errors import Alos2fmError


class CheckpointReadError(Alos2fmError):
    """A checkpoint file that cannot be read safely (missing, corrupt, foreign objects)."""


class CfgNodeAsDict:
    """Allow-listed as ``yacs.config.CfgNode``: unpickling "creates" one as an OrderedDict."""

    def __new__(cls, *args: Any) -> OrderedDict:  # type: ignore[misc]
        return OrderedDict()


# The allow-list keys a class by "module.qualname" (by "module.name" in older torch).
CfgNodeAsDict.__module__ = "yacs.config"
CfgNodeAsDict.__qualname__ = CfgNodeAsDict.__name__ = "CfgNode"

ALLOWED_CLASSES = (CfgNodeAsDict, argparse.Namespace)


def load_checkpoint_safely(path: str | Path) -> Any:
    """``torch.load`` of ``path`` (on CPU) with only tensors, containers and the allow-listed
    configuration classes unpickled.

    Raises:
        CheckpointReadError: no such file, not a PyTorch file, or an object of another class.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError("file not found", path)
    torch.serialization.add_safe_globals(list(ALLOWED_CLASSES))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointReadError(
            refused_unpickling(err),
            path,
            "only tensors and the authors' config objects are read; re-save the weights as "
            "a plain state dict or safetensors",
        ) from None
    except Exception as err:  # torch raises many types (IndexError too) for a foreign file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointReadError(f"not a readable PyTorch checkpoint: {first}", path) from None
