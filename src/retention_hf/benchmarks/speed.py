"""Interleaved timing of dense, retention, ideal-limit and stock configurations on the same batches.

Every repeat runs every batch through every configuration, one after the other, so that a slow period
of the machine hits all configurations alike; per-batch medians over the repeats are the figures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.masking_utils import create_bidirectional_mask

from .data import model_inputs


@dataclass
class Timing:
    name: str
    batch_seconds: list[float]  # per batch: the median over repeats
    examples: int

    @property
    def throughput(self) -> float:
        return self.examples / sum(self.batch_seconds)

    @property
    def median_latency(self) -> float:
        return statistics.median(self.batch_seconds)


def stock_twin(model: torch.nn.Module) -> torch.nn.Module:
    """The stock transformers model (``BertForSequenceClassification`` / ``RobertaFor...``) on the same weights.

    The twin is built on the meta device and then takes the retention model's tensors themselves (no
    copy), so creating it allocates and frees nothing: a freed copy would leave reusable pages behind and
    make the twin's peak-memory figure look smaller than it is.
    """
    config = model.config.to_dict()
    family = model.config.base_model_type
    for key in list(config):
        if key.startswith(("retention_", "hard_concrete_")) or key in ("model_type", "auto_map", "architectures"):
            config.pop(key)
    with torch.device("meta"):
        stock = AutoModelForSequenceClassification.from_config(
            AutoConfig.for_model(family, **config), attn_implementation=model.config._attn_implementation
        )
    missing, unexpected = stock.load_state_dict(model.state_dict(), strict=False, assign=True)
    if missing or any(".gates." not in key for key in unexpected):
        raise RuntimeError(f"stock twin does not match: missing {missing}, unexpected {unexpected}")
    buffers = dict(model.named_buffers())
    for name, buffer in list(stock.named_buffers()):  # non-persistent buffers (position ids) are not in the state dict
        if buffer.is_meta:
            owner, _, attribute = name.rpartition(".")
            stock.get_submodule(owner).register_buffer(attribute, buffers[name], persistent=False)
    return stock.eval()


class IdealLimit:
    """The encoder layers fed exactly the kept counts, with a free scorer and no gather.

    From one retention forward per batch (untimed), record every layer's input width and each row's kept
    count, and build random inputs and masks of those shapes. The timed forward then runs the embeddings
    on the full batch, each stock layer on its prebuilt input, and the head on the first token: the cost
    of the layers at the kept lengths and nothing else.
    """

    def __init__(self, model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]):
        self.model = model
        base = model.base_model
        self.layer_inputs = []
        with torch.inference_mode():
            for batch in batches:
                outputs = model(**model_inputs(batch))
                inputs = []
                for positions in outputs.kept_positions:
                    real = positions >= 0
                    hidden = torch.randn(*real.shape, model.config.hidden_size)
                    mask = create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=real)
                    inputs.append((hidden, mask))
                self.layer_inputs.append(inputs)
        self.embeddings, self.layers = base.embeddings, base.encoder.layer

    def __call__(self, index: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        hidden = None
        for layer, (layer_input, mask) in zip(self.layers, self.layer_inputs[index], strict=True):
            hidden = layer(layer_input, mask)
        pooler = self.model.base_model.pooler
        pooled = pooler(hidden) if pooler is not None else None
        return self.model.classify(SimpleNamespace(pooler_output=pooled, last_hidden_state=hidden))


def time_configurations(
    configurations: dict[str, Callable[[int, dict[str, torch.Tensor]], object]],
    batches: list[dict[str, torch.Tensor]],
    repeats: int,
    warmup: int = 1,
) -> dict[str, Timing]:
    """Run ``repeats`` interleaved passes (after ``warmup`` untimed ones) and keep per-batch medians."""
    samples: dict[str, list[list[float]]] = {name: [[] for _ in batches] for name in configurations}
    total = (warmup + repeats) * len(batches) * len(configurations)
    with torch.inference_mode(), tqdm(total=total, desc="timing", unit="forward") as progress:
        for repeat in range(warmup + repeats):
            for index, batch in enumerate(batches):
                for name, run in configurations.items():
                    start = time.perf_counter()
                    run(index, batch)
                    elapsed = time.perf_counter() - start
                    if repeat >= warmup:
                        samples[name][index].append(elapsed)
                    progress.update()
    examples = sum(len(batch["input_ids"]) for batch in batches)
    return {
        name: Timing(name, [statistics.median(times) for times in per_batch], examples)
        for name, per_batch in samples.items()
    }


def paired_overhead(candidate: Timing, reference: Timing) -> float:
    """Median over batches of ``candidate / reference - 1`` (the pairs ran back to back)."""
    ratios = [c / r for c, r in zip(candidate.batch_seconds, reference.batch_seconds, strict=True)]
    return statistics.median(ratios) - 1.0
