"""The C-driver bridge's tests: skipped as a whole when cffi or gcc is missing."""

import shutil

import pytest

pytest.importorskip("cffi", reason="the C-driver bridge needs the [c] extra (cffi)")
if shutil.which("gcc") is None:     # pragma: no cover - the CI image has gcc
    pytest.skip("the C-driver bridge needs gcc", allow_module_level=True)


@pytest.fixture(scope="session")
def cdriver_cache(tmp_path_factory):
    """One build cache for the session (each test driver compiles once)."""
    return tmp_path_factory.mktemp("cdriver-cache")
