"""Suite-wide fixtures."""

from __future__ import annotations

import os

import pytest
import torch
from transformers.utils import logging


def pytest_configure(config):
    """Under pytest-xdist (scripts/test.sh runs ``-n auto``) every worker process gets its share of the cores:
    each torch picking every core would oversubscribe them, and tiny models gain nothing from intra-op threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))


@pytest.fixture(autouse=True)
def _restore_transformers_verbosity():
    """Command-line mains called in-process (the benchmark harness, the examples) lower transformers'
    global verbosity; restore it so tests that assert on log output do not depend on test order."""
    verbosity = logging.get_verbosity()
    yield
    logging.set_verbosity(verbosity)
