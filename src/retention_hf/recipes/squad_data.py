"""SQuAD v1.1 for training and evaluation: the official train and dev sets, plus a carve-out of train for tuning.

Three sources:

* ``squad``: train on ``../shared/data/squad_v1.1/train-answerable.json.gz`` (86,821 questions: the v1.1 train
  set less the 778 that SQuAD 2.0 dropped) and evaluate on the whole official dev set, ``dev-v1.1.json``
  (10,570 questions), as published SQuAD results do. Neither file is shipped.
* ``squad-val``: the same train set split by article, to choose recipes without touching dev. Its 442 articles
  are ranked by the SHA-1 of their title; the first 10 form the validation split, the other 432 the train split,
  so no paragraph appears in both. The rule involves no random number generator.
* ``squad-tiny``: the small subsets shipped in ``data/squad`` (the first two paragraphs of five train articles
  of ``squad-val`` and of two dev articles), for tests and smoke runs from a fresh clone.

The titles of every split are recorded in ``data/squad/split.json`` and checked on every load, so a changed
source file fails loudly instead of silently moving questions between train and eval.

    python -m retention_hf.recipes.squad_data   # rewrite data/squad/{split.json,tiny_train.json,tiny_eval.json}
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from .steps import REPO, SHARED


SHARED_TRAIN = SHARED / "squad_v1.1" / "train-answerable.json.gz"
SHARED_DEV = SHARED / "squad_v1.1" / "dev-v1.1.json"
SHIPPED = REPO / "data" / "squad"
VALIDATION_ARTICLES = 10
SOURCES = ("squad", "squad-val", "squad-tiny")
# the article lists of split.json that each (source, split) may draw from
_MANIFEST_KEYS = {
    ("squad", "train"): ("train", "validation"),
    ("squad", "eval"): ("dev",),
    ("squad-val", "train"): ("train",),
    ("squad-val", "eval"): ("validation",),
    ("squad-tiny", "train"): ("train",),
    ("squad-tiny", "eval"): ("dev",),
}


def _rank(article: dict) -> str:
    return hashlib.sha1(article["title"].encode("utf-8")).hexdigest()


def carve_validation(articles: list[dict]) -> dict[str, list[dict]]:
    """``{"train": [...], "eval": [...]}``: the 10 train articles with the smallest title SHA-1 are the validation split."""
    ranked = sorted(articles, key=_rank)
    return {"train": ranked[VALIDATION_ARTICLES:], "eval": ranked[:VALIDATION_ARTICLES]}


def flatten(articles: list[dict]) -> list[dict]:
    """One row per question, in the ``datasets`` SQuAD layout (id, title, context, question, answers)."""
    return [
        {
            "id": qa["id"],
            "title": article["title"],
            "context": paragraph["context"],
            "question": qa["question"],
            "answers": {
                "text": [answer["text"] for answer in qa["answers"]],
                "answer_start": [answer["answer_start"] for answer in qa["answers"]],
            },
        }
        for article in articles
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def _read_articles(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this source needs ../shared/data (use squad-tiny)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)["data"]


def _articles(split: str, source: str) -> list[dict]:
    if source == "squad-tiny":
        return json.loads((SHIPPED / f"tiny_{split}.json").read_text(encoding="utf-8"))["data"]
    if source == "squad":
        return _read_articles(SHARED_TRAIN if split == "train" else SHARED_DEV)
    if source == "squad-val":
        return carve_validation(_read_articles(SHARED_TRAIN))[split]
    raise ValueError(f"unknown SQuAD source {source!r}, expected one of {SOURCES}")


def load_squad(split: str, source: str = "squad") -> list[dict]:
    """The ``train`` or ``eval`` questions of ``source`` (see the module docstring), checked against split.json."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    articles = _articles(split, source)
    manifest = json.loads((SHIPPED / "split.json").read_text(encoding="utf-8"))
    expected = {title for key in _MANIFEST_KEYS[source, split] for title in manifest[f"{key}_articles"]}
    strays = sorted({article["title"] for article in articles} - expected)
    if strays:
        raise ValueError(f"articles {strays} of {source}/{split} are not where data/squad/split.json puts them")
    return flatten(articles)


def spread_subset(questions: list[dict], count: int | None) -> list[dict]:
    """``count`` questions, an even hash sample over the whole file: those with the smallest SHA-1 of their id, in
    file order.

    The files list questions article by article, so their first N would cover only the first few topics."""
    if count is not None and count < 0:
        raise ValueError(f"the number of train questions must be >= 0, got {count}")
    if count is None or count >= len(questions):
        return questions
    chosen = set(sorted(hashlib.sha1(row["id"].encode("utf-8")).hexdigest() for row in questions)[:count])
    return [row for row in questions if hashlib.sha1(row["id"].encode("utf-8")).hexdigest() in chosen]


def squad_datasets(source: str, max_train: int | None = None, max_eval: int | None = None):
    """The train and eval questions of ``source`` as ``datasets.Dataset``s: ``max_train`` train questions, an even
    hash sample (``spread_subset``), and the first ``max_eval`` eval questions."""
    from datasets import Dataset

    return (
        Dataset.from_list(spread_subset(load_squad("train", source), max_train)),
        Dataset.from_list(load_squad("eval", source)[:max_eval]),
    )


def write_shipped_files() -> None:
    """Write split.json and the tiny subsets from the shared train and dev sets (deterministic)."""
    carved = carve_validation(_read_articles(SHARED_TRAIN))
    dev = sorted(_read_articles(SHARED_DEV), key=_rank)
    splits = {"train": carved["train"], "validation": carved["eval"], "dev": dev}
    manifest = {
        "source": "SQuAD v1.1: ../shared/data/squad_v1.1/train-answerable.json.gz (train) and dev-v1.1.json (dev)",
        "rule": "train articles ranked by sha1(title): the first 10 are the validation split of squad-val, the rest "
        "its train split; squad trains on both and evaluates on dev",
        **{f"{name}_articles": [article["title"] for article in articles] for name, articles in splits.items()},
        **{f"{name}_questions": len(flatten(articles)) for name, articles in splits.items()},
    }
    SHIPPED.mkdir(parents=True, exist_ok=True)
    (SHIPPED / "split.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    for name, articles, count in (("train", carved["train"], 5), ("eval", dev, 2)):
        tiny = [{**article, "paragraphs": article["paragraphs"][:2]} for article in articles[:count]]
        (SHIPPED / f"tiny_{name}.json").write_text(
            json.dumps({"version": "1.1", "data": tiny}, ensure_ascii=False) + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    write_shipped_files()
    for source in SOURCES:
        print(source, *(f"{split} {len(load_squad(split, source)):,}" for split in ("train", "eval")))
