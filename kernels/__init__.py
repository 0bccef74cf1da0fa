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

#: Kernels whose warps vote or shuffle with the full mask: every warp must be whole, so blockDim.x must
#: be a multiple of 32 (a partial last warp would name lanes that do not exist).
WARP_KERNELS = frozenset({"pack_cells_u16", "pack_cells_u32", "pack_cells_u64", "pack_cells_rows_u16",
                          "pack_cells_rows_u32", "pack_cells_rows_u64", "gather_steps", "inter_counts",
                          "active_counts", "cell_on_counts"})
#: Kernels that must get a 1-D grid: active_counts reads only blockIdx.x and adds to its output, so
#: each extra row of blocks would count every candidate again.
ONE_D_GRID = frozenset({"active_counts"})

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


def check_launch(name: str, grid: tuple, block: tuple) -> None:
    """Raise ``ValueError`` when a launch breaks a kernel's precondition (``WARP_KERNELS``,
    ``ONE_D_GRID``); every launcher (the CuPy backend, the CPU executor in tests) calls it."""
    grid, block = tuple(grid) + (1, 1), tuple(block) + (1, 1)
    if name in WARP_KERNELS and block[0] % 32:
        raise ValueError(f"{name}: blockDim.x = {block[0]} is not a multiple of 32 (its warps vote "
                         "with the full mask)")
    if name in ONE_D_GRID and (grid[1] != 1 or grid[2] != 1):
        raise ValueError(f"{name}: grid {grid[:3]} is not 1-D (blockIdx.y is ignored, so each row of "
                         "blocks would add every count again)")


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
