"""Local ``evaluate`` metric modules, loadable offline.

``evaluate.load("accuracy")`` downloads its script from the Hub, which fails on an offline machine.
The metrics here are written for retention_hf and load from the installed package::

    from retention_hf.metrics import load_metric
    accuracy = load_metric("accuracy")
"""

from __future__ import annotations

from pathlib import Path

import evaluate


METRICS_DIR = Path(__file__).resolve().parent


def metric_path(name: str) -> str:
    """The directory of a bundled metric module, for ``evaluate.load``."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"No bundled metric named {name!r}; available: {available}")
    return str(path)


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """``evaluate.load`` of a bundled metric (works offline)."""
    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["load_metric", "metric_path"]
