"""Training recipes shared by the examples and the ``retention-hf`` command line (need the ``examples`` extra)."""
