"""The report: header line, per-site summary, JSON report, pytest-xdist and determinism."""

import json

import pytest

from tests.plugin.test_matrix import MATRIX_TEST

pytest_plugins = ["pytester"]

SUMMARY_START = "pinfault: fault sites"

PROBABILISTIC = """
    import pytest
    from pytest_pinfault.mm import GFP_KERNEL

    @pytest.mark.parametrize("i", range(6))
    @pytest.mark.pinfault("kmalloc=30%return")
    def test_random(fake_mm, pinfault, i):
        for _ in range(20):
            fake_mm.kmalloc(8, GFP_KERNEL)
"""


def summary_lines(result):
    """The lines of the pinfault summary section (without its ==== header)."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if SUMMARY_START in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("="))
    return [line for line in lines[start + 1:end] if line.strip() and not line.startswith("pinfault JSON report")]


def test_header_and_summary(pytester, run):
    pytester.makepyfile(test_drv=MATRIX_TEST)
    result = run("--pinfault-seed=5", "--pinfault-max-nth=2")
    result.stdout.fnmatch_lines(["pinfault: seed=5 kernel=6.17 (pytest-pinfault 0.1.0.dev0)"])
    # one failing case, which injected kmalloc: only kmalloc's row counts it as failed;
    # the two sites it merely passed through count it in hit-in-failed
    assert summary_lines(result) == [
        "site              hits  injections   tests  failed  violations  kernel  hit-in-failed",
        "alloc_pages          5           0       5       0           0       0              1",
        "kmalloc             12           5       7       1           1       0              0",
        "try_grab_folio       5           2       5       0           0       0              1",
        "failing tests by the fault they injected:",
        "  test_drv.py::test_create[kmalloc-2-persistent]: injected kmalloc#2 -ENOMEM (+1 more firing); "
        "violated pin-balance",
        "pinfault_matrix:",
        "  not reached: test_drv.py::test_create: alloc_migration_target (the fault-free run never hit it: "
        "no case)",
    ]


def test_no_summary_without_fake_mm(pytester, run):
    pytester.makepyfile("def test_x(): pass")
    assert SUMMARY_START not in run().stdout.str()


def test_json_report_schema(pytester, run):
    pytester.makepyfile(test_drv=MATRIX_TEST)
    result = run("--pinfault-seed=5", "--pinfault-max-nth=2", "--pinfault-json=out/pinfault.json",
                 "--pinfault-faults=alloc_pages[order=9]=return")
    result.stdout.fnmatch_lines(["pinfault JSON report: out/pinfault.json"])
    data = json.loads(pytester.path.joinpath("out", "pinfault.json").read_text())
    assert set(data) == {"schema", "version", "kernel", "kernels", "seed", "faults", "sites", "matrices",
                         "tests"}
    assert (data["schema"], data["kernel"], data["seed"]) == ("pytest-pinfault/3", "6.17", 5)
    assert data["kernels"] == ["6.17"]
    assert data["faults"] == ["alloc_pages[order=9]=return"]
    assert data["sites"]["kmalloc"] == {"hits": 12, "injections": 5, "tests": 7, "failed": 1,
                                        "violations": 1, "kernel": 0, "hit_in_failed": 0}
    assert data["matrices"] == {"test_drv.py::test_create[fault-free]": {
        "sites": ["kmalloc", "try_grab_folio", "alloc_migration_target"], "cap": 2, "cases": 6,
        "reach": {"kmalloc": 2, "try_grab_folio": 1, "alloc_migration_target": 0}, "capped": {},
        "unreached": ["alloc_migration_target"]}}
    tests = {t["nodeid"]: t for t in data["tests"]}
    assert list(tests) == sorted(tests) and len(tests) == 7
    bad = tests["test_drv.py::test_create[kmalloc-2-persistent]"]
    assert bad["outcome"] == "failed" and bad["case"] == "kmalloc-2-persistent"
    assert {t["kernel_version"] for t in tests.values()} == {"6.17"}
    assert bad["injected"] == ["kmalloc"] and bad["kernel"] == []
    assert bad["hits"] == {"alloc_pages": 1, "kmalloc": 3, "try_grab_folio": 1}
    assert [(r["site"], r["occurrence"], r["errno"], r["errno_name"]) for r in bad["fired"]] == [
        ("kmalloc", 2, -12, "-ENOMEM"), ("kmalloc", 3, -12, "-ENOMEM")]
    assert set(bad["fired"][0]) == {"site", "occurrence", "fired", "errno", "errno_name", "context", "caller"}
    assert [v["rule"] for v in bad["violations"]] == ["pin-balance"]     # the leaked pin
    assert tests["test_drv.py::test_create[kmalloc-2-transient]"]["outcome"] == "passed"
    assert tests["test_drv.py::test_create[kmalloc-2-transient]"]["violations"] == []
    assert tests["test_drv.py::test_create[fault-free]"]["injected"] == []
    check_report(data)


def test_summary_is_the_same_under_xdist(pytester, run_subprocess):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_drv=MATRIX_TEST)
    pytester.makepyfile(test_prob=PROBABILISTIC)
    serial = run_subprocess("--pinfault-seed=11", "--pinfault-json=serial.json", "--junitxml=serial.xml")
    serial.assert_outcomes(failed=1, passed=6 + 6)
    dist = run_subprocess("--pinfault-seed=11", "--pinfault-json=dist.json", "--junitxml=dist.xml",
                          "-p", "xdist.plugin", "-n", "2")
    dist.assert_outcomes(failed=1, passed=6 + 6)
    dist.stdout.fnmatch_lines(["pinfault: seed=11 kernel=6.17 *", "created: 2/2 workers*"])
    assert summary_lines(dist) == summary_lines(serial)
    assert len(summary_lines(serial)) == 8
    s, d = (json.loads(pytester.path.joinpath(n).read_text()) for n in ("serial.json", "dist.json"))
    assert s == d
    check_report(d)
    # junit-xml: the controller writes the same readable text from the workers' reports
    from xml.etree import ElementTree
    props = [sorted((c.get("name"), c.get("classname"), p.get("name"), p.get("value"))
                    for c in ElementTree.parse(pytester.path / n).iter("testcase") for p in c.iter("property"))
             for n in ("serial.xml", "dist.xml")]
    assert props[0] == props[1] and len(props[0]) >= 13 * 3
    assert not any(v.startswith(("{'", "['")) for *_, v in props[0])


def test_random_seed_reaches_xdist_workers(pytester, run_subprocess):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_prob=PROBABILISTIC)
    dist = run_subprocess("--pinfault-json=dist.json", "-p", "xdist.plugin", "-n", "2")
    seed = int(dist.stdout.str().split("pinfault: seed=")[1].split()[0])
    serial = run_subprocess(f"--pinfault-seed={seed}", "--pinfault-json=serial.json")
    s, d = (json.loads(pytester.path.joinpath(n).read_text()) for n in ("serial.json", "dist.json"))
    assert d["seed"] == seed and s == d
    check_report(d)
    assert summary_lines(dist) == summary_lines(serial)


def test_same_seed_same_fired_log(pytester, run):
    pytester.makepyfile(test_prob=PROBABILISTIC)
    logs = []
    for name, seed in (("a", 1234), ("b", 1234), ("c", 4321)):
        run(f"--pinfault-seed={seed}", f"--pinfault-json={name}.json").assert_outcomes(passed=6)
        data = json.loads(pytester.path.joinpath(f"{name}.json").read_text())
        logs.append({t["nodeid"]: t["fired"] for t in data["tests"]})
    assert logs[0] == logs[1]
    assert logs[0] != logs[2]
    fired = [len(v) for v in logs[0].values()]
    assert 0 < sum(fired) < 6 * 20 and len(set(fired)) > 1        # random, and per test


def test_fired_log_does_not_depend_on_test_order(pytester, run):
    pytester.makepyfile(test_prob=PROBABILISTIC)
    run("--pinfault-seed=9", "--pinfault-json=all.json")
    run("--pinfault-seed=9", "--pinfault-json=one.json", "test_prob.py::test_random[3]")
    every = {t["nodeid"]: t["fired"] for t in json.loads(pytester.path.joinpath("all.json").read_text())["tests"]}
    (one,) = json.loads(pytester.path.joinpath("one.json").read_text())["tests"]
    assert one["fired"] == every[one["nodeid"]]


FIRES_A_LOT = """
    import pytest
    from pytest_pinfault.mm import GFP_KERNEL

    @pytest.mark.pinfault("kmalloc=return")
    def test_many(fake_mm, pinfault):
        for _ in range(300):
            fake_mm.kmalloc(8, GFP_KERNEL)
"""


def test_junit_properties_are_short_readable_and_capped(pytester, run):
    from xml.etree import ElementTree

    from pytest_pinfault.plugin.report import VALUE_CAP
    pytester.makepyfile(test_many=FIRES_A_LOT)
    run("--junitxml=out.xml", "--pinfault-json=out.json").assert_outcomes(passed=1)
    data = json.loads(pytester.path.joinpath("out.json").read_text())
    (test,) = data["tests"]
    assert (test["fired_total"], len(test["fired"])) == (300, 50)     # the uncapped value is long
    check_report(data)
    xml_text = pytester.path.joinpath("out.xml").read_text()
    assert len(xml_text.encode()) < 4 * VALUE_CAP + 1500     # four properties, capped, plus the frame
    props = {p.get("name"): p.get("value") for p in ElementTree.fromstring(xml_text).iter("property")}
    assert set(props) == {"pinfault_hits", "pinfault_fired", "pinfault_violations", "pinfault_kernel_version"}
    assert props["pinfault_kernel_version"] == "6.17"
    assert props["pinfault_hits"] == "kmalloc=300"
    assert props["pinfault_violations"] == "none"
    fired = props["pinfault_fired"]
    assert len(fired) == VALUE_CAP
    assert fired.startswith("kmalloc#1 -ENOMEM at test_many.py:7 test_many; kmalloc#2 -ENOMEM")
    cut = int(fired.rsplit("...[", 1)[1].split()[0])
    full = "; ".join(f"kmalloc#{n} -ENOMEM at test_many.py:7 test_many" for n in range(1, 301))
    assert cut == len(full) - len(fired[:fired.rindex(" ...[")])       # the marker says how much was cut
    assert all("{'" not in v and "['" not in v for v in props.values())    # no Python reprs


def test_cap_text_marker_counts_what_was_cut():
    from pytest_pinfault.plugin.report import cap_text
    assert cap_text("x" * 10, 10) == "x" * 10
    for n in (41, 50, 999, 100_000):
        out = cap_text("x" * n, 40)
        assert len(out) == 40
        head, marker = out.split(" ...[")
        assert marker == f"{n - len(head)} more chars cut]"


OUTCOMES = """
    import pytest
    from pytest_pinfault.mm import GFP_KERNEL

    @pytest.fixture
    def broken(fake_mm, pinfault):
        fake_mm.kmalloc(8, GFP_KERNEL)
        raise RuntimeError("set-up failed")

    @pytest.mark.pinfault("kmalloc=return")
    def test_error(broken):
        pass

    @pytest.mark.xfail(reason="known")
    @pytest.mark.pinfault("kmalloc=return")
    def test_xfailed(fake_mm, pinfault):
        assert fake_mm.kmalloc(8, GFP_KERNEL) is not None

    @pytest.mark.xfail(reason="fixed")
    @pytest.mark.pinfault("kmalloc=return")
    def test_xpassed(fake_mm, pinfault):
        assert fake_mm.kmalloc(8, GFP_KERNEL) is None

    @pytest.mark.pinfault("kmalloc=return")
    def test_skipped(fake_mm, pinfault):
        fake_mm.kmalloc(8, GFP_KERNEL)
        pytest.skip("not here")

    @pytest.mark.pinfault("kmalloc=return")
    def test_failed(fake_mm, pinfault):
        assert fake_mm.kmalloc(8, GFP_KERNEL) is not None
"""


def _schema():
    from importlib.resources import files
    return json.loads(files("pytest_pinfault").joinpath("report", "schema-3.json").read_text())


def check_report(data):
    """Validate a JSON report against the shipped JSON Schema (raises
    jsonschema.ValidationError naming the path and the broken constraint)."""
    import jsonschema         # the test extra
    jsonschema.Draft202012Validator(_schema()).validate(data)


GOOD_TEST = {"nodeid": "t.py::t", "outcome": "passed", "case": None, "injected": [], "hits": {"kmalloc": 1},
             "fired_total": 0, "fired": [], "kernel": [], "violations": []}
GOOD_FIRED = {"site": "kmalloc", "occurrence": 1, "fired": True, "errno": -12, "errno_name": "-ENOMEM",
              "context": {"size": 8, "folio": {"pfn": 5, "zone": "Normal", "migratetype": "Movable", "order": 0,
                                               "kind": "anon"},
                          "folios": [{"pfn": 6, "zone": "Movable", "migratetype": None, "order": 9,
                                      "kind": "shmem"}], "obj": "<object>"},
              "caller": "t.py:3 t"}
GOOD_KERNEL = {"loop": "__gup_longterm_locked", "rounds": 100, "site": "migrate_pages", "occurrence": 100,
               "kind": "killed", "returned": -4, "pfn": 12, "caller": "t.py:4 t", "message": "would retry"}


def _report(**test):
    return {"schema": "pytest-pinfault/3", "version": "1", "kernel": "6.17", "seed": 1, "faults": [],
            "sites": {}, "matrices": {"t.py::m": {"sites": ["kmalloc"], "reach": {"kmalloc": 2}, "cap": 32,
                                                  "cases": 4, "capped": {}, "unreached": []}},
            "tests": [{**GOOD_TEST, **test}]}


def test_the_main_report_schema_accepts_good_reports_and_rejects_bad_ones():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(_schema())
    good = _report()
    check_report(good)
    check_report(_report(fired=[GOOD_FIRED, {**GOOD_FIRED, "fired": False, "errno": None, "errno_name": None}],
                         fired_total=2))
    check_report(_report(outcome="kernel", kernel=[GOOD_KERNEL, {**GOOD_KERNEL, "kind": "hang", "returned": None}]))
    check_report(_report(outcome="failed", kernel=[GOOD_KERNEL]))
    check_report({**_report(kernel_version="6.1"), "kernels": ["6.1"]})     # optional keys within version 3
    good_violation = {"rule": "pin-balance", "number": 4, "message": "m", "expected": False}
    check_report(_report(machines=2, kernel_version=None, kernel_versions=["6.17", "6.1"], violations_total=1,
                         fired=[{**GOOD_FIRED, "machine": 2}], fired_total=1, outcome="failed",
                         kernel=[{**GOOD_KERNEL, "machine": 1}], violations=[{**good_violation, "machine": 2}]))
    bad_reports = {
        "old schema": {**good, "schema": "pytest-pinfault/2"},
        "seed a string": {**good, "seed": "1"},
        "unknown top-level key": {**good, "extra": 1},
        "no tests": {k: v for k, v in good.items() if k != "tests"},
        "unknown outcome": _report(outcome="crashed"),
        "kernel outcomes not a list": _report(kernel="6.17"),
        "unknown matrix key": {**good, "matrices": {"m": {**good["matrices"]["t.py::m"], "extra": 1}}},
        "positive errno": _report(fired=[{**GOOD_FIRED, "errno": 12}]),
        "errno without its name": _report(fired=[{**GOOD_FIRED, "errno_name": None}]),
        "a name without errno": _report(fired=[{**GOOD_FIRED, "errno": None}]),
        "unknown fired key": _report(fired=[{**GOOD_FIRED, "extra": 1}]),
        "half a folio": _report(fired=[{**GOOD_FIRED, "context": {"folio": {"pfn": 1}}}]),
        "fired over the cap": _report(fired=[GOOD_FIRED] * 51, fired_total=51),
        "kernel record without its loop": _report(outcome="kernel",
                                                  kernel=[{k: v for k, v in GOOD_KERNEL.items() if k != "loop"}]),
        "unknown kernel kind": _report(outcome="kernel", kernel=[{**GOOD_KERNEL, "kind": "stuck"}]),
        "a hang that returned": _report(outcome="kernel", kernel=[{**GOOD_KERNEL, "kind": "hang"}]),
        "killed without -EINTR": _report(outcome="kernel", kernel=[{**GOOD_KERNEL, "returned": None}]),
        "outcome kernel with no kernel outcome": _report(outcome="kernel"),
        "passed with a kernel outcome": _report(kernel=[GOOD_KERNEL]),
        "unknown kernel version of a test": _report(kernel_version="5.4"),
        "unknown kernel version ran": {**good, "kernels": ["6.1", "4.19"]},
        "violations over the cap": _report(violations=[good_violation] * 51, violations_total=51),
        "machine block 0": _report(machines=1, fired=[{**GOOD_FIRED, "machine": 0}], fired_total=1),
        "a machine block in a fake_mm-only test": _report(violations=[{**good_violation, "machine": 1}]),
        "negative machines": _report(machines=-1),
        "one version in kernel_versions": _report(kernel_version=None, kernel_versions=["6.1"]),
        "kernel_versions and a kernel_version": _report(machines=1, kernel_version="6.1",
                                                        kernel_versions=["6.1", "6.17"]),
        "string over the cap": _report(nodeid="x" * 10, violations=[
            {"rule": "pin-balance", "number": 2, "message": "m" * 1025, "expected": False}]),
    }
    for why, bad in bad_reports.items():
        with pytest.raises(jsonschema.ValidationError):
            check_report(bad)
            pytest.fail(f"accepted: {why}")


def test_json_report_outcomes_paths_and_schema(pytester, run):
    pytester.makepyfile(test_out=OUTCOMES)
    pytester.makepyfile(test_drv=MATRIX_TEST)
    pytester.makepyfile(test_many=FIRES_A_LOT)
    result = run("--pinfault-json=out.json", "--pinfault-max-nth=2")
    result.assert_outcomes(passed=7, failed=2, errors=1, skipped=1, xfailed=1, xpassed=1)
    data = json.loads(pytester.path.joinpath("out.json").read_text())
    check_report(data)
    tests = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    assert {n: tests[n]["outcome"] for n in ("test_error", "test_xfailed", "test_xpassed", "test_skipped",
                                            "test_failed")} == {
        "test_error": "error", "test_xfailed": "xfailed", "test_xpassed": "xpassed", "test_skipped": "skipped",
        "test_failed": "failed"}
    assert tests["test_error"]["fired"][0]["caller"] == "test_out.py:6 broken"   # relative to the rootdir
    assert str(pytester.path) not in json.dumps(data)
    many = tests["test_many"]
    assert (many["fired_total"], len(many["fired"])) == (300, 50)
    assert data["sites"]["kmalloc"]["injections"] == 300 + 5 + 5   # counted before the cap
    assert "test_out.py::test_error: injected kmalloc#1 -ENOMEM" in result.stdout.str()


PER_KERNEL = """
import pytest

@pytest.mark.pinfault_kernels("6.1", "6.12")
def test_versions(fake_mm):
    pass

@pytest.mark.mm_config(kernel="6.6")
def test_pinned(fake_mm):
    pass

def test_default(fake_mm):
    pass
"""


@pytest.mark.parametrize("xdist", [False, True])
def test_json_report_kernel_per_test(pytester, run, run_subprocess, xdist):
    """Each test entry names the version its machine followed; top-level ``kernel`` stays
    the default version and ``kernels`` lists what ran, oldest first (the same under
    pytest-xdist: the version travels in the workers' reports)."""
    pytester.makepyfile(test_k=PER_KERNEL)
    if xdist:
        pytest.importorskip("xdist")
        run_subprocess("--pinfault-json=out.json", "-p", "xdist.plugin", "-n", "2").assert_outcomes(passed=4)
    else:
        run("--pinfault-json=out.json").assert_outcomes(passed=4)
    data = json.loads(pytester.path.joinpath("out.json").read_text())
    check_report(data)
    assert {t["nodeid"].split("::")[-1]: t["kernel_version"] for t in data["tests"]} == {
        "test_versions[kernel-6.1]": "6.1", "test_versions[kernel-6.12]": "6.12",
        "test_pinned": "6.6", "test_default": "6.17"}
    assert data["kernel"] == "6.17"
    assert data["kernels"] == ["6.1", "6.6", "6.12", "6.17"]


def test_json_report_kernel_per_test_option(pytester, run):
    """--pinfault-kernel runs every fake_mm test per version; the report says which."""
    pytester.makepyfile(test_k="def test_default(fake_mm):\n    pass\n")
    run("--pinfault-json=out.json", "--pinfault-kernel=6.12,6.1").assert_outcomes(passed=2)
    data = json.loads(pytester.path.joinpath("out.json").read_text())
    check_report(data)
    assert {t["nodeid"]: t["kernel_version"] for t in data["tests"]} == {
        "test_k.py::test_default[kernel-6.1]": "6.1", "test_k.py::test_default[kernel-6.12]": "6.12"}
    assert data["kernels"] == ["6.1", "6.12"] and data["kernel"] == "6.17"


MACHINE_TESTS = """
import errno
import pytest
from hypothesis import given, settings, strategies as st
from pytest_pinfault import MMConfig
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_KERNEL, MAP_ANONYMOUS, MAP_PRIVATE,
                                PROT_READ, PROT_WRITE)


def register(k, npages, leak=False):
    addr = k.current.mm.mmap(npages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    pages = []
    ret = k.pin_user_pages(addr, npages, FOLL_LONGTERM | FOLL_WRITE, pages)
    if ret < 0:
        return ret
    desc = k.kmalloc(64, GFP_KERNEL)
    if desc is None:
        k.unpin_user_pages(pages, ret)
        return -errno.ENOMEM
    k.unpin_user_pages(pages, ret - leak)
    k.kfree(desc)
    return 0


@pytest.mark.pinfault("kmalloc=return")
def test_fired(pinfault_machine):
    for _ in range(2):
        with pinfault_machine() as k:
            assert register(k, 2) == -errno.ENOMEM


def test_leak(pinfault_machine):
    with pinfault_machine() as k:
        assert register(k, 3) == 0
    with pinfault_machine() as k:
        assert register(k, 3, leak=True) == 0


@settings(database=None, max_examples=5, derandomize=True)
@given(st.integers(1, 4))
def test_examples(pinfault_machine, npages):
    with pinfault_machine() as k:
        assert register(k, npages) == 0


@pytest.mark.pinfault("kmalloc=return")
def test_both(fake_mm, pinfault_machine):
    with pinfault_machine(config=MMConfig(kernel="6.1")) as k:
        assert register(k, 1) == -errno.ENOMEM
    assert register(fake_mm, 1) == -errno.ENOMEM
"""


@pytest.mark.parametrize("xdist", [False, True])
def test_pinfault_machine_tests_are_in_the_json_report_and_the_summary(pytester, run, run_subprocess, xdist):
    """A test that builds its machines with ``pinfault_machine`` has its entry like a
    ``fake_mm`` test: hits summed over its machines, each record naming the block it came
    from, ``machines`` counting the blocks, its violations failing the site's row (also
    under pytest-xdist: the data travels in the workers' reports)."""
    pytest.importorskip("hypothesis")
    pytester.makepyfile(test_m=MACHINE_TESTS)
    if xdist:
        pytest.importorskip("xdist")
        result = run_subprocess("--pinfault-json=out.json", "--junitxml=out.xml", "-p", "xdist.plugin", "-n", "2")
    else:
        result = run("--pinfault-json=out.json", "--junitxml=out.xml")
    result.assert_outcomes(passed=3, failed=1)
    import xml.etree.ElementTree as ET
    case = next(c for c in ET.parse(pytester.path / "out.xml").iter("testcase") if c.get("name") == "test_leak")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["pinfault_machines"] == "2" and props["pinfault_violations"].startswith("pin-balance: ")
    case = next(c for c in ET.parse(pytester.path / "out.xml").iter("testcase") if c.get("name") == "test_fired")
    fired_text = next(p.get("value") for p in case.iter("property") if p.get("name") == "pinfault_fired")
    assert [part.split(" at ")[0] + " " + part.rsplit(" ", 2)[-2] + " " + part.rsplit(" ", 1)[-1]
            for part in fired_text.split("; ")] == ["kmalloc#1 -ENOMEM (machine 1)", "kmalloc#1 -ENOMEM (machine 2)"]
    data = json.loads(pytester.path.joinpath("out.json").read_text())
    check_report(data)
    tests = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    assert sorted(tests) == ["test_both", "test_examples", "test_fired", "test_leak"]
    fired = tests["test_fired"]
    assert (fired["outcome"], fired["machines"], fired["kernel_version"], fired["case"]) == (
        "passed", 2, "6.17", None)
    assert fired["hits"]["kmalloc"] == 2 and fired["injected"] == ["kmalloc"]
    assert [(r["site"], r["occurrence"], r["errno_name"], r["machine"]) for r in fired["fired"]] == [
        ("kmalloc", 1, "-ENOMEM", 1), ("kmalloc", 1, "-ENOMEM", 2)]
    assert fired["fired_total"] == 2 and fired["violations"] == []
    leak = tests["test_leak"]
    assert (leak["outcome"], leak["machines"], leak["violations_total"]) == ("failed", 2, 1)
    assert [(v["rule"], v["machine"], v["expected"]) for v in leak["violations"]] == [("pin-balance", 2, False)]
    assert tests["test_examples"]["outcome"] == "passed" and tests["test_examples"]["machines"] >= 2
    both = tests["test_both"]
    assert (both["kernel_version"], both["kernel_versions"], both["machines"]) == (None, ["6.17", "6.1"], 1)
    assert [(r["occurrence"], r.get("machine")) for r in both["fired"]] == [(1, None), (1, 1)]
    assert data["kernels"] == ["6.1", "6.17"]
    assert data["sites"]["kmalloc"]["injections"] == 4 and data["sites"]["kmalloc"]["tests"] == 2
    result.stdout.fnmatch_lines(["failing tests by the fault they injected:",
                                 "  test_m.py::test_leak: no fault injected; violated pin-balance"])


def test_a_tests_violations_are_capped_in_the_json_report(pytester, run):
    """Machines can find a violation per example; the entry lists the first 50 and
    ``violations_total`` counts them all (the terminal summary still counts the test)."""
    pytester.makepyfile(test_m=MACHINE_TESTS.split("@pytest.mark.pinfault")[0] + """
@pytest.mark.pin_contract(expect="pin-balance")
def test_many(pinfault_machine):
    for _ in range(60):
        with pinfault_machine() as k:
            assert register(k, 1, leak=True) == 0
""")
    run("--pinfault-json=out.json").assert_outcomes(passed=1)
    data = json.loads(pytester.path.joinpath("out.json").read_text())
    check_report(data)
    (many,) = data["tests"]
    assert (many["machines"], many["violations_total"], len(many["violations"])) == (60, 60, 50)
    assert [v["machine"] for v in many["violations"]] == list(range(1, 51))
    assert {(v["rule"], v["expected"]) for v in many["violations"]} == {("pin-balance", True)}


def test_a_machine_tests_kernel_outcome_shows_as_kernel(pytester, run):
    """A kernel loop a machine's fault kept failing is the test's outcome as for
    ``fake_mm``: ``KERNEL`` in the terminal (the call report carries it) and ``kernel``
    in the JSON report, the outcome naming its machine block."""
    from tests.plugin.test_matrix import KERNEL_LOOP
    pytester.makepyfile(test_k=KERNEL_LOOP + """

@pytest.mark.mm_config(ram="1GiB", cma="64MiB")
def test_machine(pinfault_machine):
    with pinfault_machine() as k:
        assert create(k, _in_cma(k, 2), 2, []) == 0
    with pinfault_machine("folio_isolate_lru=return") as k:
        assert create(k, _in_cma(k, 2), 2, []) == -errno.EINTR
""")
    result = run("-v", "--pinfault-json=out.json")
    result.stdout.fnmatch_lines(["test_k.py::test_machine KERNEL*"])
    data = json.loads(pytester.path.joinpath("out.json").read_text())
    check_report(data)
    (test,) = data["tests"]
    assert (test["outcome"], test["machines"]) == ("kernel", 2)
    assert [(o["kind"], o["returned"], o["machine"]) for o in test["kernel"]] == [("killed", -4, 2)]
