"""The README's quickstart runs as written and prints what the README says it prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest


README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_and_prints_what_the_readme_claims():
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    claimed = re.search(r"which prints `(.*?)`", section).group(1)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code, str(README), "exec"), {})
    assert stdout.getvalue().strip() == claimed


DOCS = README.parent / "docs"
DOC_BLOCKS = [
    (page.name, index, code)
    for page in sorted(DOCS.glob("*.md"))
    for index, code in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL))
]


def test_every_docs_page_is_linked_from_the_readme():
    text = README.read_text()
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert f"(docs/{page.name})" in text, page.name


@pytest.mark.parametrize(("page", "index", "code"), DOC_BLOCKS, ids=[f"{p}-{i}" for p, i, _ in DOC_BLOCKS])
def test_docs_python_blocks_run(page, index, code, tmp_path, monkeypatch):
    """Every Python block in docs/ runs as written, from the repository root, unless its first line says
    what it needs that a test cannot have (``# needs: ...``: a trained checkpoint, a Hub repository)."""
    if code.startswith("# needs:"):
        pytest.skip(code.splitlines()[0])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(README.parent / "data")
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, f"{page} block {index}", "exec"), {})
