"""MMConfig is immutable and refuses wrong types and out-of-range values with a
ConfigError naming the field (issue 18): the hugetlb pools used to be a dict shared by
every test built from one config, ``quirks=None`` raised a TypeError, ``\\d`` read
other scripts' digits as sizes."""

import copy
import pickle

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import ConfigError
from pytest_pinfault.mm.config import MAX_RAM, RLIM_INFINITY

MiB, GiB = 1 << 20, 1 << 30


class TestHugetlbIsReadOnly:
    def test_input_form_kept_and_stored_as_bytes(self):
        cfg = MMConfig(hugetlb={"2MiB": 4, "1GiB": 1})
        assert cfg.hugetlb == {2 * MiB: 4, GiB: 1}
        assert dict(cfg.hugetlb) == {2 * MiB: 4, GiB: 1}
        assert cfg.hugetlb[2 * MiB] == 4 and len(cfg.hugetlb) == 2
        assert repr(cfg.hugetlb) == "{2097152: 4, 1073741824: 1}"

    def test_no_write_reaches_the_shared_config(self):
        cfg = MMConfig(ram="1GiB", hugetlb={"2MiB": 4})
        with pytest.raises(TypeError):
            cfg.hugetlb[2 * MiB] = 64
        with pytest.raises(AttributeError):
            cfg.hugetlb.update({2 * MiB: 64})
        with pytest.raises(AttributeError):
            cfg.hugetlb._items = ((2 * MiB, 64),)
        assert FakeMM(cfg).hstate(2 * MiB).nr_huge_pages == 4

    def test_the_callers_dict_is_copied(self):
        pools = {"2MiB": 2}
        cfg = MMConfig(ram="1GiB", hugetlb=pools)
        pools["2MiB"] = 100
        assert cfg.hugetlb == {2 * MiB: 2}

    def test_hashable_picklable_copyable_replaceable(self):
        cfg = MMConfig(hugetlb={"2MiB": 4}, quirks=["pcp_thp_shared_list"])
        assert hash(cfg) == hash(MMConfig(hugetlb={2 * MiB: 4}, quirks=("pcp_thp_shared_list",)))
        assert pickle.loads(pickle.dumps(cfg)) == cfg
        assert copy.deepcopy(cfg) == cfg
        assert cfg.replace(ram="2GiB").hugetlb == {2 * MiB: 4}
        assert {cfg: 1}[MMConfig(hugetlb={"2MiB": 4}, quirks="pcp_thp_shared_list")] == 1


@pytest.mark.parametrize("fields, message", [
    ({"quirks": None}, "quirks: expected a name or a list of names from"),
    ({"quirks": 3}, "quirks: expected a name or a list of names from"),
    ({"quirks": [["pcp_thp_shared_list"]]}, "quirks: expected names from"),
    ({"ram": "\u0661\u0662\u0668MiB"}, "ram: expected a size in bytes or a string like '512MiB'"),
    ({"ram": "\uff11GiB"}, "ram: expected a size in bytes"),
    ({"ram": "9" * 5000}, "ram: expected a size in bytes"),
    ({"ram": MAX_RAM + (128 << 20)}, "ram: expected at most 64TiB"),
    ({"memlock": RLIM_INFINITY + 1}, "memlock: expected at most RLIM_INFINITY"),
    ({"hugetlb": {"2MiB": None}}, "hugetlb['2MiB']: expected a count >= 0, got None"),
    ({"thp": ["always"]}, "thp: expected 'always', 'madvise' or 'never'"),
])
def test_bad_values_are_config_errors(fields, message):
    with pytest.raises(ConfigError) as info:
        MMConfig(**fields)
    assert message in str(info.value)


def test_limits_themselves_are_accepted():
    assert MMConfig(ram=MAX_RAM).ram == MAX_RAM
    assert MMConfig(memlock=RLIM_INFINITY).memlock == RLIM_INFINITY
