#!/usr/bin/env python
"""The README's main job: dense vs retention fine-tuning of all-MiniLM-L6-v2 on SST-2, side by side.

Two stages, both on the SST-2 subset shipped in ``data/sst2`` (8,000 sentences, see data/README.md):

1. dense: fine-tune all-MiniLM-L6-v2 for one epoch with retention off;
2. retention: start from that dense model and fine-tune one more epoch with ``RetentionTrainer`` at the
   budget ``--retention_ratio`` (default 0.5), with the default recipe: every step trains with exactly the
   inference-time selection (the decay schedule's top-k, tokens physically removed), the scorers learning
   through a straight-through gradient, while the target is annealed from 1.0 to the budget over the first
   30 % of the steps; from there on every step spends exactly the budget. The dense model of stage 1 is the
   teacher: half the loss is the distillation from it.

Both are evaluated on the full SST-2 dev set (872 sentences). The table reports dev accuracy, the
realised share of the dense work, and eval throughput: the retention model against the same weights
with retention off, measured in the same run.

    python examples/main_job.py                       # about 6 minutes on 2 CPU cores
    python examples/main_job.py --retention_ratio 0.3 --output_dir runs/main-r30

The retention checkpoint is saved to ``<output_dir>/retention`` and loads with
``AutoModelForSequenceClassification.from_pretrained`` (after ``import retention_hf``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from run_classification import main as run_classification


# One epoch over the 8k subset, batch 32, for each stage.
RECIPE = [
    "--dataset=sst2",
    "--num_train_epochs=1",
    "--per_device_train_batch_size=32",
    "--per_device_eval_batch_size=64",
    "--warmup_steps=0.06",
    "--weight_decay=0.01",
    "--logging_steps=25",
    "--save_strategy=no",
    "--eval_strategy=no",
    "--report_to=none",
    "--seed=0",
]
DENSE = ["--retention=false", "--learning_rate=5e-5"]
# The retention stage keeps RetentionTrainingArguments' defaults (the recipe chosen on a validation split carved
# out of SST-2 train): see the README's "Training recipe".
RETENTION = ["--learning_rate=2e-5"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retention_ratio", type=float, default=0.5, help="budget rho in (0, 1]")
    parser.add_argument("--output_dir", default="runs/main", help="where both runs write their checkpoints")
    parser.add_argument("--max_train_samples", type=int, default=None, help="train on fewer sentences (smoke runs)")
    parser.add_argument(
        "--max_eval_samples", type=int, default=None, help="evaluate on the first N dev sentences (smoke runs)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    output = Path(args.output_dir)
    limits = ("max_train_samples", "max_eval_samples")
    extra = [f"--{name}={getattr(args, name)}" for name in limits if getattr(args, name) is not None]
    start = time.perf_counter()
    print("== 1/2: dense fine-tune (retention off)")
    dense = run_classification([*RECIPE, *DENSE, *extra, f"--output_dir={output / 'dense'}"])
    print(f"== 2/2: retention fine-tune from the dense model (rho = {args.retention_ratio})")
    retention = run_classification(
        [
            *RECIPE,
            *RETENTION,
            *extra,
            f"--model_name_or_path={output / 'dense'}",
            f"--retention_ratio={args.retention_ratio}",
            f"--output_dir={output / 'retention'}",
        ]
    )
    minutes = (time.perf_counter() - start) / 60

    rows = [
        ("dense MiniLM-L6", dense["eval_accuracy"], 1.0, dense["eval_examples_per_second"], "1.00x"),
        (
            f"retention rho={args.retention_ratio}",
            retention["eval_accuracy"],
            retention["eval_keep_ratio"],
            retention["eval_examples_per_second"],
            f"{retention['eval_speedup']:.2f}x",
        ),
    ]
    evaluated = 872 if args.max_eval_samples is None else min(args.max_eval_samples, 872)  # SST-2 dev: 872
    table = [
        f"| model | SST-2 dev accuracy ({evaluated}) | share of dense work | eval examples/s | eval speed-up vs retention off |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {name} | {acc:.4f} | {keep:.3f} | {speed:.1f} | {ratio} |" for name, acc, keep, speed, ratio in rows],
    ]
    summary = "\n".join(table)
    relative = retention["eval_accuracy"] / dense["eval_accuracy"]
    print(f"\n{summary}\n\nretention keeps {relative:.1%} of dense accuracy; total wall time {minutes:.1f} min")
    print(f"retention checkpoint: {output / 'retention'} (AutoModelForSequenceClassification.from_pretrained)")
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.md").write_text(summary + "\n")
    (output / "summary.json").write_text(
        json.dumps({"dense": dense, "retention": retention, "minutes": minutes}, indent=2)
    )


if __name__ == "__main__":
    main()
