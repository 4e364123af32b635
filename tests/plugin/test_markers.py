"""Markers: registration with help text, the pinfault marker, and collection-time errors."""

import pytest

pytest_plugins = ["pytester"]


def esc(pattern):
    """An fnmatch pattern matching '[' literally (the '*' wildcards stay)."""
    return pattern.replace("[", "[[]")


def test_markers_are_registered_with_help(pytester, run):
    result = run("--markers")
    result.stdout.fnmatch_lines([esc(p) for p in [
        "@pytest.mark.mm_config(**fields): MMConfig fields for this test's fake_mm*",
        "@pytest.mark.pinfault(*specs, **callbacks): arm fault specs*",
        "@pytest.mark.pinfault_matrix(*sites, modes=('transient', 'persistent'), max_nth=N, accept=None):*",
        "@pytest.mark.pin_contract(expect=RULE | disable=[RULE, ...], reason=...):*",
    ]])


def test_strict_markers_accept_ours(pytester, run):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.pinfault("kmalloc=return")
        @pytest.mark.pin_contract(disable=[4], reason="demo")
        @pytest.mark.mm_config(ram="1GiB")
        def test_x(fake_mm):
            pass
    """)
    run("--strict-markers").assert_outcomes(passed=1)


def test_pinfault_marker_arms_specs(pytester, run):
    pytester.makepyfile("""
        import errno
        import pytest
        from pytest_pinfault.mm import GFP_KERNEL

        @pytest.mark.pinfault("kmalloc[nth=2]=1*return", "try_grab_folio=return(EREMOTEIO)")
        def test_two_specs(fake_mm, pinfault):
            assert fake_mm.kmalloc(8, GFP_KERNEL) is not None
            assert fake_mm.kmalloc(8, GFP_KERNEL) is None
            assert fake_mm.kmalloc(8, GFP_KERNEL) is not None
            assert [r.errno for r in pinfault.fired] == [-errno.ENOMEM]

        @pytest.mark.pinfault("kmalloc=call(race)", race=lambda ctx: ctx.setdefault("raced", True))
        def test_callback(fake_mm, pinfault):
            assert fake_mm.kmalloc(8, GFP_KERNEL) is not None
            assert pinfault.fired[0].context["raced"] is True

        @pytest.mark.pinfault("kmalloc[nth=3]=return")
        class TestClass:
            @pytest.mark.pinfault("kmalloc=1*return")
            def test_both(self, fake_mm, pinfault):
                got = [fake_mm.kmalloc(8, GFP_KERNEL) is None for _ in range(4)]
                assert got == [True, False, True, True]
    """)
    run().assert_outcomes(passed=3)


@pytest.mark.parametrize("marker, message", [
    ('pinfault("folio_isolate_lru[nth=0]=return")',
     "@pytest.mark.pinfault: bad fault spec 'folio_isolate_lru[nth=0]=return' at column 23: "
     "expected a positive integer*got '0'"),
    ('pinfault("kmalloc=1*retrun")',
     "@pytest.mark.pinfault: bad fault spec 'kmalloc=1*retrun' at column 11: expected *got 'retrun'"),
    ('pinfault("kmallok=return")',
     "@pytest.mark.pinfault: bad fault spec 'kmallok=return' at column 1: expected a known fault site "
     "(add_to_swap_cache, alloc_migration_target, *), got 'kmallok'"),
    ('pinfault("kmalloc=return(EBUSY)")',
     "@pytest.mark.pinfault: bad fault spec 'kmalloc=return(EBUSY)' at column 16: expected an errno "
     "kmalloc may return (-ENOMEM), got '-EBUSY'"),
    ('pinfault("kmalloc=call(race)")',
     "@pytest.mark.pinfault: bad fault spec 'kmalloc=call(race)' at column *: expected a callback given "
     "as a keyword argument of the marker, got 'race'"),
    ('pinfault(3)', "@pytest.mark.pinfault: expected fault spec strings, got 3"),
    ('pinfault_matrix("kmallok")',
     "@pytest.mark.pinfault_matrix: expected a known fault site (*), got 'kmallok'"),
    ('pinfault_matrix("kmalloc", modes=("sometimes",))',
     "@pytest.mark.pinfault_matrix: modes: expected a subset of ('transient', 'persistent'), "
     "got ('sometimes',)"),
    ('pinfault_matrix("kmalloc", max_nth=0)',
     "@pytest.mark.pinfault_matrix: max_nth: expected an integer from 1 to 1000, got 0"),
    ('pinfault_matrix("kmalloc", accept=("ENOMEN",))',
     "@pytest.mark.pinfault_matrix: accept: expected negative errnos like -errno.ENOMEM or 'ENOMEM', "
     "or a predicate, got 'ENOMEN'"),
    ('pinfault_matrix("kmalloc", acept=1)',
     "@pytest.mark.pinfault_matrix: expected keyword arguments modes, max_nth, accept, got 'acept'"),
    ('pin_contract(expect=4, disable=[4])',
     "@pytest.mark.pin_contract: expected exactly one of expect=RULE or disable=[RULE, ...], got both"),
    ('pin_contract()',
     "@pytest.mark.pin_contract: expected exactly one of expect=RULE or disable=[RULE, ...], got neither"),
    ('pin_contract(disable=[])',
     "@pytest.mark.pin_contract: disable: expected a list of rules (numbers or rule ids), got []"),
    ('pin_contract(expect=4, reason=1)', "@pytest.mark.pin_contract: reason: expected a string, got 1"),
    ('pin_contract(4)',
     "@pytest.mark.pin_contract: expected keyword arguments expect=RULE or disable=[RULE, ...], got positional (4,)"),
])
def test_bad_marker_is_a_usage_error_naming_test_and_marker(pytester, run, marker, message):
    pytester.makepyfile(test_bad=f"""
        import pytest

        def test_good(fake_mm):
            pass

        @pytest.mark.{marker}
        def test_x(fake_mm):
            pass
    """)
    result = run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([esc(f"ERROR: test_bad.py::test_x: {message}")])
    assert "passed" not in result.stdout.str()          # nothing ran


def test_matrix_without_fake_mm_is_an_error(pytester, run):
    pytester.makepyfile(test_bad="""
        import pytest

        @pytest.mark.pinfault_matrix("kmalloc")
        def test_x():
            pass
    """)
    result = run()
    result.stderr.fnmatch_lines(["ERROR: test_bad.py::test_x: @pytest.mark.pinfault_matrix: expected the "
                                 "test to use the fake_mm or pinfault fixture*got neither"])
