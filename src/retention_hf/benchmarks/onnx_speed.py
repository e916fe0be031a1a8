"""The harness's ``--backend onnxruntime``: ONNX Runtime against eager PyTorch, dense and retention.

The dense model is the stock transformers twin of the first learned checkpoint (same weights) and every
retention model is exported at its budget, all through :func:`retention_hf.export.to_onnx`, so the dense and
retention graphs come from the same exporter with the same attention. Eager PyTorch runs alongside on the
same batches, interleaved (see speed.py), so one run gives ORT retention vs ORT dense and ORT vs eager for both.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..export import ORTModel, check_parity, to_onnx
from .data import model_inputs
from .models import load_retention_model
from .speed import stock_twin, time_configurations


def run_onnx_speed(learned: dict[float, str], batches, repeats: int, export_dir: str | None = None) -> dict:
    """Export, check parity on the first batch, then time every configuration; returns the results' fields."""
    retention = {f"rho={r}": load_retention_model(p, retention_ratio=r) for r, p in learned.items()}
    first = next(iter(retention.values()))
    dense = load_retention_model(first.name_or_path, retention_enabled=False)
    models = {"dense": stock_twin(first), **retention}  # the twin shares the first model's tensors
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(export_dir or scratch)
        sessions, export_seconds, parity = {}, {}, {}
        for name, model in models.items():
            start = time.perf_counter()
            path = to_onnx(model, root / name.replace("=", ""))
            export_seconds[name] = time.perf_counter() - start
            sessions[name] = ORTModel(path)
            parity[name] = check_parity(model, sessions[name], model_inputs(batches[0]))
        configurations = {"eager dense": lambda i, b: dense(**model_inputs(b))}
        for name, model in models.items():
            if name != "dense":
                configurations[f"eager {name}"] = lambda i, b, m=model: m(**model_inputs(b))
        for name, session in sessions.items():
            configurations[f"ort {name}"] = lambda i, b, s=session: s(**model_inputs(b))
        timings = time_configurations(configurations, batches, repeats=repeats)
    eager_dense, ort_dense = timings["eager dense"].throughput, timings["ort dense"].throughput
    speed = {
        name: {
            "examples_per_second": timing.throughput,
            "median_batch_latency_ms": timing.median_latency * 1000,
            "speedup_vs_eager_dense": timing.throughput / eager_dense,
            "speedup_vs_ort_dense": timing.throughput / ort_dense,
        }
        for name, timing in timings.items()
    }
    ort_vs_eager = {
        name: timings[f"ort {name}"].throughput
        / timings["eager dense" if name == "dense" else f"eager {name}"].throughput
        for name in models
    }
    return {
        "backend": "onnxruntime",
        "speed": speed,
        "ort_vs_eager": ort_vs_eager,
        "onnx_export_seconds": export_seconds,
        "onnx_parity_max_abs_difference": parity,
        "threads": torch.get_num_threads(),
    }


# the ORT speed targets of the serving issue, for IMDb at max length 512
ORT_TARGETS = {"imdb": {0.5: 2.0, 0.3: 3.3}}


def onnx_target_checks(results: dict) -> list[dict[str, object]]:
    """The ORT speed targets this run can check, in the form of ``report.target_checks``."""
    checks = []
    for ratio, threshold in ORT_TARGETS.get(results["dataset"], {}).items():
        if f"ort rho={ratio}" in results["speed"]:
            value = results["speed"][f"ort rho={ratio}"]["speedup_vs_ort_dense"]
            checks.append(
                {
                    "target": f"ORT retention vs ORT dense, rho {ratio}",
                    "threshold": f">= {threshold}x",
                    "measured": value,
                    "shown": f"{value:.2f}x",
                    "met": value >= threshold,
                }
            )
    return checks


def onnx_table(results: dict) -> str:
    """``results.md`` for an ONNX Runtime run."""
    speed = results["speed"]
    lines = [
        f"{results['dataset']}, {results['timing_examples']} examples, batch {results['batch_size']}, max length "
        f"{results['max_length']}, {results['repeats']} interleaved repeats (medians), "
        f"{results['machine']['cpu_count']} CPU cores, {results['threads']} threads (torch and ONNX Runtime).",
        "",
        "| configuration | examples/s | median batch latency (ms) | vs ORT dense | vs eager dense |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in speed.items():
        lines.append(
            f"| {name} | {row['examples_per_second']:.1f} | {row['median_batch_latency_ms']:.0f} | "
            f"{row['speedup_vs_ort_dense']:.2f}x | {row['speedup_vs_eager_dense']:.2f}x |"
        )
    lines += ["", "| model | ORT vs eager PyTorch | export (s) | ORT vs PyTorch, max abs. difference (first batch) |"]
    lines += ["| --- | --- | --- | --- |"]
    for name, ratio in results["ort_vs_eager"].items():
        lines.append(
            f"| {name} | {ratio:.2f}x | {results['onnx_export_seconds'][name]:.0f} | "
            f"{results['onnx_parity_max_abs_difference'][name]:.1e} |"
        )
    checks = [
        f"- {check['target']}: {check['shown']} (target {check['threshold']}): {'met' if check['met'] else 'missed'}"
        for check in results.get("targets", [])
    ]
    if checks:
        lines += ["", *checks]
    lines += ["", f"Command: `{results['command']}`"]
    return "\n".join(lines) + "\n"
