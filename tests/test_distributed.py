"""The classification example under 2-process DDP (torchrun, gloo, CPU) against a 1-process run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import BertForSequenceClassification

from families import save_tiny_text_model


REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "run_classification.py"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny vanilla BERT with the real MiniLM tokenizer, so the example runs on real SST-2 text."""
    return save_tiny_text_model(tmp_path_factory.mktemp("tiny-bert"), BertForSequenceClassification)


def free_port() -> int:
    """A port nobody listens on now, so that two test runs on one machine never join each other's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_example(launcher: list[str], checkpoint: Path, output_dir: Path, batch_size: int, recipe: list[str]) -> dict:
    args = [
        *launcher,
        str(EXAMPLE),
        f"--model_name_or_path={checkpoint}",
        "--dataset=sst2",
        "--max_train_samples=64",
        "--max_eval_samples=32",
        "--max_seq_length=32",
        "--max_steps=4",
        f"--per_device_train_batch_size={batch_size}",
        *recipe,
        "--retention_ratio=0.4",
        "--budget_warmup_steps=0",  # the budget binds from the first step
        "--save_strategy=steps",
        "--save_steps=4",
        "--logging_steps=1",
        "--use_cpu",
        "--seed=0",
        "--data_seed=0",
        "--report_to=none",
        "--disable_tqdm=true",
        f"--output_dir={output_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    checkpoint_dir = output_dir / "checkpoint-4"
    state = json.loads((checkpoint_dir / "trainer_state.json").read_text())
    return {
        "budget": json.loads((checkpoint_dir / "budget_state.json").read_text()),
        "logs": [entry for entry in state["log_history"] if "keep_ratio" in entry],
        "results": json.loads((output_dir / "eval_results.json").read_text()),
    }


def run_ddp(checkpoint: Path, tmp_path: Path, recipe: list[str]) -> dict:
    """Two processes of 4 examples each (torchrun, gloo)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    return run_example(launcher, checkpoint, tmp_path / "ddp", batch_size=4, recipe=recipe)


def run_ddp_and_single(checkpoint: Path, tmp_path: Path, recipe: list[str]) -> tuple[dict, dict]:
    """The same global batch of 8: two processes of 4, and one process of 8."""
    ddp = run_ddp(checkpoint, tmp_path, recipe)
    single = run_example([sys.executable], checkpoint, tmp_path / "single", batch_size=8, recipe=recipe)
    return ddp, single


def test_two_process_ddp_matches_one_process(tiny_checkpoint, tmp_path):
    hard_concrete = [
        "--selection_training=hard_concrete",  # the dual variable's all-reduce is what this test checks
        "--gate_sampling=sigmoid",  # deterministic gates: both runs must compute the same numbers
        "--initial_lambda=0.5",  # the budget binds from the first step, so lambda must rise
    ]
    ddp, single = run_ddp_and_single(tiny_checkpoint, tmp_path, hard_concrete)

    lambdas = ddp["budget"]["lambda_by_rank"]
    assert len(lambdas) == 2 and lambdas[0] == lambdas[1], "every rank holds the same lambda"
    assert ddp["budget"]["lagrange_multiplier"] == pytest.approx(single["budget"]["lagrange_multiplier"], rel=1e-6)
    assert len(ddp["logs"]) == len(single["logs"]) == 4
    for got, want in zip(ddp["logs"], single["logs"], strict=True):
        assert got["lambda"] == pytest.approx(want["lambda"], rel=1e-6)
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["expected_keep_ratio"] == pytest.approx(want["expected_keep_ratio"], rel=1e-6)
    assert ddp["logs"][-1]["lambda"] > ddp["logs"][0]["lambda"] > 0.5
    assert 0 <= ddp["results"]["eval_accuracy"] <= 1 and ddp["results"]["eval_keep_ratio"] < 1


def test_two_process_ddp_matches_one_process_with_the_default_topk_training(tiny_checkpoint, tmp_path):
    ddp, single = run_ddp_and_single(tiny_checkpoint, tmp_path, [])  # the default recipe: top-k training
    assert len(ddp["logs"]) == len(single["logs"]) == 4
    for got, want in zip(ddp["logs"], single["logs"], strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["keep_ratio"] == pytest.approx(want["keep_ratio"], rel=1e-6)  # every rank's tokens counted
        assert got["lambda"] == 0.0 and "budget_penalty" not in got
    assert abs(ddp["logs"][-1]["keep_ratio"] - 0.4) < 0.03  # the budget is exact from the first step
    for metric in ("eval_accuracy", "eval_keep_ratio"):
        assert ddp["results"][metric] == pytest.approx(single["results"][metric], rel=1e-6)


def test_two_process_ddp_trains_a_range_of_budgets_in_sub_batches(tiny_checkpoint, tmp_path):
    """A range of budgets runs every micro-batch as sub-batches, several forward passes before one backward, which
    DDP must take: each rank's draws are its own, so this checks that the run trains and spends its draws."""
    recipe = ["--retention_ratio_range", "0.2", "1.0", "--retention_ratio_sampling=sandwich"]  # 4 sub-batches
    ddp = run_ddp(tiny_checkpoint, tmp_path, recipe)
    assert len(ddp["logs"]) == 4
    for entry in ddp["logs"]:
        assert 0.2 < entry["budget_target"] < 1.0 and entry["keep_ratio"] == pytest.approx(
            entry["budget_target"], abs=0.1
        )
