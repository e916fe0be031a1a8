"""ROUGE-1/2/L/Lsum F-measures as a local ``evaluate`` module: ``evaluate.load(<this directory>)`` works offline.

Written for retention_hf because ``evaluate.load("rouge")`` fetches its script from the Hub. Scores come
from Google's ``rouge-score`` package (Porter stemming on by default). ``rougeLsum`` treats newlines as
sentence boundaries, so pass summaries with one sentence per line.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer


_DESCRIPTION = "Mean ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures of the predictions against the references."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): predicted summaries, one sentence per line.
    references (`list` of `str`): reference summaries, one sentence per line.
    rouge_types (`list` of `str`, optional): a subset of rouge1, rouge2, rougeL, rougeLsum (default: all four).
        The LCS-based types are the slow ones, so a search over summary sizes can ask for rouge1 alone.
    use_stemmer (`bool`, defaults to `True`): Porter-stem words before matching.
Returns:
    one `float` per requested type: F-measures in [0, 1], averaged over the documents.
Example:
    >>> rouge = evaluate.load("path/to/retention_hf/metrics/rouge")
    >>> rouge.compute(predictions=["the cat sat"], references=["the cat sat"])["rouge1"]
    1.0
"""

_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, ACL workshop 2004.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=True):
        if not predictions:
            raise ValueError("rouge needs at least one prediction")
        types = list(_TYPES if rouge_types is None else rouge_types)
        unknown = [name for name in types if name not in _TYPES]
        if unknown or not types:
            raise ValueError(f"rouge_types must be a non-empty subset of {list(_TYPES)}, got {rouge_types!r}")
        scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
        scores = [
            scorer.score(reference, prediction) for prediction, reference in zip(predictions, references, strict=True)
        ]
        # the plain mean over documents (rouge-score's BootstrapAggregator resamples, so its figure varies)
        return {name: sum(score[name].fmeasure for score in scores) / len(scores) for name in types}
