"""Training-free token-selection baselines behind the same selection interface as the learned gates.

A baseline replaces every scorer of a retention model with a heuristic scorer. Everything else (the
budget, the per-layer kept counts, protected tokens, the gather) is the model's own code, so a baseline
keeps exactly as many tokens per layer as the learned gates would, and only *which* tokens differ:

* ``random``: uniform random scores (seeded);
* ``truncation``: keep the first tokens;
* ``attention``: the PoWER-BERT / LTP importance, the attention a token receives in the previous layer,
  summed over heads and (real) queries. Needs eager attention; a gate before layer 0 has no previous
  layer and falls back to truncation;
* ``cls_attention``: EViT's importance (Liang et al., 2022), the attention the first token ([CLS] / ``<s>``,
  the one the classification head reads) pays each token in the layer the gate feeds, averaged over heads.
  It projects the gate's input with that layer's own query and key weights (the first token's query and
  every token's key: about a twelfth of that layer's work on the gate's input tokens, more against the shorter
  layer that follows), needs no attention probabilities, so it
  runs under any attention implementation, and it ranks at every gate, the one before layer 0 included.

Use them on a fine-tuned dense model converted to retention::

    model = RetentionBertForSequenceClassification.from_pretrained(dense_dir, retention_ratio=0.3,
                                                                   attn_implementation="eager").eval()
    with baseline_selection(model, "attention"):
        outputs = model(**batch)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .gates import received_attention


BASELINES = ("random", "truncation", "attention", "cls_attention")
# Every baseline scorer takes the gates' call, query_mask included, and ranks without the query: what it stands
# in for may be a query-aware gate.


class RandomScorer(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    def forward(
        self, hidden_states: torch.Tensor, alive: torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.rand(alive.shape, generator=self.generator).to(hidden_states.device)


class TruncationScorer(nn.Module):
    """Earlier slots score higher; kept tokens stay in order, so this keeps the first tokens."""

    def forward(
        self, hidden_states: torch.Tensor, alive: torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return -torch.arange(alive.shape[1], device=alive.device, dtype=torch.float32).expand(alive.shape)


class AttentionScorer(nn.Module):
    """Attention received in the previous layer, summed over heads and real queries."""

    def __init__(self, previous_attention: nn.Module):
        super().__init__()
        self.captured: torch.Tensor | None = None
        self.hook = previous_attention.register_forward_hook(self._capture)

    def _capture(self, module, args, output) -> None:
        self.captured = output[1]  # eager attention returns (context, probabilities)

    def forward(
        self, hidden_states: torch.Tensor, alive: torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.captured is None or self.captured.shape[-1] != alive.shape[1]:
            raise RuntimeError("attention baseline: no attention probabilities from the previous layer")
        queries = alive.unsqueeze(1).unsqueeze(-1).to(self.captured.dtype)  # (batch, 1, query, 1)
        return (self.captured * queries).sum(dim=(1, 2)).float()


class ClsAttentionScorer(nn.Module):
    """The attention the first token would pay each live token in the layer this gate feeds, mean over heads."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.attention = (attention,)  # a tuple: the layer's weights, not a submodule of the baseline

    def forward(
        self, hidden_states: torch.Tensor, alive: torch.Tensor, query_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        (attention,) = self.attention
        return received_attention(
            hidden_states, alive, attention.query, attention.key, attention.num_attention_heads, attention.scaling
        )


def _baseline_scorers(model: nn.Module, name: str, seed: int) -> dict[str, nn.Module]:
    encoder = model.base_model.encoder
    if name == "attention" and model.config._attn_implementation != "eager":
        raise ValueError(
            "the attention baseline reads attention probabilities: load the model with attn_implementation='eager'"
        )
    scorers: dict[str, nn.Module] = {}
    for key in encoder.gates:
        layer = int(key)
        if name == "random":
            scorers[key] = RandomScorer(seed + layer)
        elif name == "cls_attention":
            scorers[key] = ClsAttentionScorer(encoder.layer[layer].attention.self)
        elif name == "truncation" or layer == 0:
            scorers[key] = TruncationScorer()
        else:
            scorers[key] = AttentionScorer(encoder.layer[layer - 1].attention.self)
    return scorers


@contextlib.contextmanager
def baseline_selection(model: nn.Module, name: str, seed: int = 0) -> Iterator[None]:
    """Within the block, ``model`` selects tokens with the ``name`` heuristic instead of its learned gates."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")
    encoder = model.base_model.encoder
    learned = encoder.gates
    baseline = nn.ModuleDict(_baseline_scorers(model, name, seed))
    encoder.gates = baseline
    try:
        yield
    finally:
        encoder.gates = learned
        for scorer in baseline.values():
            if isinstance(scorer, AttentionScorer):
                scorer.hook.remove()
