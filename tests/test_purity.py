"""The model must stay framework-neutral: importing it never imports pytest."""

import subprocess
import sys


def test_importing_the_model_does_not_import_pytest():
    code = ("import sys; import pytest_pinfault, pytest_pinfault.mm, pytest_pinfault.faults.injector; "
            "sys.exit(3 if 'pytest' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr or "pytest was imported by the model"


def test_the_model_imports_nothing_from_the_checker():
    """The model reports to an observer (mm/observer.py); it never imports contracts/."""
    import ast
    import os
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pytest_pinfault", "mm")
    offenders = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(root, name)).read())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.ImportFrom):
                mods = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            offenders += [f"{name}: {m}" for m in mods if "contracts" in m or "plugin" in m]
    assert offenders == []
