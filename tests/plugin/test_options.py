"""Command-line options, the environment variable and ini keys."""

import pytest

pytest_plugins = ["pytester"]


def test_options_are_grouped_in_help(pytester, run):
    result = run("--help")
    result.stdout.fnmatch_lines([
        "pinfault: fake mm and fault injection:",
        "  --pinfault-seed=N*",
        "  --pinfault-faults=SPECS*",
        "  --pinfault-json=PATH*",
        "  --pinfault-trace=*",
        "  --pinfault-max-nth=N*",
    ])
    for key in ("pinfault_seed", "pinfault_faults", "pinfault_max_nth", "pinfault_mm_config",
                "pinfault_sites", "pinfault_budget", "pinfault_trace"):
        result.stdout.fnmatch_lines([f"  {key} *"])


class TestSeed:
    def test_option_ini_and_random(self, pytester, run):
        pytester.makepyfile("def test_x(): pass")
        run("--pinfault-seed=17").stdout.fnmatch_lines(["pinfault: seed=17 kernel=6.17 (pytest-pinfault *)"])
        pytester.makeini("""
            [pytest]
            pinfault_seed = 99
        """)
        run().stdout.fnmatch_lines(["pinfault: seed=99 kernel=6.17 *"])
        run("--pinfault-seed=3").stdout.fnmatch_lines(["pinfault: seed=3 *"])
        pytester.makeini("[pytest]")
        seeds = {run().stdout.str().split("pinfault: seed=")[1].split()[0] for _ in range(3)}
        assert len(seeds) > 1 and all(s.isdigit() for s in seeds)

    def test_bad_seed(self, pytester, run):
        result = run("--pinfault-seed=abc")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["ERROR: --pinfault-seed: expected an integer >= 0, got 'abc'"])
        pytester.makeini("""
            [pytest]
            pinfault_seed = -1
        """)
        run().stderr.fnmatch_lines(["ERROR: pinfault_seed (ini): expected an integer >= 0, got '-1'"])


FAULTS_TEST = """
    from pytest_pinfault.mm import GFP_KERNEL

    def test_a(fake_mm, pinfault):
        fake_mm.kmalloc(8, GFP_KERNEL)
        fake_mm.kmalloc(8, GFP_KERNEL)
        print("FIRED", [(r.site, r.occurrence) for r in pinfault.fired])
"""


class TestGlobalFaults:
    """--pinfault-faults > $PINFAULT_FAULTS > ini pinfault_faults, armed on every fake_mm."""

    def test_precedence(self, pytester, run, monkeypatch):
        pytester.makepyfile(FAULTS_TEST)
        pytester.makeini("""
            [pytest]
            pinfault_faults =
                kmalloc[nth=2]=return
        """)
        run("-s").stdout.fnmatch_lines(["*FIRED [[]('kmalloc', 2)]"])
        monkeypatch.setenv("PINFAULT_FAULTS", "kmalloc=1*return")
        run("-s").stdout.fnmatch_lines(["*FIRED [[]('kmalloc', 1)]"])
        run("-s", "--pinfault-faults", "kmalloc=return; try_grab_folio=return").stdout.fnmatch_lines(
            ["*FIRED [[]('kmalloc', 1), ('kmalloc', 2)]"])

    @pytest.mark.parametrize("args, env, message", [
        (("--pinfault-faults", "kmalloc=return(EBUSY)"), None,
         "ERROR: --pinfault-faults: bad fault spec 'kmalloc=return(EBUSY)' at column 16: expected an errno "
         "kmalloc may return (-ENOMEM), got '-EBUSY'"),
        ((), "kmalloc=reutrn", "ERROR: PINFAULT_FAULTS: bad fault spec 'kmalloc=reutrn' at column 9: *"),
        (("--pinfault-faults", "nosuch=return"), None,
         "ERROR: --pinfault-faults: bad fault spec 'nosuch=return' at column 1: expected a known fault site*"),
        (("--pinfault-faults", "kmalloc=call(f)"), None,
         "ERROR: --pinfault-faults: bad fault spec 'kmalloc=call(f)' at column *: expected an action other "
         "than call(...)*"),
    ])
    def test_errors(self, pytester, run, monkeypatch, args, env, message):
        pytester.makepyfile(FAULTS_TEST)
        if env:
            monkeypatch.setenv("PINFAULT_FAULTS", env)
        result = run(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([message.replace("[", "[[]")])

    def test_bad_ini(self, pytester, run):
        pytester.makepyfile(FAULTS_TEST)
        pytester.makeini("""
            [pytest]
            pinfault_faults = kmalloc[nth=x]=return
        """)
        run().stderr.fnmatch_lines(["ERROR: pinfault_faults (ini): bad fault spec * at column 13: *"])


class TestMaxNth:
    def test_option_ini_marker(self, pytester, run):
        pytester.makepyfile("""
            import pytest

            def allocate(k):
                for _ in range(8):            # 8 kmalloc hits: the matrix's reach
                    k.kfree(k.kmalloc(8, 0))

            @pytest.mark.pinfault_matrix("kmalloc", modes=("transient",))
            def test_default(fake_mm):
                allocate(fake_mm)

            @pytest.mark.pinfault_matrix("kmalloc", modes=("transient",), max_nth=1)
            def test_marker(fake_mm):
                allocate(fake_mm)
        """)
        # each test: its fault-free run + one case per kmalloc reached, up to the cap
        run("--collect-only", "-q").stdout.fnmatch_lines(["11 tests collected*"])     # 1+8, 1+1
        run("--collect-only", "-q", "--pinfault-max-nth=5").stdout.fnmatch_lines(["8 tests collected*"])
        pytester.makeini("""
            [pytest]
            pinfault_max_nth = 2
        """)
        run("--collect-only", "-q").stdout.fnmatch_lines(["5 tests collected*"])
        result = run("--pinfault-max-nth=0")
        result.stderr.fnmatch_lines(["ERROR: --pinfault-max-nth: expected an integer from 1 to 1000, got '0'"])


class TestSites:
    """User sites from the ini key and from the pytest_pinfault_declare_sites hook."""

    def test_declared_sites_validate_markers_and_are_hit(self, pytester, run):
        pytester.makeini("""
            [pytest]
            pinfault_sites =
                udmabuf.sg_alloc: ENOMEM EINVAL
        """)
        pytester.makeconftest("""
            def pytest_pinfault_declare_sites(config, declare):
                declare("drv.map", ["EFAULT"], meaning="map fails")
        """)
        pytester.makepyfile("""
            import errno
            import pytest

            @pytest.mark.pinfault("udmabuf.sg_alloc=return(EINVAL)", "drv.map[nth=2]=return")
            def test_sites(fake_mm):
                assert fake_mm.fault_point("udmabuf.sg_alloc", n=1) == -errno.EINVAL
                assert fake_mm.fault_point("drv.map") is None
                assert fake_mm.fault_point("drv.map") == -errno.EFAULT
                assert fake_mm.faults.sites["drv.map"].meaning == "map fails"
        """)
        run().assert_outcomes(passed=1)

    def test_bad_declarations(self, pytester, run):
        pytester.makepyfile("def test_x(): pass")
        pytester.makeini("""
            [pytest]
            pinfault_sites =
                udmabuf.sg_alloc: ENOMEN
        """)
        run().stderr.fnmatch_lines(["ERROR: pinfault_sites (ini): site 'udmabuf.sg_alloc': expected an errno "
                                    "name like ENOMEM, got 'ENOMEN'"])
        pytester.makeini("""
            [pytest]
            pinfault_sites =
                udmabuf.sg_alloc
        """)
        run().stderr.fnmatch_lines(["ERROR: pinfault_sites (ini): expected 'name: ERRNO [[]ERRNO...]', "
                                    "got 'udmabuf.sg_alloc'"])
        pytester.makeini("[pytest]")
        pytester.makeconftest("""
            def pytest_pinfault_declare_sites(declare):
                declare("kmalloc", "ENOMEM")
        """)
        pytester.makepyfile("""
            import pytest

            @pytest.mark.pinfault("kmalloc=return")
            def test_x(fake_mm):
                pass
        """)
        run().stderr.fnmatch_lines(["ERROR: pytest_pinfault_declare_sites: cannot declare fault site 'kmalloc': "
                                    "fault site 'kmalloc' is built in; choose another name"])


class TestTrace:
    def test_levels(self, pytester, run):
        pytester.makepyfile("""
            from pytest_pinfault.mm import GFP_KERNEL

            def test_fails(fake_mm, pinfault):
                pinfault.arm("kmalloc[nth=2]=return")
                fake_mm.kmalloc(8, GFP_KERNEL)
                fake_mm.kmalloc(8, GFP_KERNEL)
                assert False

            def test_passes(fake_mm):
                fake_mm.kmalloc(8, GFP_KERNEL)
                assert fake_mm.faults.hits == ({"kmalloc": 1} if fake_mm.faults.recording else {})
        """)
        off = run()
        off.assert_outcomes(passed=1, failed=1)
        assert "pinfault trace" not in off.stdout.str()
        on = run("--pinfault-trace=on", "-rP")
        on.assert_outcomes(passed=1, failed=1)
        on.stdout.fnmatch_lines(["*Captured pinfault trace call*", "hits: {'kmalloc': 2}",
                                 "<FaultRecord kmalloc#2 -ENOMEM> at *test_levels.py:6 test_fails",
                                 "-- mm trace (last 50 events) --"])
        assert on.stdout.str().count("Captured pinfault trace") == 1        # failures only
        verbose = run("--pinfault-trace=verbose", "-rP")
        verbose.stdout.fnmatch_lines(["<FaultRecord kmalloc#1 hit> at *", "<FaultRecord kmalloc#2 -ENOMEM> at *"])
        assert verbose.stdout.str().count("Captured pinfault trace") == 2
        assert run("--pinfault-trace=loud").ret == pytest.ExitCode.USAGE_ERROR
