"""Extractive question answering: SQuAD-style windowing, span decoding and a pipeline.

The same three steps serve training (``prepare_train_features``), evaluation (``prepare_eval_features``
then ``postprocess_predictions``) and inference (:class:`ExtractiveQuestionAnsweringPipeline`):

1. the question and context are encoded as ``question [SEP] context`` windows of at most ``max_length``
   tokens; a context too long for one window overflows into further windows that overlap by
   ``doc_stride`` tokens, so every answer lies whole inside at least one window;
2. the model scores every window's tokens as answer start and end;
3. the best span over all windows is mapped back to characters of the context through the offset
   mapping (tokens outside the context have no offsets, so they can never be part of an answer).

Retention QA models restore dropped tokens before the output layer, so the logits always cover every
input position and these steps are the same as for a dense model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase
from transformers.pipelines.base import ChunkPipeline

from .pipelines import budget_forward_params


TASK = "extractive-question-answering"


@dataclass(frozen=True)
class Span:
    """One candidate answer: character offsets into the context and its score."""

    start: int
    end: int
    score: float


def encode_windows(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    contexts: Sequence[str],
    max_length: int = 384,
    doc_stride: int = 128,
):
    """Encode ``question [SEP] context`` pairs into overlapping windows (a fast tokenizer is required).

    The result has ``overflow_to_sample_mapping`` (window -> pair) and ``offset_mapping``. Only the
    context is truncated; ``doc_stride`` is the number of context tokens two consecutive windows share.
    """
    if not tokenizer.is_fast:
        raise ValueError(f"extractive QA needs a fast tokenizer for offset mappings, got {type(tokenizer).__name__}")
    if tokenizer.padding_side != "right":
        raise ValueError("extractive QA expects the question first (tokenizer.padding_side == 'right')")
    if not 0 <= doc_stride < max_length:
        raise ValueError(f"doc_stride must be in [0, max_length={max_length}), got {doc_stride}")
    return tokenizer(
        [question.lstrip() for question in questions],
        list(contexts),
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def context_offsets(encoding, window: int) -> list[tuple[int, int] | None]:
    """The window's offset mapping with every token outside the context (question, specials) set to None."""
    sequence_ids = encoding.sequence_ids(window)
    return [
        tuple(offset) if sequence_id == 1 else None
        for offset, sequence_id in zip(encoding["offset_mapping"][window], sequence_ids, strict=True)
    ]


def prepare_train_features(examples: dict[str, list], tokenizer, max_length: int = 384, doc_stride: int = 128):
    """Windows with ``start_positions`` / ``end_positions`` labels, for ``datasets.Dataset.map(batched=True)``.

    ``examples`` has SQuAD columns ``question``, ``context`` and ``answers`` (``{"text": [...],
    "answer_start": [...]}``; the first answer is the training target). A window that does not contain
    the whole answer is labelled with position 0 ([CLS]), the standard "no answer here" target.
    """
    encoding = encode_windows(tokenizer, examples["question"], examples["context"], max_length, doc_stride)
    starts, ends = [], []
    for window, example in enumerate(encoding["overflow_to_sample_mapping"]):
        answers = examples["answers"][example]
        answer_start = answers["answer_start"][0]
        answer_end = answer_start + len(answers["text"][0])
        offsets = context_offsets(encoding, window)
        inside = [i for i, offset in enumerate(offsets) if offset is not None]
        if offsets[inside[0]][0] > answer_start or offsets[inside[-1]][1] < answer_end:
            starts.append(0)
            ends.append(0)
            continue
        starts.append(next(i for i in inside if offsets[i][1] > answer_start))
        ends.append(next(i for i in reversed(inside) if offsets[i][0] < answer_end))
    encoding["start_positions"] = starts
    encoding["end_positions"] = ends
    encoding.pop("offset_mapping")
    encoding.pop("overflow_to_sample_mapping")
    return encoding


def prepare_eval_features(examples: dict[str, list], tokenizer, max_length: int = 384, doc_stride: int = 128):
    """Windows with ``example_id`` and context-only ``offset_mapping``, for :func:`postprocess_predictions`."""
    encoding = encode_windows(tokenizer, examples["question"], examples["context"], max_length, doc_stride)
    windows = range(len(encoding["input_ids"]))
    encoding["example_id"] = [examples["id"][example] for example in encoding["overflow_to_sample_mapping"]]
    encoding["offset_mapping"] = [context_offsets(encoding, window) for window in windows]
    encoding.pop("overflow_to_sample_mapping")
    return encoding


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: Sequence[tuple[int, int] | None],
    top_k: int = 1,
    max_answer_length: int = 30,
) -> list[Span]:
    """The ``top_k`` best context spans of one window, scored ``P(start) * P(end)``.

    The start and end distributions are softmaxes over the context tokens only; a span must start no
    later than it ends and cover at most ``max_answer_length`` tokens.
    """
    length = len(offsets)
    start_logits, end_logits = np.asarray(start_logits)[:length], np.asarray(end_logits)[:length]
    in_context = np.array([offset is not None for offset in offsets])
    if not in_context.any():
        return []
    start_probabilities = _masked_softmax(start_logits, in_context)
    end_probabilities = _masked_softmax(end_logits, in_context)
    scores = np.outer(start_probabilities, end_probabilities)
    square = np.ones((length, length), dtype=bool)
    allowed = np.triu(square) & ~np.triu(square, k=max_answer_length)  # start <= end < start + max_answer_length
    allowed &= np.outer(in_context, in_context)
    scores = np.where(allowed, scores, -1.0)
    order = np.argsort(-scores, axis=None, kind="stable")[:top_k]
    spans = []
    for flat in order:
        start, end = divmod(int(flat), length)
        if scores[start, end] < 0:
            break
        spans.append(Span(offsets[start][0], offsets[end][1], float(scores[start, end])))
    return spans


def _masked_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    logits = np.where(mask, logits.astype(np.float64), -np.inf)
    exponentials = np.exp(logits - logits.max())
    return exponentials / exponentials.sum()


def postprocess_predictions(
    examples: dict[str, list],
    features: dict[str, list],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    max_answer_length: int = 30,
) -> dict[str, dict[str, Any]]:
    """Answer every example with its best span over all of its windows.

    Returns ``{id: {"answer": text, "start": char, "end": char, "score": float}}``; an example whose
    windows hold no valid span gets the empty answer with score 0.
    """
    windows_of: dict[str, list[int]] = defaultdict(list)
    for window, example_id in enumerate(features["example_id"]):
        windows_of[example_id].append(window)
    predictions = {}
    for example_id, context in zip(examples["id"], examples["context"], strict=True):
        candidates = [
            span
            for window in windows_of[example_id]
            for span in best_spans(
                start_logits[window], end_logits[window], features["offset_mapping"][window], 1, max_answer_length
            )
        ]
        best = max(candidates, key=lambda span: span.score, default=Span(0, 0, 0.0))
        predictions[example_id] = {
            "answer": context[best.start : best.end],
            "start": best.start,
            "end": best.end,
            "score": best.score,
        }
    return predictions


class ExtractiveQuestionAnsweringPipeline(ChunkPipeline):
    """Extractive QA for encoder checkpoints, retention or dense (transformers 5 dropped its own).

    ``pipeline("extractive-question-answering", model=<checkpoint>)`` after ``import retention_hf``::

        qa(question="Who wrote it?", context="It was written by Ada.")
        # {'score': 0.93, 'start': 18, 'end': 21, 'answer': 'Ada'}

    Long contexts are read in overlapping windows (``max_seq_len``, ``doc_stride``) and the best span
    over all windows wins. ``top_k > 1`` returns a list of the best distinct spans. ``retention_ratio=`` sets the
    budget of a retention model for the call.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError("the extractive QA pipeline needs a tokenizer")

    def _sanitize_parameters(
        self, max_seq_len=None, doc_stride=None, top_k=None, max_answer_len=None, retention_ratio=None, **kwargs
    ):
        preprocess = {}
        if max_seq_len is not None:
            preprocess["max_seq_len"] = max_seq_len
        if doc_stride is not None:
            preprocess["doc_stride"] = doc_stride
        postprocess = {}
        if top_k is not None:
            if top_k < 1:
                raise ValueError(f"top_k must be >= 1, got {top_k}")
            postprocess["top_k"] = top_k
        if max_answer_len is not None:
            if max_answer_len < 1:
                raise ValueError(f"max_answer_len must be >= 1, got {max_answer_len}")
            postprocess["max_answer_len"] = max_answer_len
        return preprocess, budget_forward_params(self.model, retention_ratio), postprocess

    def __call__(self, question=None, context=None, **kwargs):
        """Answer ``question`` from ``context``; both may be lists (zipped), or pass dicts with those keys."""
        if question is None and context is None and "inputs" in kwargs:
            inputs = kwargs.pop("inputs")
        elif isinstance(question, (list, tuple)):
            if not isinstance(context, (list, tuple)) or len(context) != len(question):
                raise ValueError("give one context per question")
            inputs = [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
        elif isinstance(question, dict):
            inputs = question
        else:
            inputs = {"question": question, "context": context}
        return super().__call__(inputs, **kwargs)

    def preprocess(
        self, inputs: dict[str, str], max_seq_len: int | None = None, doc_stride: int = 128
    ) -> Iterator[dict]:
        question, context = inputs.get("question"), inputs.get("context")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question must be a non-empty string, got {question!r}")
        if not isinstance(context, str) or not context.strip():
            raise ValueError(f"context must be a non-empty string, got {context!r}")
        if max_seq_len is None:
            max_seq_len = min(384, self.tokenizer.model_max_length)
        doc_stride = min(doc_stride, max_seq_len // 2)
        encoding = encode_windows(self.tokenizer, [question], [context], max_seq_len, doc_stride)
        windows = len(encoding["input_ids"])
        for window in range(windows):
            model_inputs = {
                name: torch.tensor([encoding[name][window]])
                for name in self.tokenizer.model_input_names
                if name in encoding
            }
            yield {
                **model_inputs,
                "offsets": context_offsets(encoding, window),
                "context": context,
                "is_last": window == windows - 1,
            }

    def _forward(self, model_inputs: dict, retention_ratio: float | None = None) -> dict:
        extras = {name: model_inputs.pop(name) for name in ("offsets", "context", "is_last")}
        budget = {} if retention_ratio is None else {"retention_ratio": retention_ratio}
        outputs = self.model(**model_inputs, **budget)
        return {"start_logits": outputs.start_logits, "end_logits": outputs.end_logits, **extras}

    def postprocess(self, model_outputs: list[dict], top_k: int = 1, max_answer_len: int = 15):
        context = model_outputs[0]["context"]
        candidates: dict[tuple[int, int], Span] = {}
        for output in model_outputs:
            offsets = output["offsets"]
            for span in best_spans(
                output["start_logits"][0].float().numpy(),
                output["end_logits"][0].float().numpy(),
                offsets,
                top_k,
                max_answer_len,
            ):
                key = (span.start, span.end)  # the same span seen by two overlapping windows counts once
                if key not in candidates or span.score > candidates[key].score:
                    candidates[key] = span
        ranked = sorted(candidates.values(), key=lambda span: -span.score)[:top_k]
        answers = [
            {"score": span.score, "start": span.start, "end": span.end, "answer": context[span.start : span.end]}
            for span in ranked
        ]
        if not answers:
            answers = [{"score": 0.0, "start": 0, "end": 0, "answer": ""}]
        return answers[0] if top_k == 1 else answers


__all__ = [
    "TASK",
    "ExtractiveQuestionAnsweringPipeline",
    "Span",
    "best_spans",
    "context_offsets",
    "encode_windows",
    "postprocess_predictions",
    "prepare_eval_features",
    "prepare_train_features",
]
