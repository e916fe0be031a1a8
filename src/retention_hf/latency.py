"""Choose a budget from a latency target, measured on the machine that will serve the model.

The speed a budget buys depends on the hardware, the thread count, the batch size and the text lengths,
so no table can say which budget meets "20 ms per batch" on a user's server. :func:`budget_for_latency`
measures it there, on the user's own sample texts.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from .configuration_retention import RetentionConfig


logger = logging.getLogger(__name__)

BUDGET_STEP = 0.05


def candidate_budgets(config: RetentionConfig, step: float = BUDGET_STEP) -> list[float]:
    """Budgets from 1.0 down in steps of ``step``, as far as the model's ungated layers allow (ascending)."""
    floor = config.retention_first_gated_layer / config.num_hidden_layers  # type: ignore[attr-defined]
    count = int(round(1.0 / step))
    return [round(index * step, 10) for index in range(1, count + 1) if index * step > floor + 1e-9]


def _batch_latency_ms(call: Callable[[], object], repeats: int, device: torch.device | None = None) -> float:
    """Median wall time of ``call`` over ``repeats`` runs, after one untimed run, in milliseconds; on an
    accelerator each run waits for its kernels (``torch.cuda.synchronize`` and its kin)."""
    backend = None if device is None or device.type == "cpu" else getattr(torch, device.type, None)

    def synchronize() -> None:
        if backend is not None and hasattr(backend, "synchronize"):
            backend.synchronize()

    call()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def budget_for_latency(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    max_ms: float,
    *,
    budgets: Sequence[float] | None = None,
    repeats: int = 5,
    max_length: int | None = None,
) -> float:
    """The largest budget at which ``model`` runs ``texts``, as one padded batch, within ``max_ms`` on this machine.

    Each probed budget is timed as the median of ``repeats`` forward passes (after one warm-up pass). Latency
    falls as the budget falls, so the search is a bisection over ``budgets`` (default: 1.0 down to the lowest
    reachable budget in steps of 0.05): five to seven budgets are timed. Use texts and a batch size like those the
    model will serve, and pass the result per call (``model(**batch, retention_ratio=...)``) or set it as
    ``model.config.retention_ratio``.

    Raises ``ValueError`` when even the smallest budget misses ``max_ms``, with the latency it measured there.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, RetentionConfig):
        raise TypeError(f"budget_for_latency needs a retention model, got {type(model).__name__}")
    if not max_ms > 0:
        raise ValueError(f"max_ms must be > 0, got {max_ms!r}")
    if isinstance(texts, str) or not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError("texts must be a non-empty list of strings (a batch like the ones the model will serve)")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not config.retention_enabled or config.retention_inference_selection != "topk":
        raise ValueError(
            "budget_for_latency needs retention on with top-k selection: with retention off or threshold selection "
            "the budget does not change the computation"
        )
    grid = sorted(set(float(value) for value in (budgets if budgets is not None else candidate_budgets(config))))
    if not grid:
        raise ValueError("budgets is empty: give at least one budget to try")
    for value in grid:
        config.retention_layer_ratios(value)  # a budget outside (0, 1] or below the ungated layers fails here
    device = next(model.parameters()).device
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    batch = {name: tensor.to(device) for name, tensor in batch.items()}
    was_training = model.training
    model.eval()
    measured: dict[float, float] = {}

    def latency(budget: float) -> float:
        if budget not in measured:
            with torch.no_grad():
                measured[budget] = _batch_latency_ms(lambda: model(**batch, retention_ratio=budget), repeats, device)
            logger.info(f"retention_ratio={budget}: {measured[budget]:.2f} ms per batch of {len(texts)}")
        return measured[budget]

    try:
        low, high = 0, len(grid) - 1  # invariant: every budget above grid[high] misses (none known yet)
        if latency(grid[low]) > max_ms:
            raise ValueError(
                f"no budget down to {grid[low]} meets max_ms={max_ms}: a batch of {len(texts)} texts takes "
                f"{measured[grid[low]]:.2f} ms at retention_ratio={grid[low]} on this machine"
            )
        if latency(grid[high]) <= max_ms:
            return grid[high]
        while high - low > 1:  # grid[low] meets the target, grid[high] misses it
            middle = (low + high) // 2
            low, high = (middle, high) if latency(grid[middle]) <= max_ms else (low, middle)
        return grid[low]
    finally:
        model.train(was_training)


__all__ = ["budget_for_latency", "candidate_budgets"]
