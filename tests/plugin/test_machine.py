"""``pinfault_machine``: a fresh, armed, judged machine per Hypothesis example that
shrinks to a minimal counterexample naming the violated rule (end to end, pytester)."""

import json
import textwrap

import pytest

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


# ------------------------------------------------------------------ kernel outcomes
# A machine meets the kernel's own outcomes as fake_mm does (docs/configuration.md,
# "Kernel outcomes"): a killed task's signal ends with the block, a call that never
# returns ends the block there, and the test reports KERNEL.
KILLED = """
    import json
    from hypothesis import given, settings, strategies as st
    from pytest_pinfault import MMConfig

    # pcp_thp_shared_list keeps rule 10 probing the CMA area (cma_alloc), which a
    # pending fatal signal would interrupt with -EINTR
    QUIRK = dict(ram="1GiB", cma="64MiB", quirks="pcp_thp_shared_list")
    ISOLATION = "folio_isolate_lru=return"

    @pytest.mark.mm_config(**QUIRK)
    def test_fake_mm(fake_mm, pinfault):
        pinfault.arm(ISOLATION)
        assert create(fake_mm, _in_cma(fake_mm, 2), 2, []) == -errno.EINTR

    @pytest.mark.mm_config(**QUIRK)
    def test_machine(pinfault_machine):
        with pinfault_machine(ISOLATION) as k:
            assert create(k, _in_cma(k, 2), 2, []) == -errno.EINTR
        with pinfault_machine() as k:      # the next machine's task is not killed
            assert not k.current.fatal_signal_pending
            assert create(k, _in_cma(k, 2), 2, []) == 0

    @pytest.mark.mm_config(**QUIRK)
    def test_machine_leak_after_eintr(pinfault_machine):
        with pinfault_machine(ISOLATION) as k:
            assert create_leaky(k, _in_cma(k, 2), 2, []) == -errno.EINTR

    @settings(database=None, max_examples=10, derandomize=True)
    @given(st.integers(1, 4), st.booleans())
    def test_examples(pinfault_machine, npages, fail):
        faults = [ISOLATION] if fail else []
        with pinfault_machine(*faults, config=MMConfig(**QUIRK)) as k:
            assert create(k, _in_cma(k, npages), npages, []) == (-errno.EINTR if fail else 0)
"""


def test_a_machine_task_killed_out_of_a_kernel_loop_has_no_signal_left_for_the_final_check(pytester, run):
    """A long-term pin a persistent isolation fault keeps failing gets its task killed
    (-EINTR): a correct driver's block passes as KERNEL, as with ``fake_mm``, because the
    killed task's signal goes before the block's final check (rule 10's cma_alloc probe
    would return -EINTR and report a contiguity violation); a driver that leaks after the
    -EINTR still fails, and Hypothesis examples with and without the fault all pass."""
    pytest.importorskip("hypothesis")
    from tests.plugin.test_matrix import KERNEL_LOOP
    pytester.makepyfile(test_k=KERNEL_LOOP + textwrap.dedent(KILLED))
    result = run("-v", "-p", "no:randomly", "--pinfault-json=out.json")
    out = result.stdout.str()
    assert "contiguity" not in out
    result.stdout.fnmatch_lines(["test_k.py::test_fake_mm KERNEL*", "test_k.py::test_machine KERNEL*",
                                 "test_k.py::test_machine_leak_after_eintr FAILED*",
                                 "test_k.py::test_examples KERNEL*"])
    result.stdout.fnmatch_lines(["*PinContractFailed: pin contract violation: [[]pin-balance[]]*"])
    data = json.loads(pytester.path.joinpath("out.json").read_text())
    tests = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    machine = tests["test_machine"]
    assert (machine["outcome"], machine["machines"], machine["violations"]) == ("kernel", 2, [])
    assert [(o["kind"], o["machine"]) for o in machine["kernel"]] == [("killed", 1)]
    examples = tests["test_examples"]
    assert examples["outcome"] == "kernel" and examples["violations"] == []
    assert {o["kind"] for o in examples["kernel"]} == {"killed"}
    assert len({o["machine"] for o in examples["kernel"]}) < examples["machines"]   # fault-free ones too


HANG = """
    import errno
    import pytest
    from hypothesis import given, settings, strategies as st
    from pytest_pinfault import Out
    from pytest_pinfault.contracts import pin_entry_point

    ISOLATION = "folio_isolate_lru=return"
    AFTER = []

    def pin_buffer(k, npages):
        '''Pin a memfd buffer long-term (placed in CMA, so the pin migrates it).'''
        f = k.memfd_create("buf", 0)
        f.ftruncate(npages * 4096)
        with k.steer("cma"):
            f.pwrite(b"x" * (npages * 4096), 0)
        folios = []
        n = k.memfd_pin_folios(f, 0, npages * 4096 - 1, folios, npages, Out(0))
        assert n == npages
        k.unpin_folios(folios, n)
        return 0

    @pytest.mark.mm_config(ram="1GiB", cma="64MiB")
    def test_hang(pinfault_machine):
        with pinfault_machine(ISOLATION) as k:
            pin_buffer(k, 4)
            AFTER.append("in the block")          # never runs: the call never returns
        AFTER.append("after the block")
        with pinfault_machine() as k:
            assert pin_buffer(k, 4) == 0

    @pytest.mark.mm_config(ram="1GiB", cma="64MiB")
    def test_fake_mm_hang_in_a_block(fake_mm, pinfault, pinfault_machine):
        pinfault.arm(ISOLATION)
        with pinfault_machine() as k:             # not this machine's call: not its outcome
            pin_buffer(fake_mm, 2)
        AFTER.append("after the fake_mm hang")    # never runs: the test body ends there

    def test_after():
        assert AFTER == ["after the block"]

    @pin_entry_point
    def setup_header(k):
        # BUG: fails with a pin still held
        from pytest_pinfault.mm import FOLL_WRITE, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
        mm = k.current.mm
        addr = mm.mmap(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        assert k.pin_user_pages(addr, 1, FOLL_WRITE, []) == 1
        return -errno.ENOMEM

    @pytest.mark.mm_config(ram="1GiB", cma="64MiB")
    def test_hang_after_a_violation(pinfault_machine):
        with pinfault_machine(ISOLATION) as k:
            assert setup_header(k) == -errno.ENOMEM
            pin_buffer(k, 2)

    @pytest.mark.mm_config(ram="1GiB", cma="64MiB")
    @settings(database=None, max_examples=10, derandomize=True)
    @given(st.integers(1, 4), st.booleans())
    def test_examples(pinfault_machine, npages, fail):
        with pinfault_machine(*([ISOLATION] if fail else [])) as k:
            assert pin_buffer(k, npages) == 0
"""


def test_a_kernel_hang_inside_a_machine_block_is_a_kernel_outcome(pytester, run):
    """memfd_pin_folios, kept retrying by a persistent isolation fault, never returns
    (``KernelHang``): the block ends at that call, the test goes on after the block and
    reports KERNEL, as a ``fake_mm`` test does, also under Hypothesis (the hanging
    examples are not failures); a violation found before the hang still fails."""
    pytest.importorskip("hypothesis")
    pytester.makepyfile(test_h=HANG)
    result = run("-v", "-p", "no:randomly", "--pinfault-json=out.json")
    result.stdout.fnmatch_lines(["test_h.py::test_hang KERNEL*", "test_h.py::test_fake_mm_hang_in_a_block KERNEL*",
                                 "test_h.py::test_after PASSED*",
                                 "test_h.py::test_hang_after_a_violation FAILED*",
                                 "test_h.py::test_examples KERNEL*"])
    result.stdout.fnmatch_lines(["*PinContractFailed: pin contract violation: [[]error-nothing-held[]] "
                                 "setup_header returned -ENOMEM but left 1 new pin(s)*",
                                 "*The block then ended at a kernel call that never returns:*",
                                 "*memfd_pin_folios would retry for ever*"])
    assert "KernelHang" not in result.stdout.str()
    data = json.loads(pytester.path.joinpath("out.json").read_text())
    tests = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    hang = tests["test_hang"]
    assert (hang["outcome"], hang["machines"], hang["violations"]) == ("kernel", 2, [])
    assert [(o["loop"], o["kind"], o["returned"], o["machine"]) for o in hang["kernel"]] == [
        ("memfd_pin_folios", "hang", None, 1)]
    in_block = tests["test_fake_mm_hang_in_a_block"]
    assert (in_block["outcome"], in_block["machines"]) == ("kernel", 1)
    assert [(o["kind"], o.get("machine")) for o in in_block["kernel"]] == [("hang", None)]
    examples = tests["test_examples"]
    assert examples["outcome"] == "kernel" and examples["machines"] >= 2
    assert {o["kind"] for o in examples["kernel"]} == {"hang"}
