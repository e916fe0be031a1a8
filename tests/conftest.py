"""Suite-wide fixtures."""

from __future__ import annotations

import pytest
from transformers.utils import logging


@pytest.fixture(autouse=True)
def _restore_transformers_verbosity():
    """Command-line mains called in-process (the benchmark harness, the examples) lower transformers'
    global verbosity; restore it so tests that assert on log output do not depend on test order."""
    verbosity = logging.get_verbosity()
    yield
    logging.set_verbosity(verbosity)
