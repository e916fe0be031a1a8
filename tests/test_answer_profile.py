"""retention_hf.answer_profile: which layer dropped each gold answer, and the F1 of each group of questions."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from retention_hf import RetentionBertForQuestionAnswering
from retention_hf.answer_profile import (
    CUT_BY_WINDOWS,
    answer_loss_profile,
    answer_positions,
    answer_survival,
    layers_holding,
)
from retention_hf.question_answering import prepare_eval_features

from families import save_tiny_text_model


CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in "
    "France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, under "
    "their leader Rollo, agreed to swear fealty to King Charles III of West Francia."
)


def question(qid: str, text: str, answer: str, occurrence: int = 0) -> dict:
    start = CONTEXT.index(answer)
    for _ in range(occurrence):
        start = CONTEXT.index(answer, start + 1)
    return {"id": qid, "question": text, "context": CONTEXT, "answers": {"text": [answer], "answer_start": [start]}}


def test_answer_positions_are_the_tokens_overlapping_the_answer():
    offsets = [None, None, (0, 3), (4, 11), (12, 16), (16, 17), None]  # [CLS] q "The Normans were ." [SEP]
    assert answer_positions(offsets, 4, 11) == [3]
    assert answer_positions(offsets, 5, 15) == [3, 4]  # partial overlaps count
    assert answer_positions(offsets, 0, 17) == [2, 3, 4, 5]
    assert answer_positions(offsets, 10, 20) is None  # runs past the window's context
    assert answer_positions([None, None], 0, 1) is None
    assert answer_positions(offsets, 11, 11) is None  # a blank answer overlaps no token


def test_layers_holding_counts_the_leading_layers_that_kept_every_answer_token():
    kept = [{0, 1, 2, 3, 4}, {0, 2, 3}, {0, 3}, {0, 2, 3}]
    assert layers_holding(kept, [3]) == 4
    assert layers_holding(kept, [2, 3]) == 2  # dropped before layer 2: a later layer keeping it again is too late
    assert layers_holding(kept, [1]) == 1
    assert layers_holding(kept, []) == 4


def test_the_profile_groups_questions_and_scores_each_group():
    examples = Dataset.from_list(
        [
            question("a", "Who?", "Rollo"),
            question("b", "Where?", "Normandy"),
            question("c", "Which king?", "Charles III"),
            question("d", "From where?", "Denmark"),
        ]
    )
    survival = {"a": 3, "b": 1, "c": 1, "d": CUT_BY_WINDOWS}
    predictions = {"a": "Rollo", "b": "France", "c": "King Charles III", "d": "Denmark"}
    reference = {"a": "Rollo", "b": "Normandy", "c": "Charles", "d": "Iceland"}
    profile = answer_loss_profile(survival, predictions, examples, num_layers=3, reference=reference)
    assert [row["group"] for row in profile] == [
        "no window holds the answer whole",
        "answer dropped before layer 1",
        "answer kept by every layer",
    ]
    assert [row["questions"] for row in profile] == [1, 2, 1]
    assert [row["share"] for row in profile] == [0.25, 0.5, 0.25]
    dropped = profile[1]
    # b: F1 0; c: "king charles iii" vs "charles iii" -> precision 2/3, recall 1, F1 0.8
    assert dropped["exact_match"] == 0 and dropped["f1"] == pytest.approx(40.0)
    # reference: b exact (1.0); c "charles" vs "charles iii" -> precision 1, recall 1/2, F1 2/3
    assert dropped["f1_reference"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert profile[2]["f1"] == profile[2]["f1_reference"] == 100.0
    assert "f1_reference" not in answer_loss_profile(survival, predictions, examples, num_layers=3)[0]


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory):
    path = save_tiny_text_model(
        tmp_path_factory.mktemp("qa"),
        RetentionBertForQuestionAnswering,
        retention_ratio=0.3,
        retention_count_rounding="budget",
    )
    return RetentionBertForQuestionAnswering.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def windows(tokenizer, examples: Dataset, max_length: int = 48, doc_stride: int = 16) -> Dataset:
    window = {"tokenizer": tokenizer, "max_length": max_length, "doc_stride": doc_stride}
    return examples.map(prepare_eval_features, fn_kwargs=window, batched=True, remove_columns=examples.column_names)


def test_survival_matches_the_kept_positions_of_each_window(tiny_qa):
    model, tokenizer = tiny_qa
    two_answers = question("d", "Whose name?", "Normans")
    two_answers["answers"] = {  # the whole context (no window holds it) or "Normandy": the best answer counts
        "text": [CONTEXT, "Normandy"],
        "answer_start": [0, CONTEXT.index("Normandy")],
    }
    examples = Dataset.from_list(
        [
            question("a", "Who led them?", "Rollo"),
            question("b", "Which region?", "Normandy"),
            question("c", "Who?", "Norse raiders and pirates"),
            two_answers,
        ]
    )
    features = windows(tokenizer, examples)
    model.train()
    survival = answer_survival(model, tokenizer, examples, features, batch_size=2)
    assert model.training is True, "the model comes back in the mode it was in"
    assert set(survival) == {"a", "b", "c", "d"}
    model.eval()
    answers = {row["id"]: row["answers"] for row in examples}
    for qid in survival:  # recompute each question window by window, one window per forward pass
        best = CUT_BY_WINDOWS
        for feature in (row for row in features if row["example_id"] == qid):
            inputs = {key: torch.tensor([feature[key]]) for key in ("input_ids", "token_type_ids", "attention_mask")}
            layers = [set(positions[0].tolist()) for positions in model(**inputs).kept_positions]
            for start, text in zip(answers[qid]["answer_start"], answers[qid]["text"], strict=True):
                positions = answer_positions(feature["offset_mapping"], start, start + len(text))
                if positions is not None:
                    best = max(best, layers_holding(layers, positions))
        assert survival[qid] == best
    assert survival["d"] != CUT_BY_WINDOWS, "the answer a window holds decides, not the one none holds"
    assert min(survival.values()) < model.config.num_hidden_layers, "at rho 0.3 some answer is dropped"


def test_an_answer_no_window_holds_and_a_model_without_retention(tiny_qa):
    model, tokenizer = tiny_qa
    whole = {"id": "w", "question": "All?", "context": CONTEXT, "answers": {"text": [CONTEXT], "answer_start": [0]}}
    examples = Dataset.from_list([whole])
    assert answer_survival(model, tokenizer, examples, windows(tokenizer, examples)) == {"w": CUT_BY_WINDOWS}
    model.config.retention_enabled = False
    try:
        with pytest.raises(ValueError, match="needs a model with retention on"):
            answer_survival(model, tokenizer, examples, windows(tokenizer, examples))
    finally:
        model.config.retention_enabled = True
