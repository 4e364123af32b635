"""A notifier-based userptr driver: the i915 userptr / HMM design, without long-term pins.

Kernel shape (Documentation/mm/hmm.rst "usage pattern", i915_gem_userptr.c since 2021,
amdgpu/nouveau SVM): the driver registers an ``mmu_interval_notifier`` over the user
range instead of pinning it.  A *job* (a GPU batch, a DMA transfer) faults the range,
holding **short-term** references only while it runs:

    seq = mmu_interval_read_begin(sub)
    get_user_pages_remote(mm, addr, n, FOLL_WRITE, pages)   # no FOLL_LONGTERM
    lock(driver)
    if mmu_interval_read_retry(sub, seq): unlock, put pages, try again (bounded)
    program the device page table (index -> pfn), run the device access
    unlock; put pages                                     # nothing held afterwards

``invalidate`` (called by the core MM before it changes the PTEs: munmap, mprotect, COW,
migration for ``cma_alloc``/``offline_pages``/a long-term pin elsewhere) takes the driver
lock, calls ``mmu_interval_set_seq``, evicts the device mapping and returns True.  The next
job re-faults and sees the pages where they are now.  Because nothing is held between
entry points, CMA allocation and memory offlining can always migrate the buffer.

The device page table stores pfns, as a real IOMMU or GPU page table does: a stale entry
points at whatever now lives at that pfn (a freed page, someone's ``cma_alloc`` block,
an offline hole) -- which is exactly what :mod:`.buggy` shows.
"""

from __future__ import annotations

import errno
from typing import Any, Callable

from pytest_pinfault import pin_entry_point
from pytest_pinfault.contracts import checker_for
from pytest_pinfault.mm import FOLL_WRITE, GFP_KERNEL

PAGE_SIZE = 4096
JOB_RETRY_LIMIT = 16          # read_begin/read_retry attempts before a job gives up (-EBUSY)


class Userptr:
    """One userptr buffer: the registered range, its notifier, the device page table."""

    def __init__(self, fake_mm: Any, mm: Any, addr: int, length: int) -> None:
        self.fake_mm = fake_mm             # found by @pin_entry_point (``fake_mm`` attribute)
        self.mm = mm
        self.addr = addr
        self.length = length
        self.npages = length // PAGE_SIZE
        self.sub: Any = None               # the mmu_interval_notifier
        self.desc: Any = None              # kmalloc'd driver descriptor
        self.dev_pt: dict[int, int] = {}   # device page table: page index -> pfn
        self.bound = False                 # dev_pt valid for the current sequence
        self.locked = False                # the driver lock (the model is single-threaded)
        self.nr_faults = 0                 # times the device page table was (re)programmed
        self.nr_invalidations = 0
        self.nr_retries = 0                # read_retry collisions

    # -- mmu_interval_notifier_ops ----------------------------------------------------
    def invalidate(self, sub: Any, rng: Any, cur_seq: int) -> bool:
        """ops->invalidate: under the driver lock, set the sequence, stop device access
        to the range (evict the device mapping) and return True."""
        self.locked = True
        try:
            sub.set_seq(cur_seq)                 # mmu_interval_set_seq(sub, cur_seq)
            self.evict(rng.event)
        finally:
            self.locked = False
        return True

    def evict(self, event: str) -> None:
        self.nr_invalidations += 1
        self.dev_pt.clear()
        self.bound = False

    # -- the device ---------------------------------------------------------------------
    def dev_read(self, offset: int, n: int) -> bytes:
        """The device reads *n* bytes at *offset* of the buffer through its page table."""
        out = bytearray()
        while n:
            idx, off = divmod(offset, PAGE_SIZE)
            take = min(n, PAGE_SIZE - off)
            out += _pfn_read(self.fake_mm, self.dev_pt[idx], off, take)
            offset += take
            n -= take
        return bytes(out)

    def dev_write(self, offset: int, data: bytes) -> None:
        """The device writes *data* at *offset* of the buffer through its page table."""
        pos = 0
        while pos < len(data):
            idx, off = divmod(offset + pos, PAGE_SIZE)
            take = min(len(data) - pos, PAGE_SIZE - off)
            _pfn_write(self.fake_mm, self.dev_pt[idx], off, data[pos:pos + take])
            pos += take


def _pfn_read(k: Any, pfn: int, off: int, n: int) -> bytes:
    folio = k.pfn_to_folio(pfn)
    if folio is None:                    # free or offline memory: the bus reads zeros
        return bytes(n)
    return folio.read((pfn - folio.pfn) * PAGE_SIZE + off, n)


def _pfn_write(k: Any, pfn: int, off: int, data: bytes) -> None:
    folio = k.pfn_to_folio(pfn)
    if folio is not None:
        folio.write((pfn - folio.pfn) * PAGE_SIZE + off, data)


def _device_view(self: "Userptr") -> list[tuple[Any, int, int]]:
    """What the device would use now: ``(mm, addr, pfn)`` per device page-table entry
    (declared to the contract checker, which compares it with the CPU page table)."""
    return [(self.mm, self.addr + idx * PAGE_SIZE, pfn) for idx, pfn in sorted(self.dev_pt.items())]


Userptr.device_view = _device_view


# ---------------------------------------------------------------------------- entry points
@pin_entry_point(name="USERPTR_CREATE")
def userptr_create(fake_mm: Any, mm: Any, addr: int, length: int, cls: type = Userptr) -> Any:
    """Register a userptr over ``[addr, addr + length)`` of *mm*: the buffer, or -EINVAL
    (unaligned, empty) / -ENOMEM.  Nothing is faulted or held here."""
    if addr % PAGE_SIZE or length <= 0 or length % PAGE_SIZE:
        return -errno.EINVAL
    buf = cls(fake_mm, mm, addr, length)
    buf.desc = fake_mm.kmalloc(128, GFP_KERNEL)
    if buf.desc is None:
        return -errno.ENOMEM
    sub = fake_mm.mmu_interval_notifier_insert(mm, addr, length, buf)
    if isinstance(sub, int):
        fake_mm.kfree(buf.desc)
        return sub
    buf.sub = sub
    checker = checker_for(fake_mm)
    if checker is not None:          # let rule 6 (coherence) judge the device's view too
        checker.declare_device_mapping(buf, buf.device_view)
    return buf


@pin_entry_point(name="USERPTR_DESTROY")
def userptr_destroy(buf: Userptr) -> int:
    """Remove the notifier (waits for callbacks in the kernel), drop the device mapping."""
    k = buf.fake_mm
    k.mmu_interval_notifier_remove(buf.sub)
    checker = checker_for(k)
    if checker is not None:
        checker.release_device_mapping(buf)
    buf.dev_pt.clear()
    buf.bound = False
    k.kfree(buf.desc)
    buf.desc = None
    return 0


def _put_all(k: Any, pages: list) -> None:
    for p in pages:
        if p is not None:
            k.put_page(p)
    pages.clear()


def run_job(buf: Userptr, work: Callable[[Userptr], Any]) -> Any:
    """Run *work* (the device's access) with a valid device mapping: (0, result) or
    -errno.  The read_begin / fault / lock / read_retry loop, bounded by
    JOB_RETRY_LIMIT (-EBUSY).  References are short-term: put before returning."""
    k = buf.fake_mm
    for _ in range(JOB_RETRY_LIMIT):
        seq = k.mmu_interval_read_begin(buf.sub)
        pages: list = []
        if not buf.bound:
            ret = k.get_user_pages_remote(buf.mm, buf.addr, buf.npages, FOLL_WRITE, pages)
            if ret < 0:
                return ret
            if ret != buf.npages:                      # a short fault: the job cannot run
                _put_all(k, pages)
                return -errno.EFAULT
        buf.locked = True
        try:
            if k.mmu_interval_read_retry(buf.sub, seq):
                buf.nr_retries += 1                    # collided with an invalidation
                continue
            if pages:                                  # program the device page table
                buf.dev_pt = {i: p.pfn for i, p in enumerate(pages)}
                buf.bound = True
                buf.nr_faults += 1
            result = work(buf)
        finally:
            buf.locked = False
            _put_all(k, pages)                         # the job ends: short-term refs go
        return 0, result
    return -errno.EBUSY


@pin_entry_point(name="USERPTR_READ", count=False)
def userptr_read(buf: Userptr, offset: int, n: int) -> Any:
    """A job that reads *n* bytes at *offset* through the device: (0, bytes) or -errno."""
    if offset < 0 or n < 0 or offset + n > buf.length:
        return -errno.EINVAL
    return run_job(buf, lambda b: b.dev_read(offset, n))


@pin_entry_point(name="USERPTR_WRITE", count=False)
def userptr_write(buf: Userptr, offset: int, data: bytes) -> int:
    """A job that writes *data* at *offset* through the device: 0 or -errno."""
    if offset < 0 or offset + len(data) > buf.length:
        return -errno.EINVAL
    ret = run_job(buf, lambda b: b.dev_write(offset, data))
    return ret if isinstance(ret, int) else 0


# ---------------------------------------------------------------------------- detector
def device_mapping_mismatches(buf: Userptr) -> list[tuple[int, int, int | None]]:
    """Entries of the device page table that disagree with what the CPU page table maps
    now: ``(index, device pfn, cpu pfn or None)``.  A correct driver has none at any time
    (its mapping is evicted before the PTEs change).  The contract checker's rule 6 makes
    the same comparison through :meth:`Userptr.device_view`; this is the plain-assertion
    form for use without the plugin."""
    out = []
    for idx, pfn in sorted(buf.dev_pt.items()):
        ent = buf.mm.lookup(buf.addr + idx * PAGE_SIZE)
        cpu = None if ent is None else ent[0].pfn + ent[1]
        if cpu != pfn:
            out.append((idx, pfn, cpu))
    return out


def assert_device_coherent(buf: Userptr) -> None:
    """AssertionError naming every device page-table entry that no longer points at the
    page the CPU page table maps."""
    bad = device_mapping_mismatches(buf)
    if bad:
        lines = [f"  index {i}: device pfn {d:#x}, page table "
                 + ("unmapped" if c is None else f"pfn {c:#x}") for i, d, c in bad]
        raise AssertionError(f"stale device mapping: {len(bad)} of {buf.npages} entries\n"
                             + "\n".join(lines))
