"""The CUDA kernels (``*.cu`` beside this file) and the one loader that compiles them.

Each ``.cu`` file is compiled once per device with ``cupy.RawModule`` (NVRTC); ``load()`` returns every
``extern "C" __global__`` function of every file by name. The kernels know nothing of projects: they
take raw pointers, sizes and int64 candidate arrays; ``gpu_matcher/backends/cupy.py`` drives them.
CI compiles the same files with ``nvcc`` for sm_80 and sm_90 (tests/gpu/test_kernels_compile.py).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
#: NVRTC options; nvcc in CI compiles the same sources with its own defaults.
NVRTC_OPTIONS = ("--std=c++17",)

_KERNEL_DECL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
_lock = threading.Lock()
_loaded: dict[int, dict] = {}


def sources() -> list[Path]:
    """Every kernel source, sorted by name."""
    return sorted(KERNEL_DIR.glob("*.cu"))


def signatures(path: Path | None = None) -> dict[str, list[tuple[str, str]]]:
    """``{kernel: [(c_type, name), ...]}`` of the ``extern "C"`` kernels of one file, or of all files."""
    out: dict[str, list[tuple[str, str]]] = {}
    for src in ([path] if path is not None else sources()):
        text = re.sub(r"//[^\n]*", "", Path(src).read_text())
        for name, params in _KERNEL_DECL.findall(text):
            args = []
            for param in params.split(","):
                words = param.replace("__restrict__", " ").replace("*", " * ").split()
                args.append((" ".join(words[:-1]), words[-1]))
            out[name] = args
    return out


def load() -> dict:
    """``{name: cupy.RawKernel}`` for the current device, compiling each file once (thread-safe)."""
    import cupy

    device = cupy.cuda.Device().id
    with _lock:
        if device not in _loaded:
            kernels = {}
            for src in sources():
                module = cupy.RawModule(code=src.read_text(), options=NVRTC_OPTIONS)
                for name in signatures(src):
                    kernels[name] = module.get_function(name)   # compiles the module on first use
            _loaded[device] = kernels
        return _loaded[device]
