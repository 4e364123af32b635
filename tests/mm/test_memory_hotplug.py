"""Memory offlining/onlining and memory blocks.

Kernel: mm/memory_hotplug.c:offline_pages/online_pages, drivers/base/memory.c
(docs/kernel-contract §7.4).  The default machine here: 512 MiB, no CMA, 128 MiB of
ZONE_MOVABLE; memory blocks are 128 MiB (32768 pages):

* block 0 (pfn 0..0x8000): DMA and DMA32, with the ISA hole and the kernel image;
* blocks 1 and 2: DMA32 only, free;
* block 3 (pfn 0x18000..0x20000): ZONE_MOVABLE, with the memmap reservation at its top.
"""

from __future__ import annotations

import errno

import pytest

from pytest_pinfault import MMConfig
from pytest_pinfault.mm import (GFP_HIGHUSER_MOVABLE, GFP_KERNEL, GUP_PIN_COUNTING_BIAS,
                                MIGRATE_MOVABLE, MemoryBlock)
from tests.mm.helpers import (FakeMapping, FakePageTable, assert_nothing_isolated, lru_anon_folio,
                              lru_cache_folio)
from pytest_pinfault.mm.folio import (KIND_ANON, PG_hugetlb_migratable)

BLOCK = 0x8000
MEMMAP_START = 0x1f800


@pytest.fixture
def mm_config() -> MMConfig:
    return MMConfig(ram="512MiB", movablecore="128MiB")


# ---------------------------------------------------------------------------- helpers
def in_block(pfn: int, block_id: int) -> bool:
    return block_id * BLOCK <= pfn < (block_id + 1) * BLOCK


def offline_fail_reasons(k):
    return [e.fields["reason"] for e in k.trace.filter(kind="offline_fail")]


# ---------------------------------------------------------------------------- errors
class TestOfflinePagesErrors:
    @pytest.mark.pin_contract(disable=['kernel-warnings'], reason="model test: triggers the WARN on purpose")
    @pytest.mark.parametrize("start,nr", [(2 * BLOCK + 1, BLOCK), (2 * BLOCK, 0x1000), (2 * BLOCK, 0)])
    def test_unaligned_range_is_einval_and_warns(self, fake_mm, start, nr):
        """A range not made of whole memory blocks (or empty) is a WARN and -EINVAL."""
        assert fake_mm.offline_pages(start, nr) == -errno.EINVAL
        assert [w.site for w in fake_mm.warnings] == ["offline_pages"]
        assert fake_mm.stats.offline_fail == 0
        assert fake_mm.memory_blocks[2].state == "online"

    def test_block_with_holes_is_einval(self, fake_mm):
        """Block 0 (with the ISA hole) is refused for memory holes."""
        assert fake_mm.memory_blocks[0].offline() == -errno.EINVAL
        assert offline_fail_reasons(fake_mm) == ["memory holes"]
        assert fake_mm.stats.offline_fail == 1
        assert fake_mm.warnings == []

    @pytest.mark.pin_contract(disable=['kernel-warnings'], reason="model test: triggers the WARN on purpose")
    def test_range_starting_inside_a_block_is_einval(self, fake_mm):
        """A hole-free range from inside block 0 (spanning DMA and DMA32) is refused
        with the kernel's WARN_ON_ONCE before anything is isolated: the model has no
        memmap_on_memory, so ranges are whole memory blocks (issue 18: it used to mark
        the whole block offline)."""
        assert fake_mm.memory_blocks[0].zone == "none"
        assert fake_mm.offline_pages(0xe00, BLOCK - 0xe00) == -errno.EINVAL
        assert [w.site for w in fake_mm.warnings] == ["offline_pages"]
        assert fake_mm.stats.migrate_pages_calls == 0
        assert fake_mm.memory_blocks[0].state == "online"
        assert_nothing_isolated(fake_mm)

    def test_top_movable_block_with_memmap_is_ebusy(self, fake_mm):
        """The top ZONE_MOVABLE block holding the memmap reservation fails isolation at once."""
        block = fake_mm.memory_blocks[3]
        assert block.zone == "Movable"
        present = fake_mm.zones["Movable"].present_pages
        assert block.offline() == -errno.EBUSY
        assert offline_fail_reasons(fake_mm) == ["failure to isolate range"]
        failed = fake_mm.trace.filter(kind="isolate_pageblock_fail")
        assert [e.fields["pfn"] for e in failed] == [MEMMAP_START]
        assert fake_mm.stats.migrate_pages_calls == 0
        assert block.state == "online"
        assert fake_mm.zones["Movable"].present_pages == present
        assert_nothing_isolated(fake_mm)

    def test_unmovable_kernel_page_is_ebusy(self, fake_mm):
        """An unmovable kernel allocation in a DMA32 block fails isolation (-EBUSY)."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 0)
        assert in_block(page.pfn, 2)
        assert fake_mm.memory_blocks[2].offline() == -errno.EBUSY
        failed = fake_mm.trace.filter(kind="isolate_pageblock_fail")
        assert [e.fields["pfn"] for e in failed] == [page.pfn]
        assert failed[0].fields["folio"] is page.folio
        assert_nothing_isolated(fake_mm)

    @pytest.mark.mm_config(cma="32MiB")
    def test_block_with_cma_is_ebusy(self, fake_mm):
        """A block holding CMA pageblocks cannot be offlined (CMA is not movable here)."""
        assert in_block(fake_mm.cma_areas[0].base_pfn, 2)
        assert fake_mm.memory_blocks[2].offline() == -errno.EBUSY
        assert fake_mm.memory_blocks[1].offline() == 0

    def test_pending_signal_gives_eintr_before_the_first_scan(self, fake_mm):
        """Any pending signal (not only a fatal one) ends offlining with -EINTR before the
        first scan: nothing is migrated and the block stays online.
        Kernel: mm/memory_hotplug.c:offline_pages (signal_pending, "signal backoff"), v6.12.117."""
        pt = FakePageTable()
        movable = lru_anon_folio(fake_mm, "normal", pt, 0x1000)
        assert in_block(movable.pfn, 2)
        fake_mm.current.signal_pending = True
        assert not fake_mm.current.fatal_signal_pending
        assert fake_mm.memory_blocks[2].offline() == -errno.EINTR
        fake_mm.current.signal_pending = False
        assert fake_mm.stats.migrate_pages_calls == 0 and pt.ptes[0x1000] is movable
        (signal,) = fake_mm.trace.filter(kind="offline_signal")
        assert signal.fields["passes"] == 0
        (fail,) = fake_mm.trace.filter(kind="offline_fail")
        assert fail.fields["reason"] == "signal backoff"
        assert fake_mm.memory_blocks[2].state == "online"
        assert_nothing_isolated(fake_mm)
        assert fake_mm.memory_blocks[2].offline() == 0

    @pytest.mark.pin_contract(disable=['pin-balance', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    @pytest.mark.mm_config(offline_retry_budget=5)
    @pytest.mark.parametrize("how", ["get", "pin"])
    def test_referenced_folio_gives_eintr_after_budget(self, fake_mm, how):
        """A folio with an extra reference keeps offlining looping until -EINTR."""
        pt = FakePageTable()
        held = lru_anon_folio(fake_mm, "normal", pt, 0x1000)
        movable = lru_anon_folio(fake_mm, "normal", pt, 0x2000)
        assert in_block(held.pfn, 2) and in_block(movable.pfn, 2)
        if how == "get":
            fake_mm.folio_get(held)
        else:
            held._refcount += GUP_PIN_COUNTING_BIAS
        refcount = held.refcount
        dma32 = fake_mm.zones["DMA32"]
        present = dma32.present_pages
        assert fake_mm.memory_blocks[2].offline() == -errno.EINTR
        assert fake_mm.stats.migrate_pages_calls == 5
        signal = fake_mm.trace.filter(kind="offline_signal")
        assert len(signal) == 1
        assert signal[0].fields["folio"] is held and signal[0].fields["passes"] == 5
        fail = fake_mm.trace.filter(kind="offline_fail")
        assert len(fail) == 1
        assert fail[0].fields["reason"] == "signal backoff" and fail[0].fields["folio"] is held
        assert fail[0].fields["ret"] == -errno.EINTR
        assert [e.fields["folio"] for e in fake_mm.trace.filter(kind="offline_migrate_fail")] == [held] * 5
        assert pt.ptes[0x1000] is held and held.refcount == refcount
        assert fake_mm.folio_test_lru(held)
        assert movable.freed and not in_block(pt.ptes[0x2000].pfn, 2)
        assert fake_mm.memory_blocks[2].state == "online"
        assert dma32.present_pages == present
        assert_nothing_isolated(fake_mm)

    @pytest.mark.pin_contract(disable=['pin-balance', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_default_budget_is_the_config_value(self, fake_mm):
        """Without a signal budget override offlining makes offline_retry_budget passes."""
        pt = FakePageTable()
        held = lru_anon_folio(fake_mm, "normal", pt, 0x1000)
        fake_mm.folio_get(held)
        assert fake_mm.config.offline_retry_budget == 100
        assert fake_mm.memory_blocks[2].offline() == -errno.EINTR
        assert fake_mm.stats.migrate_pages_calls == 100
        assert fake_mm.stats.offline_fail == 1

    def test_eintr_then_success_after_put(self, fake_mm):
        """Once the extra reference is dropped the same block offlines."""
        pt = FakePageTable()
        held = lru_anon_folio(fake_mm, "normal", pt, 0x1000)
        fake_mm.folio_get(held)
        assert fake_mm.memory_blocks[2].offline() == -errno.EINTR
        fake_mm.folio_put(held)
        assert fake_mm.memory_blocks[2].offline() == 0
        assert held.freed and not in_block(pt.ptes[0x1000].pfn, 2)


# ---------------------------------------------------------------------------- success
class TestOfflineOnline:
    def test_lru_folios_move_out_with_their_data(self, fake_mm):
        """Offlining migrates LRU folios out of the block; contents and owners follow."""
        pt, mapping = FakePageTable(), FakeMapping()
        olds = [lru_anon_folio(fake_mm, "normal", pt, 0x1000 * (i + 1)) for i in range(3)]
        olds.append(lru_cache_folio(fake_mm, "normal", mapping, 9))
        for i, f in enumerate(olds):
            assert in_block(f.pfn, 2)
            f.write(8, b"blk%d" % i)
        assert fake_mm.memory_blocks[2].offline() == 0
        news = [pt.ptes[0x1000 * (i + 1)] for i in range(3)] + [mapping.pages[9]]
        for i, (old, new) in enumerate(zip(olds, news)):
            assert old.freed and new is not old
            assert new.zone == "DMA32" and not in_block(new.pfn, 2)
            assert new.read(8, 4) == b"blk%d" % i
        assert fake_mm.stats.pgmigrate_success == 4
        assert list(fake_mm.folios_in_range(2 * BLOCK, 3 * BLOCK)) == []
        assert fake_mm.trace.filter(kind="offline")[0].fields == {"start": 2 * BLOCK, "end": 3 * BLOCK}
        assert_nothing_isolated(fake_mm)

    def test_counts_and_state(self, fake_mm):
        """The block's pages leave the zone's present/managed counts and it reads offline."""
        dma32 = fake_mm.zones["DMA32"]
        present, managed, spanned = dma32.present_pages, dma32.managed_pages, dma32.spanned_pages
        fake_mm.drain_all_pages()
        free = dma32.free_pages
        block = fake_mm.memory_blocks[2]
        assert block.offline() == 0
        assert block.state == "offline"
        assert dma32.present_pages == present - BLOCK
        assert dma32.managed_pages == managed - BLOCK
        assert dma32.spanned_pages == spanned
        assert dma32.free_pages == free - BLOCK
        assert not fake_mm.pfn_valid(2 * BLOCK) and not fake_mm.pfn_valid(3 * BLOCK - 1)
        assert fake_mm.pfn_valid(2 * BLOCK - 1)

    @pytest.mark.pin_contract(disable=['pin-balance', 'contiguity'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_online_restores(self, fake_mm):
        """online_pages gives the block's pages back to the zone as free movable memory."""
        dma32 = fake_mm.zones["DMA32"]
        present, managed = dma32.present_pages, dma32.managed_pages
        fake_mm.drain_all_pages()
        free = dma32.free_pages
        assert fake_mm.offline_pages(2 * BLOCK, BLOCK) == 0
        assert fake_mm.online_pages(2 * BLOCK, BLOCK) == 0
        assert fake_mm.memory_blocks[2].state == "online"
        assert (dma32.present_pages, dma32.managed_pages, dma32.free_pages) == (present, managed, free)
        assert dma32.free[MIGRATE_MOVABLE].count_range(2 * BLOCK, 3 * BLOCK) == BLOCK
        assert fake_mm.pfn_valid(2 * BLOCK)
        with fake_mm.steer("normal"):
            folio = fake_mm._alloc_folio(GFP_HIGHUSER_MOVABLE, 0, KIND_ANON)
        assert in_block(folio.pfn, 2)                # allocations use it again

    @pytest.mark.pin_contract(disable=['pin-balance'],
                              reason="model test: keeps an extra reference on purpose (the failure under test)")
    def test_allocations_avoid_an_offline_block(self, fake_mm):
        """While a block is offline nothing is allocated from it."""
        assert fake_mm.memory_blocks[2].offline() == 0
        with fake_mm.steer("normal"):
            folio = fake_mm._alloc_folio(GFP_HIGHUSER_MOVABLE, 0, KIND_ANON)
        page = fake_mm.alloc_pages(GFP_KERNEL, 0)
        assert not in_block(folio.pfn, 2) and not in_block(page.pfn, 2)

    def test_free_only_block(self, fake_mm):
        """A block holding only free memory offlines without migrating anything."""
        assert fake_mm.memory_blocks[1].offline() == 0
        assert fake_mm.stats.migrate_pages_calls == 0
        assert fake_mm.memory_blocks[1].state == "offline"
        assert fake_mm.stats.offline_fail == 0

    def test_per_cpu_pages_are_drained(self, fake_mm):
        """Free pages parked on per-cpu lists do not stop offlining."""
        page = fake_mm.alloc_pages(GFP_KERNEL, 0)
        fake_mm.free_pages_block(page, 0)
        assert fake_mm.zones["DMA32"].pcp_pages > 0 and in_block(page.pfn, 2)
        assert fake_mm.memory_blocks[2].offline() == 0

    @pytest.mark.mm_config(movablecore="256MiB")
    def test_free_zone_movable_block(self, fake_mm):
        """A free ZONE_MOVABLE block (without the memmap) offlines and onlines."""
        movable = fake_mm.zones["Movable"]
        present = movable.present_pages
        block = fake_mm.memory_blocks[2]
        assert block.zone == "Movable"
        assert block.offline() == 0
        assert movable.present_pages == present - BLOCK
        assert block.online() == 0
        assert movable.present_pages == present

    @pytest.mark.pin_contract(disable=['accounting'],
                              reason="model test: offlining dissolves a free huge page, shrinking the pool on purpose")
    @pytest.mark.mm_config(movablecore=0, boot_reserved="none", hugetlb={"2MiB": 2})
    def test_hugetlb_in_use_migrated_and_free_dissolved(self, fake_mm):
        """An in-use hugetlb folio is migrated out and a free pool folio is dissolved."""
        h = fake_mm.hstate("2MiB")
        assert all(in_block(f.pfn, 3) for f in h.free_list)
        mapping = FakeMapping()
        used = fake_mm.dequeue_hugetlb_folio(h, GFP_HIGHUSER_MOVABLE)
        used._refcount = used.nr_pages
        used.mapping, used.index = mapping, 0
        used.flags |= PG_hugetlb_migratable
        mapping.pages[0] = used
        used.write(0, b"huge")
        assert fake_mm.memory_blocks[3].offline() == 0
        new = mapping.pages[0]
        assert new is not used and not in_block(new.pfn, 3)
        assert new.read(0, 4) == b"huge"
        assert (h.nr_huge_pages, h.free_huge_pages, h.surplus_huge_pages) == (1, 0, 0)
        assert fake_mm.stats.migrate_pages_calls == 1

    @pytest.mark.pin_contract(disable=['kernel-warnings'], reason="model test: triggers the WARN on purpose")
    def test_online_errors(self, fake_mm):
        """online_pages of online memory or an unaligned range is -EINVAL (the latter
        two with the kernel's WARN_ON_ONCE recorded)."""
        assert fake_mm.online_pages(2 * BLOCK, BLOCK) == -errno.EINVAL
        assert fake_mm.online_pages(2 * BLOCK + 512, BLOCK) == -errno.EINVAL
        assert fake_mm.online_pages(2 * BLOCK, 0) == -errno.EINVAL
        assert fake_mm.memory_blocks[1].offline() == 0
        assert fake_mm.online_pages(BLOCK, 2 * BLOCK) == -errno.EINVAL     # block 2 is online
        assert fake_mm.online_pages(BLOCK, BLOCK) == 0
        assert [w.site for w in fake_mm.warnings] == ["online_pages"] * 2


class TestMemoryBlock:
    def test_offline_and_online_methods(self, fake_mm):
        """MemoryBlock.offline()/online() switch state and are idempotent (0)."""
        block = fake_mm.memory_blocks[1]
        assert isinstance(block, MemoryBlock)
        assert (block.id, block.start_pfn, block.nr_pages) == (1, BLOCK, BLOCK)
        assert block.state == "online" and block.zone == "DMA32"
        assert block.offline() == 0 and block.state == "offline"
        assert block.offline() == 0
        assert fake_mm.stats.offline_fail == 0
        assert block.online() == 0 and block.state == "online"
        assert block.online() == 0

    def test_state_is_live(self, fake_mm):
        """A MemoryBlock object reflects offlining done through offline_pages."""
        block = fake_mm.memory_blocks[2]
        assert fake_mm.offline_pages(block.start_pfn, block.nr_pages) == 0
        assert block.state == "offline"
        assert block.zone == "none"


class TestMemoryBlocksMapping:
    def test_ids_of_a_small_machine(self, fake_mm):
        """A 512 MiB machine has blocks 0..3."""
        blocks = fake_mm.memory_blocks
        assert list(blocks) == [0, 1, 2, 3]
        assert len(blocks) == 4
        assert [b.zone for b in blocks.values()] == ["none", "DMA32", "DMA32", "Movable"]
        assert 3 in blocks and 4 not in blocks

    @pytest.mark.parametrize("key", [4, -1, 100, "1", None])
    def test_absent_ids_raise_keyerror(self, fake_mm, key):
        """Ids without memory (or not ints) raise KeyError."""
        with pytest.raises(KeyError):
            fake_mm.memory_blocks[key]
        assert fake_mm.memory_blocks.get(key) is None

    @pytest.mark.mm_config(ram="4GiB", movablecore=0)
    def test_ids_skip_the_pci_hole(self, fake_mm):
        """On a 4 GiB machine the blocks under the 3..4 GiB PCI hole do not exist."""
        ids = list(fake_mm.memory_blocks)
        assert ids == list(range(24)) + list(range(32, 40))
        with pytest.raises(KeyError):
            fake_mm.memory_blocks[24]
        assert fake_mm.memory_blocks[32].zone == "Normal"

    def test_offline_blocks_stay_listed(self, fake_mm):
        """An offline block is still a key of memory_blocks, with state 'offline'."""
        assert fake_mm.memory_blocks[2].offline() == 0
        assert list(fake_mm.memory_blocks) == [0, 1, 2, 3]
        assert fake_mm.memory_blocks[2].state == "offline"
        assert [b.id for b in fake_mm.memory_blocks.in_zone("DMA32")] == [1]

    def test_in_zone(self, fake_mm):
        """in_zone lists the online blocks lying wholly in a zone."""
        assert [b.id for b in fake_mm.memory_blocks.in_zone("DMA32")] == [1, 2]
        assert [b.id for b in fake_mm.memory_blocks.in_zone("Movable")] == [3]
        assert fake_mm.memory_blocks.in_zone("DMA") == []
