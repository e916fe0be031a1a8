"""The benchmark harness: speed, memory and accuracy of retention models against dense and heuristics.

For one dataset it measures, in one run:

* throughput and per-batch latency of the dense model (retention off, same weights), of the retention
  model at every budget, of the *ideal limit* at every budget (the same layers fed exactly the kept
  counts, free scorer, no gather) and of stock transformers on the same weights, interleaved and
  repeated on the same dynamically padded batches (medians);
* peak memory above the loaded model per configuration (a fresh child process each, see memory.py);
* accuracy of the learned gates and of the training-free baselines (random, truncation, attention,
  cls_attention: see retention_hf.baselines), which run on the fine-tuned dense model with the learned model's budget and schedule (same kept counts).

    python -m retention_hf.benchmarks.run --dataset imdb --max_length 512 --dense runs/imdb-dense \\
        --learned 0.7=runs/imdb-r70 0.5=runs/imdb-r50 0.3=runs/imdb-r30 --output results/imdb

Writes ``<output>/results.json``, ``results.md`` and the plots (see report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import logging

import retention_hf
from retention_hf.baselines import BASELINES

from . import report
from .accuracy import accuracy, copy_schedule
from .data import load_examples, make_batches, model_inputs
from .memory import measure as measure_memory
from .models import load_at_budget, load_retention_model
from .onnx_speed import onnx_table, onnx_target_checks, run_onnx_speed
from .speed import IdealLimit, paired_overhead, stock_twin, time_configurations


def parse_learned(values: list[str]) -> dict[float, str]:
    learned = {}
    for value in values:
        ratio, _, path = value.partition("=")
        if not path:
            raise argparse.ArgumentTypeError(f"--learned expects RATIO=CHECKPOINT, got {value!r}")
        learned[float(ratio)] = path
    return dict(sorted(learned.items(), reverse=True))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the platform's processor: speed-ups move with it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """What the timings depend on. The vector unit matters: ONNX Runtime ran the dense MiniLM 1.69x faster than eager
    PyTorch on one machine and no faster on an AVX2-only one (docs/benchmarks.md)."""
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "retention_hf": retention_hf.__version__,
    }


def any_budget_rows(args) -> dict[str, tuple[float, str]]:
    """``{"any rho=R": (R, checkpoint)}`` for the one checkpoint of ``--any_budget`` at every ``--budgets`` value."""
    if args.any_budget is None:
        return {}
    return {f"any rho={ratio}": (ratio, args.any_budget) for ratio in sorted(set(args.budgets), reverse=True)}


def reference_checkpoint(args, learned: dict[float, str]) -> str:
    """The checkpoint whose weights the stock, dense and rho=1.0 rows run: the first per-budget model, else the
    any-budget one."""
    return next(iter(learned.values()), args.any_budget)


def run_speed(args, learned: dict[float, str], batches) -> dict[str, object]:
    first = reference_checkpoint(args, learned)
    reference = load_retention_model(first)
    stock = stock_twin(reference)
    dense = load_retention_model(first, retention_enabled=False)
    at_one = load_retention_model(first, retention_ratio=1.0)
    configurations = {
        "stock": lambda i, b: stock(**model_inputs(b)),
        "dense": lambda i, b: dense(**model_inputs(b)),
        "rho=1.0": lambda i, b: at_one(**model_inputs(b)),
    }
    for ratio, path in learned.items():
        model = load_retention_model(path, retention_ratio=ratio)
        configurations[f"rho={ratio}"] = lambda i, b, m=model: m(**model_inputs(b))
        configurations[f"ideal rho={ratio}"] = IdealLimit(model, batches)
    for name, (ratio, path) in any_budget_rows(args).items():
        model = load_at_budget(path, ratio)
        configurations[name] = lambda i, b, m=model: m(**model_inputs(b))
    timings = time_configurations(configurations, batches, repeats=args.repeats)
    dense_throughput = timings["dense"].throughput
    speed = {
        name: {
            "examples_per_second": timing.throughput,
            "median_batch_latency_ms": timing.median_latency * 1000,
            "speedup_vs_dense": timing.throughput / dense_throughput,
        }
        for name, timing in timings.items()
    }
    return {
        "speed": speed,
        "gate_overhead_rho1_vs_stock": paired_overhead(timings["rho=1.0"], timings["stock"]),
        "dense_vs_stock": paired_overhead(timings["dense"], timings["stock"]),
    }


def run_memory(args, learned: dict[float, str], limit: int | None) -> dict[str, float]:
    first = reference_checkpoint(args, learned)
    rows = {"stock": ("stock", first), "dense": ("dense", first)}
    rows |= {f"rho={ratio}": (f"rho={ratio}", path) for ratio, path in learned.items()}
    rows |= {name: (f"rho={ratio}", path) for name, (ratio, path) in any_budget_rows(args).items()}
    measured = {}
    for name, (configuration, path) in rows.items():
        measured[name] = measure_memory(path, args.dataset, configuration, args.batch_size, args.max_length, limit)
        print(f"peak memory above the model, {name}: {measured[name]:.1f} MB", flush=True)
    return measured


def load_dense(path: str, first_gated_layer: int | None = None) -> torch.nn.Module:
    """The fine-tuned dense model, with its (unused) gates placed like the learned model's, so that the
    baselines select before the same layers and keep the same counts."""
    overrides = {} if first_gated_layer is None else {"retention_first_gated_layer": first_gated_layer}
    return load_retention_model(path, retention_enabled=False, attn_implementation="eager", **overrides)


def run_accuracy(args, learned: dict[float, str], batches) -> dict[str, object]:
    results: dict[str, object] = {"dense": accuracy(load_dense(args.dense), batches, desc="dense")["accuracy"]}
    dense_by_first_gate: dict[int, torch.nn.Module] = {}  # copy_schedule rewrites every budget field it uses
    rows = {f"rho={ratio}": (ratio, path) for ratio, path in learned.items()} | any_budget_rows(args)
    for label, (ratio, path) in rows.items():
        model = load_at_budget(path, ratio)
        row = {"learned": accuracy(model, batches, desc=f"learned {label}")}
        results[label] = row
        if min(model.config.retention_layer_ratios()) >= 1.0:
            continue  # every layer keeps every token: each baseline would be the dense model again
        first_gate = model.config.retention_first_gated_layer
        if first_gate not in dense_by_first_gate:
            dense_by_first_gate[first_gate] = load_dense(args.dense, first_gate)
        dense = dense_by_first_gate[first_gate]
        copy_schedule(model.config, dense, ratio)
        for name in args.baselines:
            row[name] = accuracy(dense, batches, baseline=name, desc=f"{name} {label}")
    return results


def main(argv: list[str] | None = None, prog: str | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=["sst2", "imdb"], required=True)
    parser.add_argument("--dense", required=True, help="the fine-tuned dense checkpoint (baselines, dense accuracy)")
    parser.add_argument(
        "--learned", nargs="*", default=[], help="RATIO=CHECKPOINT of the retention models trained for one budget each"
    )
    parser.add_argument(
        "--any_budget",
        help="one checkpoint trained for a range of budgets (retention_ratio_range): measured at every --budgets "
        "value, alone or next to the per-budget --learned models",
    )
    parser.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=[1.0, 0.7, 0.5, 0.3, 0.2],
        help="the budgets at which --any_budget is measured",
    )
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over every batch and configuration")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N examples (smoke runs)")
    parser.add_argument(
        "--timing_examples",
        type=int,
        default=None,
        help="time and measure memory on the first N examples only (accuracy always uses every example)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["speed", "memory", "accuracy"])
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=list(BASELINES),
        choices=BASELINES,
        help="the training-free baselines scored at every budget (default: all; none: the models alone). They "
        "take most of the accuracy time: one pass each per row",
    )
    parser.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="onnxruntime: export the dense twin and every retention model to ONNX and time them in ONNX Runtime "
        "next to eager PyTorch; speed only (each export is checked against PyTorch on the first batch instead)",
    )
    parser.add_argument("--onnx_dir", help="keep the ONNX exports here (default: a temporary directory)")
    parser.add_argument("--output", required=True, help="directory for results.json, results.md and plots")
    args = parser.parse_args(argv)
    logging.set_verbosity_error()
    learned = parse_learned(args.learned)
    if not learned and args.any_budget is None:
        parser.error("nothing to measure: give --learned RATIO=CHECKPOINT ..., --any_budget CHECKPOINT, or both")
    for ratio in args.budgets:
        if not 0.0 < ratio <= 1.0:
            parser.error(f"--budgets: every budget must be in (0, 1], got {ratio}")
    if args.any_budget is not None and args.backend == "onnxruntime":
        parser.error("--any_budget is measured with the torch backend only (an export serves one budget)")

    tokenizer = AutoTokenizer.from_pretrained(args.dense)
    batches = make_batches(tokenizer, load_examples(args.dataset, args.limit), args.batch_size, args.max_length)
    results: dict[str, object] = {
        "command": "python -m retention_hf.benchmarks.run "
        + " ".join(shlex.quote(arg) for arg in (argv if argv is not None else sys.argv[1:])),
        "dataset": args.dataset,
        "examples": sum(len(b["labels"]) for b in batches),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "repeats": args.repeats,
        "machine": machine(),
        "schedules": {
            str(ratio): load_retention_model(path, retention_ratio=ratio).config.retention_layer_ratios()
            for ratio, path in learned.items()
        },
    }
    if args.any_budget is not None:
        budgets = sorted(set(args.budgets), reverse=True)
        any_config = AutoConfig.from_pretrained(args.any_budget)  # the schedules need the config, not the weights
        results["any_budget"] = {
            "checkpoint": args.any_budget,
            "budgets": budgets,
            "schedules": {str(ratio): any_config.retention_layer_ratios(ratio) for ratio in budgets},
        }
    timing_limit = min((n for n in (args.limit, args.timing_examples) if n), default=None)
    timing_batches = batches[: -(-timing_limit // args.batch_size)] if timing_limit else batches
    results["timing_examples"] = sum(len(b["labels"]) for b in timing_batches)
    onnx = args.backend == "onnxruntime"
    if "speed" not in args.skip:
        if onnx:
            results.update(run_onnx_speed(learned, timing_batches, args.repeats, args.onnx_dir))
        else:
            results.update(run_speed(args, learned, timing_batches))
    if "memory" not in args.skip and not onnx:
        results["memory_mb"] = run_memory(args, learned, timing_limit)
    if "accuracy" not in args.skip and not onnx:
        results["accuracy"] = run_accuracy(args, learned, batches)

    results["targets"] = onnx_target_checks(results) if onnx else report.target_checks(results)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=2))
    if onnx:
        (output / "results.md").write_text(onnx_table(results))
    else:
        report.write(results, output)
    print((output / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
