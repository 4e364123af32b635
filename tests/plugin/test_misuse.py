"""Plugin misuse, end to end: every wrong marker, ini value, option, environment value,
hook declaration and fixture use ends in a ``pytest.UsageError`` (exit 4, before any
test runs) or, where the mistake can only be seen while a test runs, in that test's
error or failure -- each with a message naming what, where and what was expected, and
never an INTERNALERROR, a hang or silent acceptance (issue 18).

Each case is a small project run in-process by pytester; the expected message is an
fnmatch pattern of the line pytest prints.
"""

import pytest

from pytest_pinfault.plugin.options import MAX_NTH_LIMIT

pytest_plugins = ["pytester"]


def esc(pattern):
    """An fnmatch pattern matching '[' literally (the '*' wildcards stay)."""
    return pattern.replace("[", "[[]")


def marked(marker, uses="fake_mm"):
    return f"""
import errno
import pytest

def test_good(fake_mm):
    pass

@pytest.mark.{marker}
def test_x({uses}):
    pass
"""


def check_usage_error(result, message):
    out = result.stdout.str() + "\n" + result.stderr.str()
    assert "INTERNALERROR" not in out, out
    assert "Traceback" not in out, out
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    result.stderr.fnmatch_lines([esc(message)])
    assert " passed" not in result.stdout.str()                 # nothing ran


# ---------------------------------------------------------------------------- markers
MARKER_CASES = {
    # mm_config
    "mm_config positional": ('mm_config("1GiB")',
                             "*@pytest.mark.mm_config: expected keyword arguments (MMConfig fields), "
                             "got positional ('1GiB',)"),
    "mm_config unknown field": ('mm_config(rams="1GiB")',
                                "*@pytest.mark.mm_config: expected an MMConfig field (ram, *), got 'rams'"),
    "mm_config ram None": ("mm_config(ram=None)",
                           "*@pytest.mark.mm_config: ram: expected a size in bytes or a string like '512MiB', "
                           "got None"),
    "mm_config ram float": ("mm_config(ram=1.5)", "*mm_config: ram: expected a size*got 1.5"),
    "mm_config ram fraction": ('mm_config(ram="1.5GiB")', "*mm_config: ram: expected a size*got '1.5GiB'"),
    "mm_config ram other digits": ('mm_config(ram="\u0661GiB")', "*mm_config: ram: expected a size*"),
    "mm_config ram superscript": ('mm_config(ram="\u00b2GiB")', "*mm_config: ram: expected a size*"),
    "mm_config ram not 128MiB": ('mm_config(ram="100MiB")',
                                 "*mm_config: ram: expected a multiple of 128MiB*got '100MiB'"),
    "mm_config ram thousands of digits": (f'mm_config(ram="{"9" * 5000}")', "*mm_config: ram: expected a size*"),
    "mm_config quirks None": ("mm_config(quirks=None)",
                              "*@pytest.mark.mm_config: quirks: expected a name or a list of names from "
                              "['gup_drain_on_unexpected_ref_only', 'gup_keep_pins_on_isolation_failure', "
                              "'pcp_thp_shared_list'], got None"),
    "mm_config quirks int": ("mm_config(quirks=3)", "*mm_config: quirks: expected a name or a list*got 3"),
    "mm_config quirks unknown": ('mm_config(quirks=["nope"])', "*mm_config: quirks: expected names from*got 'nope'"),
    "mm_config quirks nested": ('mm_config(quirks=[["x"]])', "*mm_config: quirks: expected names from*got ['x']"),
    "mm_config hugetlb list": ('mm_config(hugetlb=[("2MiB", 4)])',
                               "*mm_config: hugetlb: expected a mapping of page size to count*"),
    "mm_config hugetlb size": ('mm_config(hugetlb={"3MiB": 1})',
                               "*mm_config: hugetlb: expected page sizes '2MiB' or '1GiB', got '3MiB'"),
    "mm_config hugetlb negative": ('mm_config(hugetlb={"2MiB": -1})',
                                   "*mm_config: hugetlb['2MiB']: expected a count >= 0, got -1"),
    "mm_config hugetlb str count": ('mm_config(hugetlb={"2MiB": "four"})',
                                    "*mm_config: hugetlb['2MiB']: expected a count >= 0, got 'four'"),
    "mm_config hugetlb text no count": ('mm_config(hugetlb="2MiB")',
                                        "*@pytest.mark.mm_config: hugetlb: expected 'size:count,...' like "
                                        "2MiB:16, got '2MiB'"),
    "mm_config cma text no size": ('mm_config(cma="a:64MiB,b")',
                                   "*@pytest.mark.mm_config: cma: expected 'name:size,...' like "
                                   "'a:64MiB,b:32MiB@1GiB', got 'a:64MiB,b'"),
    "mm_config nr_cpus text": ('mm_config(nr_cpus="four")',
                               "*@pytest.mark.mm_config: nr_cpus: expected an integer from 1 to 8192*, got 'four'"),
    "mm_config cma larger than ram": ('mm_config(ram="1GiB", cma="2GiB")',
                                      "*@pytest.mark.mm_config: cma['reserved']: expected 2GiB to fit in free "
                                      "memory between 0 and 1GiB"),
    "mm_config cma bad place": ('mm_config(cma="64MiB@nowhere")', "*mm_config: cma: expected a size*"),
    "mm_config cma unaligned base": ('mm_config(cma="2MiB@257MiB")',
                                     "*mm_config: cma['reserved']: expected a base aligned to 2MiB*got 257MiB"),
    "mm_config cma object": ("mm_config(cma=object())", "*mm_config: cma: expected a size*"),
    "mm_config movablecore": ('mm_config(ram="1GiB", movablecore="1GiB")',
                              "*mm_config: movablecore: expected a multiple of 128MiB smaller than ram*"),
    "mm_config thp": ('mm_config(thp="sometimes")',
                      "*mm_config: thp: expected 'always', 'madvise' or 'never', got 'sometimes'"),
    "mm_config thp list": ('mm_config(thp=["always"])', "*mm_config: thp: expected*got ['always']"),
    "mm_config nr_cpus 0": ("mm_config(nr_cpus=0)", "*mm_config: nr_cpus: expected an integer from 1 to 8192*, got 0"),
    "mm_config nr_cpus str": ('mm_config(nr_cpus="2.0")', "*mm_config: nr_cpus: expected an integer from 1 to 8192*, got '2.0'"),
    "mm_config nr_cpus huge": ("mm_config(nr_cpus=10**8)",
                               "*mm_config: nr_cpus: expected an integer from 1 to 8192*, got 100000000"),
    "mm_config seed": ('mm_config(seed="x")', "*mm_config: seed: expected an integer, got 'x'"),
    "mm_config firmware": ('mm_config(firmware="uefi")', "*mm_config: firmware: expected 'ideal' or 'seabios'*"),
    "mm_config boot_reserved": ("mm_config(boot_reserved=False)", "*mm_config: boot_reserved: expected 'auto'*"),
    "mm_config hugepagesz": ('mm_config(default_hugepagesz="4MiB")',
                             "*mm_config: default_hugepagesz: expected '2MiB' or '1GiB', got '4MiB'"),
    "mm_config ram too big": ("mm_config(ram=1 << 47)",
                              "*mm_config: ram: expected at most 64TiB (x86-64 MAX_PHYSMEM_BITS 46), got 140737488355328"),
    "mm_config memlock too big": ("mm_config(memlock=1 << 64)", "*mm_config: memlock: expected at most RLIM_INFINITY*"),
    "mm_config memlock": ("mm_config(memlock=-1)", "*mm_config: memlock: expected a size >= 0, got -1"),
    # pinfault: a stray non-ASCII digit in every column, then the rest of the grammar
    "pinfault digit in site": ('pinfault("km\u00b2alloc=return")',
                               "*@pytest.mark.pinfault: bad fault spec 'km\u00b2alloc=return' at column 3: "
                               "expected '[' or '=', got '\u00b2'"),
    "pinfault digit in attr name": ('pinfault("kmalloc[\u00b2=1]=return")',
                                    "*bad fault spec*at column 9: expected an attribute (*), got '\u00b2'"),
    "pinfault digit in nth": ('pinfault("kmalloc[nth=\u00b2]=return")',
                              "*bad fault spec*at column 13: expected a positive integer for nth, got '\u00b2'"),
    "pinfault digit after nth": ('pinfault("kmalloc[nth=1\u00b2]=return")',
                                 "*bad fault spec*at column 13: expected a positive integer for nth, got '1\u00b2'"),
    "pinfault arabic digit in every": ('pinfault("kmalloc[every=\u0663]=return")',
                                       "*at column 15: expected a positive integer for every, got '\u0663'"),
    "pinfault digit in order": ('pinfault("kmalloc[order=\u00b2]=return")',
                                "*at column 15: expected an integer order*got '\u00b2'"),
    "pinfault digit in zone": ('pinfault("kmalloc[zone=\u00b2]=return")',
                               "*at column 14: expected a zone (DMA, DMA32, Normal, Movable), got '\u00b2'"),
    "pinfault digit as count": ('pinfault("kmalloc=\u00b2*return")',
                                "*at column 9: expected an action (return, off, hold, call), got '\u00b2'"),
    "pinfault digit in count": ('pinfault("kmalloc=2\u00b2*return")',
                                "*at column 9: expected a probability or a count, got '2\u00b2'"),
    "pinfault digit in probability": ('pinfault("kmalloc=1\u00b2%return")',
                                      "*at column 9: expected a probability or a count, got '1\u00b2'"),
    "pinfault digit after probability": ('pinfault("kmalloc=50%\u00b2*return")',
                                         "*at column 12: expected an action*got '\u00b2'"),
    "pinfault digit in errno": ('pinfault("kmalloc=return(\u00b2)")',
                                "*at column 16: expected an errno (ENOMEM, -ENOMEM or 12), got '\u00b2'"),
    "pinfault digit in hold": ('pinfault("migrate_folio=hold(\u00b2)")',
                               "*at column 20: expected a positive number of migration attempts, got '\u00b2'"),
    "pinfault digit in callback": ('pinfault("kmalloc=call(\u00b2)")', "*at column 14: expected a callback name*"),
    "pinfault nth 0": ('pinfault("kmalloc[nth=0]=return")', "*at column 13: expected a positive integer for nth, got '0'"),
    "pinfault nth too big": ('pinfault("kmalloc[nth=9223372036854775808]=return")',
                             "*expected a positive integer for nth (1 to 9223372036854775807), "
                             "got '9223372036854775808'"),
    "pinfault every 0": ('pinfault("kmalloc[every=0]=return")', "*expected a positive integer for every, got '0'"),
    "pinfault times 0": ('pinfault("kmalloc[times=0]=return")', "*expected a positive integer for times, got '0'"),
    "pinfault attr twice": ('pinfault("kmalloc[nth=1,nth=2]=return")',
                            "*expected each attribute at most once (nth is given twice), got 'nth'"),
    "pinfault unknown attr": ('pinfault("kmalloc[colour=red]=return")', "*expected an attribute (*), got 'colour'"),
    "pinfault zone": ('pinfault("kmalloc[zone=High]=return")', "*expected a zone (DMA, DMA32, Normal, Movable), got 'High'"),
    "pinfault migratetype": ('pinfault("kmalloc[migratetype=Pink]=return")', "*expected a migratetype (*), got 'Pink'"),
    "pinfault order negative": ('pinfault("kmalloc[order=-1]=return")', "*expected an integer order*got '-'"),
    "pinfault unclosed": ('pinfault("kmalloc[nth=1=return")', "*expected ',' or ']', got '='"),
    "pinfault no action": ('pinfault("kmalloc=")', "*expected an action (return, off, hold, call), got 'end of spec'"),
    "pinfault no equals": ('pinfault("kmalloc")', "*expected '[' or '=', got 'end of spec'"),
    "pinfault empty": ('pinfault("")', "*expected a fault site name, got 'end of spec'"),
    "pinfault probability": ('pinfault("kmalloc=101%return")',
                             "*expected a percentage between 0 and 100, got '101%'"),
    "pinfault count 0": ('pinfault("kmalloc=0*return")', "*expected a positive integer count, got '0'"),
    "pinfault fraction count": ('pinfault("kmalloc=1.5*return")', "*expected a positive integer count, got '1.5'"),
    "pinfault off with arg": ('pinfault("kmalloc=off(1)")', "*expected '->', ';' or end of spec (off takes no argument)*"),
    "pinfault hold 0": ('pinfault("migrate_folio=hold(0)")', "*expected a positive number of migration attempts, got '0'"),
    "pinfault errno unknown": ('pinfault("kmalloc=return(ENOMEN)")', "*expected an errno (ENOMEM, -ENOMEM or 12), got 'ENOMEN'"),
    "pinfault errno range": ('pinfault("kmalloc=return(99999)")', "*expected an errno (ENOMEM, -ENOMEM or 12), got '99999'"),
    "pinfault errno of other site": ('pinfault("kmalloc=return(EBUSY)")',
                                     "*expected an errno kmalloc may return (-ENOMEM), got '-EBUSY'"),
    "pinfault chain junk": ('pinfault("kmalloc=return->")', "*expected an action*got 'end of spec'"),
    "pinfault two specs in one": ('pinfault("kmalloc=return; kmalloc=off")', "*expected '->' or end of spec, got ';'"),
    "pinfault unknown site": ('pinfault("kmallok=return")', "*expected a known fault site (*), got 'kmallok'"),
    "pinfault call unregistered": ('pinfault("kmalloc=call(race)")',
                                   "*expected a callback given as a keyword argument of the marker, got 'race'"),
    "pinfault spec not str": ("pinfault(3)", "*@pytest.mark.pinfault: expected fault spec strings, got 3"),
    "pinfault spec None": ("pinfault(None)", "*@pytest.mark.pinfault: expected fault spec strings, got None"),
    "pinfault spec bytes": ('pinfault(b"kmalloc=return")', "*expected fault spec strings, got b'kmalloc=return'"),
    "pinfault callback not callable": ('pinfault("kmalloc=call(f)", f=3)',
                                       "*@pytest.mark.pinfault: keyword arguments are callbacks for call(name) "
                                       "actions; expected a callable for 'f', got 3"),
    "pinfault callback unused": ('pinfault("kmalloc=call(race)", race=print, rase=print)',
                                 "*@pytest.mark.pinfault: keyword arguments are callbacks for call(name) actions; "
                                 "expected each to be named by a call(...) of the marker's specs, got 'rase' unused"),
    # pinfault_matrix
    "matrix unknown site": ('pinfault_matrix("kmallok")', "*pinfault_matrix: expected a known fault site (*), got 'kmallok'"),
    "matrix site not str": ("pinfault_matrix(3)", "*pinfault_matrix: expected a known fault site (*), got 3"),
    "matrix site list": ('pinfault_matrix(["kmalloc"])', "*pinfault_matrix: expected a known fault site (*), got ['kmalloc']"),
    "matrix modes unknown": ('pinfault_matrix("kmalloc", modes=("sometimes",))',
                             "*pinfault_matrix: modes: expected a subset of ('transient', 'persistent'), got ('sometimes',)"),
    "matrix modes empty": ('pinfault_matrix("kmalloc", modes=())', "*pinfault_matrix: modes: expected a subset*got ()"),
    "matrix modes int": ('pinfault_matrix("kmalloc", modes=3)', "*pinfault_matrix: modes: expected a subset*got 3"),
    "matrix modes nested": ('pinfault_matrix("kmalloc", modes=[["transient"]])',
                            "*pinfault_matrix: modes: expected a subset*got [['transient']]"),
    "matrix max_nth 0": ('pinfault_matrix("kmalloc", max_nth=0)',
                         f"*pinfault_matrix: max_nth: expected an integer from 1 to {MAX_NTH_LIMIT}, got 0"),
    "matrix max_nth huge": ('pinfault_matrix("kmalloc", max_nth=10**7)',
                            f"*pinfault_matrix: max_nth: expected an integer from 1 to {MAX_NTH_LIMIT}, got 10000000"),
    "matrix max_nth float": ('pinfault_matrix("kmalloc", max_nth=2.0)', "*max_nth: expected an integer*got 2.0"),
    "matrix max_nth bool": ('pinfault_matrix("kmalloc", max_nth=True)', "*max_nth: expected an integer*got True"),
    "matrix max_nth str": ('pinfault_matrix("kmalloc", max_nth="3")', "*max_nth: expected an integer*got '3'"),
    "matrix accept typo": ('pinfault_matrix("kmalloc", accept=("ENOMEN",))',
                           "*pinfault_matrix: accept: expected negative errnos like -errno.ENOMEM or 'ENOMEM', "
                           "or a predicate, got 'ENOMEN'"),
    "matrix accept zero": ('pinfault_matrix("kmalloc", accept=(0,))', "*pinfault_matrix: accept: expected negative errnos*got 0"),
    "matrix accept bool": ('pinfault_matrix("kmalloc", accept=(True,))', "*accept: expected negative errnos*got True"),
    "matrix accept float": ('pinfault_matrix("kmalloc", accept=3.5)',
                            "*pinfault_matrix: accept: expected a tuple of negative errnos or a predicate, got 3.5"),
    "matrix accept superscript": ('pinfault_matrix("kmalloc", accept=("\u00b2",))',
                                  "*accept: expected negative errnos*got '\u00b2'"),
    "matrix unknown kwarg": ('pinfault_matrix("kmalloc", acept=1)',
                             "*pinfault_matrix: expected keyword arguments modes, max_nth, accept, got 'acept'"),
    # pin_contract
    "pin_contract positional": ("pin_contract(4)",
                                "*pin_contract: expected keyword arguments expect=RULE or disable=[RULE, ...], "
                                "got positional (4,)"),
    "pin_contract unknown kwarg": ("pin_contract(expected=4)",
                                   "*pin_contract: expected keyword arguments expect, disable, reason, got 'expected'"),
    "pin_contract both": ("pin_contract(expect=4, disable=[4], reason='x')",
                          "*pin_contract: expected exactly one of expect=RULE or disable=[RULE, ...], got both"),
    "pin_contract neither": ("pin_contract()", "*pin_contract: expected exactly one*got neither"),
    "pin_contract expect 0": ("pin_contract(expect=0)", "*pin_contract: expect: expected a rule (a number or a rule id), got 0"),
    "pin_contract expect bool": ("pin_contract(expect=True)", "*pin_contract: expect: expected a rule*got True"),
    "pin_contract expect list": ("pin_contract(expect=[4])", "*pin_contract: expect: expected a rule*got [4]"),
    "pin_contract expect unknown": ('pin_contract(expect="no-such-rule")', "*pin_contract: *no-such-rule*"),
    "pin_contract expect 999": ("pin_contract(expect=999)", "*pin_contract: *999*"),
    "pin_contract disable empty": ("pin_contract(disable=[], reason='x')",
                                   "*pin_contract: disable: expected a list of rules (numbers or rule ids), got []"),
    "pin_contract disable dict": ("pin_contract(disable={4: 1}, reason='x')",
                                  "*pin_contract: disable: expected a list of rules*got {4: 1}"),
    "pin_contract no reason": ("pin_contract(disable=[4])",
                               "*pin_contract: disable: expected a reason=\"...\" saying why the rules are switched "
                               "off, got none"),
    "pin_contract blank reason": ("pin_contract(disable=[4], reason='  ')", "*pin_contract: disable: expected a reason*"),
    "pin_contract reason int": ("pin_contract(expect=4, reason=1)", "*pin_contract: reason: expected a string, got 1"),
}


@pytest.mark.parametrize("marker, message", list(MARKER_CASES.values()), ids=list(MARKER_CASES))
def test_bad_marker(pytester, run, marker, message):
    pytester.makepyfile(test_bad=marked(marker))
    result = run()
    check_usage_error(result, message)
    result.stderr.fnmatch_lines([esc("ERROR: test_bad.py::test_x: @pytest.mark.*")])


@pytest.mark.parametrize("marker", ['mm_config(ram="1GiB")', 'pinfault("kmalloc=return")',
                                    'pin_contract(expect=4)', 'pinfault_matrix("kmalloc")'])
def test_marker_on_a_test_without_fake_mm(pytester, run, marker):
    """On the function itself the marker can only be meant for its machine."""
    pytester.makepyfile(test_bad=marked(marker, uses=""))
    name = marker.split("(")[0]
    check_usage_error(run(), f"ERROR: test_bad.py::test_x: @pytest.mark.{name}: expected the test to use the "
                             f"fake_mm or pinfault fixture*got neither")


def test_two_matrices_on_one_test(pytester, run):
    """Only one would be used: the other's sites would be silently dropped."""
    pytester.makepyfile(test_bad=marked('pinfault_matrix("kmalloc")\n@pytest.mark.pinfault_matrix("alloc_pages")'))
    check_usage_error(run(), "ERROR: test_bad.py::test_x*: @pytest.mark.pinfault_matrix: expected one marker per "
                             "test (list every site in it), got 2")


def test_class_marker_may_cover_tests_without_a_machine(pytester, run):
    pytester.makepyfile("""
        import pytest
        from pytest_pinfault.mm import GFP_KERNEL

        @pytest.mark.pinfault("kmalloc=1*return")
        @pytest.mark.mm_config(ram="1GiB")
        class TestDriver:
            def test_with(self, fake_mm):
                assert fake_mm.kmalloc(8, GFP_KERNEL) is None
                assert fake_mm.config.ram == 1 << 30

            def test_helper_without(self):
                pass
    """)
    run().assert_outcomes(passed=2)


def test_bad_marker_on_a_class_names_each_test(pytester, run):
    pytester.makepyfile(test_bad="""
        import pytest

        @pytest.mark.mm_config(ram="1GiB", cma="2GiB")
        class TestX:
            def test_a(self, fake_mm):
                pass
    """)
    check_usage_error(run(), "ERROR: test_bad.py::TestX::test_a: @pytest.mark.mm_config: cma['reserved']: "
                             "expected 2GiB to fit*")


def test_bad_marker_is_found_even_when_deselected(pytester, run):
    pytester.makepyfile(test_bad=marked('pinfault("kmalloc=\u00b2*return")'))
    check_usage_error(run("-k", "good"), "ERROR: test_bad.py::test_x: @pytest.mark.pinfault: bad fault spec*")


# ---------------------------------------------------------------------------- ini keys
INI_CASES = {
    "seed word": ("pinfault_seed = abc", "ERROR: pinfault_seed (ini): expected an integer >= 0, got 'abc'"),
    "seed negative": ("pinfault_seed = -1", "ERROR: pinfault_seed (ini): expected an integer >= 0, got '-1'"),
    "seed arabic digits": ("pinfault_seed = \u0661\u0662", "ERROR: pinfault_seed (ini): expected an integer >= 0, got*"),
    "seed underscores": ("pinfault_seed = 1_000", "ERROR: pinfault_seed (ini): expected an integer >= 0, got '1_000'"),
    "max_nth 0": ("pinfault_max_nth = 0",
                  f"ERROR: pinfault_max_nth (ini): expected an integer from 1 to {MAX_NTH_LIMIT}, got '0'"),
    "max_nth huge": ("pinfault_max_nth = 10000000",
                     f"ERROR: pinfault_max_nth (ini): expected an integer from 1 to {MAX_NTH_LIMIT}, got '10000000'"),
    "max_nth superscript": ("pinfault_max_nth = \u00b2", "ERROR: pinfault_max_nth (ini): expected an integer*"),
    "budget 0": ("pinfault_budget = 0", "ERROR: pinfault_budget (ini): expected an integer >= 1, got '0'"),
    "budget word": ("pinfault_budget = lots", "ERROR: pinfault_budget (ini): expected an integer >= 1, got 'lots'"),
    "trace": ("pinfault_trace = loud", "ERROR: pinfault_trace (ini): expected one of off, on, verbose, got 'loud'"),
    "mm_config no equals": ("pinfault_mm_config = ram", "ERROR: pinfault_mm_config (ini): expected 'field=value', got 'ram'"),
    "mm_config unknown field": ("pinfault_mm_config = rams=1GiB",
                                "ERROR: pinfault_mm_config (ini): expected an MMConfig field (*), got 'rams'"),
    "mm_config field twice": ("pinfault_mm_config = ram=1GiB ram=2GiB",
                              "ERROR: pinfault_mm_config (ini): expected each field once, got 'ram' twice"),
    "mm_config nr_cpus word": ("pinfault_mm_config = nr_cpus=x",
                               "ERROR: pinfault_mm_config (ini): nr_cpus: expected an integer from 1 to 8192 "
                               "(x86-64 NR_CPUS with MAXSMP), got 'x'"),
    "mm_config nr_cpus superscript": ("pinfault_mm_config = nr_cpus=\u00b2",
                                      "ERROR: pinfault_mm_config (ini): nr_cpus: expected an integer*, got*"),
    "mm_config seed word": ("pinfault_mm_config = seed=x",
                            "ERROR: pinfault_mm_config (ini): seed: expected an integer, got 'x'"),
    "mm_config cma twice": ("pinfault_mm_config = cma=a:64MiB,a:32MiB",
                            "ERROR: pinfault_mm_config (ini): cma: expected each name once, got 'a' twice"),
    "mm_config hugetlb no count": ("pinfault_mm_config = hugetlb=2MiB",
                                   "ERROR: pinfault_mm_config (ini): hugetlb: expected 'size:count,...' like "
                                   "2MiB:16, got '2MiB'"),
    "mm_config hugetlb superscript": ("pinfault_mm_config = hugetlb=2MiB:\u00b2",
                                      "ERROR: pinfault_mm_config (ini): hugetlb['2MiB']: expected a count >= 0, "
                                      "got '\u00b2'"),
    "mm_config hugetlb twice": ("pinfault_mm_config = hugetlb=2MiB:1,2MiB:2",
                                "ERROR: pinfault_mm_config (ini): hugetlb: expected each size once, got '2MiB' twice"),
    "mm_config shmem_mthp no setting": ("pinfault_mm_config = shmem_mthp=64KiB",
                                        "ERROR: pinfault_mm_config (ini): shmem_mthp: expected 'size:setting,...' "
                                        "like 64KiB:always, got '64KiB'"),
    "mm_config shmem_enabled": ("pinfault_mm_config = shmem_enabled=yes",
                                "ERROR: pinfault_mm_config (ini): shmem_enabled: expected one of*got 'yes'"),
    "mm_config cma too big": ("pinfault_mm_config = ram=1GiB cma=2GiB",
                              "ERROR: pinfault_mm_config (ini): cma['reserved']: expected 2GiB to fit in free "
                              "memory between 0 and 1GiB"),
    "mm_config ram superscript": ("pinfault_mm_config = ram=\u00b2GiB",
                                  "ERROR: pinfault_mm_config (ini): ram: expected a size*"),
    "mm_config quirks": ("pinfault_mm_config = quirks=nope",
                         "ERROR: pinfault_mm_config (ini): quirks: expected names from*got 'nope'"),
    "faults superscript": ("pinfault_faults = kmalloc=\u00b2*return",
                           "ERROR: pinfault_faults (ini): bad fault spec 'kmalloc=\u00b2*return' at column 9: "
                           "expected an action*got '\u00b2'"),
    "faults unknown site": ("pinfault_faults = kmallok=return",
                            "ERROR: pinfault_faults (ini): bad fault spec*expected a known fault site*got 'kmallok'"),
    "faults call": ("pinfault_faults = kmalloc=call(f)",
                    "ERROR: pinfault_faults (ini): bad fault spec*expected an action other than call(...)*"),
    "sites no colon": ("pinfault_sites = drv.x ENOMEM",
                       "ERROR: pinfault_sites (ini): expected 'name: ERRNO [ERRNO...]', got 'drv.x ENOMEM'"),
    "sites bad errno": ("pinfault_sites = drv.x: ENOMEN",
                        "ERROR: pinfault_sites (ini): site 'drv.x': expected an errno name like ENOMEM, got 'ENOMEN'"),
    "sites superscript errno": ("pinfault_sites = drv.x: \u00b2",
                                "ERROR: pinfault_sites (ini): site 'drv.x': expected an errno name*"),
    "sites no errno": ("pinfault_sites = drv.x:", "ERROR: pinfault_sites (ini): expected 'name: ERRNO [ERRNO...]'*"),
    "sites built-in name": ("pinfault_sites = kmalloc: ENOMEM",
                            "ERROR: pinfault_sites (ini): cannot declare fault site 'kmalloc': *built in*"),
    "sites bad name": ("pinfault_sites = dr\u00b2v: ENOMEM",
                       "ERROR: pinfault_sites (ini): cannot declare fault site*bad fault site name*"),
    "sites conflicting": ("pinfault_sites =\n    drv.x: ENOMEM\n    drv.x: EINVAL",
                          "ERROR: pinfault_sites (ini): cannot declare fault site 'drv.x': *already declared*"),
}


@pytest.mark.parametrize("ini, message", list(INI_CASES.values()), ids=list(INI_CASES))
def test_bad_ini_value(pytester, run, ini, message):
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_x(fake_mm): pass")
    check_usage_error(run(), message)


# ---------------------------------------------------------------------------- options
OPTION_CASES = {
    "seed word": (["--pinfault-seed=abc"], "ERROR: --pinfault-seed: expected an integer >= 0, got 'abc'"),
    "seed fullwidth": (["--pinfault-seed=\uff11"], "ERROR: --pinfault-seed: expected an integer >= 0, got*"),
    "seed thousands of digits": (["--pinfault-seed=" + "9" * 5000], "ERROR: --pinfault-seed: expected an integer*"),
    "max_nth 0": (["--pinfault-max-nth=0"],
                  f"ERROR: --pinfault-max-nth: expected an integer from 1 to {MAX_NTH_LIMIT}, got '0'"),
    "max_nth huge": (["--pinfault-max-nth=10000000"],
                     f"ERROR: --pinfault-max-nth: expected an integer from 1 to {MAX_NTH_LIMIT}, got '10000000'"),
    "faults superscript": (["--pinfault-faults=kmalloc[nth=\u00b2]=return"],
                           "ERROR: --pinfault-faults: bad fault spec*at column 13: expected a positive integer for "
                           "nth, got '\u00b2'"),
    "faults second spec": (["--pinfault-faults=kmalloc=return; alloc_pages=1\u00b2%return"],
                           "ERROR: --pinfault-faults: bad fault spec 'alloc_pages=1\u00b2%return' at column 13*"),
    "faults unknown site": (["--pinfault-faults=kmallok=return"], "ERROR: --pinfault-faults: bad fault spec*'kmallok'"),
    "faults call": (["--pinfault-faults=kmalloc=call(f)"],
                    "ERROR: --pinfault-faults: bad fault spec*expected an action other than call(...)*"),
    "trace": (["--pinfault-trace=loud"], "*--pinfault-trace: invalid choice: 'loud'*"),
    "json empty": (["--pinfault-json="], "ERROR: --pinfault-json: expected a file path, got ''"),
    "json directory": (["--pinfault-json=."], "ERROR: --pinfault-json: expected a file path, got the directory '.'"),
    "errpaths empty": (["--pinfault-errpaths="], "ERROR: --pinfault-errpaths: expected packages PKG[,PKG], got ''"),
    "errpaths commas": (["--pinfault-errpaths=,,"], "ERROR: --pinfault-errpaths: expected packages PKG[,PKG], got ',,'"),
    "json under a file": (["--pinfault-json=test_x.py/report.json"],
                          "ERROR: --pinfault-json: expected a path where the report can be written, got "
                          "'test_x.py/report.json' (*)"),
}


@pytest.mark.parametrize("args, message", list(OPTION_CASES.values()), ids=list(OPTION_CASES))
def test_bad_option(pytester, run, args, message):
    pytester.makepyfile(test_x="def test_x(fake_mm): pass")
    check_usage_error(run(*args), message)


def test_bad_environment_faults(pytester, run, monkeypatch):
    monkeypatch.setenv("PINFAULT_FAULTS", "kmalloc=\u00b2")
    pytester.makepyfile("def test_x(fake_mm): pass")
    check_usage_error(run(), "ERROR: PINFAULT_FAULTS: bad fault spec 'kmalloc=\u00b2' at column 9: expected an "
                             "action*got '\u00b2'")


def test_json_path_checked_before_the_run(pytester, run):
    """An unwritable report path used to print a traceback after a green run."""
    pytester.makepyfile(test_x="def test_x(fake_mm): pass")
    pytester.path.joinpath("locked").write_text("a file, not a directory")
    result = run("--pinfault-json=locked/sub/report.json")
    check_usage_error(result, "ERROR: --pinfault-json: expected a path where the report can be written*")
    assert not pytester.path.joinpath("locked", "sub").exists()


def test_json_path_probe_leaves_nothing_behind(tmp_path):
    from pytest_pinfault.plugin.options import _check_json_path
    assert _check_json_path("out/report.json", str(tmp_path)) == "out/report.json"
    assert not tmp_path.joinpath("out", "report.json").exists()     # probed, then removed
    tmp_path.joinpath("old.json").write_text("kept")
    _check_json_path("old.json", str(tmp_path))
    assert tmp_path.joinpath("old.json").read_text() == "kept"      # an existing file is not truncated


def test_json_report_that_fails_at_the_end_is_a_clean_error(pytester, run):
    """The directory went away during the run: an error line and a non-zero exit."""
    pytester.makepyfile(test_x="""
        import shutil
        def test_x(fake_mm, request):
            shutil.rmtree(request.config.invocation_params.dir / "gone")
            (request.config.invocation_params.dir / "gone").write_text("now a file")
    """)
    pytester.path.joinpath("gone").mkdir()
    result = run("--pinfault-json=gone/report.json")
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out
    result.stdout.fnmatch_lines(["ERROR: --pinfault-json: cannot write the report to 'gone/report.json': *"])
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR


# ---------------------------------------------------------------------------- hooks
HOOK_CASES = {
    "bad name": ('declare("dr\u00b2v", ["ENOMEM"])', "*cannot declare fault site 'dr\u00b2v': bad fault site name*"),
    "no errno": ('declare("drv.x", [])', "*cannot declare fault site 'drv.x': *at least one errno*"),
    "bad errno": ('declare("drv.x", ["ENOMEN"])', "*cannot declare fault site 'drv.x': not an errno: 'ENOMEN'"),
    "superscript errno": ('declare("drv.x", ["\u00b2"])', "*cannot declare fault site 'drv.x': not an errno*"),
    "built in": ('declare("kmalloc", ["ENOMEM"])', "*cannot declare fault site 'kmalloc': *built in*"),
    "errnos None": ('declare("drv.x", None)',
                    "*cannot declare fault site 'drv.x': fault site 'drv.x': errnos: expected errno names or "
                    "numbers, got None"),
    "errnos float": ('declare("drv.x", -12.5)', "*cannot declare fault site 'drv.x': *errnos: expected errno names*"),
    "errno bool": ('declare("drv.x", [True])', "*cannot declare fault site 'drv.x': not an errno: True*"),
    "errno zero": ('declare("drv.x", [0])', "*cannot declare fault site 'drv.x': not an errno: 0*"),
    "errno too big": ('declare("drv.x", [5000])', "*cannot declare fault site 'drv.x': not an errno: 5000*"),
    "kernel not str": ('declare("drv.x", ["ENOMEM"], kernel=5)',
                       "*cannot declare fault site 'drv.x': fault site 'drv.x': kernel: expected a string, got 5"),
    "meaning not str": ('declare("drv.x", ["ENOMEM"], meaning=None)',
                        "*cannot declare fault site 'drv.x': *meaning: expected a string, got None"),
    "name not str": ('declare(3, ["ENOMEM"])', "*cannot declare fault site 3: fault site name: expected a string, got 3"),
    "unknown keyword": ('declare("drv.x", ["ENOMEM"], colour=1)',
                        "*declare(name, errnos, kernel='driver', meaning=''): expected those arguments, got 'colour'"),
    "too many arguments": ('declare("drv.x", ["ENOMEM"], "k", "m", 5)',
                           "*declare(name, errnos, kernel='driver', meaning=''): expected those arguments, got 5 "
                           "positional arguments"),
    "no errnos": ('declare("drv.x")', "*declare(name, errnos, ...): expected a name and its errnos, got 'drv.x'"),
}


@pytest.mark.parametrize("call, message", list(HOOK_CASES.values()), ids=list(HOOK_CASES))
def test_bad_site_declaration_in_a_hook(pytester, run, call, message):
    pytester.makeconftest(f"""
        def pytest_pinfault_declare_sites(config, declare):
            {call}
    """)
    pytester.makepyfile(test_x=marked('pinfault("kmalloc=return")'))
    check_usage_error(run(), "ERROR: pytest_pinfault_declare_sites: " + message.lstrip("*"))


# ---------------------------------------------------------------------------- fixtures
def _errors_at_setup(result, message):
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out, out
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([esc(message)])


def test_overridden_mm_config_returning_a_dict(pytester, run):
    """Seen only at setup (the fixture's value is unknown at collection)."""
    pytester.makepyfile(test_x="""
        import pytest

        @pytest.fixture
        def mm_config():
            return {"ram": "1GiB"}

        def test_x(fake_mm):
            pass
    """)
    _errors_at_setup(run(), "*test_x.py::test_x: the mm_config fixture: expected an MMConfig, got {'ram': '1GiB'}*")


def test_overridden_mm_config_that_cannot_be_built(pytester, run):
    pytester.makepyfile(test_x="""
        import pytest
        from pytest_pinfault import MMConfig

        @pytest.fixture
        def mm_config():
            return MMConfig(ram="1GiB", cma="2GiB")

        def test_x(fake_mm):
            pass
    """)
    _errors_at_setup(run(), "*test_x.py::test_x: the mm_config fixture: cma['reserved']: expected 2GiB to fit*")


def test_overridden_mm_config_with_a_bad_marker(pytester, run):
    pytester.makepyfile(test_x="""
        import pytest
        from pytest_pinfault import MMConfig

        @pytest.fixture
        def mm_config():
            return MMConfig(ram="1GiB")

        @pytest.mark.mm_config(quirks=None)
        def test_x(fake_mm):
            pass
    """)
    _errors_at_setup(run(), "*test_x.py::test_x: @pytest.mark.mm_config: quirks: expected a name or a list*")


def test_bad_spec_armed_in_the_test_fails_that_test(pytester, run):
    pytester.makepyfile(test_x="""
        def test_x(pinfault):
            pinfault.arm("kmalloc[every=\u00b2]=return")

        def test_y(fake_mm):
            fake_mm.faults.arm("kmalloc", every=0)
    """)
    result = run()
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*bad fault spec 'kmalloc[[]every=\u00b2]=return' at column 15: expected a "
                                 "positive integer for every, got '\u00b2'*",
                                 "*arm: every: expected an integer from 1 to 9223372036854775807, got 0*"])


def test_matrix_with_fake_mm_parametrized_by_hand(pytester, run):
    """pinfault_matrix parametrizes fake_mm itself; doing it too is pytest's own error."""
    pytester.makepyfile(test_x="""
        import pytest

        @pytest.mark.pinfault_matrix("kmalloc", max_nth=1)
        @pytest.mark.parametrize("fake_mm", [1], indirect=True)
        def test_x(fake_mm):
            pass
    """)
    result = run()
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*fake_mm*"])


# ---------------------------------------------------------------------------- pytest-xdist
def test_bad_marker_under_xdist_is_a_collection_error(pytester, run_subprocess):
    """A UsageError in a worker's collection crashed it (INTERNALERROR on the controller)."""
    pytest.importorskip("xdist")
    pytester.makepyfile(test_bad=marked('pinfault("kmalloc=\u00b2*return")'))
    result = run_subprocess("-p", "xdist.plugin", "-n", "2")
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out, out
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*ERROR collecting test_bad.py*",
                                 esc("ERROR: test_bad.py::test_x: @pytest.mark.pinfault: bad fault spec "
                                     "'kmalloc=\u00b2*return' at column 9: expected an action*")])
    assert "test_x PASSED" not in out


def test_bad_declaration_in_a_subdirectory_conftest_under_xdist(pytester, run_subprocess):
    pytest.importorskip("xdist")
    sub = pytester.mkpydir("drv")
    sub.joinpath("conftest.py").write_text(
        "def pytest_pinfault_declare_sites(config, declare):\n    declare('drv.x', [True])\n")
    sub.joinpath("test_drv.py").write_text("def test_x(fake_mm):\n    pass\n")
    result = run_subprocess("-p", "xdist.plugin", "-n", "2")
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out, out
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*ERROR: pytest_pinfault_declare_sites: cannot declare fault site 'drv.x': "
                                 "not an errno: True*"])


def test_bad_root_declaration_stops_the_run_before_workers_start(pytester, run_subprocess):
    pytest.importorskip("xdist")
    pytester.makeconftest("def pytest_pinfault_declare_sites(config, declare):\n    declare('drv.x', [0])\n")
    pytester.makepyfile(test_x="def test_x(fake_mm): pass")
    result = run_subprocess("-p", "xdist.plugin", "-n", "2")
    check_usage_error(result, "ERROR: pytest_pinfault_declare_sites: cannot declare fault site 'drv.x': not an "
                              "errno: 0*")
