"""One spelling per MMConfig value: the ini key's text works in MMConfig(...) (and so in
the mm_config marker), and MMConfig.spelling()/as_ini() give that text back."""

import dataclasses

import pytest

from pytest_pinfault.mm.config import ConfigError, MMConfig, QUIRKS

MiB, GiB = 1 << 20, 1 << 30

RICH = MMConfig(ram="8GiB", movablecore="1GiB", cma={"a": "64MiB", "b": "32MiB@1GiB-2GiB"},
                hugetlb={"2MiB": 4, "1GiB": 1}, default_hugepagesz="1GiB", thp="madvise",
                memlock="64MiB", nr_cpus=4, boot_reserved="none", firmware="seabios",
                offline_retry_budget=7, gup_retry_limit=9, seed=5, quirks=tuple(QUIRKS),
                shmem_enabled="within_size", shmem_mthp={"64KiB": "always", "2MiB": "never"},
                swap="1GiB")


@pytest.mark.parametrize("config", [MMConfig(), RICH, MMConfig(cma="128MiB@256MiB-1GiB"),
                                    MMConfig(cma="64MiB@-2GiB"), MMConfig(memlock=(1 << 64) - 1)],
                         ids=["defaults", "rich", "placed", "upper-bound", "unlimited-memlock"])
def test_every_field_reads_its_own_spelling_back(config):
    for field in dataclasses.fields(MMConfig):
        text = config.spelling(field.name)
        assert isinstance(text, str)
        again = config.replace(**{field.name: text})
        assert getattr(again, field.name) == getattr(config, field.name), (field.name, text)


def test_as_ini_round_trips_through_the_ini_parser():
    from pytest_pinfault.plugin.options import parse_mm_config_line
    for config in (MMConfig(), RICH):
        assert parse_mm_config_line(config.as_ini()) == config


@pytest.mark.parametrize("field, text, native", [
    ("hugetlb", "2MiB:4", {"2MiB": 4}),
    ("hugetlb", "2MiB:4,1GiB:1", {2 * MiB: 4, GiB: 1}),
    ("hugetlb", " 2MiB : 4 ", {"2MiB": 4}),
    ("hugetlb", "", {}),
    ("cma", "a:64MiB,b:32MiB@1GiB", {"a": "64MiB", "b": "32MiB@1GiB"}),
    ("cma", "128MiB", 128 * MiB),
    ("quirks", "pcp_thp_shared_list,gup_keep_pins_on_isolation_failure",
     ("pcp_thp_shared_list", "gup_keep_pins_on_isolation_failure")),
    ("quirks", "pcp_thp_shared_list", ["pcp_thp_shared_list"]),
    ("quirks", "", ()),
    ("nr_cpus", "4", 4),
    ("seed", "17", 17),
    ("offline_retry_budget", "3", 3),
    ("ram", "2GiB", 2 * GiB),
    ("shmem_mthp", "64KiB:always,2MiB:never", {"64KiB": "always", "2MiB": "never"}),
])
def test_text_and_native_forms_give_the_same_config(field, text, native):
    assert MMConfig(**{field: text}) == MMConfig(**{field: native})


@pytest.mark.parametrize("field, text, message", [
    ("hugetlb", "2MiB", "hugetlb: expected 'size:count,...' like 2MiB:16, got '2MiB'"),
    ("hugetlb", "2MiB:1,2MiB:2", "hugetlb: expected each size once, got '2MiB' twice"),
    ("hugetlb", "2MiB:1,2048KiB:2", "hugetlb: expected each size once, got '2048KiB' twice"),
    ("hugetlb", "2MiB:four", "hugetlb['2MiB']: expected a count >= 0, got 'four'"),
    ("hugetlb", "2MiB:-1", "hugetlb['2MiB']: expected a count >= 0, got '-1'"),
    ("hugetlb", "3MiB:1", "hugetlb: expected page sizes '2MiB' or '1GiB', got '3MiB'"),
    ("cma", "a:64MiB,b", "cma: expected 'name:size,...' like 'a:64MiB,b:32MiB@1GiB', got 'a:64MiB,b'"),
    ("cma", "a:64MiB,a:2MiB", "cma: expected each name once, got 'a' twice"),
    ("cma", "a:2MiB@257MiB", "cma['a']: expected a base aligned to 2MiB (CMA_MIN_ALIGNMENT_BYTES, one pageblock) "
                             "for an area at a fixed base, got 257MiB"),
    ("quirks", "pcp_thp_shared_list,nope", "quirks: expected names from"),
    ("nr_cpus", "four", "nr_cpus: expected an integer from 1 to 8192 (x86-64 NR_CPUS with MAXSMP), got 'four'"),
    ("nr_cpus", "\u00b2", "nr_cpus: expected an integer from 1 to 8192"),
    ("seed", "1_000", "seed: expected an integer, got '1_000'"),
])
def test_bad_text_is_a_config_error_naming_the_field(field, text, message):
    with pytest.raises(ConfigError) as info:
        MMConfig(**{field: text})
    assert message in str(info.value)


def test_spelling_of_an_unknown_field_is_refused():
    with pytest.raises(ConfigError, match="spelling: expected an MMConfig field, got 'rams'"):
        MMConfig().spelling("rams")
