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


_WORD = re.compile(r"[a-z0-9]+|<[a-z]+>")


def words(text: str) -> list[str]:
    """Lower-cased word tokens for ROUGE-style overlap (``<dig>`` / ``<cit>`` placeholders count as words)."""
    return _WORD.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(candidate: Counter, reference: Counter) -> float:
    overlap = sum((candidate & reference).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(candidate.values()), overlap / sum(reference.values())
    return 2 * precision * recall / (precision + recall)


def greedy_oracle(sentences: Sequence[str], reference: str, max_sentences: int | None = None) -> list[int]:
    """Indices (ascending) of the sentences a greedy ROUGE-1 + ROUGE-2 F1 search picks against ``reference``.

    Starting from nothing, each step adds the sentence that raises the score most; the search stops when
    no sentence raises it, or after ``max_sentences``.
    """
    reference_words = words(reference)
    targets = {n: _ngrams(reference_words, n) for n in (1, 2)}
    sentence_ngrams = [{n: _ngrams(words(sentence), n) for n in (1, 2)} for sentence in sentences]
    chosen: list[int] = []
    selected = {1: Counter(), 2: Counter()}
    best = 0.0
    limit = len(sentences) if max_sentences is None else min(max_sentences, len(sentences))
    while len(chosen) < limit:
        scores = {}
        for index, grams in enumerate(sentence_ngrams):
            if index not in chosen:
                scores[index] = sum(_f1(selected[n] + grams[n], targets[n]) for n in (1, 2))
        candidate = max(scores, key=lambda index: (scores[index], -index), default=None)
        if candidate is None or scores[candidate] <= best:
            break
        best = scores[candidate]
        chosen.append(candidate)
        for n in (1, 2):
            selected[n] += sentence_ngrams[candidate][n]
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
