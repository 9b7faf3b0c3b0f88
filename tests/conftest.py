"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def single_thread():
    """Tiny models: one intra-op thread avoids spin-wait stalls on a shared 2-core machine.

    Not autouse: modules opt in with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
