"""Peak memory above the loaded model, one fresh child process per configuration.

The child builds the batches and loads the model, runs one 8-token forward (one-time library set-up:
thread pools, kernel caches), then resets the kernel's peak-RSS counter (``/proc/self/clear_refs``,
Linux) and runs every batch. Peak memory above the model is ``VmHWM`` after
the pass minus ``VmRSS`` before it: everything the forward passes added (activations, attention
scores, allocator caches), measured by the OS, not by an allocator's own bookkeeping. A fresh process
per configuration keeps one configuration's freed-but-cached memory out of the next one's figure.

    python -m retention_hf.benchmarks.memory --checkpoint runs/imdb-r30 --dataset imdb --configuration rho=0.3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

from .data import load_examples, make_batches, model_inputs
from .models import load_retention_model, set_configuration
from .speed import stock_twin


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (peak memory needs Linux)")


def measure_in_this_process(checkpoint: str, dataset: str, configuration: str, batch_size: int, max_length: int, limit):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    batches = make_batches(tokenizer, load_examples(dataset, limit), batch_size, max_length)
    model = load_retention_model(checkpoint)
    if configuration == "stock":
        model = stock_twin(model)  # shares the loaded tensors: nothing freed that the pass could reuse
    else:
        set_configuration(model, configuration)
    torch.set_grad_enabled(False)
    model(**model_inputs(make_batches(tokenizer, load_examples(dataset, 1), 1, 8)[0]))  # one-time library set-up
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
    before = _status_kb("VmRSS")
    for batch in batches:
        model(**model_inputs(batch))
    return {"configuration": configuration, "peak_above_model_mb": (_status_kb("VmHWM") - before) / 1024}


def measure(checkpoint: str, dataset: str, configuration: str, batch_size: int, max_length: int, limit=None) -> float:
    """Peak memory above the model (MB) of one configuration, measured in a fresh child process."""
    command = [
        sys.executable,
        "-m",
        "retention_hf.benchmarks.memory",
        f"--checkpoint={checkpoint}",
        f"--dataset={dataset}",
        f"--configuration={configuration}",
        f"--batch_size={batch_size}",
        f"--max_length={max_length}",
    ]
    if limit is not None:
        command.append(f"--limit={limit}")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {configuration} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_above_model_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--configuration", required=True, help="stock, dense, or rho=<ratio>")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_length", type=int, default=512)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    result = measure_in_this_process(
        args.checkpoint, args.dataset, args.configuration, args.batch_size, args.max_length, args.limit
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
