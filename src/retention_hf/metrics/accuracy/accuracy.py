"""Accuracy as a local ``evaluate`` module: ``evaluate.load(<this directory>)`` works offline.

Written for retention_hf because ``evaluate.load("accuracy")`` fetches its script from the Hub.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score


_DESCRIPTION = "Accuracy: the share of predictions equal to the reference labels."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): ground-truth labels.
    normalize (`bool`, defaults to `True`): return the fraction (`True`) or the count (`False`) of correct predictions.
    sample_weight (`list` of `float`, optional): per-example weights.
Returns:
    accuracy (`float`).
Example:
    >>> accuracy = evaluate.load("path/to/retention_hf/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}
