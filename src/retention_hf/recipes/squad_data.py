"""SQuAD v1.1 for training and evaluation, split by article (the shared data holds only the dev set).

The 48 articles of the official dev set are ranked by the SHA-1 of their title; the first 10 form the
eval split (1,821 questions) and the other 38 the train split (8,749 questions). No article, and so no
paragraph, appears in both. The titles of each split are recorded in ``data/squad/split.json`` and
checked on every load, so a changed source file fails loudly instead of silently moving questions.

Two sources:

* ``squad`` reads ``../shared/data/squad_v1.1/dev-v1.1.json`` (the complete dev set, not shipped);
* ``squad-tiny`` reads the subset shipped in ``data/squad`` (the first two paragraphs of five train and
  two eval articles), for tests and smoke runs from a fresh clone.

    python -m retention_hf.recipes.squad_data   # rewrite data/squad/{split.json,tiny_train.json,tiny_eval.json}
"""

from __future__ import annotations

import hashlib
import json

from .steps import REPO, SHARED


SHARED_DEV = SHARED / "squad_v1.1" / "dev-v1.1.json"
SHIPPED = REPO / "data" / "squad"
EVAL_ARTICLES = 10
SOURCES = ("squad", "squad-tiny")


def _rank(article: dict) -> str:
    return hashlib.sha1(article["title"].encode("utf-8")).hexdigest()


def split_articles(articles: list[dict]) -> dict[str, list[dict]]:
    """``{"train": [...], "eval": [...]}``: the 10 articles with the smallest title SHA-1 are the eval split."""
    ranked = sorted(articles, key=_rank)
    return {"train": ranked[EVAL_ARTICLES:], "eval": ranked[:EVAL_ARTICLES]}


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


def load_squad(split: str, source: str = "squad") -> list[dict]:
    """The ``train`` or ``eval`` questions of ``source`` (see the module docstring), checked against split.json."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if source == "squad-tiny":
        articles = json.loads((SHIPPED / f"tiny_{split}.json").read_text(encoding="utf-8"))["data"]
    elif source == "squad":
        if not SHARED_DEV.is_file():
            raise FileNotFoundError(f"{SHARED_DEV} not found: the full split needs ../shared/data (use squad-tiny)")
        articles = split_articles(json.loads(SHARED_DEV.read_text(encoding="utf-8"))["data"])[split]
    else:
        raise ValueError(f"unknown SQuAD source {source!r}, expected one of {SOURCES}")
    expected = set(json.loads((SHIPPED / "split.json").read_text(encoding="utf-8"))[f"{split}_articles"])
    strays = sorted({article["title"] for article in articles} - expected)
    if strays:
        raise ValueError(f"articles {strays} are not in the {split} split recorded in data/squad/split.json")
    return flatten(articles)


def squad_datasets(source: str, max_train: int | None = None, max_eval: int | None = None):
    """The train and eval questions of ``source`` as ``datasets.Dataset``s, each cut to its first N rows."""
    from datasets import Dataset

    return (
        Dataset.from_list(load_squad("train", source)[:max_train]),
        Dataset.from_list(load_squad("eval", source)[:max_eval]),
    )


def write_shipped_files() -> None:
    """Write split.json and the tiny subsets from the shared dev set (deterministic)."""
    splits = split_articles(json.loads(SHARED_DEV.read_text(encoding="utf-8"))["data"])
    manifest = {
        "source": "SQuAD v1.1 dev set (../shared/data/squad_v1.1/dev-v1.1.json)",
        "rule": "articles ranked by sha1(title); the first 10 are eval, the other 38 train",
        **{f"{name}_articles": [article["title"] for article in articles] for name, articles in splits.items()},
        **{f"{name}_questions": len(flatten(articles)) for name, articles in splits.items()},
    }
    SHIPPED.mkdir(parents=True, exist_ok=True)
    (SHIPPED / "split.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    for name, count in (("train", 5), ("eval", 2)):
        tiny = [{**article, "paragraphs": article["paragraphs"][:2]} for article in splits[name][:count]]
        (SHIPPED / f"tiny_{name}.json").write_text(
            json.dumps({"version": "1.1", "data": tiny}, ensure_ascii=False) + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    write_shipped_files()
    for split in ("train", "eval"):
        print(split, len(load_squad(split, "squad")), "questions;", len(load_squad(split, "squad-tiny")), "tiny")
