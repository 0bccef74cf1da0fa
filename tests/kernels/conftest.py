"""The executed-kernel tests need g++; without it they skip and say why."""

from __future__ import annotations

import pytest

from tests.kernels import executor

REASON = executor.unavailable_reason()


def pytest_collection_modifyitems(config, items):
    if REASON is None:
        return
    for item in items:
        if "tests/kernels/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.skip(reason=REASON))
