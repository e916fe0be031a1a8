"""See what a retention model keeps: per-token survival for one input, and budget curves for training runs.

* :func:`trace_retention` runs one text through the model in eval mode and records, for every input
  token, the layers that processed it (read from the ``kept_positions`` the model returns).
* :func:`render_html` / :func:`save_html` shade each token by the layer at which it was dropped.
* :func:`plot_heatmap` draws the same as a layers x tokens PNG.
* :func:`plot_layer_retention` and :func:`plot_budget_curve` plot a training run's per-layer keep ratios
  and quality against the realised keep ratio over several runs; :func:`plot_keep_ratio_curves` puts the
  realised training keep ratio of several runs next to their budget targets.
* :func:`position_profile` measures where in the text the kept tokens sit (a selection biased by position
  keeps much less of one part of the text than of another).

Plots need matplotlib (the ``examples`` extra).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class RetentionTrace:
    """Which layers processed which input token.

    Args:
        tokens: The input tokens, special tokens included.
        processed: ``processed[layer][token]`` is True when that layer processed the token.
        budget: The model's ``retention_ratio`` when traced.
    """

    tokens: list[str]
    processed: list[list[bool]]
    budget: float

    @property
    def num_layers(self) -> int:
        return len(self.processed)

    @property
    def depth(self) -> list[int]:
        """For each token, how many layers processed it (``num_layers``: it survived every layer)."""
        return [sum(layer[index] for layer in self.processed) for index in range(len(self.tokens))]

    @property
    def keep_ratio(self) -> float:
        """The share of the dense token-layer work this input cost."""
        return sum(self.depth) / (self.num_layers * len(self.tokens))


@torch.no_grad()
def trace_retention(model, tokenizer, text: str, text_pair: str | None = None, max_length: int = 512):
    """Run ``text`` (and ``text_pair``) through ``model`` in eval mode and record which layers kept each token."""
    if not hasattr(getattr(model, "config", None), "retention_ratio"):
        raise TypeError(f"trace_retention needs a retention model, got {type(model).__name__}")
    if not text:
        raise ValueError("trace_retention needs a non-empty text")
    was_training = model.training
    model.eval()
    encoded = tokenizer(text, text_pair, truncation=True, max_length=max_length, return_tensors="pt")
    device = next(model.parameters()).device
    outputs = model(**{key: value.to(device) for key, value in encoded.items()})
    model.train(was_training)
    length = encoded["input_ids"].shape[1]
    num_layers = model.config.num_hidden_layers
    if outputs.kept_positions is None:  # retention off: every layer processed every token
        processed = [[True] * length for _ in range(num_layers)]
    else:
        processed = []
        for positions in outputs.kept_positions:
            kept = set(positions[0][positions[0] >= 0].tolist())
            processed.append([index in kept for index in range(length)])
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
    budget = model.config.retention_ratio if model.config.retention_enabled else 1.0
    return RetentionTrace(tokens=tokens, processed=processed, budget=budget)


def _shade(depth: int, num_layers: int) -> str:
    """White for a token dropped before the first layer, dark blue for one that reached the last."""
    strength = depth / num_layers
    red, green, blue = (round(255 - strength * (255 - channel)) for channel in (33, 102, 172))
    return f"#{red:02x}{green:02x}{blue:02x}"


def render_html(trace: RetentionTrace, title: str = "Token retention") -> str:
    """A self-contained HTML page: every token shaded by how many layers processed it, with a legend."""
    num_layers = trace.num_layers
    spans = []
    for token, depth in zip(trace.tokens, trace.depth, strict=True):
        reached = "every layer" if depth == num_layers else f"layers 0-{depth - 1}" if depth else "no layer"
        color = "#fff" if depth > num_layers / 2 else "#000"
        spans.append(
            f'<span class="token" data-depth="{depth}" title="processed by {reached}" '
            f'style="background:{_shade(depth, num_layers)};color:{color}">{html.escape(token)}</span>'
        )
    legend = "".join(
        f'<span class="token" style="background:{_shade(depth, num_layers)};color:'
        f'{"#fff" if depth > num_layers / 2 else "#000"}">{depth}</span>'
        for depth in range(num_layers + 1)
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 60em; line-height: 2.2; }}
.token {{ padding: 0.2em 0.35em; margin: 0.1em; border-radius: 0.3em; border: 1px solid #ccc; }}
.legend {{ margin-top: 1.5em; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>Budget rho = {trace.budget:g}; this input cost {trace.keep_ratio:.3f} of the dense token-layer work.
Darker tokens were processed by more of the {num_layers} layers.</p>
<div id="tokens">{" ".join(spans)}</div>
<div class="legend">Layers that processed the token: {legend}</div>
</body>
</html>
"""


def save_html(trace: RetentionTrace, path: str | Path, title: str = "Token retention") -> Path:
    path = Path(path)
    path.write_text(render_html(trace, title), encoding="utf-8")
    return path


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        raise ImportError("plots need matplotlib: pip install 'retention-hf[examples]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(trace: RetentionTrace, path: str | Path, size: tuple[int, int] = (1200, 400), dpi: int = 100):
    """A layers x tokens PNG of exactly ``size`` pixels (width, height): dark where a layer processed a token."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    axes.imshow(
        [[float(kept) for kept in layer] for layer in trace.processed], aspect="auto", cmap="Blues", vmin=0, vmax=1
    )
    axes.set_ylabel("layer")
    axes.set_yticks(range(trace.num_layers))
    if len(trace.tokens) <= 80:  # beyond that the labels overlap
        axes.set_xticks(range(len(trace.tokens)), trace.tokens, rotation=90, fontsize=7)
    else:
        axes.set_xlabel("token position")
    axes.set_title(f"Tokens processed per layer (budget {trace.budget:g}, cost {trace.keep_ratio:.3f})")
    return _save(plt, figure, path, dpi=dpi)


def _save(plt, figure, path: str | Path, dpi: int | None = None) -> Path:
    """Lay out, write and close a figure (every plot here ends this way)."""
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return Path(path)


def _log_history(run: str | Path) -> list[dict]:
    """``log_history`` of a run directory (``trainer_state.json``) or of a ``trainer_state.json`` file."""
    path = Path(run)
    path = path / "trainer_state.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no trainer_state.json at {path}: pass a training output directory")
    return json.loads(path.read_text())["log_history"]


def plot_layer_retention(run: str | Path, path: str | Path):
    """Per-layer keep ratios (``keep_ratio_layer_{i}``) and the budget target over a training run's steps."""
    history = [entry for entry in _log_history(run) if "keep_ratio_layer_0" in entry]
    if not history:
        raise ValueError(f"{run} logged no keep_ratio_layer_* values: was it trained with RetentionTrainer?")
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.5))
    steps = [entry["step"] for entry in history]
    layers = sorted(int(key.rsplit("_", 1)[1]) for key in history[0] if key.startswith("keep_ratio_layer_"))
    for layer in layers:
        axes.plot(steps, [entry[f"keep_ratio_layer_{layer}"] for entry in history], label=f"layer {layer}")
    if "budget_target" in history[0]:
        axes.plot(steps, [entry["budget_target"] for entry in history], "k--", label="budget target")
    axes.set(xlabel="optimizer step", ylabel="keep ratio", ylim=(0, 1.05), title="Per-layer retention in training")
    axes.legend(fontsize=8, ncol=2)
    return _save(plt, figure, path)


def plot_keep_ratio_curves(
    runs: dict[str, str | Path | list[dict]], path: str | Path, title: str = "Realised keep ratio in training"
):
    """The realised training ``keep_ratio`` against the optimizer step for several runs (``{label: run}``, a run
    being a training output directory or its ``log_history``), each with its budget target dashed alike."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for label, run in runs.items():
        history = [entry for entry in (run if isinstance(run, list) else _log_history(run)) if "keep_ratio" in entry]
        if not history:
            raise ValueError(f"{run} logged no keep_ratio: was it trained with RetentionTrainer?")
        steps = [entry["step"] for entry in history]
        (line,) = axes.plot(steps, [entry["keep_ratio"] for entry in history], label=label)
        if "budget_target" in history[0]:
            axes.plot(steps, [entry["budget_target"] for entry in history], "--", color=line.get_color(), linewidth=0.8)
    axes.set(xlabel="optimizer step", ylabel="realised keep ratio (dashed: target)", ylim=(0, 1.05), title=title)
    axes.legend(fontsize=7, ncol=2)
    return _save(plt, figure, path)


def position_profile(
    kept_positions: torch.Tensor, attention_mask: torch.Tensor, bins: int = 5, skip_first: bool = True
) -> list[float]:
    """The share of each part of the text that a layer processed: the real tokens are cut into ``bins``
    equal parts by relative position, and each part's kept share is pooled over the batch.

    Args:
        kept_positions: One layer's ``kept_positions`` (``(batch, n)``, original positions, ``-1`` in padding).
        attention_mask: The input's ``(batch, seq)`` padding mask.
        bins: How many parts (5: fifths).
        skip_first: Leave out the first real token ([CLS] / <s>), which is always kept.
    """
    real = attention_mask.bool()
    lengths = real.sum(dim=1, keepdim=True)
    seq_len = real.shape[1]
    rank = real.long().cumsum(dim=1) - 1  # the position among the real tokens (left or right padding alike)
    slots = torch.where(kept_positions >= 0, kept_positions, seq_len)  # padding slots go to a scratch column
    kept = torch.zeros(real.shape[0], seq_len + 1, dtype=torch.bool, device=real.device)
    kept = kept.scatter(1, slots, True)[:, :seq_len] & real
    start = 1 if skip_first else 0
    span = (lengths - start).clamp(min=1)
    part = ((rank - start).clamp(min=0) * bins // span).clamp(max=bins - 1)
    counted = real & (rank >= start)
    shares = []
    for index in range(bins):
        members = counted & (part == index)
        total = int(members.sum())
        shares.append(float((kept & members).sum()) / total if total else float("nan"))
    return shares


def plot_budget_curve(runs: list[str | Path], path: str | Path, metric: str = "eval_accuracy"):
    """Quality against the realised keep ratio, one point per run (from each run's ``eval_results.json``)."""
    points = []
    for run in runs:
        results_file = Path(run) / "eval_results.json"
        if not results_file.is_file():
            raise FileNotFoundError(f"no eval_results.json in {run}")
        results = json.loads(results_file.read_text())
        if metric not in results:
            raise KeyError(f"{results_file} has no {metric!r}; it has {sorted(results)}")
        points.append((results.get("eval_keep_ratio", 1.0), results[metric], Path(run).name))
    points.sort()
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.plot([point[0] for point in points], [point[1] for point in points], "o-")
    for keep, value, name in points:
        axes.annotate(name, (keep, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set(xlabel="realised keep ratio (share of dense work)", ylabel=metric, title=f"{metric} against budget")
    return _save(plt, figure, path)
