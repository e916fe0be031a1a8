"""The README's quickstart runs as written and prints what the README says it prints."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path


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
