"""The README's main job runs end to end (on a few training sentences) and saves a loadable checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

import retention_hf  # noqa: F401


REPO = Path(__file__).resolve().parents[1]


def test_main_job_smoke(tmp_path):
    output = tmp_path / "main"
    result = subprocess.run(
        [
            sys.executable,
            "examples/main_job.py",
            "--max_train_samples=64",
            "--max_eval_samples=256",
            f"--output_dir={output}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "| dense MiniLM-L6 |" in result.stdout and "| retention rho=0.5 |" in result.stdout
    summary = json.loads((output / "summary.json").read_text())
    assert "| model | SST-2 dev accuracy (256) |" in result.stdout
    assert abs(summary["retention"]["eval_keep_ratio"] - 0.5) < 0.03  # measured on the first 256 dev sentences
    assert summary["retention"]["eval_speedup"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(output / "retention").eval()
    assert type(model).__name__ == "RetentionBertForSequenceClassification"
    # the default recipe trains with the decay schedule's top-k and keeps that schedule (nothing learned to store)
    assert model.config.retention_ratio == 0.5 and model.config.retention_schedule == "decay"
    assert model.config.retention_learned_schedule is None
    with torch.no_grad():
        outputs = model(input_ids=torch.tensor([[101, 2023, 3185, 2001, 2307, 102]]))
    assert outputs.logits.shape == (1, 2) and outputs.kept_counts.shape == (1, 6)
