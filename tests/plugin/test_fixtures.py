"""The minimal plugin: the fake_mm fixture, the mm_config fixture and marker."""

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _no_autoload(monkeypatch):
    """Inner runs load the plugin explicitly with -p, as a user without autoload would."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def test_fake_mm_fixture_and_marker_end_to_end(pytester):
    pytester.makepyfile(
        """
        import pytest

        def test_default(fake_mm):
            assert fake_mm.config.ram == 4 << 30
            assert "Movable" not in fake_mm.zones

        @pytest.mark.mm_config(ram="2GiB", movablecore="256MiB", cma="64MiB")
        def test_marker(fake_mm):
            assert fake_mm.config.ram == 2 << 30
            assert fake_mm.zones["Movable"].present_pages == 65536
            assert fake_mm.cma_areas[0].count == 16384

        def test_fresh_per_test(fake_mm):
            assert fake_mm.stats.pgmigrate_success == 0 and not fake_mm.warnings
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "pytest_pinfault.plugin")
    result.assert_outcomes(passed=3)


def test_mm_config_fixture_override(pytester):
    pytester.makeconftest(
        """
        import pytest
        from pytest_pinfault import MMConfig

        @pytest.fixture
        def mm_config():
            return MMConfig(ram="1GiB", cma="32MiB")
        """
    )
    pytester.makepyfile(
        """
        import pytest

        def test_override(fake_mm):
            assert fake_mm.config.ram == 1 << 30 and fake_mm.cma_areas[0].count == 8192

        @pytest.mark.mm_config(cma="64MiB")
        def test_marker_wins(fake_mm):
            assert fake_mm.config.ram == 1 << 30 and fake_mm.cma_areas[0].count == 16384
        """
    )
    result = pytester.runpytest("-p", "pytest_pinfault.plugin")
    result.assert_outcomes(passed=2)
