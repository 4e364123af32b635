"""The small slab for driver code: kmalloc / kzalloc / kmalloc_array / kvmalloc_array /
kfree and the ``kmalloc`` fault site.

Kernel: mm/slub.c, mm/util.c (__kvmalloc_node), include/linux/slab.h.
"""

from __future__ import annotations

import pytest

from pytest_pinfault import FakeMM, MMConfig
from pytest_pinfault.mm import (GFP_ATOMIC, GFP_KERNEL, ZERO_SIZE_PTR, KmallocObject,
                                __GFP_NOFAIL, __GFP_NOWARN)
from pytest_pinfault.mm.slab import KMALLOC_MAX_SIZE


# ``__GFP_*`` would be name-mangled inside the test classes
GFP_NOFAIL, GFP_NOWARN = __GFP_NOFAIL, __GFP_NOWARN


@pytest.fixture
def k() -> FakeMM:
    return FakeMM(MMConfig(ram="512MiB"))


class TestKmalloc:
    def test_object(self, k):
        """kmalloc returns a zero-filled object of the requested size."""
        obj = k.kmalloc(100, GFP_KERNEL)
        assert isinstance(obj, KmallocObject)
        assert obj.size == 100 and obj.data == bytearray(100) and not obj.freed
        assert "test_slab.py" in obj.caller

    def test_zero_size(self, k):
        """kmalloc(0) gives ZERO_SIZE_PTR, which is truthy and not tracked."""
        obj = k.kmalloc(0, GFP_KERNEL)
        assert obj is ZERO_SIZE_PTR and bool(obj)
        assert k.slab_live == []

    def test_too_large(self, k):
        """A size beyond KMALLOC_MAX_SIZE gives None."""
        assert k.kmalloc(KMALLOC_MAX_SIZE + 1, GFP_KERNEL) is None
        assert k.kmalloc(KMALLOC_MAX_SIZE, GFP_KERNEL).size == KMALLOC_MAX_SIZE

    def test_kzalloc(self, k):
        """kzalloc is kmalloc with zeroed contents."""
        obj = k.kzalloc(16, GFP_KERNEL)
        assert obj.data == bytearray(16)

    def test_fault_site(self, k):
        """An armed ``kmalloc`` site makes the allocation return None, once."""
        k.faults.arm("kmalloc")
        assert k.kmalloc(64, GFP_KERNEL) is None
        assert k.slab_live == []
        assert k.kmalloc(64, GFP_KERNEL) is not None
        (rec,) = k.faults.fired
        assert rec.site == "kmalloc" and rec.context == {"size": 64, "gfp": int(GFP_KERNEL)}

    def test_fault_site_nth(self, k):
        """The site can fire on a chosen occurrence only."""
        k.faults.arm("kmalloc", nth=2)
        got = [k.kmalloc(8, GFP_ATOMIC) for _ in range(3)]
        assert [g is None for g in got] == [False, True, False]

    def test_nofail_never_fails(self, k):
        """__GFP_NOFAIL allocations skip the fault site (as failslab does)."""
        k.faults.arm("kmalloc", times=-1)
        assert k.kmalloc(8, GFP_KERNEL | GFP_NOFAIL) is not None
        assert k.faults.hits.get("kmalloc", 0) == 0
        assert k.kmalloc(8, GFP_KERNEL) is None

    def test_zero_size_does_not_hit_site(self, k):
        """kmalloc(0) returns before the fault site."""
        k.faults.arm("kmalloc", times=-1)
        assert k.kmalloc(0, GFP_KERNEL) is ZERO_SIZE_PTR
        assert k.faults.fired == []


class TestArrays:
    def test_kvmalloc_array(self, k):
        """kvmalloc_array gives n slots in ``items`` and n*size bytes."""
        obj = k.kvmalloc_array(512, 8, GFP_KERNEL)
        assert obj.size == 4096 and obj.items == [None] * 512

    def test_kvmalloc_array_beyond_kmalloc_max(self, k):
        """kvmalloc may exceed KMALLOC_MAX_SIZE (vmalloc fallback)."""
        obj = k.kvmalloc_array(1 << 20, 8, GFP_KERNEL)
        assert obj is not None and obj.size == 8 << 20

    def test_kmalloc_array_limited(self, k):
        """kmalloc_array is physically contiguous: None beyond KMALLOC_MAX_SIZE."""
        assert k.kmalloc_array(1 << 20, 8, GFP_KERNEL) is None
        assert k.kmalloc_array(4, 8, GFP_KERNEL).items == [None] * 4

    @pytest.mark.parametrize("n, size", [(1 << 63, 2), (1 << 32, 1 << 32), (-1, 8), (8, -1)])
    @pytest.mark.parametrize("fn", ["kvmalloc_array", "kmalloc_array"])
    def test_overflow(self, k, fn, n, size):
        """A product that overflows size_t (or a negative count) gives None."""
        assert getattr(k, fn)(n, size, GFP_KERNEL) is None
        assert k.slab_live == [] and k.warnings == []

    def test_kvmalloc_int_max(self, k):
        """kvmalloc of more than INT_MAX bytes gives None with a warning."""
        assert k.kvmalloc_array(1 << 31, 1, GFP_KERNEL) is None
        assert [w.site for w in k.warnings] == ["kvmalloc"]

    def test_kvmalloc_int_max_nowarn(self, k):
        """With __GFP_NOWARN the oversized kvmalloc fails silently."""
        assert k.kvmalloc_array(1 << 31, 1, GFP_KERNEL | GFP_NOWARN) is None
        assert k.warnings == []

    def test_zero_elements(self, k):
        """A zero-sized array is ZERO_SIZE_PTR."""
        assert k.kvmalloc_array(0, 8, GFP_KERNEL) is ZERO_SIZE_PTR

    def test_array_fault_site(self, k):
        """Array allocations hit the ``kmalloc`` site too."""
        k.faults.arm("kmalloc")
        assert k.kvmalloc_array(4, 8, GFP_KERNEL) is None


class TestKfree:
    def test_kfree(self, k):
        """kfree marks the object freed and forgets it."""
        obj = k.kmalloc(8, GFP_KERNEL)
        k.kfree(obj)
        assert obj.freed and k.slab_live == []
        assert k.warnings == []

    def test_kfree_null_and_zero_size(self, k):
        """kfree(NULL) and kfree(ZERO_SIZE_PTR) are no-ops."""
        k.kfree(None)
        k.kfree(ZERO_SIZE_PTR)
        assert k.warnings == []

    def test_double_free_warns(self, k):
        """A double kfree records a KernelWarning."""
        obj = k.kmalloc(8, GFP_KERNEL)
        k.kfree(obj)
        k.kfree(obj)
        (w,) = k.warnings
        assert w.site == "kfree" and "freed" in w.message
        assert "test_slab.py" in w.caller

    def test_foreign_object_warns(self, k):
        """kfree of something kmalloc did not return records a KernelWarning."""
        k.kfree(bytearray(8))
        (w,) = k.warnings
        assert w.site == "kfree" and "non-kmalloc" in w.message

    def test_kvfree(self, k):
        """kvfree frees kvmalloc'ed arrays."""
        obj = k.kvmalloc_array(2, 8, GFP_KERNEL)
        k.kvfree(obj)
        assert obj.freed and k.slab_live == []

    def test_slab_live_lists_leaks(self, k):
        """slab_live lists exactly the objects not yet freed."""
        a, b, c = (k.kmalloc(n, GFP_KERNEL) for n in (1, 2, 3))
        k.kfree(b)
        assert k.slab_live == [a, c]
        k.kfree(a)
        k.kfree(c)
        assert k.slab_live == []
