#!/usr/bin/env python
"""Render the cards of the reference checkpoints that results/ reports, with the package's own card code.

Each card is built from what the benchmark harness measured (``results/<dataset>/results.json``: accuracy,
realised keep ratio, speed-up over the same weights run dense) and the checkpoint's saved config
(``results/<dataset>/configs/rho<budget>.json``, written by ``reproduce.sh``), so a card states only measured
figures and changes when the results do. The one checkpoint trained for every budget has a harness run of its
own, ``results/<dataset>-any-warm0`` (``configs/any.json`` there); its card also carries that run's rows at every
budget, as a table and ``budget_curve.svg``. A reference model whose config is not in results/ yet has no card.

    python model_cards/render.py           # (re)write model_cards/<name>/README.md
    python model_cards/render.py --check   # exit 1 if a committed card differs from a fresh rendering
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from retention_hf import RetentionBertConfig
from retention_hf.model_card import CURVE_IMAGE, RetentionModelCardData, budget_curve_svg, render_model_card_for_config


ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Reference:
    """A published checkpoint: its card's name, the results folder that measured it, and its budget.

    ``any_budget``: the one checkpoint trained for every budget, measured by the harness's ``--any_budget``
    rows; its headline figures are those at the default budget of its config (``budget`` is then ``None``)."""

    name: str
    results: str
    budget: str | None
    dataset: str
    split: str
    any_budget: bool = False
    architecture: str = "RetentionBertForSequenceClassification"

    @property
    def config_name(self) -> str:
        return "any.json" if self.any_budget else f"rho{self.budget}.json"

    def row(self, budget: str | float) -> str:
        """The harness's row name for this checkpoint at ``budget``."""
        return f"any rho={budget}" if self.any_budget else f"rho={budget}"


_DATASETS = (
    ("sst2", "results/sst2", "stanfordnlp/sst2", "validation"),
    ("imdb", "results/imdb", "stanfordnlp/imdb", "test (1,000-review sample)"),
)
REFERENCES = [
    Reference(f"minilm-l6-{data}-retention-r{budget.replace('0.', '')}0", folder, budget, hub_id, split)
    for data, folder, hub_id, split in _DATASETS
    for budget in ("0.5", "0.3")
] + [  # the any-budget checkpoints' own harness runs (accuracy and speed at every budget, with the baselines)
    Reference(f"minilm-l6-{data}-retention-any", f"{folder}-any-warm0", None, hub_id, split, any_budget=True)
    for data, folder, hub_id, split in _DATASETS
]


def card_data(reference: Reference, results: dict, budget: float | str) -> RetentionModelCardData:
    """The measured figures of the checkpoint at ``budget`` in a harness ``results.json`` (and, for the
    any-budget checkpoint, at every budget the harness ran it)."""
    if reference.any_budget and "any_budget" not in results:
        raise ValueError(
            f"{reference.results}/configs/any.json is there but {reference.results}/results.json has no "
            "--any_budget rows: rerun the harness there with --any_budget"
        )
    key = reference.row(budget)
    learned = results["accuracy"][key]["learned"]
    machine = results["machine"]
    curve = [
        {
            "budget": budget,
            "keep_ratio": results["accuracy"][reference.row(budget)]["learned"]["keep_ratio"],
            "metrics": {"accuracy": results["accuracy"][reference.row(budget)]["learned"]["accuracy"]},
            "speedup": results["speed"][reference.row(budget)]["speedup_vs_dense"],
        }
        for budget in (results["any_budget"]["budgets"] if reference.any_budget else [])
    ]
    return RetentionModelCardData(
        model_name=reference.name,
        base_model=BASE_MODEL,
        datasets=[reference.dataset],
        eval_split=reference.split,
        metrics={"accuracy": learned["accuracy"]},
        keep_ratio=learned["keep_ratio"],
        speedup=results["speed"][key]["speedup_vs_dense"],
        speedup_setup=(
            f"{machine['processor'] or 'cpu'}, {machine['torch_threads']} threads, batch {results['batch_size']}, "
            f"max length {results['max_length']}, median of {results['repeats']} runs"
        ),
        license="apache-2.0",
        budget_curve=curve,
    )


def render(reference: Reference) -> dict[str, str]:
    """The card's files (``{"README.md": text}``, plus the curve's SVG for an any-budget card), or none while
    results/ lacks the checkpoint's config."""
    folder = ROOT / reference.results
    config_file = folder / "configs" / reference.config_name
    if not config_file.is_file():
        return {}
    config = RetentionBertConfig.from_dict(json.loads(config_file.read_text()))
    budget = config.retention_ratio if reference.any_budget else reference.budget
    data = card_data(reference, json.loads((folder / "results.json").read_text()), budget)
    files = {"README.md": str(render_model_card_for_config(config, reference.architecture, data))}
    if data.budget_curve:
        files[CURVE_IMAGE] = budget_curve_svg(data.budget_curve, "accuracy")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="Compare with the committed cards; write nothing.")
    args = parser.parse_args(argv)
    stale = []
    for reference in REFERENCES:
        for name, text in render(reference).items():
            path = CARDS / reference.name / name
            if args.check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(str(path.relative_to(ROOT)))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(path.relative_to(ROOT))
    if stale:
        print("stale or missing cards (run python model_cards/render.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
