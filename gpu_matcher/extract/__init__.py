"""States out of PyTorch models (the ``torch`` extra): ``nn.LSTM``/``nn.GRU`` unrolled per layer, and any
module through forward hooks, written as a project by ``gpu_matcher.io.ProjectWriter``; Hugging Face
model folders through ``gpu_matcher.extract.hf`` (the ``hf`` extra).

PyTorch is imported on first use of a name below, not with the package, so ``gpu_matcher.extract.hf``
can register its command without it.
"""

from __future__ import annotations

import importlib

from gpu_matcher.errors import ProjectError

_NAMES = {"extract": "extractor", "default_forward": "extractor", "hf_forward": "extractor",
          "unroll": "recurrent"}
__all__ = ["extract", "unroll", "default_forward", "hf_forward"]


def __getattr__(name: str):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'gpu_matcher.extract' has no attribute {name!r}")
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:                   # pragma: no cover - depends on the installation
        raise ProjectError("extraction needs PyTorch, which is not installed: "
                           "pip install 'lstmvis-gpu[torch]' (or pip install torch)") from None
    return getattr(importlib.import_module(f"gpu_matcher.extract.{module}"), name)
