"""Config resolution: mm_config marker > mm_config fixture > ini pinfault_mm_config > defaults."""

pytest_plugins = ["pytester"]


class TestResolution:
    """Most specific wins, field by field for markers."""

    def test_ini_is_the_default_and_the_marker_wins(self, pytester, run):
        pytester.makeini("""
            [pytest]
            pinfault_mm_config = ram=2GiB cma=128MiB movablecore=256MiB quirks=pcp_thp_shared_list nr_cpus=4
        """)
        pytester.makepyfile("""
            import pytest

            def test_ini(fake_mm, mm_config):
                assert mm_config.ram == 2 << 30 and mm_config.nr_cpus == 4
                assert fake_mm.config.quirks == ("pcp_thp_shared_list",)
                assert fake_mm.cma_areas[0].count == 32768
                assert fake_mm.zones["Movable"].present_pages == 65536

            @pytest.mark.mm_config(ram="1GiB", movablecore=0)
            def test_marker(fake_mm):
                assert fake_mm.config.ram == 1 << 30 and "Movable" not in fake_mm.zones
                assert fake_mm.cma_areas[0].count == 32768          # the rest from the ini

            @pytest.mark.mm_config(cma="64MiB")
            class TestClass:
                @pytest.mark.mm_config(nr_cpus=1)
                def test_merged(self, fake_mm):
                    assert fake_mm.config.nr_cpus == 1 and fake_mm.cma_areas[0].count == 16384
        """)
        run().assert_outcomes(passed=3)

    def test_fixture_override_beats_ini(self, pytester, run):
        pytester.makeini("""
            [pytest]
            pinfault_mm_config = ram=2GiB
        """)
        pytester.makeconftest("""
            import pytest
            from pytest_pinfault import MMConfig

            @pytest.fixture
            def mm_config():
                return MMConfig(ram="1GiB")
        """)
        pytester.makepyfile("""
            import pytest

            def test_override(fake_mm):
                assert fake_mm.config.ram == 1 << 30

            @pytest.mark.mm_config(ram="512MiB")
            def test_marker(fake_mm):
                assert fake_mm.config.ram == 512 << 20
        """)
        run().assert_outcomes(passed=2)

    def test_defaults(self, pytester, run):
        pytester.makepyfile("""
            from pytest_pinfault import MMConfig

            def test_defaults(mm_config, fake_mm):
                assert mm_config == MMConfig()
                assert fake_mm.config.replace(seed=0) == MMConfig()
        """)
        run().assert_outcomes(passed=1)


class TestSeed:
    """MMConfig.seed left at 0 is derived from the run seed and the test id."""

    def test_derived_seed_is_stable_and_per_test(self, pytester, run):
        pytester.makepyfile("""
            import pytest

            def test_a(fake_mm, record_property):
                record_property("seed", fake_mm.config.seed)
                assert fake_mm.config.seed != 0 and fake_mm.faults.seed == fake_mm.config.seed

            def test_b(fake_mm, record_property):
                record_property("seed", fake_mm.config.seed)

            @pytest.mark.mm_config(seed=7)
            def test_explicit(fake_mm):
                assert fake_mm.config.seed == 7
        """)
        seeds = []
        for _ in range(2):
            result = run("--pinfault-seed=42", "--junitxml=out.xml")
            result.assert_outcomes(passed=3)
            xml = pytester.path.joinpath("out.xml").read_text()
            seeds.append(sorted(x.split('"')[0] for x in xml.split('name="seed" value="')[1:]))
        assert seeds[0] == seeds[1] and len(set(seeds[0])) == 2


class TestErrors:
    """A bad value is a UsageError naming the marker or ini key, the field, what was
    expected and what was got."""

    def test_bad_marker_value_at_collection(self, pytester, run):
        pytester.makepyfile("""
            import pytest

            @pytest.mark.mm_config(ram="1GB5")
            def test_x(fake_mm):
                pass
        """)
        result = run()
        assert result.ret == 4
        result.stderr.fnmatch_lines(["ERROR: test_bad_marker_value_at_collection.py::test_x: "
                                     "@pytest.mark.mm_config: ram: expected a size*got '1GB5'"])

    def test_unknown_marker_field(self, pytester, run):
        pytester.makepyfile("""
            import pytest

            @pytest.mark.mm_config(rma="1GiB")
            def test_x(fake_mm):
                pass
        """)
        result = run()
        assert result.ret == 4
        result.stderr.fnmatch_lines(["ERROR: *::test_x: @pytest.mark.mm_config: expected an MMConfig "
                                     "field (ram, movablecore, *), got 'rma'"])

    def test_bad_marker_value_with_fixture_override_fails_at_setup(self, pytester, run):
        pytester.makeconftest("""
            import pytest
            from pytest_pinfault import MMConfig

            @pytest.fixture
            def mm_config():
                return MMConfig(ram="8GiB")
        """)
        pytester.makepyfile("""
            import pytest

            @pytest.mark.mm_config(movablecore="4GiB")     # fine with this override
            def test_ok(fake_mm):
                assert fake_mm.config.movablecore == 4 << 30

            @pytest.mark.mm_config(movablecore="6GiB")     # valid, but not on this layout
            def test_layout(fake_mm):
                pass

            @pytest.mark.mm_config(movablecore="9GiB")
            def test_bad(fake_mm):
                pass
        """)
        result = run()
        result.assert_outcomes(passed=1, errors=2)
        result.stdout.fnmatch_lines(["*UsageError: *::test_layout: @pytest.mark.mm_config: movablecore: "
                                     "expected less than the highest zone (5GiB), got 6GiB",
                                     "*UsageError: *::test_bad: @pytest.mark.mm_config: movablecore: "
                                     "expected a multiple of 128MiB smaller than ram (8GiB), got '9GiB'"])

    def test_bad_ini(self, pytester, run):
        pytester.makeini("""
            [pytest]
            pinfault_mm_config = ram=2GiB thp=sometimes
        """)
        pytester.makepyfile("def test_x(): pass")
        result = run()
        assert result.ret == 4
        result.stderr.fnmatch_lines(["ERROR: pinfault_mm_config (ini): thp: expected 'always', "
                                     "'madvise' or 'never', got 'sometimes'"])

    def test_bad_ini_syntax(self, pytester, run):
        pytester.makeini("""
            [pytest]
            pinfault_mm_config = ram 2GiB
        """)
        pytester.makepyfile("def test_x(): pass")
        result = run()
        result.stderr.fnmatch_lines(["ERROR: pinfault_mm_config (ini): expected 'field=value', got 'ram'"])
        pytester.makeini("""
            [pytest]
            pinfault_mm_config = nr_cpus=two
        """)
        run().stderr.fnmatch_lines(["ERROR: pinfault_mm_config (ini): nr_cpus: expected an integer from 1 to "
                                    "8192 (x86-64 NR_CPUS with MAXSMP), got 'two'"])
