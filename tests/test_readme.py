"""The README's Python examples run as written, and its quickstart matches .ci/run."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_readme_python_examples_run(capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)   # the blocks build on each other
    assert namespace["k"].stats.nr_foll_pin_acquired == namespace["k"].stats.nr_foll_pin_released


def test_ci_runs_the_readme_test_command():
    quickstart = re.search(r"## Quickstart\n\n```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    test_command = quickstart.group(1).strip().splitlines()[-1]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert test_command in ci
