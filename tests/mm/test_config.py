"""MMConfig: parsing of sizes, CMA areas, hugetlb pools, THP mode and quirks, and the
ConfigError messages (field, expectation, value got) for every bad value."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import QUIRKS, CMASpec, ConfigError, parse_size

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


class TestParseSize:
    @pytest.mark.parametrize("text, expected", [
        ("4GiB", 4 * GiB), ("512MiB", 512 * MiB), ("4G", 4 * GiB), ("1TiB", TiB),
        ("64k", 64 * KiB), ("2mb", 2 * MiB), ("4096", 4096), (" 3 GiB ", 3 * GiB),
        ("1b", 1), ("0", 0),
    ])
    def test_strings(self, text, expected):
        """Strings with binary units (any case, optional spaces) parse to bytes."""
        assert parse_size(text) == expected

    def test_ints_pass_through(self):
        """An int is a byte count and is returned unchanged."""
        assert parse_size(123456789) == 123456789
        assert parse_size(0) == 0

    @pytest.mark.parametrize("bad", ["lots", "4 PiB", "-4GiB", "4.5GiB", "", "GiB", 4.0, None, [4]])
    def test_bad_values_name_field_expectation_and_value(self, bad):
        """A non-size raises ConfigError naming the field, what was expected and the value."""
        with pytest.raises(ConfigError) as ei:
            parse_size(bad, "memlock")
        msg = str(ei.value)
        assert msg.startswith("memlock: expected a size")
        assert repr(bad) in msg

    def test_negative_int(self):
        """A negative byte count is refused with the '>= 0' expectation."""
        with pytest.raises(ConfigError, match=r"^ram: expected a size >= 0, got -1$"):
            parse_size(-1, "ram")

    def test_bool_is_not_a_size(self):
        """True is an int subclass but not a size."""
        with pytest.raises(ConfigError, match=r"^seed_size: expected a size .*got True$"):
            parse_size(True, "seed_size")

    def test_config_error_is_value_error(self):
        """ConfigError is a ValueError so generic callers can catch it."""
        assert issubclass(ConfigError, ValueError)


class TestMMConfigDefaults:
    def test_defaults_model_a_small_vm(self):
        """Defaults: 4 GiB, no Movable, no CMA, no pools, THP always, 8 MiB memlock, 2 cpus."""
        cfg = MMConfig()
        assert cfg.ram == 4 * GiB
        assert cfg.movablecore == 0
        assert cfg.cma == ()
        assert dict(cfg.hugetlb) == {}
        assert cfg.default_hugepagesz == 2 * MiB
        assert cfg.thp == "always"
        assert cfg.memlock == 8 * MiB
        assert cfg.nr_cpus == 2
        assert cfg.boot_reserved == "auto"
        assert cfg.quirks == ()

    def test_frozen(self):
        """MMConfig is frozen: fields cannot be reassigned."""
        cfg = MMConfig()
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.ram = 1  # type: ignore[misc]


class TestMMConfigSizes:
    @pytest.mark.parametrize("ram, expected", [("2GiB", 2 * GiB), (1 << 30, GiB), ("1TiB", TiB),
                                                ("384MiB", 384 * MiB)])
    def test_ram(self, ram, expected):
        """ram accepts strings and ints and is stored as bytes."""
        assert MMConfig(ram=ram).ram == expected

    def test_movablecore_and_memlock(self):
        """movablecore and memlock are parsed to bytes."""
        cfg = MMConfig(ram="4GiB", movablecore="512MiB", memlock=65536)
        assert cfg.movablecore == 512 * MiB
        assert cfg.memlock == 65536

    def test_default_hugepagesz(self):
        """default_hugepagesz accepts '1GiB' and is stored as bytes."""
        assert MMConfig(default_hugepagesz="1GiB").default_hugepagesz == GiB


class TestMMConfigCma:
    @pytest.mark.parametrize("none", [0, None, "", "0"])
    def test_no_cma(self, none):
        """0, None, '' and '0' all mean no CMA area."""
        assert MMConfig(cma=none).cma == ()

    def test_plain_size_is_one_reserved_area(self):
        """cma='128MiB' is one area named 'reserved' without placement bounds."""
        assert MMConfig(cma="128MiB").cma == (CMASpec("reserved", 128 * MiB, None, None),)

    def test_int_size(self):
        """An int CMA size is bytes."""
        assert MMConfig(cma=64 * MiB).cma == (CMASpec("reserved", 64 * MiB),)

    def test_size_with_bounds(self):
        """cma='128MiB@256MiB-1GiB' gives start and end bounds."""
        (spec,) = MMConfig(cma="128MiB@256MiB-1GiB").cma
        assert (spec.name, spec.size, spec.start, spec.end) == ("reserved", 128 * MiB, 256 * MiB, GiB)

    def test_size_at_base(self):
        """cma='64MiB@512MiB' gives a start and no end."""
        (spec,) = MMConfig(cma="64MiB@512MiB").cma
        assert (spec.size, spec.start, spec.end) == (64 * MiB, 512 * MiB, None)

    def test_mapping_name_to_spec(self):
        """A mapping names each area; each value is a size or a bounded spec."""
        cfg = MMConfig(cma={"gpu": "64MiB", "cam": "32MiB@1GiB-2GiB"})
        assert cfg.cma == (CMASpec("gpu", 64 * MiB), CMASpec("cam", 32 * MiB, GiB, 2 * GiB))

    def test_parsed_specs_pass_through(self):
        """An already parsed tuple of CMASpec is kept as is."""
        specs = (CMASpec("x", 4 * MiB),)
        assert MMConfig(cma=specs).cma is specs

    @pytest.mark.parametrize("given, size", [
        ("3MiB", 4 * MiB), ({"gpu": "5MiB"}, 6 * MiB), ("1KiB", 2 * MiB),
        ("3MiB@256MiB-1GiB", 4 * MiB), ("2MiB", 2 * MiB)])
    def test_size_is_rounded_up_to_a_pageblock(self, given, size):
        """cma_declare_contiguous_nid rounds the size up to CMA_MIN_ALIGNMENT_BYTES
        (a pageblock) where the area is not at a fixed base (mm/cma.c, 6.1.192,
        6.12.118); the machine's area has that size."""
        (spec,) = MMConfig(cma=given).cma
        assert spec.size == size
        area, = FakeMM(MMConfig(ram="1GiB", cma=given)).cma_areas
        assert area.count == size >> 12

    @pytest.mark.parametrize("bad", [0, "0MiB@1GiB-2GiB", {"a": 0}, "a:0"])
    def test_size_zero_in_an_area_is_refused(self, bad):
        """A named or bounded area of size 0 is refused (plain 0 means no CMA)."""
        if bad == 0:
            assert MMConfig(cma=bad).cma == ()
            return
        with pytest.raises(ConfigError, match=r"^cma\['\w+'\]: expected a non-zero size .*got 0$"):
            MMConfig(cma=bad)

    @pytest.mark.parametrize("given", ["2MiB@257MiB", "a:2MiB@257MiB", {"gpu": "64MiB@1025MiB"},
                                       "2MiB@257MiB-259MiB", "4MiB@1MiB"])
    def test_fixed_base_must_be_aligned(self, given):
        """An area at a fixed base (``size@base``, or a limit of exactly base + size) must
        start on a pageblock: the kernel refuses it with -EINVAL ("Region at ... must be
        aligned to ... bytes"); the ConfigError names the base and the alignment."""
        with pytest.raises(ConfigError, match=r"^cma\['\w+'\]: expected a base aligned to 2MiB "
                                              r"\(CMA_MIN_ALIGNMENT_BYTES, one pageblock\) for an area at a "
                                              r"fixed base, got (257MiB|1025MiB|1MiB)$"):
            MMConfig(cma=given)

    def test_fixed_base_size_must_not_be_rounded_past_the_limit(self):
        """cma=1MiB@1GiB: the limit is base + size rounded down (1GiB), the size rounded
        up (2MiB): the area exceeds its limit, as the kernel finds."""
        with pytest.raises(ConfigError, match=r"^cma\['reserved'\]: expected the area, its size rounded up to "
                                              r"2MiB \(2MiB\), to fit between 1GiB and its limit 1GiB "
                                              r"\(rounded down to 2MiB\), got 1MiB@1GiB$"):
            MMConfig(cma="1MiB@1GiB")

    def test_unaligned_bounds_are_rounded(self):
        """Bounds that are not a fixed base are rounded inwards (base up, limit down): the
        area lands on pageblocks inside them; one that no longer fits is refused."""
        k = FakeMM(MMConfig(ram="1GiB", cma="2MiB@257MiB-261MiB"))
        (lo, hi), = k._cma_ranges
        assert (lo << 12, hi << 12) == (258 * MiB, 260 * MiB)
        assert lo % 512 == 0
        with pytest.raises(ConfigError, match=r"to fit between 258MiB and its limit 258MiB"):
            MMConfig(cma=f"2MiB@257MiB-{259 * MiB + 4096}")

    def test_parsed_specs_are_checked_too(self):
        """A tuple of CMASpec goes through the same rules (it is not a way around them)."""
        with pytest.raises(ConfigError, match="expected a base aligned to 2MiB"):
            MMConfig(cma=(CMASpec("x", 2 * MiB, 257 * MiB),))
        assert MMConfig(cma=(CMASpec("x", 3 * MiB),)).cma == (CMASpec("x", 4 * MiB),)

    def test_bad_size_string_in_spec(self):
        """A malformed size inside 'size@start-end' names the field and the bad part."""
        with pytest.raises(ConfigError, match=r"^cma: expected a size .*got 'big'$"):
            MMConfig(cma="big@1GiB-2GiB")

    def test_bad_bound_in_mapping(self):
        """A malformed bound in a mapping value names that area's field."""
        with pytest.raises(ConfigError, match=r"^cma\['a'\]: expected a size .*got 'x'$"):
            MMConfig(cma={"a": "64MiB@x"})


class TestMMConfigHugetlb:
    def test_pools(self):
        """hugetlb maps page sizes (strings or ints) to pool counts, keyed by bytes."""
        cfg = MMConfig(hugetlb={"2MiB": 512, 1 << 30: 1})
        assert dict(cfg.hugetlb) == {2 * MiB: 512, GiB: 1}

    def test_zero_count_allowed(self):
        """A pool of 0 pages is valid."""
        assert dict(MMConfig(hugetlb={"1GiB": 0}).hugetlb) == {GiB: 0}

    def test_unsupported_page_size(self):
        """Only 2 MiB and 1 GiB pages exist on x86-64."""
        with pytest.raises(ConfigError,
                           match=r"^hugetlb: expected page sizes '2MiB' or '1GiB', got '4MiB'$"):
            MMConfig(hugetlb={"4MiB": 1})

    @pytest.mark.parametrize("count", [-1, 1.5, "three", "-1", True])
    def test_bad_count(self, count):
        """A count that is not an int >= 0 names the pool, the expectation and the value."""
        with pytest.raises(ConfigError) as ei:
            MMConfig(hugetlb={"2MiB": count})
        assert str(ei.value) == f"hugetlb['2MiB']: expected a count >= 0, got {count!r}"

    def test_not_a_mapping(self):
        """A list is not a pool mapping."""
        with pytest.raises(ConfigError, match=r"^hugetlb: expected a mapping .*got \[512\]$"):
            MMConfig(hugetlb=[512])  # type: ignore[arg-type]

    def test_bad_default_hugepagesz(self):
        """default_hugepagesz must be 2 MiB or 1 GiB."""
        with pytest.raises(ConfigError,
                           match=r"^default_hugepagesz: expected '2MiB' or '1GiB', got '4MiB'$"):
            MMConfig(default_hugepagesz="4MiB")


class TestMMConfigThp:
    @pytest.mark.parametrize("mode", ["always", "madvise", "never"])
    def test_modes(self, mode):
        """The three sysfs THP modes are accepted."""
        assert MMConfig(thp=mode).thp == mode

    @pytest.mark.parametrize("bad", ["sometimes", "ALWAYS", True, None])
    def test_bad_mode(self, bad):
        """Any other THP mode is refused with the three choices and the value got."""
        with pytest.raises(ConfigError) as ei:
            MMConfig(thp=bad)
        assert str(ei.value) == f"thp: expected 'always', 'madvise' or 'never', got {bad!r}"


class TestMMConfigQuirks:
    def test_known_quirks(self):
        """The documented quirks exist and are accepted as a tuple."""
        assert {"pcp_thp_shared_list", "gup_keep_pins_on_isolation_failure"} <= set(QUIRKS)
        cfg = MMConfig(quirks=("pcp_thp_shared_list",))
        assert cfg.quirks == ("pcp_thp_shared_list",)
        assert cfg.has_quirk("pcp_thp_shared_list")
        assert not cfg.has_quirk("gup_keep_pins_on_isolation_failure")

    def test_single_string_and_list(self):
        """A single quirk name or a list is normalised to a tuple."""
        assert MMConfig(quirks="pcp_thp_shared_list").quirks == ("pcp_thp_shared_list",)
        assert MMConfig(quirks=["gup_keep_pins_on_isolation_failure"]).quirks == (
            "gup_keep_pins_on_isolation_failure",)

    def test_quirk_docs_name_the_fix(self):
        """Each quirk documents the kernel change it undoes."""
        assert "bf14ed81f571" in QUIRKS["pcp_thp_shared_list"]

    def test_unknown_quirk(self):
        """An unknown quirk names the known ones and the bad name."""
        with pytest.raises(ConfigError) as ei:
            MMConfig(quirks=("pcp_thp_shared_list", "nope"))
        msg = str(ei.value)
        assert msg.startswith("quirks: expected names from [")
        assert "'pcp_thp_shared_list'" in msg
        assert msg.endswith("got 'nope'")


class TestMMConfigErrors:
    @pytest.mark.parametrize("kwargs, message", [
        ({"ram": "lots"}, "ram: expected a size in bytes or a string like '512MiB', got 'lots'"),
        ({"ram": "100MiB"}, "ram: expected a multiple of 128MiB, at least 128MiB, got '100MiB'"),
        ({"ram": 0}, "ram: expected a multiple of 128MiB, at least 128MiB, got 0"),
        ({"ram": -1}, "ram: expected a size >= 0, got -1"),
        ({"movablecore": "100MiB"},
         "movablecore: expected a multiple of 128MiB smaller than ram (4GiB), got '100MiB'"),
        ({"ram": "1GiB", "movablecore": "1GiB"},
         "movablecore: expected a multiple of 128MiB smaller than ram (1GiB), got '1GiB'"),
        ({"memlock": "8 lots"}, "memlock: expected a size in bytes or a string like '512MiB', got '8 lots'"),
        ({"nr_cpus": 0}, "nr_cpus: expected an integer from 1 to 8192 (x86-64 NR_CPUS with MAXSMP), got 0"),
        ({"nr_cpus": True}, "nr_cpus: expected an integer from 1 to 8192 (x86-64 NR_CPUS with MAXSMP), got True"),
        ({"nr_cpus": "2.5"}, "nr_cpus: expected an integer from 1 to 8192 (x86-64 NR_CPUS with MAXSMP), got '2.5'"),
        ({"nr_cpus": 10**8}, "nr_cpus: expected an integer from 1 to 8192 (x86-64 NR_CPUS with MAXSMP), got 100000000"),
        ({"offline_retry_budget": 0}, "offline_retry_budget: expected an integer >= 1, got 0"),
        ({"gup_retry_limit": -3}, "gup_retry_limit: expected an integer >= 1, got -3"),
        ({"boot_reserved": "some"}, "boot_reserved: expected 'auto' or 'none', got 'some'"),
        ({"firmware": "ovmf"}, "firmware: expected 'ideal' or 'seabios', got 'ovmf'"),
        ({"seed": "one"}, "seed: expected an integer, got 'one'"),
        ({"seed": False}, "seed: expected an integer, got False"),
    ])
    def test_message(self, kwargs, message):
        """Each bad field raises ConfigError with 'field: expected ..., got value'."""
        with pytest.raises(ConfigError) as ei:
            MMConfig(**kwargs)
        assert str(ei.value) == message

    def test_cma_that_does_not_fit(self):
        """A CMA area larger than the free memory below 4 GiB is refused at layout time."""
        with pytest.raises(ConfigError) as ei:
            FakeMM(MMConfig(ram="1GiB", cma="1GiB"))
        msg = str(ei.value)
        assert msg.startswith("cma['reserved']: expected 1GiB to fit in free memory between 0 and ")

    def test_movablecore_larger_than_highest_zone(self):
        """movablecore must leave part of the highest zone (Normal is 1 GiB on a 4 GiB VM)."""
        with pytest.raises(ConfigError) as ei:
            FakeMM(MMConfig(ram="4GiB", movablecore="2GiB"))
        assert str(ei.value) == "movablecore: expected less than the highest zone (1GiB), got 2GiB"

    def test_cma_fixed_base_on_reserved_memory(self):
        """cma=size@base asking for the kernel image's range is refused."""
        with pytest.raises(ConfigError, match=r"^cma\['reserved'\]: expected free memory at 16MiB"):
            FakeMM(MMConfig(ram="1GiB", cma="32MiB@16MiB"))


class TestMMConfigReplace:
    def test_replace_changes_only_given_fields(self):
        """replace() returns a new validated config; the original is unchanged."""
        cfg = MMConfig(ram="2GiB", cma="64MiB", hugetlb={"2MiB": 4}, quirks=("pcp_thp_shared_list",))
        new = cfg.replace(ram="4GiB", thp="never")
        assert new is not cfg
        assert new.ram == 4 * GiB and new.thp == "never"
        assert cfg.ram == 2 * GiB and cfg.thp == "always"
        assert new.cma == cfg.cma == (CMASpec("reserved", 64 * MiB),)
        assert dict(new.hugetlb) == {2 * MiB: 4}
        assert new.quirks == ("pcp_thp_shared_list",)

    def test_replace_parses_new_values(self):
        """Values given to replace() are parsed like the constructor's."""
        new = MMConfig().replace(cma={"a": "32MiB@1GiB-2GiB"}, memlock="1MiB")
        assert new.cma == (CMASpec("a", 32 * MiB, GiB, 2 * GiB),)
        assert new.memlock == MiB

    def test_replace_validates(self):
        """A bad value given to replace() raises ConfigError."""
        with pytest.raises(ConfigError, match=r"^thp: expected .*got 'no'$"):
            MMConfig().replace(thp="no")

    def test_equal_configs(self):
        """Configs built from equivalent spellings compare equal."""
        assert MMConfig(ram="2GiB", memlock="8MiB") == MMConfig(ram=2 * GiB, memlock=8 * MiB)
        assert MMConfig(ram="2GiB") != MMConfig(ram="4GiB")


class TestWithSeed:
    def test_with_seed_copies_and_keeps_the_rest(self):
        """with_seed changes only the seed and leaves the original untouched."""
        base = MMConfig(ram="2GiB", cma="64MiB")
        new = base.with_seed(42)
        assert new.seed == 42 and base.seed == 0
        assert (new.ram, new.cma) == (base.ram, base.cma)

    def test_with_seed_rejects_non_int(self):
        """A non-integer seed is a ConfigError naming the field."""
        with pytest.raises(ConfigError, match="seed: expected an integer"):
            MMConfig().with_seed("7")


class TestFirmware:
    """``firmware="seabios"``: the e820 map of the recorded QEMU guests
    (tests/conformance/linux-*.json, layout)."""

    @staticmethod
    def spans(**kw):
        from pytest_pinfault.mm import FakeMM
        k = FakeMM(MMConfig(**kw))
        return {z.name: (z.zone_start_pfn, z.spanned_pages, z.present_pages) for z in k.zones.values()}

    def test_ideal_is_the_default_and_keeps_page_0(self):
        assert MMConfig().firmware == "ideal"
        assert self.spans(ram="4GiB")["DMA"] == (0, 4096, 3999)

    def test_seabios_trims_page_0_and_the_top_128k_below_the_hole(self):
        z = self.spans(ram="4GiB", movablecore="512MiB", firmware="seabios")
        assert z["DMA"] == (1, 4095, 3998)
        assert z["DMA32"] == (4096, 1044480, 782304)       # 0xbffe0 - 4096
        assert z["Movable"] == (1179648, 131072, 131072)

    def test_movable_start_is_rounded_up_to_max_order(self):
        """512 MiB, 32 pages short at the top: kernelcore ends at pfn 98272, ZONE_MOVABLE
        starts at the next multiple of 1024 and spans to the end of RAM."""
        z = self.spans(ram="512MiB", movablecore="128MiB", firmware="seabios")
        assert z["Movable"] == (98304, 131040 - 98304, 131040 - 98304)
        assert z["DMA32"][0] + z["DMA32"][1] == 98304
