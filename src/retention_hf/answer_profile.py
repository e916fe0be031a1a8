"""Where extractive QA loses its answers under a budget: the layer at which the gold answer's tokens were dropped.

A retention QA model restores every dropped token before its output layer, but a restored token carries the
representation it had when it was dropped. An answer dropped after the first layers is still found; one
dropped early usually is not. :func:`answer_survival` runs the model over the eval windows and records, for every
question, how many leading layers processed all the tokens of a gold answer (the best window and the best
answer count); :func:`answer_loss_profile` groups the questions by that layer and scores each group with the
predictions of the same model, so a table shows how much of the F1 loss comes from answers dropped at each
layer, and how many answers no window held whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import evaluate
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from .metrics import load_metric


CUT_BY_WINDOWS = -1  # no window holds a gold answer whole


def answer_positions(offsets: Sequence[tuple[int, int] | None], start: int, end: int) -> list[int] | None:
    """The window positions of the tokens that overlap the answer's characters ``[start, end)``, or ``None``
    when the window does not hold the whole answer or no token overlaps it (context-only ``offsets``, ``None``
    outside the context)."""
    inside = [i for i, offset in enumerate(offsets) if offset is not None]
    if not inside or offsets[inside[0]][0] > start or offsets[inside[-1]][1] < end:
        return None
    return [i for i in inside if offsets[i][0] < end and offsets[i][1] > start] or None  # None: no token (blank)


def layers_holding(kept_positions: Sequence[set[int]], positions: Sequence[int]) -> int:
    """How many leading layers processed every one of ``positions`` (``kept_positions``: one set per layer)."""
    for layer, kept in enumerate(kept_positions):
        if not kept.issuperset(positions):
            return layer
    return len(kept_positions)


@torch.no_grad()
def answer_survival(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Dataset,
    features: Dataset,
    batch_size: int = 32,
) -> dict[str, int]:
    """``{question id: layers}``: the most leading layers that processed all the tokens of one gold answer in one
    window of the question, or :data:`CUT_BY_WINDOWS`. ``features`` are :func:`~retention_hf.question_answering.
    prepare_eval_features` windows (with ``example_id`` and ``offset_mapping``); the model runs in eval mode at
    its configured budget, on its device."""
    if not model.config.retention_enabled:
        raise ValueError("answer_survival needs a model with retention on (config.retention_enabled is False)")
    answers = {row["id"]: row["answers"] for row in examples}
    inputs = features.remove_columns(["example_id", "offset_mapping"])
    collate = DataCollatorWithPadding(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    survival = dict.fromkeys(answers, CUT_BY_WINDOWS)
    try:
        for first in range(0, len(features), batch_size):
            rows = range(first, min(first + batch_size, len(features)))
            batch = collate([inputs[i] for i in rows])
            kept = model(**{key: value.to(device) for key, value in batch.items()}).kept_positions
            for row, index in enumerate(rows):
                feature = features[index]
                question = feature["example_id"]
                layers = [set(layer[row][layer[row] >= 0].tolist()) for layer in kept]
                for start, text in zip(answers[question]["answer_start"], answers[question]["text"], strict=True):
                    positions = answer_positions(feature["offset_mapping"], start, start + len(text))
                    if positions is not None:
                        survival[question] = max(survival[question], layers_holding(layers, positions))
    finally:
        model.train(was_training)
    return survival


def _squad_scores(squad: evaluate.EvaluationModule, rows: list[dict], answers: dict[str, str]) -> dict[str, float]:
    """EM / F1 of ``answers`` (``{id: text}``) on the questions ``rows``."""
    return squad.compute(
        predictions=[{"id": row["id"], "prediction_text": answers[row["id"]]} for row in rows],
        references=[{"id": row["id"], "answers": row["answers"]} for row in rows],
    )


def answer_loss_profile(
    survival: dict[str, int],
    predictions: dict[str, str],
    examples: Dataset,
    num_layers: int,
    reference: dict[str, str] | None = None,
) -> list[dict[str, object]]:
    """One row per group of questions (cut by the windows, answer first dropped before layer ``l``, answer kept
    by every layer), with the number of questions, their share and the EM / F1 of ``predictions`` (``{id: answer
    text}``) on them, and the F1 of ``reference`` predictions on them when given (the same weights with retention
    off, or the dense model), so the F1 each group loses can be read off. Empty groups are left out."""
    squad = load_metric("squad")
    groups: dict[int, list[dict]] = {}
    for row in examples:
        groups.setdefault(survival[row["id"]], []).append(row)
    profile = []
    for layers in sorted(groups):
        rows = groups[layers]
        scores = _squad_scores(squad, rows, predictions)
        if layers == CUT_BY_WINDOWS:
            group = "no window holds the answer whole"
        elif layers == num_layers:
            group = "answer kept by every layer"
        else:
            group = f"answer dropped before layer {layers}"
        profile.append(
            {
                "group": group,
                "layers_holding_answer": layers,
                "questions": len(rows),
                "share": len(rows) / len(examples),
                "exact_match": scores["exact_match"],
                "f1": scores["f1"],
                **({"f1_reference": _squad_scores(squad, rows, reference)["f1"]} if reference is not None else {}),
            }
        )
    return profile
