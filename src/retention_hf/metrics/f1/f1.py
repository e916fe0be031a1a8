"""Precision, recall and F1 as a local ``evaluate`` module: ``evaluate.load(<this directory>)`` works offline.

Written for retention_hf because ``evaluate.load("f1")`` fetches its script from the Hub.
"""

import datasets
import evaluate
from sklearn.metrics import precision_recall_fscore_support


_DESCRIPTION = "Precision, recall and F1 of the predictions against the references (binary by default)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): ground-truth labels.
    pos_label (`int`, defaults to 1): the positive class when `average="binary"`.
    average (`str`, defaults to `"binary"`): as in scikit-learn (`"binary"`, `"micro"`, `"macro"`, `"weighted"`).
Returns:
    precision (`float`), recall (`float`), f1 (`float`).
Example:
    >>> f1 = evaluate.load("path/to/retention_hf/metrics/f1")
    >>> f1.compute(predictions=[1, 1, 0, 0], references=[1, 0, 1, 0])
    {'precision': 0.5, 'recall': 0.5, 'f1': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, pos_label=1, average="binary"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            references, predictions, pos_label=pos_label, average=average, zero_division=0
        )
        return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
