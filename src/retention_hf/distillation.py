"""Knowledge distillation from a dense teacher: per-example KL divergence between softened outputs.

With a fine-tuned dense model as the teacher, the retention student learns to reproduce the dense
predictions from fewer tokens (the usual recipe of token-pruning work). Works for every head:
sequence logits ``(batch, classes)``, token logits ``(batch, seq, classes)`` and extractive-QA
start/end logits ``(batch, seq)``. :func:`hidden_state_distillation_loss` adds the layers' outputs for the
tokens that top-k selection kept.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) over the last dimension, scaled by T^2 (Hinton et al., 2015)."""
    teacher_log_probs = F.log_softmax(teacher.float() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student.float() / temperature, dim=-1)
    divergence = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=-1)
    return divergence * temperature**2


def distillation_loss(student, teacher, attention_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example distillation loss ``(batch,)`` for any retention head's outputs."""
    if getattr(student, "start_logits", None) is not None:
        mask = attention_mask.bool()
        masked = [
            (s.masked_fill(~mask, -1e4), t.masked_fill(~mask, -1e4))
            for s, t in ((student.start_logits, teacher.start_logits), (student.end_logits, teacher.end_logits))
        ]
        return sum(_kl(s, t, temperature) for s, t in masked) / 2
    divergence = _kl(student.logits, teacher.logits, temperature)
    if divergence.dim() == 2:  # token classification: average over each example's real tokens
        mask = attention_mask.to(divergence.dtype)
        return (divergence * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return divergence


def hidden_state_distillation_loss(
    student_hidden_states: tuple[torch.Tensor, ...],
    kept_positions: tuple[torch.Tensor, ...],
    teacher_hidden_states: tuple[torch.Tensor, ...],
) -> torch.Tensor:
    """Per-example ``(batch,)`` mean squared error between every layer's output for the kept tokens and the
    dense teacher's output of the same layer at the same original positions.

    ``student_hidden_states`` are a compacted retention forward's (the input of the first layer, then one
    ``(batch, n_l, hidden)`` entry per layer), ``kept_positions`` its ``(batch, n_l)`` original positions
    (-1 for an empty slot) and ``teacher_hidden_states`` a dense forward's (``(batch, seq, hidden)``, the
    embeddings first). Each layer's error is averaged over the hidden size and the example's kept tokens,
    then over the layers.
    """
    if (
        len(student_hidden_states) != len(teacher_hidden_states)
        or len(kept_positions) != len(student_hidden_states) - 1
    ):
        raise ValueError(
            f"hidden-state distillation needs one hidden state per layer and the input on both sides, and the kept "
            f"positions of every layer: got {len(student_hidden_states)} student and {len(teacher_hidden_states)} "
            f"teacher hidden states, {len(kept_positions)} position tensors"
        )
    per_layer = []  # a merged slot (``retention_merge_dropped``) sits after the kept positions: not distilled
    for student, positions, teacher in zip(
        student_hidden_states[1:], kept_positions, teacher_hidden_states[1:], strict=True
    ):
        valid = positions >= 0
        index = positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, teacher.shape[-1])
        target = teacher.gather(1, index)
        student = student[:, : positions.shape[1]]
        error = (student.float() - target.float()).pow(2).mean(dim=-1) * valid
        per_layer.append(error.sum(dim=1) / valid.sum(dim=1).clamp(min=1))
    return torch.stack(per_layer, dim=1).mean(dim=1)
