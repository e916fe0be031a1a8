"""SQuAD v1.1 exact match and F1 as a local ``evaluate`` module: ``evaluate.load(<this directory>)`` works offline.

Written for retention_hf because ``evaluate.load("squad")`` fetches its script from the Hub. It follows
the official v1.1 evaluation: answers are lower-cased, stripped of punctuation, of the articles a / an /
the and of extra whitespace; a prediction scores the best EM and the best token F1 over the references;
both are averaged over questions and reported in percent.
"""

import collections
import re
import string

import datasets
import evaluate


_DESCRIPTION = "SQuAD v1.1 exact match and token F1 (percent), as computed by the official evaluation script."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `dict`): `{"id": str, "prediction_text": str}` per question.
    references (`list` of `dict`): `{"id": str, "answers": {"text": list[str], "answer_start": list[int]}}`.
Returns:
    exact_match (`float`), f1 (`float`): in percent.
Example:
    >>> squad = evaluate.load("path/to/retention_hf/metrics/squad")
    >>> squad.compute(
    ...     predictions=[{"id": "q1", "prediction_text": "the Broncos"}],
    ...     references=[{"id": "q1", "answers": {"text": ["Denver Broncos"], "answer_start": [177]}}],
    ... )
    {'exact_match': 0.0, 'f1': 66.66666666666666}
"""
_CITATION = """@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of EMNLP",
    year = "2016",
}"""
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a / an / the, collapse whitespace."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.features.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references):
        answers = {reference["id"]: reference["answers"]["text"] for reference in references}
        missing = [prediction["id"] for prediction in predictions if prediction["id"] not in answers]
        if missing:
            raise ValueError(f"predictions for ids with no reference: {missing[:5]}")
        if not predictions:
            raise ValueError("no predictions to score")
        exact, f1 = 0.0, 0.0
        for prediction in predictions:
            texts = answers[prediction["id"]]
            exact += max(exact_match(prediction["prediction_text"], text) for text in texts)
            f1 += max(token_f1(prediction["prediction_text"], text) for text in texts)
        return {"exact_match": 100.0 * exact / len(predictions), "f1": 100.0 * f1 / len(predictions)}
