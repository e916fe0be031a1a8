"""Accuracy of the learned gates and of the training-free baselines, at the same budgets and kept counts."""

from __future__ import annotations

import contextlib

import torch
from tqdm.auto import tqdm

from retention_hf.baselines import baseline_selection

from .data import model_inputs


def accuracy(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], baseline: str | None = None, desc=""):
    """Accuracy and realised keep ratio of ``model`` (optionally selecting tokens with a baseline)."""
    correct, total, keep = 0, 0, []
    selection = baseline_selection(model, baseline) if baseline else contextlib.nullcontext()
    with torch.inference_mode(), selection:
        for batch in tqdm(batches, desc=desc or "accuracy", leave=False):
            outputs = model(**model_inputs(batch))
            correct += int((outputs.logits.argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
            keep.append(outputs.keep_ratio)
    return {"accuracy": correct / total, "keep_ratio": float(torch.cat(keep).mean())}


def copy_schedule(source_config, target_model: torch.nn.Module, ratio: float) -> None:
    """Give ``target_model`` the budget and per-layer schedule of ``source_config`` (same kept counts)."""
    config = target_model.config
    if config.retention_first_gated_layer != source_config.retention_first_gated_layer:
        raise ValueError(
            f"the dense model gates from layer {config.retention_first_gated_layer}, the learned one from "
            f"layer {source_config.retention_first_gated_layer}: their kept counts would differ"
        )
    config.retention_enabled = True
    config.retention_ratio = source_config.retention_ratio
    config.retention_schedule = source_config.retention_schedule
    config.retention_learned_schedule = source_config.retention_learned_schedule
    config.set_retention_budget(ratio)
