"""Shared set-up of the plugin's end-to-end tests: every inner run loads the plugin with
``-p`` and with plugin autoload disabled, as a user without the entry point would."""

import pytest

INNER = ("-p", "no:cacheprovider", "-p", "pytest_pinfault.plugin")


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("PINFAULT_FAULTS", raising=False)


@pytest.fixture
def run(pytester):
    """Run pytest in-process on the pytester project with the plugin loaded."""
    def run(*args):
        return pytester.runpytest(*INNER, *args)
    return run


@pytest.fixture
def run_subprocess(pytester):
    """Run pytest in a subprocess (needed for pytest-xdist)."""
    def run(*args):
        return pytester.runpytest_subprocess(*INNER, *args)
    return run
