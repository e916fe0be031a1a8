"""retention_hf: BERT and RoBERTa encoders that learn which tokens to keep (Adaptive Retention).

Importing the package registers every retention class with the transformers Auto classes, so
``AutoModelForSequenceClassification.from_pretrained(<retention checkpoint>)`` works, and registers the
extractive QA pipeline, so ``pipeline("extractive-question-answering", model=...)`` works.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .budget import BudgetController
from .configuration_retention import RetentionBertConfig, RetentionConfig, RetentionRobertaConfig
from .latency import budget_for_latency
from .modeling_retention import (
    RetentionModelOutput,
    RetentionQuestionAnsweringModelOutput,
    RetentionSentenceScoringOutput,
    RetentionSequenceClassifierOutput,
    RetentionStatistics,
    RetentionTokenClassifierOutput,
)
from .modeling_retention_bert import (
    RetentionBertForQuestionAnswering,
    RetentionBertForSentenceScoring,
    RetentionBertForSequenceClassification,
    RetentionBertForTokenClassification,
    RetentionBertModel,
    RetentionBertPreTrainedModel,
)
from .modeling_retention_roberta import (
    RetentionRobertaForQuestionAnswering,
    RetentionRobertaForSentenceScoring,
    RetentionRobertaForSequenceClassification,
    RetentionRobertaForTokenClassification,
    RetentionRobertaModel,
    RetentionRobertaPreTrainedModel,
)
from .pipelines import RetentionTextClassificationPipeline, RetentionTokenClassificationPipeline, register_pipelines
from .question_answering import ExtractiveQuestionAnsweringPipeline
from .trainer import RetentionTrainer
from .training_args import RetentionTrainingArguments


__version__ = "0.1.0"

_AUTO_REGISTRY = {
    RetentionBertConfig: {
        AutoModel: RetentionBertModel,
        AutoModelForSequenceClassification: RetentionBertForSequenceClassification,
        AutoModelForQuestionAnswering: RetentionBertForQuestionAnswering,
        AutoModelForTokenClassification: RetentionBertForTokenClassification,
    },
    RetentionRobertaConfig: {
        AutoModel: RetentionRobertaModel,
        AutoModelForSequenceClassification: RetentionRobertaForSequenceClassification,
        AutoModelForQuestionAnswering: RetentionRobertaForQuestionAnswering,
        AutoModelForTokenClassification: RetentionRobertaForTokenClassification,
    },
}


def _register_auto_classes() -> None:
    for config_class, models in _AUTO_REGISTRY.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for auto_class, model_class in models.items():
            auto_class.register(config_class, model_class, exist_ok=True)


_register_auto_classes()
register_pipelines()  # pipeline("extractive-question-answering", ...); retention_ratio= in every pipeline call

__all__ = [
    "BudgetController",
    "ExtractiveQuestionAnsweringPipeline",
    "RetentionBertConfig",
    "RetentionBertForQuestionAnswering",
    "RetentionBertForSentenceScoring",
    "RetentionBertForSequenceClassification",
    "RetentionBertForTokenClassification",
    "RetentionBertModel",
    "RetentionBertPreTrainedModel",
    "RetentionConfig",
    "RetentionModelOutput",
    "RetentionQuestionAnsweringModelOutput",
    "RetentionRobertaConfig",
    "RetentionRobertaForQuestionAnswering",
    "RetentionRobertaForSentenceScoring",
    "RetentionRobertaForSequenceClassification",
    "RetentionRobertaForTokenClassification",
    "RetentionRobertaModel",
    "RetentionRobertaPreTrainedModel",
    "RetentionSentenceScoringOutput",
    "RetentionSequenceClassifierOutput",
    "RetentionStatistics",
    "RetentionTextClassificationPipeline",
    "RetentionTokenClassificationPipeline",
    "RetentionTokenClassifierOutput",
    "RetentionTrainer",
    "RetentionTrainingArguments",
    "budget_for_latency",
]
