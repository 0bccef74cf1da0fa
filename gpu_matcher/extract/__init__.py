"""States out of PyTorch models (the ``torch`` extra): ``nn.LSTM``/``nn.GRU`` unrolled per layer, and any
module through forward hooks, written as a project by ``gpu_matcher.io.ProjectWriter``."""

from gpu_matcher.errors import ProjectError

try:
    import torch  # noqa: F401
except ModuleNotFoundError:                   # pragma: no cover - depends on the installation
    raise ProjectError("extraction needs PyTorch, which is not installed: "
                       "pip install 'lstmvis-gpu[torch]' (or pip install torch)") from None

from gpu_matcher.extract.extractor import default_forward, extract, hf_forward  # noqa: E402
from gpu_matcher.extract.recurrent import unroll  # noqa: E402

__all__ = ["extract", "unroll", "default_forward", "hf_forward"]
