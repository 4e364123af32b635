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
    assert set(data) == {"schema", "version", "kernel", "seed", "faults", "sites", "matrices", "tests"}
    assert (data["schema"], data["kernel"], data["seed"]) == ("pytest-pinfault/2", "6.17", 5)
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
    assert bad["injected"] == ["kmalloc"] and bad["kernel"] == []
    assert bad["hits"] == {"alloc_pages": 1, "kmalloc": 3, "try_grab_folio": 1}
    assert [(r["site"], r["occurrence"], r["errno"], r["errno_name"]) for r in bad["fired"]] == [
        ("kmalloc", 2, -12, "-ENOMEM"), ("kmalloc", 3, -12, "-ENOMEM")]
    assert set(bad["fired"][0]) == {"site", "occurrence", "fired", "errno", "errno_name", "context", "caller"}
    assert [v["rule"] for v in bad["violations"]] == ["pin-balance"]     # the leaked pin
    assert tests["test_drv.py::test_create[kmalloc-2-transient]"]["outcome"] == "passed"
    assert tests["test_drv.py::test_create[kmalloc-2-transient]"]["violations"] == []
    assert tests["test_drv.py::test_create[fault-free]"]["injected"] == []


def test_summary_is_the_same_under_xdist(pytester, run_subprocess):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_drv=MATRIX_TEST)
    pytester.makepyfile(test_prob=PROBABILISTIC)
    serial = run_subprocess("--pinfault-seed=11", "--pinfault-json=serial.json")
    serial.assert_outcomes(failed=1, passed=6 + 6)
    dist = run_subprocess("--pinfault-seed=11", "--pinfault-json=dist.json", "-p", "xdist.plugin", "-n", "2")
    dist.assert_outcomes(failed=1, passed=6 + 6)
    dist.stdout.fnmatch_lines(["pinfault: seed=11 kernel=6.17 *", "created: 2/2 workers*"])
    assert summary_lines(dist) == summary_lines(serial)
    assert len(summary_lines(serial)) == 8
    s, d = (json.loads(pytester.path.joinpath(n).read_text()) for n in ("serial.json", "dist.json"))
    assert s == d


def test_random_seed_reaches_xdist_workers(pytester, run_subprocess):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_prob=PROBABILISTIC)
    dist = run_subprocess("--pinfault-json=dist.json", "-p", "xdist.plugin", "-n", "2")
    seed = int(dist.stdout.str().split("pinfault: seed=")[1].split()[0])
    serial = run_subprocess(f"--pinfault-seed={seed}", "--pinfault-json=serial.json")
    s, d = (json.loads(pytester.path.joinpath(n).read_text()) for n in ("serial.json", "dist.json"))
    assert d["seed"] == seed and s == d
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
