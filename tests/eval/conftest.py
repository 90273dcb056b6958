"""Eval tests run the metrics single-threaded (see the fixture)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The metrics' short STFTs run faster on one thread than fighting for two shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
