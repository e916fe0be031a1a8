"""Visualisation: the per-token trace agrees with the model, the HTML is well formed and renders in
headless Chromium, and the PNGs have the requested size."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from retention_hf import RetentionBertForSequenceClassification
from retention_hf.visualization import (
    plot_budget_curve,
    plot_heatmap,
    plot_keep_ratio_curves,
    plot_layer_retention,
    position_profile,
    render_html,
    save_html,
    trace_retention,
)

from families import save_tiny_text_model


TEXT = "A gripping, beautifully shot film whose second half drags on far too long."


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    path = save_tiny_text_model(
        tmp_path_factory.mktemp("viz"),
        RetentionBertForSequenceClassification,
        retention_ratio=0.7,
        retention_schedule=[1.0, 0.8, 0.3],  # tokens leave at different depths
    )
    model = RetentionBertForSequenceClassification.from_pretrained(path)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".gates." in name:
                parameter.normal_(0, 0.5)
    return model.eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def trace(model_and_tokenizer):
    return trace_retention(*model_and_tokenizer, TEXT)


def test_trace_matches_the_model(model_and_tokenizer, trace):
    model, tokenizer = model_and_tokenizer
    encoded = tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**encoded)
    length = encoded["input_ids"].shape[1]
    assert trace.tokens == tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    assert [sum(layer) for layer in trace.processed] == outputs.kept_counts[0].tolist()
    # 18 tokens at [1, 0.8, 0.3]: 18, 14.4, 5.4 -> 38 token-layers; of the two 0.4 remainders the earlier rounds up
    assert length == 18 and [sum(layer) for layer in trace.processed] == [18, 15, 5]
    assert trace.keep_ratio == pytest.approx(outputs.keep_ratio[0].item(), abs=1e-6)
    for shallow, deep in zip(trace.processed, trace.processed[1:], strict=False):  # dropped tokens never return
        assert all(kept or not later for kept, later in zip(shallow, deep, strict=True))
    assert sorted(set(trace.depth)) == [1, 2, 3]


def test_trace_with_retention_off_keeps_everything(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    model.config.retention_enabled = False
    try:
        trace = trace_retention(model, tokenizer, TEXT)
    finally:
        model.config.retention_enabled = True
    assert trace.keep_ratio == 1.0 and trace.budget == 1.0


def test_trace_rejects_bad_input(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match="non-empty text"):
        trace_retention(model, tokenizer, "")
    with pytest.raises(TypeError, match="needs a retention model, got Linear"):
        trace_retention(torch.nn.Linear(2, 2), tokenizer, TEXT)


class _Tags(HTMLParser):
    VOID = {"meta", "br", "img", "link", "hr", "input"}

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.depths: list[int] = []
        self.balanced = True

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.open.append(tag)
        attributes = dict(attrs)
        if tag == "span" and "data-depth" in attributes:
            self.depths.append(int(attributes["data-depth"]))

    def handle_endtag(self, tag):
        self.balanced &= bool(self.open) and self.open.pop() == tag


def test_html_is_well_formed_with_one_shaded_span_per_token(trace):
    page = render_html(trace, title="Trace <test>")
    parser = _Tags()
    parser.feed(page)
    assert page.startswith("<!DOCTYPE html>")
    assert parser.balanced and parser.open == []
    assert parser.depths == trace.depth
    assert "<title>Trace &lt;test&gt;</title>" in page
    assert f"cost {trace.keep_ratio:.3f}" in page


@pytest.mark.parametrize("size", [(1200, 400), (640, 480)])
def test_heatmap_png_has_the_requested_size(trace, tmp_path, size):
    path = plot_heatmap(trace, tmp_path / "heat.png", size=size)
    image = Image.open(path)
    assert image.format == "PNG" and image.size == size


def test_training_run_plots(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    history = [
        {
            "step": step,
            "loss": 0.5,
            "budget_target": 1 - step / 20,
            **{f"keep_ratio_layer_{i}": 1 - i * step / 40 for i in range(3)},
        }
        for step in (1, 5, 10)
    ]
    (run / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    (run / "eval_results.json").write_text(json.dumps({"eval_accuracy": 0.8, "eval_keep_ratio": 0.5}))
    assert Image.open(plot_layer_retention(run, tmp_path / "layers.png")).format == "PNG"
    assert Image.open(plot_budget_curve([run], tmp_path / "curve.png")).format == "PNG"
    with pytest.raises(KeyError, match="has no 'eval_f1'"):
        plot_budget_curve([run], tmp_path / "curve.png", metric="eval_f1")
    (run / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 0.3}]}))
    with pytest.raises(ValueError, match="logged no keep_ratio_layer"):
        plot_layer_retention(run, tmp_path / "layers.png")


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian chromium is not installed (scripts/test.sh installs it)"
)
def test_html_renders_in_headless_chromium(trace, tmp_path):
    page = save_html(trace, tmp_path / "trace.html")
    screenshot = tmp_path / "shot.png"
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,700",
            f"--screenshot={screenshot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1000, 700)
    pixels = list(image.getdata())
    blue = sum(1 for red, green, b in pixels if b > red + 40)  # tokens shaded towards #2166ac
    assert blue > 500, "the shaded tokens were not rendered"
    assert len(set(pixels)) > 20  # text, shades and background, not a blank page


def test_position_profile_hand_built():
    mask = torch.zeros(2, 12, dtype=torch.long)
    mask[0, :11] = 1
    mask[1, :6] = 1
    # row 0: positions 1..10 fall in fifths {1,2} {3,4} {5,6} {7,8} {9,10}; row 1: 1..5, one per fifth
    kept = torch.tensor([[0, 1, 2, 5, 9, -1], [0, 1, 5, -1, -1, -1]])
    profile = position_profile(kept, mask)
    assert profile == pytest.approx([3 / 3, 0 / 3, 1 / 3, 0 / 3, 2 / 3])
    with_cls = position_profile(kept, mask, bins=1, skip_first=False)
    assert with_cls == pytest.approx([8 / 17])


def test_keep_ratio_curves_plot(tmp_path):
    history = [{"step": step, "loss": 1.0, "keep_ratio": 1 - 0.05 * step, "budget_target": 0.5} for step in range(10)]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    path = plot_keep_ratio_curves({"topk r0.5": tmp_path / "run"}, tmp_path / "keep.png")
    assert Image.open(path).size[0] > 100
    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 1.0}]}))
    with pytest.raises(ValueError, match="logged no keep_ratio"):
        plot_keep_ratio_curves({"dense": tmp_path / "dense"}, tmp_path / "x.png")
