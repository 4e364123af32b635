"""Nothing mutable is shared between tests (issue 18): the run's frozen MMConfig used
to share its ``hugetlb`` dict with every test, so one test's write changed the machine
of every later test -- visible only in some orders.  Each project below runs forward
and reversed and must pass both ways."""

import pytest

pytest_plugins = ["pytester"]

REVERSE = """
import os

def pytest_collection_modifyitems(items):
    if os.environ.get("REVERSE_ORDER") == "1":
        items.reverse()
"""


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_a_test_cannot_change_the_next_tests_machine(pytester, run, monkeypatch, order):
    monkeypatch.setenv("REVERSE_ORDER", "1" if order == "reversed" else "0")
    pytester.makeconftest(REVERSE)
    pytester.makeini("""
        [pytest]
        pinfault_mm_config = ram=1GiB hugetlb=2MiB:4
    """)
    pytester.makepyfile(test_iso="""
        import pytest

        HPAGE = 2 << 20

        def test_1_tries_to_grow_the_pool(fake_mm, mm_config):
            for cfg in (fake_mm.config, mm_config):
                with pytest.raises(TypeError):
                    cfg.hugetlb[HPAGE] = 64
                with pytest.raises(AttributeError):
                    cfg.hugetlb.clear()
            assert fake_mm.hstate(HPAGE).nr_huge_pages == 4

        def test_2_sees_the_configured_pool(fake_mm):
            assert fake_mm.config.hugetlb == {HPAGE: 4}
            assert fake_mm.hstate(HPAGE).nr_huge_pages == 4

        @pytest.mark.mm_config(hugetlb={"2MiB": 8})
        def test_3_marker_form(fake_mm):
            assert fake_mm.config.hugetlb == {HPAGE: 8}
            assert fake_mm.hstate(HPAGE).nr_huge_pages == 8
    """)
    result = run("-v")
    result.assert_outcomes(passed=3)
    names = [line.split("::")[1].split()[0] for line in result.stdout.lines if "::test_" in line and "PASSED" in line]
    assert names == sorted(names, reverse=(order == "reversed"))


def test_marker_dict_is_copied_not_kept(pytester, run):
    """The marker's own dict can be changed by the test module afterwards; the
    machine keeps what the marker said."""
    pytester.makepyfile(test_iso="""
        import pytest

        POOLS = {"2MiB": 2}

        @pytest.mark.mm_config(hugetlb=POOLS)
        def test_a(fake_mm):
            POOLS["2MiB"] = 100

        @pytest.mark.mm_config(hugetlb=POOLS)
        def test_b(fake_mm):
            assert fake_mm.hstate(2 << 20).nr_huge_pages == 2
    """)
    run().assert_outcomes(passed=2)
