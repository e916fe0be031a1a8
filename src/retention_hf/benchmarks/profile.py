"""Where the time of a retention forward goes: torch profiler tables for dense and retention on real batches.

Runs a few batches of the benchmark data through the same weights with retention off and at one budget,
and prints the profiler's top operators by self CPU time for each: the selection's own operators (sort,
gather, the scorers' small matmuls) show up next to the encoder's linear layers and attention.

    python -m retention_hf.benchmarks.profile --dataset imdb --checkpoint runs/bench-imdb/rho0.3 --batches 4
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from transformers import AutoTokenizer
from transformers.utils import logging

from .data import load_examples, make_batches, model_inputs
from .models import load_retention_model, set_configuration


def profile_configuration(model, batches, configuration: str, rows: int) -> float:
    set_configuration(model, configuration)
    with torch.inference_mode():
        model(**model_inputs(batches[0]))  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for batch in batches:
                with record_function(configuration):
                    model(**model_inputs(batch))
    averages = profiler.key_averages()
    print(f"\n== {configuration}: top operators by self CPU time")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows))
    return sum(event.self_cpu_time_total for event in averages) / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["sst2", "imdb"], required=True)
    parser.add_argument("--checkpoint", required=True, help="a retention checkpoint (its budget is profiled)")
    parser.add_argument("--ratio", type=float, default=None, help="budget to profile (default: the checkpoint's)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--rows", type=int, default=15, help="operators per table")
    args = parser.parse_args(argv)
    logging.set_verbosity_error()
    model = load_retention_model(args.checkpoint)
    ratio = args.ratio or model.config.retention_ratio
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    examples = load_examples(args.dataset, args.batches * args.batch_size)
    batches = make_batches(tokenizer, examples, args.batch_size, args.max_length)
    dense = profile_configuration(model, batches, "dense", args.rows)
    retention = profile_configuration(model, batches, f"rho={ratio}", args.rows)
    print(f"\nprofiled CPU time: dense {dense:.2f} s, rho={ratio} {retention:.2f} s ({dense / retention:.2f}x)")


if __name__ == "__main__":
    main()
