"""The model must stay framework-neutral: importing it never imports pytest."""

import subprocess
import sys


def test_importing_the_model_does_not_import_pytest():
    code = ("import sys; import pytest_pinfault, pytest_pinfault.mm, pytest_pinfault.faults.injector; "
            "sys.exit(3 if 'pytest' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr or "pytest was imported by the model"
