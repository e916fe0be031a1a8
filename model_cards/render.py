#!/usr/bin/env python
"""Render the cards of the reference checkpoints that results/ reports, with the package's own card code.

Each card is built from what the benchmark harness measured (``results/<dataset>/results.json``: accuracy,
realised keep ratio, speed-up over the same weights run dense) and the checkpoint's saved config
(``results/<dataset>/configs/rho<budget>.json``, written by ``reproduce.sh``), so a card states only
measured figures and changes when the results do. A reference model whose config is not in results/ yet
has no card.

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
from retention_hf.model_card import RetentionModelCardData, render_model_card_for_config


ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Reference:
    """A published checkpoint: its card's name, the results folder that measured it, and its budget."""

    name: str
    results: str
    budget: str
    dataset: str
    split: str
    architecture: str = "RetentionBertForSequenceClassification"


REFERENCES = [
    Reference(f"minilm-l6-{data}-retention-r{budget.replace('0.', '')}0", folder, budget, hub_id, split)
    for data, folder, hub_id, split in (
        ("sst2", "results/sst2", "stanfordnlp/sst2", "validation"),
        ("imdb", "results/imdb", "stanfordnlp/imdb", "test (1,000-review sample)"),
    )
    for budget in ("0.5", "0.3")
]


def card_data(reference: Reference, results: dict) -> RetentionModelCardData:
    """The measured figures of one budget in a harness ``results.json``."""
    key = f"rho={reference.budget}"
    learned = results["accuracy"][key]["learned"]
    machine = results["machine"]
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
    )


def render(reference: Reference) -> str | None:
    """The card's text, or ``None`` while results/ lacks the checkpoint's config."""
    folder = ROOT / reference.results
    config_file = folder / "configs" / f"rho{reference.budget}.json"
    if not config_file.is_file():
        return None
    config = RetentionBertConfig.from_dict(json.loads(config_file.read_text()))
    results = json.loads((folder / "results.json").read_text())
    card = render_model_card_for_config(config, reference.architecture, card_data(reference, results))
    return str(card)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="Compare with the committed cards; write nothing.")
    args = parser.parse_args(argv)
    stale = []
    for reference in REFERENCES:
        text = render(reference)
        if text is None:
            continue
        path = CARDS / reference.name / "README.md"
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
