"""Retention models for the BERT family: stock BERT modules around the shared retention encoder.

Parameter names are the stock ones (``bert.embeddings.*``, ``bert.encoder.layer.{i}.*``,
``classifier.*``), so any BERT checkpoint, task heads included, loads unchanged; only the gates
(``bert.encoder.gates.{i}.*``) are new.
"""

from __future__ import annotations

from torch import nn
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer, BertPooler, BertPreTrainedModel

from .configuration_retention import RetentionBertConfig
from .modeling_retention import (
    RetentionModelMixin,
    RetentionModelOutput,
    RetentionPreTrainedMixin,
    RetentionQuestionAnsweringMixin,
    RetentionSentenceScoringMixin,
    RetentionSequenceClassificationMixin,
    RetentionTokenClassificationMixin,
)


class RetentionBertPreTrainedModel(RetentionPreTrainedMixin, BertPreTrainedModel):
    config: RetentionBertConfig
    config_class = RetentionBertConfig
    base_model_prefix = "bert"


class RetentionBertModel(RetentionModelMixin, RetentionBertPreTrainedModel):
    """BERT encoder that learns which tokens to keep, layer by layer, under a global budget."""

    _no_split_modules = ["BertEmbeddings", "BertLayer"]
    embeddings_class = BertEmbeddings
    layer_class = BertLayer
    pooler_class = BertPooler


class RetentionBertForSequenceClassification(RetentionSequenceClassificationMixin, RetentionBertPreTrainedModel):
    """BERT retention encoder with the stock pooled-output classification head."""

    def __init__(self, config: RetentionBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = RetentionBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def classify(self, outputs: RetentionModelOutput):
        return self.classifier(self.dropout(outputs.pooler_output))


class RetentionBertForTokenClassification(RetentionTokenClassificationMixin, RetentionBertPreTrainedModel):
    """BERT retention encoder with a token classification head over every (restored) position."""

    base_model_class = RetentionBertModel


class RetentionBertForQuestionAnswering(RetentionQuestionAnsweringMixin, RetentionBertPreTrainedModel):
    """BERT retention encoder with an extractive QA head over every (restored) position."""

    base_model_class = RetentionBertModel


class RetentionBertForSentenceScoring(RetentionSentenceScoringMixin, RetentionBertPreTrainedModel):
    """BERT retention encoder scoring each marked sentence (extractive summarisation)."""

    base_model_class = RetentionBertModel


__all__ = [
    "RetentionBertForQuestionAnswering",
    "RetentionBertForSentenceScoring",
    "RetentionBertForSequenceClassification",
    "RetentionBertForTokenClassification",
    "RetentionBertModel",
    "RetentionBertPreTrainedModel",
]
