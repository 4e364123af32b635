"""gcc line coverage of C drivers (``coverage=True``) and the C error-line heuristic the
error-path report uses for ``.c`` files."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


ARMS = textwrap.dedent("""\
    static int g(struct s *s, int n)
    {
    	if (WARN_ON(n > 8))
    		n = 8;
    	s->p = kmalloc(n, GFP_KERNEL);
    	if (unlikely(!s->p)) {
    		int ret;

    		ret = -ENOMEM;
    		return ret;
    	} else {
    		s->n = n;
    	}
    	if (s->mode == 3)
    		return -EOPNOTSUPP;
    	if (IS_ERR(s->q)) {		/* pinfault: never */
    		pr_err("no q");
    		return PTR_ERR(s->q);
    	}
    	if (!s->cache) {
    		s->cache = make_cache(s);
    		return 0;
    	}
    	if (n == 2)
    		s->n = 1;
    	return 0;
    }

    static int h(struct s *s)
    {
    	int i, ret = 0;

    	for (i = 0; i < 4; i++) {
    		ret = step(s, i);
    		if (ret)
    			goto out_unlock;
    		ret = more(s, i);
    out_unlock:
    		unlock(s);
    	}
    	ret = last(s);
    	if (ret < 0)
    		undo(s);
    	return ret;
    }
    """)


def test_c_error_lines_arms_and_never_on_an_if():
    # a WARN_ON arm; `unlikely(!p)` after the allocation (neither the declaration nor the
    # `} else {` arm); an if whose body returns -E...; an IS_ERR branch; not a lazy
    # initialisation `if (!p)` nor an ordinary `if`; a label inside a loop ends with the
    # loop; a `ret < 0` arm that only undoes
    assert c_error_lines(ARMS) == {4: "WARN_ON arm", 9: "if", 10: "if", 15: "if", 17: "if", 18: "if",
                                   36: "if", 39: "error label", 43: "if"}
    assert c_never_lines(ARMS) == {16, 17, 18}      # the mark on the if covers its body


EXIT_SCRIPT = textwrap.dedent("""\
    import sys
    from pytest_pinfault import FakeMM
    from pytest_pinfault.cdriver import load_c_driver
    drv = load_c_driver(FakeMM(), sys.argv[1], cache_dir=sys.argv[2], coverage=True)
    lines = drv.coverage_lines(final=sys.argv[3] == "final")
    drv.unload()
    assert lines, lines
    if sys.argv[3] == "final":
        assert drv.coverage_lines() == {}      # the last collection of this load
    """)


@pytest.mark.parametrize("final", [True, False])
def test_the_final_collection_leaves_no_counters_for_the_exit_dump(tmp_path, final):
    """libgcov writes a driver's counters at process exit into the directory it was
    built in; after the fixture's final collection it has nothing left to write."""
    cache = tmp_path / "cache"
    r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(PROBE), str(cache), "final" if final else "again"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (list(cache.rglob("*.gcda")) == []) == final
