"""gcc line coverage of C drivers (``coverage=True``) and the C error-line heuristic the
error-path report uses for ``.c`` files."""

import textwrap
from pathlib import Path

from pytest_pinfault.cdriver import load_c_driver
from pytest_pinfault.errpaths import c_error_lines, c_never_lines

PROBE = Path(__file__).parent / "drivers" / "probe.c"


def _line(marker):
    return next(i for i, ln in enumerate(PROBE.read_text().splitlines(), 1) if marker in ln)


def test_coverage_lines_are_per_load_and_restart_at_each_call(fake_mm, cdriver_cache):
    drv = load_c_driver(fake_mm, PROBE, cache_dir=cdriver_cache, coverage=True)
    try:
        assert drv.coverage
        init = drv.coverage_lines()[str(PROBE)]
        assert _line("return misc_register(&probe_misc);") in init
        f = drv.open("probe")
        assert f.ioctl(7, 0) == 0
        lines = drv.coverage_lines()[str(PROBE)]
        assert _line("PROBE-WARN") in lines and _line("return misc_register(&probe_misc);") not in lines
        assert drv.coverage_lines().get(str(PROBE), set()) == set()     # nothing ran since
    finally:
        drv.unload()


def test_without_coverage_nothing_is_collected(fake_mm, cdriver_cache):
    drv = load_c_driver(fake_mm, PROBE, cache_dir=cdriver_cache)
    try:
        assert not drv.coverage and drv.coverage_lines() == {}
    finally:
        drv.unload()


SRC = textwrap.dedent("""\
    static int f(void)
    {
    	void *p = kmalloc(8, GFP_KERNEL);
    	int ret;

    	if (!p)
    		return -ENOMEM;
    	ret = g(p);
    	if (ret < 0) {
    		pr_err("g failed");
    		goto err_free;
    	}
    	if (ret == 7)
    		return -EINVAL;		/* pinfault: never */
    	return 0;
    err_free:
    	kfree(p);
    	return ret;
    }
    """)


def test_c_error_lines():
    assert c_error_lines(SRC) == {7: "if", 10: "if", 11: "if", 14: "if", 17: "error label", 18: "error label"}
    assert c_never_lines(SRC) == {14}
