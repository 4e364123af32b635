"""pinfault_matrix: sizing from the fault-free run, the cap, unreached matrices, ids, -k selection,
replay, xdist, accept=, summary attribution and kernel outcomes."""

pytest_plugins = ["pytester"]

DRIVER = """
import errno
import pytest
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, MAP_ANONYMOUS,
                                MAP_PRIVATE, PROT_READ, PROT_WRITE)


def my_driver_create(mm):
    '''Allocate a header, pin one user page long-term, allocate the sg table (retried
    once), release everything.  The error path of the retried allocation is wrong: it
    frees the header but forgets to unpin.'''
    hdr = mm.kmalloc(64, GFP_KERNEL)                        # kmalloc hit 1
    if hdr is None:
        return -errno.ENOMEM
    addr = mm.current.mm.mmap(1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.current.mm.write(addr, b"data")
    pages = []
    ret = mm.pin_user_pages(addr, 1, FOLL_LONGTERM | FOLL_WRITE, pages)   # try_grab_folio hit 1
    if ret < 0:
        mm.kfree(hdr)
        return ret
    sg = mm.kmalloc(256, GFP_KERNEL)                        # kmalloc hit 2
    if sg is None:
        sg = mm.kmalloc(256, GFP_KERNEL)                    # kmalloc hit 3: the retry
        if sg is None:
            mm.kfree(hdr)
            return -errno.ENOMEM                            # BUG: missing unpin_user_pages(pages, ret)
    mm.kfree(sg)
    mm.unpin_user_pages(pages, ret)
    mm.kfree(hdr)
    return 0
"""

MATRIX_TEST = DRIVER + """

@pytest.mark.pinfault_matrix("kmalloc", "try_grab_folio", "alloc_migration_target",
                             accept=(-errno.ENOMEM,))
def test_create(fake_mm, pinfault):
    pinfault.result(my_driver_create(fake_mm))
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released
"""


def _outcomes(result):
    """nodeid suffix -> outcome word, from a -v run."""
    out = {}
    for line in result.stdout.lines:
        if line.startswith("test_drv.py::test_create[") and " " in line:
            nodeid, word = line.split(" ")[:2]
            out[nodeid.split("::")[1]] = word
    return out


def test_matrix_finds_exactly_the_buggy_error_path(pytester, run):
    pytester.makepyfile(test_drv=MATRIX_TEST)
    result = run("-v", "-rs")
    # the fault-free run reached kmalloc twice and try_grab_folio once: exactly those
    # occurrences are cases, nothing is skipped
    result.assert_outcomes(failed=1, passed=6)
    outcomes = _outcomes(result)
    failed = sorted(k for k, v in outcomes.items() if v == "FAILED")
    passed = sorted(k for k, v in outcomes.items() if v == "PASSED")
    # only the persistent failure of the sg allocation makes the retry fail too:
    # the transient case recovers through the retry and never reaches the bad path
    assert failed == ["test_create[kmalloc-2-persistent]"]
    assert passed == sorted(["test_create[fault-free]", "test_create[kmalloc-1-transient]",
                             "test_create[kmalloc-1-persistent]", "test_create[kmalloc-2-transient]",
                             "test_create[try_grab_folio-1-transient]",
                             "test_create[try_grab_folio-1-persistent]"])
    result.stdout.fnmatch_lines(["*assert 1 == 0*", "pinfault_matrix:",
                                 "  not reached: test_drv.py::test_create: alloc_migration_target (*"])


LATE_LEAK = """
import errno
import pytest
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, MAP_ANONYMOUS, MAP_PRIVATE,
                                PROT_READ, PROT_WRITE)


def register(k, addr, pages, nobj):
    '''Pin a buffer, then allocate nobj descriptors; the error path of the 5th forgets
    the pin (as io_uring's buffer registration did in v6.12).'''
    if k.pin_user_pages(addr, 1, FOLL_LONGTERM | FOLL_WRITE, pages) != 1:
        return -errno.EFAULT
    objs = []
    for i in range(nobj):
        o = k.kmalloc(64, GFP_KERNEL)
        if o is None:
            for x in objs:
                k.kfree(x)
            if i != 4:
                k.unpin_user_pages(pages, 1)
            return -errno.ENOMEM
        objs.append(o)
    for x in objs:
        k.kfree(x)
    k.unpin_user_pages(pages, 1)
    return 0


def _buffer(k):
    mm = k.current.mm
    addr = mm.mmap(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.write(addr, b"x")
    return addr
"""


def test_late_site_leak_is_caught_with_no_option(pytester, run):
    pytester.makepyfile(test_late=LATE_LEAK + """

@pytest.mark.pinfault_matrix("kmalloc", accept=(-errno.ENOMEM,))
def test_register(fake_mm, pinfault):
    pinfault.result(register(fake_mm, _buffer(fake_mm), [], 6))
""")
    result = run("-v")
    result.assert_outcomes(failed=2, passed=11)
    result.stdout.fnmatch_lines(["*test_register?kmalloc-5-transient? FAILED*",
                                 "*test_register?kmalloc-5-persistent? FAILED*"], consecutive=False)
    assert "kmalloc-7-" not in result.stdout.str()      # only what the code reaches


def test_cap_is_announced_in_the_summary_and_json(pytester, run):
    pytester.makepyfile(test_late=LATE_LEAK + """

@pytest.mark.pinfault_matrix("kmalloc", accept=(-errno.ENOMEM,))
def test_register(fake_mm, pinfault):
    pinfault.result(register(fake_mm, _buffer(fake_mm), [], 6))

@pytest.mark.pinfault_matrix("kmalloc", max_nth=2, modes=("transient",))
def test_small(fake_mm, pinfault):
    pinfault.result(register(fake_mm, _buffer(fake_mm), [], 6))
""")
    result = run("--pinfault-max-nth=4", "--pinfault-json=out.json")
    result.assert_outcomes(passed=9 + 3)       # the leak sits behind the 5th kmalloc: missed, and said so
    result.stdout.fnmatch_lines([
        "pinfault_matrix:",
        "  cap: test_late.py::test_register: kmalloc reached 6 times, occurrences 1-4 tested "
        "(raise max_nth= or --pinfault-max-nth to test the other 2)",
        "  cap: test_late.py::test_small: kmalloc reached 6 times, occurrences 1-2 tested *",
    ])
    import json
    data = json.loads((pytester.path / "out.json").read_text())
    m = data["matrices"]["test_late.py::test_register[fault-free]"]
    assert (m["cap"], m["capped"], m["cases"], m["reach"]) == (4, {"kmalloc": 6}, 8, {"kmalloc": 6})
    from tests.plugin.test_report import check_report
    check_report(data)
    # when the cap does not bite, nothing is announced
    assert "cap:" not in run("-k", "test_register").stdout.str()


def test_matrix_whose_sites_are_never_reached_fails_and_says_why(pytester, run):
    pytester.makepyfile(test_none="""
        import pytest

        @pytest.mark.pinfault_matrix("folio_isolate_lru", "alloc_migration_target")
        def test_nothing_migrates(fake_mm, pinfault):
            fake_mm.kfree(fake_mm.kmalloc(8, 0))

        @pytest.mark.pinfault_matrix()
        def test_no_site_at_all(fake_mm):
            pass
    """)
    result = run("-v")
    assert result.ret == 1
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*pinfault_matrix: no case to run: the fault-free run never reached folio_isolate_lru, "
        "alloc_migration_target (it hit kmalloc=1), so no fault can be injected there.*",
        "*pinfault_matrix: no case to run: the fault-free run never reached any fault site "
        "(it hit no fault site at all)*",
    ], consecutive=False)


def test_case_ids_select_with_k_and_replay(pytester, run):
    pytester.makepyfile(test_drv=MATRIX_TEST)
    result = run("-v", "-k", "kmalloc-2-persistent")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_create?kmalloc-2-persistent? FAILED*"])
    result = run("-v", "-k", "kmalloc and persistent")
    result.assert_outcomes(failed=1, passed=1)
    result = run("-v", "-k", "try_grab_folio-1-transient or fault-free")
    result.assert_outcomes(passed=2)
    result = run("-v", "test_drv.py::test_create[kmalloc-2-persistent]")
    result.assert_outcomes(failed=1)
    result = run("-v", "test_drv.py::test_create[kmalloc-2-transient]")
    result.assert_outcomes(passed=1)
    # a replayed id the code no longer reaches is skipped with the reason
    result = run("-v", "-rs", "test_drv.py::test_create[kmalloc-9-transient]")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * kmalloc reached only 2 time(s), not 9"])
    result = run("--collect-only", "-q", "--pinfault-max-nth=1")
    result.stdout.fnmatch_lines([
        "test_drv.py::test_create[[]fault-free]",
        "test_drv.py::test_create[[]kmalloc-1-transient]",
        "test_drv.py::test_create[[]kmalloc-1-persistent]",
        "test_drv.py::test_create[[]try_grab_folio-1-transient]",
        "test_drv.py::test_create[[]try_grab_folio-1-persistent]",
        "5 tests collected*",
    ])


def test_xdist_workers_collect_the_same_sized_matrix(pytester, run_subprocess):
    pytester.makepyfile(test_drv=MATRIX_TEST)
    result = run_subprocess("-p", "xdist.plugin", "-n", "2", "-v")
    result.assert_outcomes(failed=1, passed=6)
    result.stdout.fnmatch_lines(["*FAILED test_drv.py::test_create[[]kmalloc-2-persistent]*"])


def test_summary_attributes_failures_to_the_injected_site(pytester, run):
    pytester.makepyfile(test_drv=MATRIX_TEST)
    result = run("--pinfault-json=out.json")
    result.assert_outcomes(failed=1, passed=6)
    import json
    data = json.loads((pytester.path / "out.json").read_text())
    assert data["schema"] == "pytest-pinfault/3"
    from tests.plugin.test_report import check_report
    check_report(data)
    rows = data["sites"]
    # one failing case injected kmalloc: kmalloc's row carries it; the sites that case
    # merely hit on its way (try_grab_folio, alloc_pages) count it apart
    assert (rows["kmalloc"]["failed"], rows["kmalloc"]["violations"], rows["kmalloc"]["hit_in_failed"]) == (1, 1, 0)
    for site in ("try_grab_folio", "alloc_pages"):
        assert (rows[site]["failed"], rows[site]["violations"], rows[site]["hit_in_failed"]) == (0, 0, 1), site
    bad = {t["nodeid"]: t for t in data["tests"]}["test_drv.py::test_create[kmalloc-2-persistent]"]
    assert bad["injected"] == ["kmalloc"] and bad["outcome"] == "failed"
    result.stdout.fnmatch_lines([
        "site * failed  violations  kernel  hit-in-failed",
        "failing tests by the fault they injected:",
        "  test_drv.py::test_create[[]kmalloc-2-persistent]: injected kmalloc#2 -ENOMEM (+1 more firing); "
        "violated pin-balance",
    ], consecutive=False)


KERNEL_LOOP = """
import errno
import pytest
from pytest_pinfault import Out
from pytest_pinfault.mm import FOLL_LONGTERM, FOLL_WRITE, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE


def create(k, addr, n, pages):
    '''A correct driver: pin long-term, release on every path.'''
    ret = k.pin_user_pages(addr, n, FOLL_LONGTERM | FOLL_WRITE, pages)
    if ret < 0:
        return ret
    if ret != n:
        k.unpin_user_pages(pages, ret)
        return -errno.EFAULT
    k.unpin_user_pages(pages, n)
    return 0


def create_retrying(k, addr, n, pages):
    '''BUG: retries for ever, even once its task was killed.'''
    while True:
        if create(k, addr, n, pages) == 0:
            return 0


def create_leaky(k, addr, n, pages):
    '''BUG: takes a reference on a header page first and forgets it when the pin fails.'''
    mm = k.current.mm
    hdr = mm.mmap(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.write(hdr, b"h")
    extra = []
    k.get_user_pages(hdr, 1, 0, extra)
    ret = create(k, addr, n, pages)
    if ret == 0:
        k.put_page(extra[0])
    return ret


def _in_cma(k, npages):
    mm = k.current.mm
    addr = mm.mmap(npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    with k.steer("cma"):
        mm.write(addr, b"x" * npages * 4096)
    return addr
"""


def test_persistent_isolation_failure_is_a_kernel_outcome_not_a_driver_fault(pytester, run):
    pytester.makepyfile(test_k=KERNEL_LOOP + """

@pytest.mark.mm_config(ram="1GiB", cma="64MiB")
@pytest.mark.pinfault_matrix("folio_isolate_lru", accept=(-errno.ENOMEM,))
def test_correct(fake_mm, pinfault):
    pinfault.result(create(fake_mm, _in_cma(fake_mm, 2), 2, []))

@pytest.mark.mm_config(ram="1GiB", cma="64MiB")
@pytest.mark.pinfault_matrix("folio_isolate_lru", modes=("persistent",), max_nth=1)
def test_driver_loop(fake_mm, pinfault):
    pinfault.result(create_retrying(fake_mm, _in_cma(fake_mm, 2), 2, []))

@pytest.mark.mm_config(ram="1GiB", cma="64MiB")
@pytest.mark.pinfault_matrix("folio_isolate_lru", modes=("persistent",), max_nth=1)
def test_driver_leak_after_eintr(fake_mm, pinfault):
    pinfault.result(create_leaky(fake_mm, _in_cma(fake_mm, 2), 2, []))

@pytest.mark.mm_config(ram="1GiB", cma="64MiB")
@pytest.mark.pinfault_matrix("folio_isolate_lru", modes=("persistent",), max_nth=1)
def test_memfd(fake_mm, pinfault):
    f = fake_mm.memfd_create("buf", 0)
    f.ftruncate(1 << 16)
    with fake_mm.steer("cma"):
        f.pwrite(b"x" * (1 << 16), 0)
    folios = []
    n = fake_mm.memfd_pin_folios(f, 0, (1 << 16) - 1, folios, 16, Out(0))
    assert pinfault.case is None, "never reached in the case: memfd_pin_folios does not return"
    fake_mm.unpin_folios(folios, n)
""")
    result = run("-v", "--pinfault-json=out.json")
    outcomes = {line.split(" ")[0].split("::")[1]: line.split(" ")[1]
                for line in result.stdout.lines if line.startswith("test_k.py::") and " " in line}
    assert outcomes["test_correct[folio_isolate_lru-1-persistent]"] == "KERNEL"
    assert outcomes["test_correct[folio_isolate_lru-2-persistent]"] == "KERNEL"
    assert outcomes["test_correct[folio_isolate_lru-1-transient]"] == "PASSED"
    assert outcomes["test_memfd[folio_isolate_lru-1-persistent]"] == "KERNEL"
    assert outcomes["test_driver_loop[folio_isolate_lru-1-persistent]"] == "FAILED"
    assert outcomes["test_driver_leak_after_eintr[folio_isolate_lru-1-persistent]"] == "FAILED"
    result.stdout.fnmatch_lines([
        "*livelock: * GUP calls returned -EINTR to a task with a signal pending*",
    ])
    result.stdout.fnmatch_lines(["*[[]termination] livelock in the caller's loop around GUP (task * has a "
                                 "signal pending: every call returns -EINTR): gave up after 65 iterations"])
    result.stdout.fnmatch_lines(["*pin-balance*"])
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*2 failed, 6 passed, 3 kernel in *"])
    import json
    data = json.loads((pytester.path / "out.json").read_text())
    tests = {t["nodeid"].split("::")[1]: t for t in data["tests"]}
    k = tests["test_correct[folio_isolate_lru-1-persistent]"]
    assert k["outcome"] == "kernel" and k["violations"] == []
    assert [(o["loop"], o["kind"], o["returned"], o["site"]) for o in k["kernel"]] == \
        [("__gup_longterm_locked", "killed", -4, "folio_isolate_lru")]
    memfd = tests["test_memfd[folio_isolate_lru-1-persistent]"]["kernel"]
    assert [(o["loop"], o["kind"], o["returned"]) for o in memfd] == [("memfd_pin_folios", "hang", None)]
    assert data["sites"]["folio_isolate_lru"]["kernel"] == 3
    from tests.plugin.test_report import check_report
    check_report(data)                                  # kernel records fit the shipped schema
    assert str(pytester.path) not in json.dumps(data)   # callers and messages relative to the rootdir
    assert tests["test_driver_loop[folio_isolate_lru-1-persistent]"]["outcome"] == "failed"
    result.stdout.fnmatch_lines([
        "kernel outcomes (the kernel itself never leaves the loop; not a driver fault):",
        "  test_k.py::test_correct[[]folio_isolate_lru-1-persistent]: __gup_longterm_locked would retry "
        "for ever: the injected folio_isolate_lru fault fires on every round*the call returns -EINTR*",
        "  test_k.py::test_driver_loop[[]folio_isolate_lru-1-persistent]: *the call returns -EINTR * -- and "
        "the test failed on what the driver did next",
    ], consecutive=False)


def test_machine_state_livelock_still_fails_rule_5(pytester, run):
    pytester.makepyfile(test_q=KERNEL_LOOP + """

@pytest.mark.mm_config(ram="1GiB", cma="64MiB", gup_retry_limit=4)
def test_no_fault_injected(fake_mm, monkeypatch):
    # the machine itself keeps the loop going (as the pcp_thp_shared_list quirk does):
    # every round "migrates" but the folio stays unpinnable, with no fault injected
    def again(self, nr, pages):
        self.unpin_user_pages(pages, nr)
        return -errno.EAGAIN
    monkeypatch.setattr(type(fake_mm), "check_and_migrate_movable_pages", again)
    assert create(fake_mm, _in_cma(fake_mm, 1), 1, []) == -errno.ENOMEM
""")
    result = run("-v")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*[[]termination] livelock in __gup_longterm_locked*"])


def test_accept_rejects_an_unexpected_errno(pytester, run):
    pytester.makepyfile(test_acc=DRIVER + """

def leaky_errno(mm):
    ret = my_driver_create(mm)
    return -errno.EINVAL if ret == -errno.ENOMEM else ret

@pytest.mark.pinfault_matrix("kmalloc", max_nth=1, modes=("transient",), accept=(-errno.ENOMEM,))
def test_wrong_errno(fake_mm, pinfault):
    pinfault.result(leaky_errno(fake_mm))

@pytest.mark.pinfault_matrix("kmalloc", max_nth=1, modes="transient", accept=lambda r: r in (0, -12))
def test_predicate(fake_mm, pinfault):
    pinfault.result(my_driver_create(fake_mm))

@pytest.mark.pinfault_matrix("kmalloc", max_nth=1, modes=("transient",), accept=("ENOMEM",))
def test_forgot_result(fake_mm, pinfault):
    my_driver_create(fake_mm)

@pytest.mark.pinfault_matrix("kmalloc", max_nth=1, modes=("persistent",))
def test_no_accept(fake_mm, pinfault):
    pinfault.result(leaky_errno(fake_mm))
""")
    result = run("-v")
    result.assert_outcomes(failed=2, passed=2 + 4)     # + the four fault-free runs
    result.stdout.fnmatch_lines([
        "*test_wrong_errno?kmalloc-1-transient? FAILED*",
        "*test_predicate?kmalloc-1-transient? PASSED*",
        "*test_forgot_result?kmalloc-1-transient? FAILED*",
        "*test_no_accept?kmalloc-1-persistent? PASSED*",
        "kmalloc-1-transient: with kmalloc failing at hit 1 (transient), the call returned -EINVAL (-22); "
        "acceptable: success (>= 0) or -ENOMEM",
        "kmalloc-1-transient: pinfault_matrix(accept=...) needs the outcome: pass the return value of the "
        "call under test to pinfault.result()",
    ])
    assert "matrix.py" not in result.stdout.str()


def test_matrix_combines_with_parametrize_and_defaults_to_every_reached_site(pytester, run):
    pytester.makepyfile("""
        import pytest
        from pytest_pinfault.mm import GFP_KERNEL

        @pytest.mark.parametrize("size", [8, 64])
        @pytest.mark.pinfault_matrix("kmalloc", modes=("persistent",))
        def test_param(fake_mm, pinfault, size):
            failed = fake_mm.kmalloc(size, GFP_KERNEL) is None
            assert failed == (pinfault.case is not None and pinfault.case.nth == 1)

        @pytest.mark.pinfault_matrix(modes=("transient",))
        def test_all_sites(request, fake_mm):
            fake_mm.kmalloc(8, GFP_KERNEL)
            fake_mm.kmalloc(8, GFP_KERNEL)

        def test_count(request):
            names = [i.name for i in request.session.items if i.name.startswith("test_all_sites")]
            assert names == ["test_all_sites[fault-free]", "test_all_sites[kmalloc-1-transient]",
                             "test_all_sites[kmalloc-2-transient]"]
    """)
    result = run("-v", "-p", "no:randomly")
    result.stdout.fnmatch_lines([
        "*test_param?fault-free-8? PASSED*",
        "*test_param?kmalloc-1-persistent-8? PASSED*",
        "*test_param?fault-free-64? PASSED*",
        "*test_param?kmalloc-1-persistent-64? PASSED*",
    ], consecutive=False)
    result.assert_outcomes(passed=4 + 3 + 1)


def test_declared_sites_join_matrices(pytester, run):
    pytester.makeini("""
        [pytest]
        pinfault_sites =
            udmabuf.sg_alloc: ENOMEM EINVAL
    """)
    pytester.makeconftest("""
        def pytest_pinfault_declare_sites(declare):
            declare("drv.map", "EFAULT", meaning="mapping the buffer fails")
    """)
    pytester.makepyfile("""
        import errno
        import pytest

        @pytest.mark.pinfault_matrix("udmabuf.sg_alloc", "drv.map", max_nth=1)
        def test_user_sites(fake_mm, pinfault):
            a = fake_mm.fault_point("udmabuf.sg_alloc")
            b = fake_mm.fault_point("drv.map")
            want = [(None, None)] if pinfault.case is None else [(-errno.ENOMEM, None), (None, -errno.EFAULT)]
            assert (a, b) in want
    """)
    run().assert_outcomes(passed=1 + 4)


def _readme_tour():
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    (tour,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def mydrv_register" in b]
    return tour


def test_readme_tour_matrix_is_green_on_the_fixed_driver_with_no_rule_disabled(pytester, run):
    tour = _readme_tour()
    assert "pin_contract" not in tour
    bug = "return -errno.ENOMEM          # BUG: the pages stay pinned"
    assert bug in tour
    pytester.makepyfile(test_mydrv=tour)
    result = run("-v")
    result.assert_outcomes(failed=2, passed=9)
    result.stdout.fnmatch_lines(["*test_register?kmalloc-1-transient? FAILED*",
                                 "*test_register?kmalloc-1-persistent? FAILED*"], consecutive=False)
    fixed = tour.replace(bug, "k.unpin_user_pages(pages, npages)\n        return -errno.ENOMEM")
    pytester.makepyfile(test_mydrv=fixed)
    result = run("-v")
    result.assert_outcomes(passed=11)
    assert result.ret == 0
