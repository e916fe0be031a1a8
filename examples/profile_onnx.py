#!/usr/bin/env python
"""Where ONNX Runtime spends its time in exported graphs: total node time per operator type.

Exports each checkpoint (the first one also as its stock dense twin), runs the same IMDb batches through
each graph with ONNX Runtime's profiler on, and writes a markdown table of milliseconds per batch by
operator type:

    python examples/profile_onnx.py --checkpoints 0.5=runs/bench-sst2/rho0.5 0.3=runs/bench-sst2/rho0.3 \\
        --output results/onnx/imdb/profile.md
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import onnx
import onnxruntime
import torch
from transformers import AutoTokenizer

from retention_hf.benchmarks.data import load_examples, make_batches, model_inputs
from retention_hf.benchmarks.models import load_retention_model
from retention_hf.benchmarks.speed import stock_twin
from retention_hf.export import as_int64, to_onnx


def profile(path: Path, batches, warmup: int = 1) -> dict[str, float]:
    """Milliseconds per batch by operator type (the batches after ``warmup`` ones). ONNX Runtime's trace is
    written beside the graph (a temporary folder), not into the working directory, and deleted once read."""
    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix("")) + "_profile"
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    for batch in batches[:warmup]:
        session.run(None, {name: as_int64(model_inputs(batch)[name]) for name in names})
    for batch in batches[warmup:]:
        session.run(None, {name: as_int64(model_inputs(batch)[name]) for name in names})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    runs = [event for event in events if event.get("name") == "model_run"]
    start_us = runs[warmup]["ts"] if len(runs) > warmup else 0
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["ts"] >= start_us:
            totals[event["args"].get("op_name", "?")] += event["dur"]
    count = len(batches) - warmup
    table = {name: micro / 1000 / count for name, micro in totals.most_common()}
    # the run's wall time besides its nodes: scheduling, allocation of run-time shapes, thread hand-offs
    wall = sum(run["dur"] for run in runs[warmup:]) / 1000 / count
    table[OUTSIDE] = wall - sum(table.values())
    return table


OUTSIDE = "(run time outside the nodes)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", required=True, help="RATIO=CHECKPOINT")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    checkpoints = dict(value.split("=", 1) for value in args.checkpoints)
    first = next(iter(checkpoints.values()))
    batches = make_batches(
        AutoTokenizer.from_pretrained(first), load_examples("imdb", args.examples), args.batch_size, args.max_length
    )
    models = {"dense": stock_twin(load_retention_model(first))}
    models.update({f"rho={r}": load_retention_model(p, retention_ratio=float(r)) for r, p in checkpoints.items()})
    tables, node_counts = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, model in models.items():
            path = to_onnx(model, Path(scratch) / name.replace("=", ""))
            node_counts[name] = len(onnx.load(str(path)).graph.node)
            tables[name] = profile(path, batches)
    operators = sorted(
        {op for table in tables.values() for op in table if op != OUTSIDE}, key=lambda op: -tables["dense"].get(op, 0)
    )
    operators.append(OUTSIDE)
    lines = [
        f"ONNX Runtime node time per batch (ms) by operator type: IMDb, {args.examples} examples, batch "
        f"{args.batch_size}, max length {args.max_length}, {torch.get_num_threads()} threads, first batch not counted.",
        "",
        "| operator | " + " | ".join(tables) + " |",
        "| --- |" + " --- |" * len(tables),
    ]
    for op in operators:
        lines.append(f"| {op} | " + " | ".join(f"{table.get(op, 0):.1f}" for table in tables.values()) + " |")
    lines.append("| **run time** | " + " | ".join(f"**{sum(table.values()):.1f}**" for table in tables.values()) + " |")
    nodes = {name: sum(table.values()) - table[OUTSIDE] for name, table in tables.items()}
    lines.append("| nodes only | " + " | ".join(f"{value:.1f}" for value in nodes.values()) + " |")
    lines.append("| node count | " + " | ".join(str(node_counts[name]) for name in tables) + " |")
    command = "python examples/profile_onnx.py --checkpoints " + " ".join(args.checkpoints)
    lines += ["", f"Command: `{command} --output {args.output}`"]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
