"""End to end: the ini key and the mm_config marker take the same text for every value,
and give the same machine."""


pytest_plugins = ["pytester"]

def test_ini_and_marker_text_build_the_same_machine(pytester, run):
    line = "ram=2GiB movablecore=256MiB hugetlb=2MiB:4 cma=a:64MiB,b:32MiB quirks=pcp_thp_shared_list nr_cpus=4"
    pytester.makeini(f"[pytest]\npinfault_mm_config = {line}\n")
    pytester.makepyfile(test_same="""
        import pytest
        from pytest_pinfault import MMConfig

        WANT = MMConfig(ram=2 << 30, movablecore=256 << 20, hugetlb={"2MiB": 4},
                        cma={"a": "64MiB", "b": "32MiB"}, quirks=["pcp_thp_shared_list"], nr_cpus=4)

        def test_ini(fake_mm):
            assert fake_mm.config.replace(seed=0) == WANT
            assert fake_mm.hstate("2MiB").nr_huge_pages == 4
            assert [a.name for a in fake_mm.cma_areas] == ["a", "b"]

        @pytest.mark.mm_config(ram="2GiB", movablecore="256MiB", hugetlb="2MiB:4",
                               cma="a:64MiB,b:32MiB", quirks="pcp_thp_shared_list", nr_cpus="4")
        def test_marker_text(fake_mm):
            assert fake_mm.config.replace(seed=0) == WANT
    """)
    result = run()
    result.assert_outcomes(passed=2)


def test_marker_text_misuse_names_test_marker_field_and_expectation(pytester, run):
    pytester.makepyfile(test_bad="""
        import pytest

        @pytest.mark.mm_config(hugetlb="2MiB")
        def test_x(fake_mm):
            pass
    """)
    result = run()
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: test_bad.py::test_x: @pytest.mark.mm_config: hugetlb: "
                                 "expected 'size:count,...' like 2MiB:16, got '2MiB'"])


def test_ini_text_misuse_names_the_key_field_and_expectation(pytester, run):
    pytester.makeini("[pytest]\npinfault_mm_config = cma=a:64MiB,a:32MiB\n")
    pytester.makepyfile(test_ok="def test_x(fake_mm):\n    pass\n")
    result = run()
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: pinfault_mm_config (ini): cma: expected each name once, got 'a' twice"])
