"""The plugin's own hooks, and that importing the plugin stays cheap."""

import subprocess
import sys

pytest_plugins = ["pytester"]


def test_configure_and_fault_fired_hooks(pytester, run):
    pytester.makeconftest("""
        import json

        events = []

        def pytest_pinfault_configure(fake_mm, request):
            events.append(("configure", request.node.name, type(fake_mm).__name__))
            if request.node.get_closest_marker("prepare"):
                fake_mm.faults.arm_spec("kmalloc=1*return")

        def pytest_pinfault_fault_fired(record, item):
            events.append(("fired", item.name, record.site, record.occurrence, record.errno))

        def pytest_sessionfinish(session):
            with open("events.json", "w") as f:
                json.dump(events, f)
    """)
    pytester.makepyfile("""
        import pytest
        from pytest_pinfault.mm import GFP_KERNEL

        @pytest.mark.prepare
        def test_prepared(fake_mm):
            assert fake_mm.kmalloc(8, GFP_KERNEL) is None

        @pytest.mark.pinfault("kmalloc[nth=2]=return")
        def test_marked(fake_mm):
            fake_mm.kmalloc(8, GFP_KERNEL)
            fake_mm.kmalloc(8, GFP_KERNEL)

        def test_no_mm():
            pass
    """)
    run("-p", "no:randomly", "-W", "ignore::pytest.PytestUnknownMarkWarning").assert_outcomes(passed=3)
    import json
    assert json.loads(pytester.path.joinpath("events.json").read_text()) == [
        ["configure", "test_prepared", "FakeMM"],
        ["fired", "test_prepared", "kmalloc", 1, -12],
        ["configure", "test_marked", "FakeMM"],
        ["fired", "test_marked", "kmalloc", 2, -12],
    ]


def test_unknown_hook_arguments_are_rejected_at_registration(pytester, run):
    pytester.makeconftest("""
        def pytest_pinfault_fault_fired(record, item, extra):
            pass
    """)
    pytester.makepyfile("def test_x(): pass")
    result = run()
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*pytest_pinfault_fault_fired*extra*"])


def test_importing_the_plugin_is_cheap():
    code = ("import sys; import pytest_pinfault.plugin; "
            "bad = [m for m in ('faker', 'coverage', 'hypothesis', 'xdist') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_no_autouse_fixtures(pytester, run):
    pytester.makepyfile("""
        def test_x(request):
            assert request.fixturenames == ["request"]
    """)
    run().assert_outcomes(passed=1)
