"""The pinfault controller fixture and fault-state isolation between tests."""

pytest_plugins = ["pytester"]


def test_controller_end_to_end(pytester, run):
    pytester.makepyfile("""
        import errno
        import pytest
        from pytest_pinfault.mm import GFP_KERNEL, GFP_HIGHUSER_MOVABLE

        def test_arm_as_context_manager(fake_mm, pinfault):
            with pinfault.arm("kmalloc=1*return") as armed:
                assert fake_mm.kmalloc(8, GFP_KERNEL) is None
                assert fake_mm.kmalloc(8, GFP_KERNEL) is not None
            assert armed.fired == 1
            assert not fake_mm.faults.armed                       # disarmed on exit
            assert [(r.site, r.occurrence, r.errno) for r in pinfault.fired] == [("kmalloc", 1, -errno.ENOMEM)]
            assert pinfault.hits["kmalloc"] == 2
            assert pinfault.case is None

        def test_arm_plain_call_and_callbacks(fake_mm, pinfault):
            seen = []
            armed = pinfault.arm("kmalloc[nth=2]=call(race)", race=seen.append)
            fake_mm.kmalloc(8, GFP_KERNEL)
            fake_mm.kmalloc(8, GFP_KERNEL)
            assert len(seen) == 1 and armed.fired == 1
            armed.disarm()
            assert not fake_mm.faults.active

        def test_declare_site_and_fault_point(fake_mm, pinfault):
            pinfault.declare_site("drv.setup", ["EINVAL"], meaning="setup fails")
            pinfault.arm("drv.setup=return")
            assert fake_mm.fault_point("drv.setup", size=4) == -errno.EINVAL
            assert pinfault.fired[0].as_dict()["context"] == {"size": 4}

        def test_hold(fake_mm, pinfault):
            page = fake_mm.alloc_pages(GFP_HIGHUSER_MOVABLE, 0)
            h = pinfault.hold(page)
            assert fake_mm.faults.holds == [h]
            h.release()
            assert not fake_mm.faults.holds

        def test_result_returns_its_argument(pinfault):
            assert pinfault.result(-12) == -12 and pinfault.results == [-12]

        def test_bad_spec_in_arm(pinfault):
            with pytest.raises(pytest.UsageError, match=r"pinfault.arm: bad fault spec 'kmalloc=retrun' at column 9"):
                pinfault.arm("kmalloc=retrun")
            with pytest.raises(pytest.UsageError, match=r"expected a known fault site"):
                pinfault.arm("kmalloc=return", "kmallok=return")
            assert not pinfault.injector.armed          # all or nothing
    """)
    run().assert_outcomes(passed=6)


def test_fault_state_is_per_test(pytester, run):
    pytester.makepyfile("""
        import pytest
        from pytest_pinfault.mm import GFP_KERNEL

        kept = []

        def test_first(fake_mm, pinfault):
            kept.append(fake_mm)
            pinfault.arm("kmalloc=return")
            pinfault.declare_site("only.here", "ENOMEM")
            assert fake_mm.kmalloc(8, GFP_KERNEL) is None

        def test_second(fake_mm, pinfault):
            assert fake_mm is not kept[0] and fake_mm.faults is not kept[0].faults
            assert not fake_mm.faults.armed and not fake_mm.faults.active
            assert pinfault.fired == [] and pinfault.hits == {}
            assert "only.here" not in fake_mm.faults.sites
            assert fake_mm.kmalloc(8, GFP_KERNEL) is not None

        @pytest.mark.pinfault("kmalloc=return")
        def test_marked(fake_mm):
            assert fake_mm.kmalloc(8, GFP_KERNEL) is None

        def test_after_marked(fake_mm):
            assert fake_mm.kmalloc(8, GFP_KERNEL) is not None
    """)
    run("-p", "no:randomly").assert_outcomes(passed=4)


def test_user_properties_carry_the_fired_log(pytester, run):
    pytester.makepyfile("""
        from pytest_pinfault.mm import GFP_KERNEL

        def test_x(fake_mm, pinfault):
            pinfault.arm("kmalloc[nth=2]=1*return")
            for _ in range(3):
                fake_mm.kmalloc(8, GFP_KERNEL)

        def test_unused():
            pass
    """)
    pytester.makeconftest("""
        import json

        def pytest_runtest_logreport(report):
            if report.when == "teardown":
                with open(report.nodeid.split("::")[-1] + ".json", "w") as f:
                    json.dump(report.user_properties, f)
    """)
    run("--junitxml=out.xml").assert_outcomes(passed=2)
    import json
    props = dict(json.loads(pytester.path.joinpath("test_x.json").read_text()))
    assert props["pinfault_hits"] == {"kmalloc": 3}
    (rec,) = props["pinfault_fired"]
    assert (rec["site"], rec["occurrence"], rec["errno"], rec["errno_name"]) == ("kmalloc", 2, -12, "-ENOMEM")
    assert rec["caller"].endswith("test_x")
    assert json.loads(pytester.path.joinpath("test_unused.json").read_text()) == []
    xml = pytester.path.joinpath("out.xml").read_text()
    assert 'name="pinfault_fired"' in xml and 'name="pinfault_hits"' in xml


def test_fault_budget_is_a_livelock_failure(pytester, run):
    pytester.makeini("""
        [pytest]
        pinfault_budget = 50
    """)
    pytester.makepyfile("""
        import pytest
        from pytest_pinfault.mm import GFP_KERNEL

        def retry_forever(mm):
            while mm.kmalloc(8, GFP_KERNEL) is None:
                pass

        @pytest.mark.pinfault("kmalloc=return")
        def test_loop(fake_mm):
            retry_forever(fake_mm)
    """)
    result = run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*livelock: fault budget exceeded: 51 fault-site hits in one test, the last "
                                 "at 'kmalloc' called from *test_fault_budget_is_a_livelock_failure.py:5 "
                                 "retry_forever*"])
    assert "injector.py" not in result.stdout.str() and "Traceback" not in result.stdout.str()


def test_bad_budget_ini(pytester, run):
    pytester.makeini("""
        [pytest]
        pinfault_budget = lots
    """)
    pytester.makepyfile("def test_x(): pass")
    run().stderr.fnmatch_lines(["ERROR: pinfault_budget (ini): expected an integer >= 1, got 'lots'"])
