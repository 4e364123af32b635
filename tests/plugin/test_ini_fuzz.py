"""The ini values' parsers never let another exception out: any ``pinfault_mm_config``
or ``pinfault_sites`` text is either accepted or a pytest.UsageError (issue 18:
``hugetlb=2MiB:²`` was an INTERNALERROR)."""

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytest_pinfault import MMConfig  # noqa: E402
from pytest_pinfault.plugin.options import _int, parse_mm_config_line, parse_sites_lines  # noqa: E402

ODD = ["\u00b2", "\u0663", "\uff11", "\u00e9", "1", "0", "9" * 40, ":", ",", "=", " ", "-", "_", "."]
FUZZ = settings(max_examples=300, deadline=None, derandomize=True)


@st.composite
def mutated(draw, fields):
    line = " ".join(draw(st.lists(st.sampled_from(fields), min_size=1, max_size=4)))
    pos = draw(st.integers(0, len(line)))
    odd = draw(st.sampled_from(ODD))
    return line[:pos] + odd + line[pos + draw(st.integers(0, 1)):]


MM_FIELDS = ["ram=1GiB", "cma=128MiB", "cma=a:64MiB,b:64MiB", "movablecore=256MiB", "hugetlb=2MiB:4",
             "hugetlb=2MiB:4,1GiB:0", "quirks=pcp_thp_shared_list", "nr_cpus=2", "seed=7", "thp=never",
             "memlock=8MiB", "firmware=seabios", "boot_reserved=none", "default_hugepagesz=2MiB",
             "shmem_enabled=always", "shmem_mthp=64KiB:always,2MiB:never"]


@FUZZ
@given(mutated(MM_FIELDS))
def test_mm_config_line_is_accepted_or_a_usage_error(text):
    try:
        assert isinstance(parse_mm_config_line(text), MMConfig)
    except pytest.UsageError as e:
        assert str(e).startswith("pinfault_mm_config (ini): ")


@FUZZ
@given(mutated(["drv.x: ENOMEM", "drv.y: ENOMEM EINVAL", "drv.z: 12", "drv.w: -EBUSY,EIO"]))
def test_sites_line_is_accepted_or_a_usage_error(text):
    try:
        parse_sites_lines([text])
    except pytest.UsageError as e:
        assert str(e).startswith("pinfault_sites (ini): ")


@FUZZ
@given(st.text(max_size=40))
def test_integers_are_ascii_or_a_usage_error(text):
    try:
        n = _int(text, "pinfault_seed (ini)", 0)
    except pytest.UsageError:
        return
    assert text.strip().isascii() and n >= 0
