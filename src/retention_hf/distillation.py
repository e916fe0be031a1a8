"""Knowledge distillation from a dense teacher: per-example KL divergence between softened outputs.

With a fine-tuned dense model as the teacher, the retention student learns to reproduce the dense
predictions from fewer tokens (the usual recipe of token-pruning work). Works for every head:
sequence logits ``(batch, classes)``, token logits ``(batch, seq, classes)`` and extractive-QA
start/end logits ``(batch, seq)``.
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
