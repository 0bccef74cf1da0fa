"""Fixtures of the GPU backend's tests: the NumPy stand-in device, and the real one when present."""

from __future__ import annotations

import pytest

from gpu_matcher.backends import cupy_unavailable_reason
from tests.gpu.standin import StandInDevice


@pytest.fixture
def standin():
    return StandInDevice()


@pytest.fixture(scope="session")
def gpu_reason():
    """Why no GPU test can run here, or None (computed once: it imports CuPy)."""
    return cupy_unavailable_reason()
