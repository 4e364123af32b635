"""The model fuzzes itself: every public mm entry point with right-typed bad values.

``ENTRY_POINTS`` lists each public method of :class:`FakeMM`, ``MMStruct`` (mm_struct)
and ``MemFile`` (the memfd ``struct file``) with the kind of each argument;
``NOT_FUZZED`` names the few left out and why.  A test fails when a public method is
in neither, so a new entry point cannot be added without being fuzzed.

For each entry point Hypothesis draws arguments of the right Python type but bad value
(negative, zero, huge, +-2**63 and 2**64 edges; freed folios, another machine's folios,
mms and files, the zero folio, arrays shorter than the count ...) on a fresh small
machine.  The call must give the kernel's answer (errno, None, a recorded warning):
the only exception allowed out of the model is a TypeError, and afterwards every
managed page must still be accounted for exactly once.

CI runs a few examples per entry point; ``PINFAULT_FUZZ_EXAMPLES=2000`` runs long
(see docs/fuzzing.md).
"""

from __future__ import annotations

import inspect
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mm.helpers import assert_pages_add_up
from pytest_pinfault import FakeMM, MMConfig, Out
from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, GFP_HIGHUSER_MOVABLE, GFP_KERNEL,
                                MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, MFD_ALLOW_SEALING,
                                MFD_HUGETLB, MMStruct, MemFile, MigrationTargetControl,
                                PROT_READ, PROT_WRITE)

EXAMPLES = int(os.environ.get("PINFAULT_FUZZ_EXAMPLES", "6"))
# CI replays the same examples every run; a long run explores (PINFAULT_FUZZ_SEED=n
# makes one reproducible)
DERANDOMIZE = "PINFAULT_FUZZ_EXAMPLES" not in os.environ
MACHINE = MMConfig(ram="256MiB", cma="16MiB", movablecore="128MiB", hugetlb={"2MiB": 2},
                   thp="always", offline_retry_budget=3, gup_retry_limit=3)
MiB = 1 << 20
RW = PROT_READ | PROT_WRITE

# -------------------------------------------------------------------- argument kinds
EDGES = [0, 1, -1, 2, 7, 511, 512, 4095, 4096, 4097, 1 << 20, 1 << 31, 1 << 32, (1 << 47),
         (1 << 63) - 1, 1 << 63, -(1 << 63), (1 << 64) - 1, 1 << 64, -(1 << 64), 10 ** 9]
INT = st.one_of(st.sampled_from(EDGES), st.integers(-(1 << 65), 1 << 65), st.integers(-4, 4096))
SMALL = st.one_of(st.sampled_from([0, 1, -1, 2, 9, 10, 11, 18, 63, 64, -(1 << 63), 1 << 63]),
                  st.integers(-3, 70))
FOLIOS = ["small", "thp", "hugetlb", "freed", "foreign", "zero", "page", "kernel", "contig",
          "pinned"]
OBJ = st.sampled_from(FOLIOS)


def _kind(name: str):
    """Strategy for one argument kind (resolved against the machine in ``_resolve``)."""
    table = {
        "int": INT, "small": SMALL, "bool": st.booleans(),
        "addr": st.one_of(st.sampled_from(["anon", "anon+1", "file", "huge", "thp"]), INT),
        "pfn": st.one_of(st.sampled_from(["pfn:cma", "pfn:movable", "pfn:normal", "pfn:folio"]), INT),
        "folio": OBJ, "page": OBJ,
        "pages": st.lists(st.one_of(OBJ, st.none()), max_size=4),
        "mm": st.sampled_from(["mm", "mm:other", "mm:new"]),
        "memfd": st.sampled_from(["memfd", "memfd:huge", "memfd:other", "memfd:closed", None]),
        "mapping": st.sampled_from(["mapping", "mapping:huge", "mapping:other"]),
        "cma": st.sampled_from(["cma", "cma:name", "cma:unknown"]),
        "hstate": st.sampled_from(["h2m", "h1g"]),
        "data": st.binary(max_size=64),
        "name": st.text(max_size=300),
        "out": st.just("out"),
        "kobj": st.sampled_from(["kobj", "kobj:freed", "zero_size", None]),
        "mtc": st.sampled_from(["mtc", "mtc:pin", None]),
        "zone": st.sampled_from(["zone", None]),
        "cursor": st.sampled_from(["out0", "outbig", "outneg"]),
        # the driver plumbing's objects (live, released/freed, another machine's)
        "dev": st.sampled_from(["dev", "dev:other"]),
        "sgt": st.sampled_from(["sgt", "sgt:empty", "sgt:freed", "sgt:mapped"]),
        "sgapp": st.sampled_from(["sgapp", "sgapp:empty"]),
        "sg": st.sampled_from(["sg", "sg:freed", "sg:mapped"]),
        "dmabuf": st.sampled_from(["dmabuf", "dmabuf:released", None]),
        "attach": st.sampled_from(["attach", "attach:detached", None]),
        "iosys": st.sampled_from(["iosys", "iosys:set"]),
        "user": st.sampled_from(["user", None]),
        "expinfo": st.sampled_from(["expinfo", "expinfo:noops", "expinfo:nopriv", "expinfo:pinonly"]),
        "buf": st.sampled_from(["buf", "buf:small", "kobj"]),
        "file": st.sampled_from(["file", "memfd", "file:closed", "dmabuf:file", None]),
        "any": st.sampled_from([None, 0, "x"]),
    }
    return table[name]


def _machine():
    k = FakeMM(MACHINE)
    other = FakeMM(MMConfig(ram="128MiB"))
    mm = k.current.mm
    anon = mm.mmap(4 * MiB, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.write(anon, b"a" * 8192)
    mm.write(anon + 2 * MiB, b"t")                       # a PMD-mapped THP
    f = k.memfd_create("fz", MFD_ALLOW_SEALING)
    f.ftruncate(64 * 4096)
    f.pwrite(b"f" * 4096, 0)
    fa = mm.mmap(64 * 4096, RW, MAP_SHARED, file=f)
    hf = k.memfd_create("hz", MFD_HUGETLB)
    hf.ftruncate(2 * MiB)
    ha = mm.mmap(2 * MiB, RW, MAP_SHARED, file=hf)
    mm.write(ha, b"h")
    of = other.memfd_create("other", 0)
    of.ftruncate(4096)
    of.pwrite(b"o", 0)
    closed = k.memfd_create("closed", 0)
    closed.ftruncate(4096)
    closed.close()
    freed = k.alloc_pages(GFP_KERNEL, 0).folio
    k.folio_put(freed)
    pinned: list = []
    k.pin_user_pages(anon + 4096, 1, FOLL_WRITE | FOLL_LONGTERM, pinned)
    kobj, kfreed = k.kmalloc(64, GFP_KERNEL), k.kmalloc(8, GFP_KERNEL)
    k.kfree(kfreed)
    with k.steer("cma"):
        in_cma = k.alloc_pages(GFP_HIGHUSER_MOVABLE, 0).folio
    plumbing = _plumbing(k, other, pinned)
    objs = {
        "small": mm.lookup(anon)[0], "thp": mm.lookup(anon + 2 * MiB)[0],
        "hugetlb": mm.lookup(ha)[0], "freed": freed, "zero": k.zero_folio,
        "foreign": other.alloc_pages(GFP_KERNEL, 0).folio,
        "kernel": k.alloc_pages(GFP_KERNEL, 1).folio, "pinned": pinned[0].folio,
        "contig": k.cma_alloc(k.cma_areas[0], 4, 0).folio,
        "anon": anon, "anon+1": anon + 1, "file": fa, "huge": ha, "thp_addr": anon + 2 * MiB,
        "pfn:cma": in_cma.pfn, "pfn:movable": k.zones["Movable"].zone_start_pfn,
        "pfn:normal": objs_normal(k), "pfn:folio": mm.lookup(anon)[0].pfn,
        "mm": mm, "mm:other": other.current.mm, "mm:new": k.create_mm(),
        "memfd": f, "memfd:huge": hf, "memfd:other": of, "memfd:closed": closed,
        "mapping": f.mapping, "mapping:huge": hf.mapping, "mapping:other": of.mapping,
        "cma": k.cma_areas[0], "cma:name": k.cma_areas[0].name, "cma:unknown": "nope",
        "h2m": k.hstate("2MiB"), "h1g": k.hstate("1GiB"),
        "kobj": kobj, "kobj:freed": kfreed,
        "mtc": MigrationTargetControl(), "mtc:pin": MigrationTargetControl(gfp_mask=int(GFP_KERNEL)),
        "zone": k.zones["DMA32"],
    }
    objs["page"] = objs["small"]
    objs.update(plumbing)
    return k, objs


class _FuzzOps:
    """A dma-buf exporter for the fuzz: maps the fixed table it was given."""

    def __init__(self, sgt):
        self.sgt = sgt

    def map_dma_buf(self, attach, direction):
        return self.sgt

    def unmap_dma_buf(self, attach, sgt, direction):
        pass

    def release(self, dmabuf):
        pass

    def vmap(self, dmabuf, map):
        map.vaddr = self.sgt
        return 0


class _PinOnlyOps(_FuzzOps):
    def pin(self, attach):
        return 0


def _plumbing(k, other, pinned):
    """The driver plumbing's objects on machine *k* (and a device of *other*)."""
    from pytest_pinfault.mm.dma_buf import DmaBufExportInfo, IosysMap
    from pytest_pinfault.mm.dma_mapping import DMA_BIDIRECTIONAL
    from pytest_pinfault.mm.scatterlist import SgAppendTable, SgTable
    dev = k.create_device("fuzzdev")
    sgt, freed, mapped = SgTable(), SgTable(), SgTable()
    for t in (sgt, freed, mapped):
        assert k.sg_alloc_table_from_pages(t, pinned, 1, 0, 4096, GFP_KERNEL) == 0
    freed_sg = freed.sgl
    k.sg_free_table(freed)
    assert k.dma_map_sgtable(dev, mapped, DMA_BIDIRECTIONAL, 0) == 0
    ops = _FuzzOps(sgt)
    buf = k.dma_buf_export(DmaBufExportInfo(ops=ops, size=4096, priv=ops))
    gone = k.dma_buf_export(DmaBufExportInfo(ops=ops, size=4096, priv=ops))
    k.dma_buf_put(gone)
    attach, detached = k.dma_buf_attach(buf, dev), k.dma_buf_attach(buf, dev)
    k.dma_buf_detach(buf, detached)
    closed = k.anon_inode_getfile("fz-closed", None, None, 0)
    k.fput(closed)
    return {
        "dev": dev, "dev:other": other.create_device("other"),
        "sgt": sgt, "sgt:empty": SgTable(), "sgt:freed": freed, "sgt:mapped": mapped,
        "sgapp": SgAppendTable(), "sgapp:empty": SgAppendTable(),
        "sg": sgt.sgl, "sg:freed": freed_sg, "sg:mapped": mapped.sgl,
        "dmabuf": buf, "dmabuf:released": gone, "dmabuf:file": buf.file,
        "attach": attach, "attach:detached": detached,
        "iosys": IosysMap(), "iosys:set": IosysMap(sgt),
        "user": k.current_user(),
        "expinfo": DmaBufExportInfo(ops=ops, size=4096, priv=ops),
        "expinfo:noops": DmaBufExportInfo(ops=None, size=4096, priv=ops),
        "expinfo:nopriv": DmaBufExportInfo(ops=ops, size=-1, priv=None),
        "expinfo:pinonly": DmaBufExportInfo(ops=_PinOnlyOps(sgt), size=1, priv=ops),
        "buf": bytearray(64), "buf:small": bytearray(1),
        "file": k.anon_inode_getfile("fz", None, None, 0), "file:closed": closed,
    }


def objs_normal(k):
    z = k.zones.get("Normal") or k.zones["DMA32"]
    return z.zone_start_pfn + 100


def _resolve(k, objs, kind, value):
    from pytest_pinfault.mm import ZERO_SIZE_PTR, Page
    if kind in ("folio", "page"):
        f = objs[value]
        return Page(f, f.pfn) if kind == "page" and value in ("small", "thp", "freed", "foreign") else f
    if kind == "pages":
        return [None if v is None else objs[v] for v in value]
    if kind == "addr" and isinstance(value, str):
        return objs["thp_addr" if value == "thp" else value]
    if kind == "pfn" and isinstance(value, str):
        return objs[value]
    if kind in ("mm", "memfd", "mapping", "cma", "hstate", "mtc", "zone") and value is not None:
        return objs[value]
    if kind in ("dev", "sgt", "sgapp", "sg", "dmabuf", "attach", "iosys", "user", "expinfo", "buf",
                "file") and value is not None:
        return objs[value]
    if kind == "kobj":
        return ZERO_SIZE_PTR if value == "zero_size" else (None if value is None else objs[value])
    if kind == "out":
        return Out(0)
    if kind == "cursor":
        return Out({"out0": 0, "outbig": 1 << 63, "outneg": -5}[value])
    return value


# -------------------------------------------------------------------- the entry points
# "Class.method": argument kinds in order ("self" excluded; the receiver of MMStruct and
# MemFile methods is the machine's own mm / shmem memfd)
ENTRY_POINTS: dict[str, tuple[str, ...]] = {
    "FakeMM.account_locked_vm": ("mm", "int", "bool"),
    "FakeMM.alloc_contig_range": ("pfn", "pfn", "small", "int"),
    "FakeMM.alloc_hugetlb_folio_nodemask": ("hstate", "int", "mtc", "int"),
    "FakeMM.alloc_migration_target": ("folio", "mtc"),
    "FakeMM.alloc_pages": ("int", "small"),
    "FakeMM.alloc_pool_huge_folio": ("hstate",),
    "FakeMM.check_and_migrate_movable_folios": ("small", "pages"),
    "FakeMM.check_and_migrate_movable_pages": ("small", "pages"),
    "FakeMM.cma_alloc": ("cma", "int", "small", "bool"),
    "FakeMM.cma_release": ("cma", "page", "int"),
    "FakeMM.current_gfp_context": ("int",),
    "FakeMM.dequeue_hugetlb_folio": ("hstate", "int"),
    "FakeMM.dissolve_free_hugetlb_folios": ("pfn", "pfn"),
    "FakeMM.replace_free_hugepage_folios": ("pfn", "pfn"),
    "FakeMM.isolate_or_dissolve_huge_page": ("folio", "pages"),
    "FakeMM.drain_all_pages": ("zone",),
    "FakeMM.filemap_get_folio": ("mapping", "int"),
    "FakeMM.filemap_get_folios_contig": ("mapping", "cursor", "int", "pages"),
    "FakeMM.folio_add_lru": ("folio",),
    "FakeMM.folio_add_pins": ("folio", "int"),
    "FakeMM.folio_alloc": ("int", "small"),
    "FakeMM.folio_expected_ref_count": ("folio",),
    "FakeMM.folio_get": ("folio",),
    "FakeMM.folio_is_longterm_pinnable": ("folio",),
    "FakeMM.folio_isolate_hugetlb": ("folio", "pages"),
    "FakeMM.folio_isolate_lru": ("folio",),
    "FakeMM.folio_maybe_dma_pinned": ("folio",),
    "FakeMM.folio_put": ("folio",),
    "FakeMM.folio_putback_hugetlb": ("folio",),
    "FakeMM.folio_putback_lru": ("folio",),
    "FakeMM.folio_ref_count": ("folio",),
    "FakeMM.folio_test_hugetlb": ("folio",),
    "FakeMM.folio_test_large": ("folio",),
    "FakeMM.folio_test_lru": ("folio",),
    "FakeMM.folio_try_get": ("folio",),
    "FakeMM.folios_in_range": ("pfn", "pfn"),
    "FakeMM.fork": ("mm",),
    "FakeMM.free_contig_range": ("pfn", "int"),
    "FakeMM.free_huge_folio": ("folio",),
    "FakeMM.free_pages_block": ("page", "small"),
    "FakeMM.get_pageblock_migratetype": ("pfn",),
    "FakeMM.get_user_pages": ("addr", "int", "int", "pages"),
    "FakeMM.get_user_pages_fast": ("addr", "int", "int", "pages"),
    "FakeMM.get_user_pages_remote": ("mm", "addr", "int", "int", "pages"),
    "FakeMM.get_user_pages_unlocked": ("addr", "int", "pages", "int"),
    "FakeMM.gup_put_folio": ("folio", "int", "int"),
    "FakeMM.has_unmovable_pages": ("pfn", "pfn", "small", "int"),
    "FakeMM.is_zero_folio": ("folio",),
    "FakeMM.kfree": ("kobj",),
    "FakeMM.kmalloc": ("int", "int"),
    "FakeMM.kmalloc_array": ("int", "int", "int"),
    "FakeMM.kvfree": ("kobj",),
    "FakeMM.kvmalloc_array": ("int", "int", "int"),
    "FakeMM.kzalloc": ("int", "int"),
    "FakeMM.lru_add_drain": (),
    "FakeMM.lru_add_drain_all": (),
    "FakeMM.lru_add_drain_cpu": ("int",),
    "FakeMM.lru_cache_disable": (),
    "FakeMM.lru_cache_enable": (),
    "FakeMM.memalloc_pin_restore": ("int",),
    "FakeMM.memalloc_pin_save": (),
    "FakeMM.memfd_alloc_folio": ("memfd", "int"),
    "FakeMM.memfd_create": ("name", "int"),
    "FakeMM.memfd_pin_folios": ("memfd", "int", "int", "pages", "int", "out"),
    "FakeMM.node_stat_mod_isolated": ("folio", "small"),
    "FakeMM.offline_pages": ("pfn", "int"),
    "FakeMM.online_pages": ("pfn", "int"),
    "FakeMM.pfn_to_folio": ("pfn",),
    "FakeMM.pfn_to_page": ("pfn",),
    "FakeMM.pfn_valid": ("pfn",),
    "FakeMM.pin_user_pages": ("addr", "int", "int", "pages"),
    "FakeMM.pin_user_pages_fast": ("addr", "int", "int", "pages"),
    "FakeMM.pin_user_pages_remote": ("mm", "addr", "int", "int", "pages"),
    "FakeMM.pin_user_pages_unlocked": ("addr", "int", "pages", "int"),
    "FakeMM.put_page": ("page",),
    "FakeMM.putback_movable_pages": ("pages",),
    "FakeMM.split_folio_to_list": ("folio", "pages"),
    "FakeMM.start_isolate_page_range": ("pfn", "pfn", "small", "int"),
    "FakeMM.test_pages_isolated": ("pfn", "pfn", "int"),
    "FakeMM.try_grab_folio": ("folio", "int", "int"),
    "FakeMM.undo_isolate_page_range": ("pfn", "pfn", "small"),
    "FakeMM.unpin_folio": ("folio",),
    "FakeMM.unpin_folios": ("pages", "int"),
    "FakeMM.unpin_user_folio": ("folio", "int"),
    "FakeMM.unpin_user_page": ("page",),
    "FakeMM.unpin_user_pages": ("pages", "int"),
    "FakeMM.unpin_user_pages_dirty_lock": ("pages", "int", "bool"),
    "MMStruct.find_vma": ("addr",),
    "MMStruct.lookup": ("addr",),
    "MMStruct.madvise": ("addr", "int", "int"),
    "MMStruct.mlock": ("addr", "int"),
    "MMStruct.mlock2": ("addr", "int", "int"),
    "MMStruct.mmap": ("int", "int", "int", "memfd", "int", "addr"),
    "MMStruct.mprotect": ("addr", "int", "int"),
    "MMStruct.munmap": ("addr", "int"),
    "MMStruct.read": ("addr", "small"),
    "MMStruct.write": ("addr", "data"),
    "MemFile.add_seals": ("int",),
    "MemFile.close": (),
    "MemFile.fallocate": ("small", "int", "int"),
    "MemFile.ftruncate": ("int",),
    "MemFile.get_seals": (),
    "MemFile.is_file_hugepages": (),
    "MemFile.pread": ("small", "int"),
    "MemFile.pwrite": ("data", "int"),
    # driver plumbing (scatterlist, DMA, dma-buf, files, uaccess, user accounting)
    "FakeMM.access_ok": ("int", "int"),
    "FakeMM.anon_inode_getfile": ("name", "any", "any", "int"),
    "FakeMM.can_do_mlock": (),
    "FakeMM.capable": ("int",),
    "FakeMM.close_fd": ("int",),
    "FakeMM.copy_from_user": ("buf", "addr", "int"),
    "FakeMM.copy_to_user": ("addr", "data", "int"),
    "FakeMM.create_device": ("name", "int"),
    "FakeMM.current_user": (),
    "FakeMM.dma_buf_attach": ("dmabuf", "dev"),
    "FakeMM.dma_buf_begin_cpu_access": ("dmabuf", "int"),
    "FakeMM.dma_buf_detach": ("dmabuf", "attach"),
    "FakeMM.dma_buf_dynamic_attach": ("dmabuf", "dev", "any", "any"),
    "FakeMM.dma_buf_end_cpu_access": ("dmabuf", "int"),
    "FakeMM.dma_buf_export": ("expinfo",),
    "FakeMM.dma_buf_fd": ("dmabuf", "int"),
    "FakeMM.dma_buf_get": ("int",),
    "FakeMM.dma_buf_map_attachment": ("attach", "int"),
    "FakeMM.dma_buf_map_attachment_unlocked": ("attach", "int"),
    "FakeMM.dma_buf_put": ("dmabuf",),
    "FakeMM.dma_buf_unmap_attachment": ("attach", "sgt", "int"),
    "FakeMM.dma_buf_unmap_attachment_unlocked": ("attach", "sgt", "int"),
    "FakeMM.dma_buf_vmap": ("dmabuf", "iosys"),
    "FakeMM.dma_buf_vmap_unlocked": ("dmabuf", "iosys"),
    "FakeMM.dma_buf_vunmap": ("dmabuf", "iosys"),
    "FakeMM.dma_buf_vunmap_unlocked": ("dmabuf", "iosys"),
    "FakeMM.dma_device_read": ("dev", "int", "int"),
    "FakeMM.dma_device_write": ("dev", "int", "data"),
    "FakeMM.dma_get_max_seg_size": ("dev",),
    "FakeMM.dma_map_page": ("dev", "page", "int", "int", "small"),
    "FakeMM.dma_map_page_attrs": ("dev", "page", "int", "int", "small", "int"),
    "FakeMM.dma_map_sg": ("dev", "sg", "int", "small"),
    "FakeMM.dma_map_sg_attrs": ("dev", "sg", "int", "small", "int"),
    "FakeMM.dma_map_sgtable": ("dev", "sgt", "small", "int"),
    "FakeMM.dma_mapping_error": ("dev", "int"),
    "FakeMM.dma_set_mask": ("dev", "int"),
    "FakeMM.dma_set_mask_and_coherent": ("dev", "int"),
    "FakeMM.dma_set_max_seg_size": ("dev", "int"),
    "FakeMM.dma_sync_sg_for_cpu": ("dev", "sg", "int", "small"),
    "FakeMM.dma_sync_sg_for_device": ("dev", "sg", "int", "small"),
    "FakeMM.dma_sync_sgtable_for_cpu": ("dev", "sgt", "small"),
    "FakeMM.dma_sync_sgtable_for_device": ("dev", "sgt", "small"),
    "FakeMM.dma_sync_single_for_cpu": ("dev", "int", "int", "small"),
    "FakeMM.dma_sync_single_for_device": ("dev", "int", "int", "small"),
    "FakeMM.dma_unmap_page": ("dev", "int", "int", "small"),
    "FakeMM.dma_unmap_page_attrs": ("dev", "int", "int", "small", "int"),
    "FakeMM.dma_unmap_sg": ("dev", "sg", "int", "small"),
    "FakeMM.dma_unmap_sg_attrs": ("dev", "sg", "int", "small", "int"),
    "FakeMM.dma_unmap_sgtable": ("dev", "sgt", "small", "int"),
    "FakeMM.fd_file": ("int",),
    "FakeMM.fd_install": ("int", "file"),
    "FakeMM.fget": ("int",),
    "FakeMM.files": ("any",),
    "FakeMM.find_user": ("int",),
    "FakeMM.fput": ("file",),
    "FakeMM.free_uid": ("user",),
    "FakeMM.get_current_user": (),
    "FakeMM.get_dma_buf": ("dmabuf",),
    "FakeMM.get_file": ("file",),
    "FakeMM.get_uid": ("user",),
    "FakeMM.get_unused_fd_flags": ("int",),
    "FakeMM.get_user": ("out", "addr", "small"),
    "FakeMM.memdup_user": ("addr", "int"),
    "FakeMM.mmdrop": ("mm",),
    "FakeMM.mmget": ("mm",),
    "FakeMM.mmget_not_zero": ("mm",),
    "FakeMM.mmgrab": ("mm",),
    "FakeMM.mmput": ("mm",),
    "FakeMM.put_unused_fd": ("int",),
    "FakeMM.put_user": ("int", "addr", "small"),
    "FakeMM.rlimit_memlock": (),
    "FakeMM.sg_alloc_append_table_from_pages": ("sgapp", "pages", "int", "int", "int", "int", "int", "int"),
    "FakeMM.sg_alloc_table": ("sgt", "int", "int"),
    "FakeMM.sg_alloc_table_from_pages": ("sgt", "pages", "int", "int", "int", "int"),
    "FakeMM.sg_alloc_table_from_pages_segment": ("sgt", "pages", "int", "int", "int", "int", "int"),
    "FakeMM.sg_free_append_table": ("sgapp",),
    "FakeMM.sg_free_table": ("sgt",),
    "FakeMM.sg_init_table": ("sg", "int"),
    "FakeMM.sg_mark_end": ("sg",),
    "FakeMM.sg_unmark_end": ("sg",),
    "FakeMM.unpin_user_page_range_dirty_lock": ("page", "int", "bool"),
    "MemFile.shmem_file": (),
}

NOT_FUZZED = {
    # observer interface (mm/observer.py): harness, not kernel functions
    "FakeMM.attach_observer": "harness: attaches the contract checker",
    "FakeMM.detach_observer": "harness: detaches the contract checker",
    "FakeMM.observer_factory": "harness: a class attribute, not a call",
    # harness helpers, not kernel functions: their misuse is a ValueError/UsageError
    "FakeMM.check": "runs the contract checker",
    "FakeMM.create_mm": "no arguments that can be bad",
    "FakeMM.create_task": "harness: makes a task",
    "FakeMM.current_capable_ipc_lock": "no arguments",
    "FakeMM.fault_point": "harness: an undeclared site raises UnknownSite by design",
    "FakeMM.fill_zone": "harness pressure knob: a bad zone name is a ValueError",
    "FakeMM.fragment_zone": "harness pressure knob: a bad zone name is a ValueError",
    "FakeMM.hstate": "harness lookup: an unknown size is a ValueError",
    "FakeMM.iter_folios": "no arguments",
    "FakeMM.lru_folios": "harness lookup: a bad zone or LRU name is a ValueError",
    "FakeMM.run_as": "harness: switches current",
    "FakeMM.steer": "harness: a bad placement is a ValueError",
    # need objects only the model itself hands out, exercised by their own tests
    "FakeMM.handle_mm_fault": "takes a VMA from find_vma; driven through read/write/GUP",
    "FakeMM.migrate_pages": "takes callbacks; driven by the state machines",
    "FakeMM.mmu_interval_check_retry": "takes a notifier object; tests/mm/test_mmu_notifier.py",
    "FakeMM.mmu_interval_notifier_insert": "takes an ops object; tests/mm/test_mmu_notifier.py",
    "FakeMM.mmu_interval_notifier_remove": "takes a notifier object",
    "FakeMM.mmu_interval_read_begin": "takes a notifier object",
    "FakeMM.mmu_interval_read_retry": "takes a notifier object",
    "MMStruct.replace_folio": "migration's rmap callback, not driver API",
}

CLASSES = {"FakeMM": FakeMM, "MMStruct": MMStruct, "MemFile": MemFile}


def public_methods() -> set[str]:
    out = set()
    for cname, cls in CLASSES.items():
        for name in dir(cls):
            if name.startswith("_") or isinstance(inspect.getattr_static(cls, name), property):
                continue
            if callable(getattr(cls, name)):
                out.add(f"{cname}.{name}")
    return out


def test_entry_point_list_is_complete():
    """Every public method of FakeMM, mm_struct and the memfd file is fuzzed or named in
    NOT_FUZZED with a reason; nothing listed is stale."""
    listed = set(ENTRY_POINTS) | set(NOT_FUZZED)
    public = public_methods()
    assert not public - listed, f"add to ENTRY_POINTS (or NOT_FUZZED): {sorted(public - listed)}"
    assert not listed - public, f"no longer public: {sorted(listed - public)}"
    assert not set(ENTRY_POINTS) & set(NOT_FUZZED)


def test_arity_matches_signatures():
    """Each entry's argument kinds cover the method's required parameters."""
    for key, kinds in ENTRY_POINTS.items():
        cname, name = key.split(".")
        sig = inspect.signature(getattr(CLASSES[cname], name))
        params = [p for p in sig.parameters.values() if p.name != "self"]
        required = [p for p in params if p.default is inspect.Parameter.empty]
        assert len(required) <= len(kinds) <= len(params), key


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_bad_values_get_kernel_answers(entry):
    cname, name = entry.split(".")
    kinds = ENTRY_POINTS[entry]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
              suppress_health_check=list(HealthCheck))
    @given(st.tuples(*[_kind(kd) for kd in kinds]))
    def run(values):
        k, objs = _machine()
        args = [_resolve(k, objs, kd, v) for kd, v in zip(kinds, values)]
        target = {"FakeMM": k, "MMStruct": objs["mm"], "MemFile": objs["memfd"]}[cname]
        try:
            result = getattr(target, name)(*args)
            if name == "folios_in_range":
                list(result)
        except TypeError as e:              # only the model's own, naming the parameter
            assert " must be " in str(e), repr(e)
            return
        assert_pages_add_up(k)
        for w in k.warnings:                # warnings name the misuse and the caller
            assert w.site and w.message and "test_fuzz_entry_points.py" in w.caller, w

    run()


# -------------------------------------------------------------------- wrong Python types
VALID = {"int": 1, "small": 0, "bool": False, "addr": "anon", "pfn": "pfn:folio", "folio": "small",
         "page": "small", "pages": [], "mm": "mm", "memfd": "memfd", "mapping": "mapping",
         "cma": "cma", "hstate": "h2m", "data": b"x", "name": "n", "out": "out", "kobj": None,
         "mtc": "mtc", "zone": None, "cursor": "out0", "dev": "dev", "sgt": "sgt", "sgapp": "sgapp",
         "sg": "sg", "dmabuf": "dmabuf", "attach": "attach", "iosys": "iosys", "user": "user",
         "expinfo": "expinfo", "buf": "buf", "file": "file", "any": None}
WRONG = {"int": "7", "small": 1.5, "bool": "yes", "addr": "x", "pfn": 2.0, "folio": 7, "page": "p",
         "pages": 5, "mm": 3, "memfd": 3, "mapping": 3, "cma": 3.0, "hstate": 3, "data": 5,
         "name": 5, "out": 5, "kobj": 5, "mtc": 5, "zone": 5, "cursor": 5, "dev": 5, "sgt": 5,
         "sgapp": 5, "sg": 5, "dmabuf": 5, "attach": 5, "iosys": 5, "user": 5, "expinfo": 5,
         "buf": 5, "file": 5, "any": 5}
# parameters whose kernel answer to a non-object is not a TypeError: ignored (nmask), a
# recorded "kfree of a non-kmalloc object" warning, -EINVAL for an fd that is no memfd
KERNEL_ANSWERED = {("FakeMM.alloc_hugetlb_folio_nodemask", "nmask"), ("FakeMM.kfree", "obj"),
                   ("FakeMM.kvfree", "obj"), ("FakeMM.memfd_pin_folios", "memfd"),
                   # void * arguments: any object is the driver's own business
                   ("FakeMM.anon_inode_getfile", "fops"), ("FakeMM.anon_inode_getfile", "priv"),
                   ("FakeMM.dma_buf_dynamic_attach", "importer_ops"),
                   ("FakeMM.dma_buf_dynamic_attach", "importer_priv"),
                   # whatever the exporter's map op returned; struct file * of any kind:
                   # a non-file is a recorded warning
                   ("FakeMM.dma_buf_unmap_attachment", "sg_table"),
                   ("FakeMM.dma_buf_unmap_attachment_unlocked", "sg_table"),
                   ("FakeMM.fd_install", "file"), ("FakeMM.fput", "file"), ("FakeMM.get_file", "file")}


@pytest.mark.parametrize("entry", sorted(k for k, v in ENTRY_POINTS.items() if v))
def test_wrong_types_are_type_errors_naming_the_parameter(entry):
    """Each parameter in turn gets a value of the wrong Python type, the others valid:
    a TypeError naming the function's parameter, raised before the model changes."""
    cname, name = entry.split(".")
    kinds = ENTRY_POINTS[entry]
    params = [p for p in inspect.signature(getattr(CLASSES[cname], name)).parameters if p != "self"]
    for i, kd in enumerate(kinds):
        if (entry, params[i]) in KERNEL_ANSWERED:
            continue
        k, objs = _machine()
        args = [_resolve(k, objs, kk, VALID[kk]) for kk in kinds]
        args[i] = WRONG[kd]
        target = {"FakeMM": k, "MMStruct": objs["mm"], "MemFile": objs["memfd"]}[cname]
        with pytest.raises(TypeError, match=rf"\b{params[i]}\b must be"):
            getattr(target, name)(*args)
        assert_pages_add_up(k)
