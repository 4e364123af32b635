"""``pinfault_machine``: a fresh, armed, judged machine per Hypothesis example that
shrinks to a minimal counterexample naming the violated rule (end to end, pytester)."""

pytest_plugins = ["pytester"]

DRIVER = """
    import errno
    import pytest
    from hypothesis import given, settings, strategies as st
    from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, MAP_ANONYMOUS,
                                    MAP_PRIVATE, PROT_READ, PROT_WRITE)

    def register(k, npages, leak_from=None, leak_on_enomem=False):
        mm = k.current.mm
        addr = mm.mmap(npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        pages = []
        ret = k.pin_user_pages(addr, npages, FOLL_LONGTERM | FOLL_WRITE, pages)
        if ret < 0:
            return ret
        desc = k.kmalloc(64, GFP_KERNEL)
        if desc is None:
            if not leak_on_enomem:
                k.unpin_user_pages(pages, ret)
            return -errno.ENOMEM
        keep = 1 if leak_from is not None and npages >= leak_from else 0
        k.unpin_user_pages(pages, ret - keep)
        k.kfree(desc)
        return 0
"""


def test_buggy_driver_shrinks_to_the_minimal_example_naming_the_rule(pytester, run):
    pytester.makepyfile(test_x=DRIVER + """
    @settings(database=None)
    @given(st.integers(1, 64))
    def test_buggy(pinfault_machine, npages):
        with pinfault_machine() as k:
            assert register(k, npages, leak_from=7) == 0

    @settings(database=None)
    @given(st.integers(1, 64))
    def test_correct(pinfault_machine, npages):
        with pinfault_machine() as k:
            assert register(k, npages) == 0
    """)
    result = run("-q")
    out = result.stdout.str()
    result.assert_outcomes(failed=1, passed=1)
    assert "FailedHealthCheck" not in out and "function-scoped fixture" not in out
    result.stdout.fnmatch_lines(["*PinContractFailed: pin contract violation: [[]pin-balance[]] 1 pin(s) never "
                                 "released: acquired 7, released 6*",
                                 "*npages=7,*"])
    assert "test_correct" not in "".join(ln for ln in out.splitlines() if ln.startswith("FAILED"))


def test_every_example_gets_its_own_machine(pytester, run):
    """No state leaks between examples: each starts with no pins and its own injector;
    the marker's machine and the test's seed are used for every one of them."""
    pytester.makepyfile(test_x=DRIVER + """
    SEEN = []

    @pytest.mark.mm_config(ram="512MiB")
    @settings(database=None, max_examples=20)
    @given(st.integers(1, 16))
    def test_fresh(pinfault_machine, npages):
        with pinfault_machine() as k:
            assert k.stats.nr_foll_pin_acquired == 0 and not k.faults.fired
            assert k.config.ram == 512 << 20
            SEEN.append((id(k), k.config.seed))
            assert register(k, npages) == 0

    def test_after():
        assert len(SEEN) >= 10 and len({i for i, _ in SEEN}) > 1
        assert len({s for _, s in SEEN}) == 1 and SEEN[0][1] != 0
    """)
    result = run("-q", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_fault_drawn_per_example_shrinks_to_the_failing_site_occurrence(pytester, run):
    """Faults given to the factory are armed on that example's machine only; an unwind
    bug under an injected kmalloc failure is found and named, the fault shown."""
    pytester.makepyfile(test_x=DRIVER + """
    @settings(database=None)
    @given(st.integers(1, 8), st.booleans())
    def test_unwind(pinfault_machine, npages, fail_kmalloc):
        faults = ["kmalloc[nth=1]=return"] if fail_kmalloc else []
        with pinfault_machine(*faults) as k:
            ret = register(k, npages, leak_on_enomem=True)
            assert ret in (0, -errno.ENOMEM)
            assert bool(k.faults.fired) == fail_kmalloc
    """)
    result = run("-q")
    result.assert_outcomes(failed=1)
    # the driver call is judged when it returns (rule 2), then at the end (rule 4)
    result.stdout.fnmatch_lines(["*PinContractFailed: pin contract violation: [[]error-nothing-held[]] register "
                                 "(an undeclared driver call) returned -ENOMEM but left 1 new pin(s) behind*",
                                 "*injected fault(s) that fired: kmalloc#1 -ENOMEM*",
                                 "*[[]pin-balance[]]*", "*npages=1,*", "*fail_kmalloc=True,*"])


def test_the_examples_own_failure_is_not_masked(pytester, run):
    """A failing assert inside the block propagates as is when no violation is pending
    (a pin leak is only seen by the final check, which a failed block does not run)."""
    pytester.makepyfile(test_x=DRIVER + """
    @settings(database=None, max_examples=5)
    @given(st.just(3))
    def test_both(pinfault_machine, npages):
        with pinfault_machine() as k:
            register(k, npages, leak_from=1)
            assert npages == 4, "own check"
    """)
    result = run("-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: own check*"])
    assert "PinContractFailed" not in result.stdout.str()


def test_a_pending_violation_leads_when_the_example_fails_on_its_own(pytester, run):
    """A short-term pin kept in ZONE_MOVABLE by a driver call is judged when the call
    returns (rule 1); the example's own assert then fails: the violation leads, the
    assert follows, and Hypothesis shrinks to the smallest buffer."""
    pytester.makepyfile(test_x=DRIVER + """
    class Ctx:
        def __init__(self, k):
            self.k, self.pages = k, []
        def map_user(self, addr, npages):            # forgot FOLL_LONGTERM
            n = self.k.pin_user_pages(addr, npages, FOLL_WRITE, self.pages)
            return n if n < 0 else 0

    @pytest.mark.mm_config(ram="1GiB", movablecore="128MiB")
    @settings(database=None, max_examples=10)
    @given(st.integers(1, 8))
    def test_both(pinfault_machine, npages):
        with pinfault_machine() as k:
            mm = k.current.mm
            addr = mm.mmap(npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
            with k.steer("movable"):
                assert mm.write(addr, b"x" * (npages * 4096)) == npages * 4096
            ctx = Ctx(k)
            ret = ctx.map_user(addr, npages)
            assert ret == 1, "own check"
    """)
    result = run("-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*PinContractFailed: pin contract violation: [[]longterm-placement[]]*",
                                 "*The example's own check failed too:*", "*own check*", "*npages=1,*"])


def test_pin_contract_marker_applies_to_each_machine(pytester, run):
    pytester.makepyfile(test_x=DRIVER + """
    @pytest.mark.pin_contract(expect="pin-balance")
    @settings(database=None, max_examples=5)
    @given(st.integers(1, 4))
    def test_expected(pinfault_machine, npages):
        with pinfault_machine() as k:
            register(k, npages, leak_from=1)

    @pytest.mark.pin_contract(expect="pin-balance")
    @settings(database=None, max_examples=5)
    @given(st.integers(1, 4))
    def test_missing(pinfault_machine, npages):
        with pinfault_machine() as k:
            register(k, npages)
    """)
    result = run("-q")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*expected a pin-balance violation, none happened*"])


def test_misuse_is_a_usage_error_naming_what(pytester, run):
    pytester.makepyfile(test_x="""
    import pytest
    from pytest_pinfault import MMConfig

    def test_bad_spec(pinfault_machine):
        with pinfault_machine("no_such_site#1"):
            pass

    def test_bad_config(pinfault_machine):
        with pinfault_machine(config={"ram": "1GiB"}):
            pass

    def test_bad_config_value(pinfault_machine):
        with pinfault_machine(config=MMConfig(ram="1GiB", cma="2GiB")):
            pass
    """)
    result = run("-q")
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*pinfault_machine: *no_such_site*",
                                 "*pinfault_machine(config=...): expected an MMConfig, got {'ram': '1GiB'}*",
                                 "*pinfault_machine(config=...): *"])


def test_outside_a_test_is_a_usage_error(pytester, run):
    pytester.makeconftest("""
    from pytest_pinfault.plugin import MachineFactory

    def pytest_collection_finish(session):
        MachineFactory(session.config)()
    """)
    pytester.makepyfile(test_x="""
    def test_x():
        pass
    """)
    result = run("-q")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(["*pinfault_machine(): call it inside a test*"])


PER_KERNEL = """
    import pytest
    from hypothesis import given, settings, strategies as st
    from pytest_pinfault import MMConfig

    SEEN = {}

    @pytest.mark.pinfault_kernels("6.1", "6.12")
    @settings(database=None, max_examples=5)
    @given(st.integers(1, 4))
    def test_marked(pinfault_machine, request, n):
        with pinfault_machine() as k:
            SEEN.setdefault(request.node.name, set()).add(k.config.kernel)
            assert hasattr(k, "memfd_pin_folios") == (k.config.kernel == "6.12")
        with pinfault_machine(config=MMConfig(ram="512MiB")) as k:
            assert k.config.ram == 512 << 20
            SEEN.setdefault(request.node.name, set()).add(k.config.kernel)

    @settings(database=None, max_examples=3)
    @given(st.integers(1, 4))
    def test_plain(pinfault_machine, request, n):
        with pinfault_machine(config=MMConfig(kernel="6.6")) as k:
            SEEN.setdefault(request.node.name, set()).add(k.config.kernel)

    def test_after():
        assert SEEN == EXPECTED, SEEN
"""


def test_pinfault_kernels_marker_runs_each_machine_per_version(pytester, run):
    """The marker parametrizes a pinfault_machine test (ids kernel-...) and every machine
    of each run follows that version, a config= one included; no Hypothesis health check
    complains about the parameter."""
    pytester.makepyfile(test_x=PER_KERNEL + """
    EXPECTED = {"test_marked[kernel-6.1]": {"6.1"}, "test_marked[kernel-6.12]": {"6.12"},
                "test_plain": {"6.6"}}
    """)
    result = run("-v", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_marked?kernel-6.1? PASSED*", "*test_marked?kernel-6.12? PASSED*"])
    assert "FailedHealthCheck" not in result.stdout.str()


def test_kernel_option_reaches_pinfault_machine(pytester, run):
    """--pinfault-kernel runs pinfault_machine tests per version too, and replaces the
    kernel of a config= machine (as fake_mm's mm_config machine); the marker still wins."""
    pytester.makepyfile(test_x=PER_KERNEL + """
    EXPECTED = {"test_marked[kernel-6.1]": {"6.1"}, "test_marked[kernel-6.12]": {"6.12"},
                "test_plain[kernel-6.1]": {"6.1"}, "test_plain[kernel-6.17]": {"6.17"}}
    """)
    result = run("-v", "-p", "no:randomly", "--pinfault-kernel=6.1,6.17")
    result.assert_outcomes(passed=5)


def test_kernel_contradicting_a_config_quirk_is_a_usage_error(pytester, run):
    """A per-run version that the config= machine's quirks contradict names the test,
    the version and where it came from."""
    pytester.makepyfile(test_x="""
    import pytest
    from pytest_pinfault import MMConfig

    @pytest.mark.pinfault_kernels("6.12")
    def test_x(pinfault_machine):
        with pinfault_machine(config=MMConfig(quirks="pcp_thp_shared_list")):
            pass
    """)
    result = run()
    result.stdout.fnmatch_lines(["*test_x.py::test_x?kernel-6.12?: pinfault_machine(config=...) with kernel "
                                 "'6.12' (pinfault_kernels / --pinfault-kernel / pinfault_kernel ini): quirks: "
                                 "'pcp_thp_shared_list' contradicts kernel='6.12'*"])
    assert "INTERNALERROR" not in result.stdout.str()
