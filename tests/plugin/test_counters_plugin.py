"""Counters end to end: a driver registers a counter of its own on the test's fake_mm,
and the plugin's checker fails the test that leaves it off its baseline (teardown) or
raises it on an error return (rule 2); the model's built-in counters (user locked_vm)
fail a test the same way."""

pytest_plugins = ["pytester"]


def test_driver_counter_fails_the_leaking_test(pytester, run):
    pytester.makepyfile("""
        import errno
        from pytest_pinfault import pin_entry_point

        class Drv:
            def __init__(self, k):
                self.k = k
                self.slots = 0
                k.counters.register("drv.slots", lambda: self.slots, doc="driver slots")

        @pin_entry_point
        def grab(drv, fail):
            drv.slots += 1
            if fail:
                return -errno.EBUSY
            return 0

        def test_balanced(fake_mm):
            d = Drv(fake_mm)
            assert grab(d, False) == 0
            d.slots -= 1

        def test_leaks_at_teardown(fake_mm):
            assert grab(Drv(fake_mm), False) == 0

        def test_leaks_on_error(fake_mm):
            d = Drv(fake_mm)
            assert grab(d, True) == -errno.EBUSY
            d.slots = 0
    """)
    result = run("-p", "no:randomly", "-v")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*pin-balance*drv.slots is 1, baseline 0*",
                                 "*error-nothing-held*grab returned -EBUSY*drv.slots +1*"])


def test_user_locked_vm_leak_fails_with_accounting(pytester, run):
    pytester.makepyfile("""
        def test_leak(fake_mm):
            fake_mm.current_user().locked_vm += 3
    """)
    result = run("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*accounting*user.locked_vm*is 3, baseline 0*"])
