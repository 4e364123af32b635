"""Running a test once per kernel version: the pinfault_kernels marker, --pinfault-kernel
and the pinfault_kernel ini key (ids, precedence, the machine each run gets), matrices
composed with versions, pytest-xdist, and misuse as UsageErrors naming what, where and
the accepted values."""

import pytest

pytest_plugins = ["pytester"]

ACCEPTED = "'6.1', '6.6', '6.12', '6.17'"

BODY = """
import pytest

@pytest.mark.pinfault_kernels("6.1", "6.12")
def test_marked(fake_mm, pinfault_kernel):
    assert fake_mm.config.kernel == pinfault_kernel
    # memfd_pin_folios exists from v6.11 on
    assert hasattr(fake_mm, "memfd_pin_folios") is (pinfault_kernel == "6.12")

def test_plain(fake_mm, pinfault_kernel):
    assert fake_mm.config.kernel == (pinfault_kernel or "6.17")

@pytest.mark.mm_config(kernel="6.6")
def test_fixed(fake_mm, pinfault_kernel):
    assert pinfault_kernel is None and fake_mm.config.kernel == "6.6"

def test_no_machine():
    pass
"""


def _ids(result):
    return sorted(line.split(" ")[0].split("::")[1] for line in result.stdout.lines
                  if line.startswith("test_k.py::") and " PASSED" in line)


def test_marker_parametrizes_with_ids(pytester, run):
    pytester.makepyfile(test_k=BODY)
    result = run("-v")
    result.assert_outcomes(passed=5)
    assert _ids(result) == ["test_fixed", "test_marked[kernel-6.12]", "test_marked[kernel-6.1]",
                            "test_no_machine", "test_plain"]
    result.stdout.fnmatch_lines(["pinfault: seed=* kernel=6.17 *"])


def test_option_parametrizes_every_fake_mm_test_but_explicit_ones(pytester, run):
    """--pinfault-kernel runs every fake_mm test per version; the marker and
    mm_config(kernel=...) win; a test without a machine runs once."""
    pytester.makepyfile(test_k=BODY)
    result = run("-v", "--pinfault-kernel=6.17,6.6,6.17")
    result.assert_outcomes(passed=6)
    assert _ids(result) == ["test_fixed", "test_marked[kernel-6.12]", "test_marked[kernel-6.1]",
                            "test_no_machine", "test_plain[kernel-6.17]", "test_plain[kernel-6.6]"]
    result.stdout.fnmatch_lines(["pinfault: seed=* kernel=6.17,6.6 *"])


def test_ini_key_and_all(pytester, run):
    """The ini key takes the same spelling; 'all' is every version; the option wins."""
    pytester.makepyfile(test_k=BODY)
    pytester.makeini("[pytest]\npinfault_kernel = all\n")
    result = run("-v", "-k", "plain")
    assert _ids(result) == [f"test_plain[kernel-{v}]" for v in ("6.12", "6.17", "6.1", "6.6")]
    result = run("-v", "-k", "plain", "--pinfault-kernel=6.1")
    assert _ids(result) == ["test_plain[kernel-6.1]"]


def test_id_selects_one_version(pytester, run):
    pytester.makepyfile(test_k=BODY)
    result = run("-v", "test_k.py::test_marked[kernel-6.12]")
    result.assert_outcomes(passed=1)


def test_marker_without_versions_means_all(pytester, run):
    pytester.makepyfile(test_k="""
import pytest

@pytest.mark.pinfault_kernels()
def test_all(fake_mm):
    pass
""")
    result = run("-v")
    result.assert_outcomes(passed=4)


def test_version_behaviour_differs_per_run(pytester, run):
    """The versions really differ: 6.12 does not drain LRU caches for a pinned small
    folio that holds no unexpected reference, 6.1 and 6.17 do."""
    pytester.makepyfile(test_k="""
import pytest
from pytest_pinfault.mm import FOLL_LONGTERM, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

@pytest.mark.mm_config(cma="64MiB", thp="never")
@pytest.mark.pinfault_kernels("6.1", "6.12", "6.17")
def test_drain(fake_mm, pinfault_kernel):
    mm = fake_mm.current.mm
    addr = mm.mmap(4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    with fake_mm.steer("cma"):
        for i in range(4):
            mm.write(addr + i * 4096, b"x")
    fake_mm.lru_add_drain_all()
    before = fake_mm.stats.lru_add_drain_all
    pages = []
    assert fake_mm.pin_user_pages(addr, 4, FOLL_LONGTERM, pages) == 4
    drained = fake_mm.stats.lru_add_drain_all - before
    assert drained == (0 if pinfault_kernel == "6.12" else 1)
    fake_mm.unpin_user_pages(pages, 4)
""")
    run("-v").assert_outcomes(passed=3)


MATRIX = """
import errno
import pytest
from pytest_pinfault.mm import FOLL_LONGTERM, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

@pytest.mark.mm_config(cma="64MiB", thp="never")
@pytest.mark.pinfault_kernels("6.12", "6.17")
@pytest.mark.pinfault_matrix("lru_add_drain_all", "folio_isolate_lru", modes=("transient",),
                             accept=(-errno.ENOMEM,))
def test_pin(fake_mm, pinfault):
    mm = fake_mm.current.mm
    addr = mm.mmap(2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    with fake_mm.steer("cma"):
        for i in range(2):
            mm.write(addr + i * 4096, b"x")
    pages = []
    ret = fake_mm.pin_user_pages(addr, 2, FOLL_LONGTERM, pages)
    pinfault.result(ret)
    if ret > 0:
        fake_mm.unpin_user_pages(pages, ret)
"""


def test_matrix_composes_with_versions(pytester, run):
    """Each version gets its own fault-free run and its own cases, sized by what that
    version reaches: lru_add_drain_all is reached on 6.17 (it drains for every pinned
    small folio) and not on 6.12 (no unexpected reference)."""
    pytester.makepyfile(test_k=MATRIX)
    result = run("-v")
    ids = _ids(result)
    assert "test_pin[fault-free-kernel-6.12]" in ids and "test_pin[fault-free-kernel-6.17]" in ids
    assert "test_pin[lru_add_drain_all-1-transient-kernel-6.17]" in ids
    assert not any(i.startswith("test_pin[lru_add_drain_all") and i.endswith("6.12]") for i in ids)
    assert "test_pin[folio_isolate_lru-1-transient-kernel-6.12]" in ids
    assert "test_pin[folio_isolate_lru-1-transient-kernel-6.17]" in ids
    assert result.ret == 0
    # a case id replays on its own, with its version
    one = run("-v", "test_k.py::test_pin[lru_add_drain_all-1-transient-kernel-6.17]")
    assert _ids(one) == ["test_pin[lru_add_drain_all-1-transient-kernel-6.17]"]


def test_xdist(pytester, run_subprocess):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_k=BODY)
    result = run_subprocess("-p", "xdist.plugin", "-n", "2", "--pinfault-kernel=6.1,6.6")
    result.assert_outcomes(passed=6)


# ------------------------------------------------------------------------- misuse

@pytest.mark.parametrize("args", [("6.1", "5.4"), ("6.12.118",), (612,)])
def test_unknown_version_in_marker(pytester, run, args):
    pytester.makepyfile(test_k=f"""
import pytest

@pytest.mark.pinfault_kernels(*{args!r})
def test_x(fake_mm):
    pass
""")
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    bad = [a for a in args if a not in ("6.1",)][0]
    result.stderr.fnmatch_lines([f"ERROR: test_k.py::test_x: @pytest.mark.pinfault_kernels: expected kernel "
                                 f"versions from {ACCEPTED}, got {bad!r}"])


def test_marker_keyword(pytester, run):
    pytester.makepyfile(test_k="""
import pytest

@pytest.mark.pinfault_kernels(versions=("6.1",))
def test_x(fake_mm):
    pass
""")
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: test_k.py::test_x: @pytest.mark.pinfault_kernels: expected versions "
                                 "as positional arguments, got keyword 'versions'"])


def test_marker_with_mm_config_kernel(pytester, run):
    pytester.makepyfile(test_k="""
import pytest

@pytest.mark.mm_config(kernel="6.1")
@pytest.mark.pinfault_kernels("6.12")
def test_x(fake_mm):
    pass
""")
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: test_k.py::test_x: @pytest.mark.pinfault_kernels: expected no "
                                 "mm_config(kernel=...) on the same test (it runs one version), got "
                                 "kernel='6.1' and versions 6.12"])


def test_marker_without_machine(pytester, run):
    pytester.makepyfile(test_k="""
import pytest

@pytest.mark.pinfault_kernels("6.1")
def test_x():
    pass
""")
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: test_k.py::test_x: @pytest.mark.pinfault_kernels: expected the test "
                                 "to use the fake_mm or pinfault fixture*"])


def test_version_contradicting_a_quirk(pytester, run):
    """A version that contradicts a quirk of the test's config stops the run at
    collection, naming the test, the marker, the version and the quirk."""
    pytester.makepyfile(test_k="""
import pytest

@pytest.mark.mm_config(quirks=("pcp_thp_shared_list",))
@pytest.mark.pinfault_kernels("6.1", "6.12")
def test_x(fake_mm):
    pass
""")
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: test_k.py::test_x[[]kernel-6.12[]]: @pytest.mark.pinfault_kernels: "
                                 "kernel '6.12': quirks: 'pcp_thp_shared_list' contradicts kernel='6.12'*"])


@pytest.mark.parametrize("value,got", [("6.1,7.0", "'7.0'"), ("", "''"), ("6.1,,6.12", "''")])
def test_bad_option(pytester, run, value, got):
    pytester.makepyfile(test_k=BODY)
    result = run(f"--pinfault-kernel={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --pinfault-kernel: expected kernel versions from {ACCEPTED}*got {got}"])


def test_bad_ini(pytester, run):
    pytester.makepyfile(test_k=BODY)
    pytester.makeini("[pytest]\npinfault_kernel = 6.1 6.12\n")
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pinfault_kernel (ini): expected kernel versions from {ACCEPTED}, "
                                 f"got '6.1 6.12'"])


def test_bad_kernel_in_mm_config_ini(pytester, run):
    """The ini's machine line takes kernel= with the same spelling."""
    pytester.makepyfile(test_k="def test_x(fake_mm):\n    assert fake_mm.config.kernel == '6.12'\n")
    pytester.makeini("[pytest]\npinfault_mm_config = kernel=6.12\n")
    run().assert_outcomes(passed=1)
    pytester.makeini("[pytest]\npinfault_mm_config = kernel=6.13\n")
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pinfault_mm_config (ini): kernel: expected one of {ACCEPTED}, "
                                 f"got '6.13'"])


def test_option_contradicting_the_ini_machine(pytester, run):
    """A run version that contradicts a quirk of the ini's machine stops the run at
    start-up, naming the option, the version, the ini key and the quirk."""
    pytester.makepyfile(test_k=BODY)
    pytester.makeini("[pytest]\npinfault_mm_config = quirks=pcp_thp_shared_list\n")
    result = run("--pinfault-kernel=6.1,6.12")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --pinfault-kernel: kernel '6.12' with pinfault_mm_config (ini): quirks: "
                                 "'pcp_thp_shared_list' contradicts kernel='6.12'*"])
    pytester.makepyfile(test_k="def test_plain(fake_mm):\n    assert fake_mm.config.has_quirk('pcp_thp_shared_list')\n")
    run("-v", "--pinfault-kernel=6.1,6.6").assert_outcomes(passed=2)
