"""Backends: one interface (``base.Backend``: ``prepare``, ``match``, declared ``capabilities``); the exact
search over array primitives (``search.SearchBackend``) with a NumPy and a CuPy implementation, chosen at
run time; the sharded composite of per-shard backends is ``gpu_matcher.sharded.ShardedBackend``."""

from __future__ import annotations

import logging

from gpu_matcher.backends.base import Backend, Capability, MatchQuery, MatchRow
from gpu_matcher.errors import ProjectError

log = logging.getLogger("gpu_matcher")
BACKEND_NAMES = ("auto", "numpy", "cupy")


def cupy_unavailable_reason() -> str | None:
    """Why the CuPy backend cannot run here, or None when it can."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"no CUDA device answers ({type(exc).__name__}: {exc})"
    if count < 1:
        return "no CUDA device found"
    return None


def get_backend(name: str = "auto") -> Backend:
    """``auto``: CuPy when it imports and a device answers, else NumPy. ``cupy`` fails with the reason."""
    if name not in BACKEND_NAMES:
        raise ProjectError(f"--backend {name!r} is unknown; choose one of {', '.join(BACKEND_NAMES)}")
    if name in ("auto", "cupy"):
        reason = cupy_unavailable_reason()
        if reason is None:
            try:
                from gpu_matcher.backends.cupy import CupyBackend
                backend = CupyBackend()
                log.info("backend: %s", backend.describe())
                return backend
            except Exception as exc:  # NVRTC missing or broken, a kernel that fails to load, ...
                reason = f"the CuPy backend failed to start ({type(exc).__name__}: {exc})"
        if name == "cupy":
            raise ProjectError(f"--backend cupy: {reason}")
        log.info("backend: numpy (%s)", reason)
    from gpu_matcher.backends.numpy import NumpyBackend
    return NumpyBackend()


__all__ = ["Backend", "Capability", "MatchQuery", "MatchRow", "get_backend", "cupy_unavailable_reason",
           "BACKEND_NAMES"]
