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


def every_position(attention_mask: torch.Tensor, num_layers: int) -> tuple[torch.Tensor, ...]:
    """The ``kept_positions`` of a forward pass that dropped nothing: every real position at every layer, ``-1``
    in padding. A top-k step runs dense at a budget of 1 (the start of the budget warm-up, or a sampled budget of
    1), and its hidden states are then distilled at every real token."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).expand_as(attention_mask)
    return (positions.masked_fill(attention_mask == 0, -1),) * num_layers


def attention_rollout(
    attentions: tuple[torch.Tensor, ...], attention_mask: torch.Tensor, read_positions: str = "first"
) -> tuple[torch.Tensor, ...]:
    """How much the outputs the head reads draw on each token at each layer's input (attention rollout).

    Abnar and Zuidema (2020): with every layer's head-averaged attention mixed with the residual,
    ``A'_l = (A_l + I) / 2``, the share of output ``i`` that flows from token ``j`` at the input of layer ``l`` is
    ``(A'_{L-1} ... A'_l)[i, j]``. The head reads the first token (``read_positions="first"``: sequence
    classification) or every real token (``"all"``: token-level heads, averaged over them).

    Args:
        attentions: a dense forward's attention probabilities, one ``(batch, heads, seq, seq)`` per layer.
        attention_mask: ``(batch, seq)`` padding mask.

    Returns:
        One ``(batch, seq)`` importance per layer, the input of layer ``l`` at index ``l``; each row sums to 1.
    """
    if read_positions not in ("first", "all"):
        raise ValueError(f"read_positions must be 'first' or 'all', got {read_positions!r}")
    real = attention_mask.to(attentions[0].device, torch.float32)
    if read_positions == "first":
        flow = torch.zeros_like(real)
        flow[:, 0] = 1.0
    else:
        flow = real / real.sum(dim=1, keepdim=True).clamp(min=1.0)
    importance = []
    for probabilities in reversed(attentions):
        mixed = probabilities.float().mean(dim=1)
        flow = 0.5 * (torch.bmm(flow.unsqueeze(1), mixed).squeeze(1) + flow)
        importance.append(flow * real)
    return tuple(reversed(importance))


def answer_importance(
    start_logits: torch.Tensor, end_logits: torch.Tensor, attention_mask: torch.Tensor, num_layers: int
) -> tuple[torch.Tensor, ...]:
    """The teacher's answer distribution as every gate's ranking target (extractive QA): ``(batch, seq)``, the mean
    of ``softmax(start_logits)`` and ``softmax(end_logits)`` over each row's real tokens, once per layer.

    Attention rollout ranks the tokens the whole output draws on; a QA head reads two positions, and a token it
    reads is lost when a gate drops it before the last layers (a restored token carries the representation it
    had when it was dropped). This target puts the answer's boundaries, as the dense model sees them, at the top of
    every gate's ranking, so the gates learn to keep them; the rest of the ranking is left to the task gradient.
    It needs no label, so windows without the answer learn the teacher's runner-up candidates.
    """
    mask = attention_mask.bool()
    probabilities = [
        F.softmax(logits.float().masked_fill(~mask, -1e4), dim=-1) for logits in (start_logits, end_logits)
    ]
    return ((probabilities[0] + probabilities[1]) / 2 * mask,) * num_layers


def tagged_importance(
    logits: torch.Tensor, outside_label: int, attention_mask: torch.Tensor, num_layers: int
) -> tuple[torch.Tensor, ...]:
    """The teacher's tagged tokens as every gate's ranking target (token classification): ``(batch, seq)``, the
    probability the teacher gives each real token of any label but ``outside_label`` (the ``"O"`` of BIO tagging),
    normalised over the row's real tokens, once per layer.

    A tagger reads every position, but the positions it labels as something are few (an entity, an answer) and
    are the ones a gate must keep: a dropped token is labelled from the representation it had when it was
    dropped. This is :func:`answer_importance` for a token-classification head.
    """
    mask = attention_mask.bool()
    tagged = (1.0 - F.softmax(logits.float(), dim=-1)[..., outside_label]) * mask
    return (tagged / tagged.sum(dim=1, keepdim=True).clamp(min=1e-12),) * num_layers


_EXCLUDED = -1e9  # the logit of a slot a gate cannot drop


def ranking_distillation_loss(
    gate_scores: tuple[torch.Tensor | None, ...],
    gate_positions: tuple[torch.Tensor | None, ...],
    importance: tuple[torch.Tensor, ...],
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-example ``(batch,)`` loss that teaches every gate the teacher's ranking of the tokens it chooses from.

    ``gate_scores`` and ``gate_positions`` are a retention forward's (one entry per layer, ``None`` where no
    gate scored), ``importance`` the teacher's per-layer token importance (:func:`attention_rollout`). At
    each gate, over the slots it can drop (``gate_positions >= 0``), this is the KL divergence from the
    teacher's ``softmax(log(importance) / temperature)`` (at the gate's layer, at the slots' original
    positions) to ``softmax(scores)``. It depends only on differences of scores, so it shapes the ranking and
    leaves the level (how many tokens pass a Hard-Concrete gate) to the budget. Averaged over the gates
    that scored; an example with fewer than two candidates at a gate contributes 0 there.
    """
    if not len(gate_scores) == len(gate_positions) == len(importance):
        raise ValueError(
            f"ranking distillation needs one entry per layer on every side: got {len(gate_scores)} score and "
            f"{len(gate_positions)} position entries, {len(importance)} importance tensors"
        )
    per_gate = []
    for scores, positions, layer_importance in zip(gate_scores, gate_positions, importance, strict=True):
        if scores is None:
            continue
        candidate = positions >= 0
        usable = (candidate.sum(dim=1) >= 2).unsqueeze(1)
        target = layer_importance.gather(1, positions.clamp(min=0)).clamp(min=1e-12).log() / temperature
        # a large finite fill rather than -inf: the non-candidates get probability 0 and no NaN reaches a gradient
        target_log_probs = F.log_softmax(target.masked_fill(~candidate, _EXCLUDED), dim=-1)
        student_log_probs = F.log_softmax(scores.float().masked_fill(~candidate, _EXCLUDED), dim=-1)
        divergence = (target_log_probs.exp() * (target_log_probs - student_log_probs)).sum(dim=1)
        per_gate.append(divergence * usable.squeeze(1))
    if not per_gate:
        return importance[0].new_zeros(importance[0].shape[0])
    return torch.stack(per_gate, dim=1).mean(dim=1)
