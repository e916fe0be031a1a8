"""Retention models for the RoBERTa family: stock RoBERTa modules around the shared retention encoder.

Parameter names are the stock ones (``roberta.embeddings.*``, ``roberta.encoder.layer.{i}.*``,
``classifier.*``), so any RoBERTa checkpoint, task heads included, loads unchanged; only the gates
(``roberta.encoder.gates.{i}.*``) are new.
"""

from __future__ import annotations

from transformers.models.roberta.modeling_roberta import (
    RobertaClassificationHead,
    RobertaEmbeddings,
    RobertaLayer,
    RobertaPooler,
    RobertaPreTrainedModel,
)

from .configuration_retention import RetentionRobertaConfig
from .modeling_retention import (
    RetentionModelMixin,
    RetentionModelOutput,
    RetentionPreTrainedMixin,
    RetentionQuestionAnsweringMixin,
    RetentionSentenceScoringMixin,
    RetentionSequenceClassificationMixin,
    RetentionTokenClassificationMixin,
)


class RetentionRobertaPreTrainedModel(RetentionPreTrainedMixin, RobertaPreTrainedModel):
    config: RetentionRobertaConfig
    config_class = RetentionRobertaConfig
    base_model_prefix = "roberta"


class RetentionRobertaModel(RetentionModelMixin, RetentionRobertaPreTrainedModel):
    """RoBERTa encoder that learns which tokens to keep, layer by layer, under a global budget."""

    _no_split_modules = ["RobertaEmbeddings", "RobertaLayer"]
    embeddings_class = RobertaEmbeddings
    layer_class = RobertaLayer
    pooler_class = RobertaPooler


class RetentionRobertaForSequenceClassification(RetentionSequenceClassificationMixin, RetentionRobertaPreTrainedModel):
    """RoBERTa retention encoder with the stock ``<s>``-token classification head."""

    def __init__(self, config: RetentionRobertaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = RetentionRobertaModel(config, add_pooling_layer=False)
        self.classifier = RobertaClassificationHead(config)
        self.post_init()

    def classify(self, outputs: RetentionModelOutput):
        return self.classifier(outputs.last_hidden_state)


class RetentionRobertaForTokenClassification(RetentionTokenClassificationMixin, RetentionRobertaPreTrainedModel):
    """RoBERTa retention encoder with a token classification head over every (restored) position."""

    base_model_class = RetentionRobertaModel


class RetentionRobertaForQuestionAnswering(RetentionQuestionAnsweringMixin, RetentionRobertaPreTrainedModel):
    """RoBERTa retention encoder with an extractive QA head over every (restored) position."""

    base_model_class = RetentionRobertaModel


class RetentionRobertaForSentenceScoring(RetentionSentenceScoringMixin, RetentionRobertaPreTrainedModel):
    """RoBERTa retention encoder scoring each marked sentence (extractive summarisation)."""

    base_model_class = RetentionRobertaModel


__all__ = [
    "RetentionRobertaForQuestionAnswering",
    "RetentionRobertaForSentenceScoring",
    "RetentionRobertaForSequenceClassification",
    "RetentionRobertaForTokenClassification",
    "RetentionRobertaModel",
    "RetentionRobertaPreTrainedModel",
]
