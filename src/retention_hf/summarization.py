"""Extractive summarisation data: greedy ROUGE oracle labels and sentence-aligned windows (BertSum-style).

A document is a list of sentences. Each sentence becomes ``[marker] tokens [SEP]`` (the marker is the
tokenizer's ``[CLS]`` / ``<s>``); a sentence-scoring model reads one score per marker. Sentences are
packed whole into windows of at most ``max_length`` tokens, in order, so every sentence lands in exactly
one window (a sentence longer than ``max_sentence_tokens`` is cut to that length, never split across
windows). The markers are protected tokens, so retention never drops them while the words around them
compete for the budget.

The labels are the standard extractive recipe: greedily add the sentence that most raises
ROUGE-1 F1 + ROUGE-2 F1 of the selection against the reference abstract, until nothing improves it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch


_WORD = re.compile(r"[a-z0-9]+|<[a-z]+>")


def words(text: str) -> list[str]:
    """Lower-cased word tokens for ROUGE-style overlap (``<dig>`` / ``<cit>`` placeholders count as words)."""
    return _WORD.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, predicted: int, reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / reference
    return 2 * precision * recall / (precision + recall)


def _overlap_gain(selected: Counter, candidate: Counter, reference: Counter) -> int:
    """How much adding ``candidate`` to ``selected`` raises the clipped n-gram overlap with ``reference``
    (computed from the candidate's n-grams alone, so each greedy step costs O(document))."""
    return sum(
        min(selected[gram] + count, reference[gram]) - min(selected[gram], reference[gram])
        for gram, count in candidate.items()
        if gram in reference
    )


def greedy_oracle(sentences: Sequence[str], reference: str, max_sentences: int | None = None) -> list[int]:
    """Indices (ascending) of the sentences a greedy ROUGE-1 + ROUGE-2 F1 search picks against ``reference``.

    Starting from nothing, each step adds the sentence that raises the score most; the search stops when
    no sentence raises it, or after ``max_sentences``.
    """
    reference_words = words(reference)
    targets = {n: _ngrams(reference_words, n) for n in (1, 2)}
    target_sizes = {n: sum(targets[n].values()) for n in (1, 2)}
    sentence_ngrams = [{n: _ngrams(words(sentence), n) for n in (1, 2)} for sentence in sentences]
    sentence_sizes = [{n: sum(grams[n].values()) for n in (1, 2)} for grams in sentence_ngrams]
    chosen: list[int] = []
    selected = {1: Counter(), 2: Counter()}
    overlap, size = {1: 0, 2: 0}, {1: 0, 2: 0}
    best = 0.0
    limit = len(sentences) if max_sentences is None else min(max_sentences, len(sentences))
    while len(chosen) < limit:
        scores = {}
        for index, grams in enumerate(sentence_ngrams):
            if index not in chosen:
                scores[index] = sum(
                    _f1(
                        overlap[n] + _overlap_gain(selected[n], grams[n], targets[n]),
                        size[n] + sentence_sizes[index][n],
                        target_sizes[n],
                    )
                    for n in (1, 2)
                )
        candidate = max(scores, key=lambda index: (scores[index], -index), default=None)
        if candidate is None or scores[candidate] <= best:
            break
        best = scores[candidate]
        chosen.append(candidate)
        for n in (1, 2):
            overlap[n] += _overlap_gain(selected[n], sentence_ngrams[candidate][n], targets[n])
            selected[n] += sentence_ngrams[candidate][n]
            size[n] += sentence_sizes[candidate][n]
    return sorted(chosen)


@dataclass
class SentenceWindow:
    """One encoder input: whole sentences, each led by its marker token.

    Args:
        input_ids: ``[marker] s_i [SEP] [marker] s_i+1 [SEP] ...``.
        sentence_positions: Position of each sentence's marker in ``input_ids``.
        sentence_indices: Index of each of those sentences in the document.
    """

    input_ids: list[int]
    sentence_positions: list[int]
    sentence_indices: list[int]


def pack_windows(
    tokenizer, sentences: Sequence[str], max_length: int = 512, max_sentence_tokens: int = 128
) -> list[SentenceWindow]:
    """Pack a document's sentences, in order and whole, into windows of at most ``max_length`` tokens."""
    if max_sentence_tokens + 2 > max_length:
        raise ValueError(
            f"max_sentence_tokens={max_sentence_tokens} leaves no room for the marker and [SEP] in "
            f"max_length={max_length}"
        )
    marker, separator = tokenizer.cls_token_id, tokenizer.sep_token_id
    if marker is None or separator is None:
        raise ValueError(f"{type(tokenizer).__name__} has no cls/sep tokens to mark sentences with")
    encoded = tokenizer(list(sentences), add_special_tokens=False)["input_ids"] if sentences else []
    windows: list[SentenceWindow] = []
    current = SentenceWindow([], [], [])
    for index, ids in enumerate(encoded):
        piece = [marker, *ids[:max_sentence_tokens], separator]
        if current.input_ids and len(current.input_ids) + len(piece) > max_length:
            windows.append(current)
            current = SentenceWindow([], [], [])
        current.sentence_positions.append(len(current.input_ids))
        current.sentence_indices.append(index)
        current.input_ids.extend(piece)
    if current.input_ids:
        windows.append(current)
    return windows


def document_sentences(document: str) -> list[str]:
    """The sentences of a document stored one per line (SumPubMed's format), blank lines dropped."""
    return [line.strip() for line in document.split("\n") if line.strip()]


def prepare_features(
    examples: dict[str, list],
    tokenizer,
    max_length: int = 512,
    max_sentence_tokens: int = 128,
    max_oracle_sentences: int | None = None,
) -> dict[str, list]:
    """One row per window, for ``datasets.Dataset.map(batched=True, remove_columns=...)``.

    ``examples`` has ``id`` and ``document`` (one sentence per line) and, for training, ``summary``:
    then every sentence is labelled 1 if the greedy oracle picks it, else 0.
    """
    rows: dict[str, list] = {"input_ids": [], "sentence_positions": [], "sentence_indices": [], "document_id": []}
    with_labels = "summary" in examples
    if with_labels:
        rows["labels"] = []
    for index, (document_id, document) in enumerate(zip(examples["id"], examples["document"], strict=True)):
        sentences = document_sentences(document)
        chosen = set(greedy_oracle(sentences, examples["summary"][index], max_oracle_sentences)) if with_labels else ()
        for window in pack_windows(tokenizer, sentences, max_length, max_sentence_tokens):
            rows["input_ids"].append(window.input_ids)
            rows["sentence_positions"].append(window.sentence_positions)
            rows["sentence_indices"].append(window.sentence_indices)
            rows["document_id"].append(document_id)
            if with_labels:
                rows["labels"].append([float(sentence in chosen) for sentence in window.sentence_indices])
    return rows


class SentenceScoringCollator:
    """Pads windows into a batch: ``input_ids`` with the pad token, ``sentence_positions`` with -1 and
    ``labels`` with -100. Other columns (``sentence_indices``, ``document_id``) are dropped."""

    def __init__(self, tokenizer):
        self.pad_token_id = tokenizer.pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(feature["input_ids"]) for feature in features)
        sentences = max(len(feature["sentence_positions"]) for feature in features)
        batch = {
            "input_ids": torch.full((len(features), length), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros(len(features), length, dtype=torch.long),
            "sentence_positions": torch.full((len(features), sentences), -1, dtype=torch.long),
        }
        if "labels" in features[0]:
            batch["labels"] = torch.full((len(features), sentences), -100.0)
        for row, feature in enumerate(features):
            tokens, marked = len(feature["input_ids"]), len(feature["sentence_positions"])
            batch["input_ids"][row, :tokens] = torch.tensor(feature["input_ids"])
            batch["attention_mask"][row, :tokens] = 1
            batch["sentence_positions"][row, :marked] = torch.tensor(feature["sentence_positions"])
            if "labels" in batch:
                batch["labels"][row, :marked] = torch.tensor(feature["labels"])
        return batch


def document_scores(features, sentence_logits) -> dict[str, dict[int, float]]:
    """Gather window-level sentence logits back into ``{document id: {sentence index: score}}``."""
    scores: dict[str, dict[int, float]] = {}
    for feature, logits in zip(features, sentence_logits, strict=True):
        document = scores.setdefault(feature["document_id"], {})
        for slot, sentence in enumerate(feature["sentence_indices"]):
            document[sentence] = float(logits[slot])
    return scores


def top_sentences(scores: dict[int, float], k: int) -> list[int]:
    """The ``k`` best-scored sentence indices, in document order."""
    return sorted(sorted(scores, key=lambda sentence: (-scores[sentence], sentence))[:k])


@torch.no_grad()
def summarize(model, tokenizer, document: str, k: int = 3, max_length: int = 512, max_sentence_tokens: int = 128):
    """The ``k`` sentences of ``document`` (one sentence per line) that ``model`` scores highest, in order."""
    sentences = document_sentences(document)
    if not sentences:
        raise ValueError("summarize needs a document with at least one sentence (one sentence per line)")
    model.eval()
    device = next(model.parameters()).device
    windows = pack_windows(tokenizer, sentences, max_length, max_sentence_tokens)
    features = [
        {"input_ids": w.input_ids, "sentence_positions": w.sentence_positions, "sentence_indices": w.sentence_indices}
        for w in windows
    ]
    batch = SentenceScoringCollator(tokenizer)(features)
    logits = model(**{key: value.to(device) for key, value in batch.items()}).sentence_logits.cpu()
    scores = document_scores([{**f, "document_id": "document"} for f in features], logits)["document"]
    return [sentences[index] for index in top_sentences(scores, k)]
