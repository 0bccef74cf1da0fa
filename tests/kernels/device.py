"""A device whose kernels EXECUTE the real ``kernels/*.cu`` (tests/kernels/executor), so the whole CuPy
backend runs on executed kernels in CPU CI.

It is ``tests/gpu/standin.py``'s ``StandInDevice`` (NumPy arrays with poisoned ``empty``, free memory,
out-of-memory injection, the same argument checks against the C signatures) with each NumPy reference
replaced by a launch of the compiled kernel. Grids are capped (``max_grid``) so the kernels' grid-stride
loops go round, as on a GPU whose grid is smaller than the work.
"""

from __future__ import annotations

from typing import Any

from gpu_matcher.backends.cupy import CupyBackend
from tests.gpu.standin import StandInDevice, StandInKernel
from tests.kernels import executor

#: Blocks per launch at most, per grid dimension (x, y): small so that grid-stride loops go round.
MAX_GRID = (3, 2)


class ExecutedKernel(StandInKernel):
    """A stand-in kernel whose body is the compiled ``.cu`` kernel, run by the executor."""

    def __init__(self, name: str, params, device: "ExecutedDevice", compiled: executor.ExecutedKernel):
        super().__init__(name, params, device)
        self.compiled = compiled
        self.reference = self._execute
        self._config: tuple = ()

    def __call__(self, grid, block, args):
        self._config = (tuple(grid), tuple(block))
        super().__call__(grid, block, args)

    def _execute(self, *args) -> None:
        grid, block = self._config
        cap = self.device.max_grid
        grid = tuple(min(int(g), cap[i]) if i < len(cap) else int(g) for i, g in enumerate(grid))
        self.compiled(grid, block, args)


class ExecutedDevice(StandInDevice):
    """``StandInDevice`` whose kernels are the real ``.cu`` kernels executed on the CPU."""

    def __init__(self, free: int = 1 << 40, max_grid: tuple[int, int] = MAX_GRID):
        super().__init__(free=free)
        self.max_grid = tuple(max_grid)
        compiled = executor.load()
        self.kernels = {name: ExecutedKernel(name, k.params, self, compiled[name])
                        for name, k in self.kernels.items()}

    def describe(self) -> str:
        return "CUDA kernels executed on the CPU (tests/kernels/executor)"


def executed_cupy_backend(**device_options: Any) -> CupyBackend:
    """The CuPy backend on executed kernels: one entry for a list of backends under test (needs g++;
    ``tests.kernels.executor.unavailable_reason()`` says why not)."""
    return CupyBackend(ExecutedDevice(**device_options))
