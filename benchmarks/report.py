"""Markdown table and PNG plots from a benchmark ``results.json``."""

from __future__ import annotations

from pathlib import Path

import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _ratios(results: dict) -> list[float]:
    return sorted((float(r) for r in results["schedules"]), reverse=True)


def table(results: dict) -> str:
    lines = [
        f"{results['dataset']}: accuracy on {results['examples']} examples, speed and memory on the first "
        f"{results.get('timing_examples', results['examples'])}; batch {results['batch_size']}, max length "
        f"{results['max_length']}, {results['repeats']} interleaved repeats (medians), "
        f"{results['machine']['cpu_count']} CPU cores, torch {results['machine']['torch']}",
        "",
    ]
    header = ["configuration", "examples/s", "batch latency (ms)", "speed-up vs dense", "% of ideal speed-up"]
    rows = []
    speed = results.get("speed", {})
    memory = results.get("memory_mb", {})
    accuracy = results.get("accuracy", {})
    if memory:
        header.append("peak memory above model (MB)")
    if accuracy:
        header += ["accuracy", "random", "truncation", "attention"]
    names = ["stock", "dense", "rho=1.0"] + [f"rho={r}" for r in _ratios(results)]
    for name in names:
        row = [name]
        if speed:
            figures = speed[name]
            ideal = speed.get(f"ideal {name}")
            share = f"{figures['speedup_vs_dense'] / ideal['speedup_vs_dense']:.0%}" if ideal else ""
            row += [
                f"{figures['examples_per_second']:.1f}",
                f"{figures['median_batch_latency_ms']:.0f}",
                f"{figures['speedup_vs_dense']:.2f}x",
                share,
            ]
        else:
            row += ["", "", "", ""]
        if memory:
            row.append(f"{memory[name]:.0f}" if name in memory else "")
        if accuracy:
            if name == "dense":
                row += [f"{accuracy['dense']:.4f}", "", "", ""]
            elif name in accuracy:
                cells = accuracy[name]
                row += [f"{cells[k]['accuracy']:.4f}" for k in ("learned", "random", "truncation", "attention")]
            else:
                row += ["", "", "", ""]
        rows.append(row)
    if speed:
        for ratio in _ratios(results):
            figures = speed[f"ideal rho={ratio}"]
            rows.append(
                [
                    f"ideal rho={ratio}",
                    f"{figures['examples_per_second']:.1f}",
                    f"{figures['median_batch_latency_ms']:.0f}",
                    f"{figures['speedup_vs_dense']:.2f}x",
                    "100%",
                ]
                + [""] * (len(header) - 5)
            )
    lines.append("| " + " | ".join(header) + " |")
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if speed:
        lines += [
            "",
            f"Gate overhead at rho = 1 against stock transformers (median of interleaved pairs): "
            f"{results['gate_overhead_rho1_vs_stock']:+.1%}; retention off against stock: {results['dense_vs_stock']:+.1%}.",
        ]
    lines += ["", "Learned per-layer schedules (share of each example's tokens every layer processes):", ""]
    for ratio, schedule in results["schedules"].items():
        lines.append(f"- rho={ratio}: " + ", ".join(f"{value:.3f}" for value in schedule))
    return "\n".join(lines) + "\n"


def plots(results: dict, output: Path) -> list[Path]:
    written = []
    ratios = _ratios(results)
    accuracy = results.get("accuracy")
    if accuracy:
        figure, axis = plt.subplots(figsize=(5, 3.5))
        for name, style in [("learned", "o-"), ("attention", "s--"), ("truncation", "^--"), ("random", "x:")]:
            axis.plot(ratios, [accuracy[f"rho={r}"][name]["accuracy"] for r in ratios], style, label=name)
        axis.axhline(accuracy["dense"], color="gray", linestyle="-", linewidth=1, label="dense")
        axis.set(
            xlabel="budget rho (share of dense work)",
            ylabel="accuracy",
            title=f"{results['dataset']}: accuracy vs budget",
        )
        axis.invert_xaxis()
        axis.legend(fontsize=8)
        written.append(_save(figure, output / "accuracy_vs_budget.png"))
    speed = results.get("speed")
    if speed:
        figure, axis = plt.subplots(figsize=(5, 3.5))
        axis.plot(ratios, [speed[f"rho={r}"]["speedup_vs_dense"] for r in ratios], "o-", label="retention")
        axis.plot(ratios, [speed[f"ideal rho={r}"]["speedup_vs_dense"] for r in ratios], "s--", label="ideal limit")
        axis.axhline(1.0, color="gray", linewidth=1)
        axis.set(xlabel="budget rho", ylabel="throughput vs dense", title=f"{results['dataset']}: speed-up vs budget")
        axis.invert_xaxis()
        axis.legend(fontsize=8)
        written.append(_save(figure, output / "speedup_vs_budget.png"))
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for ratio, schedule in results["schedules"].items():
        axis.plot(range(len(schedule)), schedule, "o-", label=f"rho={ratio}")
    axis.set(xlabel="layer", ylabel="share of tokens processed", ylim=(0, 1.05), title="learned per-layer retention")
    axis.legend(fontsize=8)
    written.append(_save(figure, output / "layer_retention.png"))
    return written


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write(results: dict, output: Path) -> None:
    (output / "results.md").write_text(table(results))
    plots(results, output)
