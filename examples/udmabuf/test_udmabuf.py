"""The udmabuf model under the kernel selftest, its errno table, a fault matrix over the
create path, and the three buggy twins with the violations the checker reports."""

import errno

import pytest

from pytest_pinfault.mm import F_SEAL_FUTURE_WRITE, F_SEAL_SHRINK, F_SEAL_WRITE, MAP_PRIVATE, PAGE_SIZE

from pytest_pinfault.mm.scatterlist import for_each_sgtable_sg

from .buggy import LeakyErrorPathDevice, PreV611Device, TrustCountDevice
from .driver import (EBADFD, UdmabufDevice, UDMABUF_CREATE, UDMABUF_CREATE_LIST, UDMABUF_FLAGS_CLOEXEC, udmabuf_create,
                     udmabuf_create_item, udmabuf_create_list)

HPAGE = 2 << 20
NUM_PAGES = 4          # selftest NUM_PAGES: pages per item
NUM_ENTRIES = 4        # selftest NUM_ENTRIES: items per list
MEMFD_PAGES = 1024     # selftest MEMFD_SIZE (4 KiB case)
HUGE_MEMFD_PAGES = 16  # the selftest uses 1024 huge pages; 16 keep the quarter layout

# A small machine with both kinds of unpinnable memory; the memfd's pages are steered
# into them so that pinning has to migrate.
pytestmark = pytest.mark.mm_config(ram="1GiB", cma="64MiB", movablecore="128MiB", offline_retry_budget=4)

# hugetlb: the pool must be pinnable, so no ZONE_MOVABLE (its pages would land there)
HUGETLB = pytest.mark.mm_config(movablecore=0, cma=0, hugetlb={"2MiB": 20})


def create(dev, fd, offset, size, flags=0):
    return dev.ioctl(UDMABUF_CREATE, udmabuf_create(memfd=fd, flags=flags, offset=offset, size=size))


def create_list(dev, items, flags=UDMABUF_FLAGS_CLOEXEC):
    return dev.ioctl(UDMABUF_CREATE_LIST, udmabuf_create_list(flags=flags, count=len(items), list=items))


def compare_chunks(dmabuf_map, memfds, addr, items, memfd_size_unused=None):
    """selftest compare_chunks(): first byte of every page, dma-buf vs memfd mapping."""
    mm = memfds.k.current.mm
    pos = 0
    for it in items:
        for off in range(0, it.size, PAGE_SIZE):
            assert dmabuf_map.read(pos + off, 1) == mm.read(addr + it.offset + off, 1), (it, off)
        pos += it.size


# ------------------------------------------------------------------ the kernel selftest


def test_1_misaligned_offset_fails(udmabuf_dev, memfds):
    fd, _ = memfds.create(NUM_PAGES * PAGE_SIZE)
    assert create(udmabuf_dev, fd, PAGE_SIZE // 2, PAGE_SIZE) == -errno.EINVAL


def test_2_misaligned_size_fails(udmabuf_dev, memfds):
    fd, _ = memfds.create(NUM_PAGES * PAGE_SIZE)
    assert create(udmabuf_dev, fd, 0, PAGE_SIZE // 2) == -errno.EINVAL


def test_3_not_a_memfd_fails(udmabuf_dev, memfds):
    memfds.create(NUM_PAGES * PAGE_SIZE)
    assert create(udmabuf_dev, 0, 0, NUM_PAGES * PAGE_SIZE) == -EBADFD     # stdin


def test_4_basic_create(fake_mm, udmabuf_dev, memfds):
    size = NUM_PAGES * PAGE_SIZE
    fd, mf = memfds.create(size)
    addr = memfds.map(mf, size)
    with fake_mm.steer("cma"):
        memfds.fill(addr, size, b"a")
    buf = create(udmabuf_dev, fd, 0, size)
    assert buf >= 0
    ubuf = udmabuf_dev.dmabuf(buf)
    assert ubuf.pagecount == NUM_PAGES and ubuf.nr_pinned == NUM_PAGES
    assert all(fake_mm.folio_is_longterm_pinnable(f) for f in ubuf.pinned_folios)
    assert ubuf.mmap().read(0, 1) == b"a"


def test_5_list_4k_migration_coherent(fake_mm, udmabuf_dev, memfds):
    size = MEMFD_PAGES * PAGE_SIZE
    fd, mf = memfds.create(size)
    addr = memfds.map(mf, size)
    with fake_mm.steer("movable"):
        memfds.fill(addr, size, b"a")
    items = [udmabuf_create_item(memfd=fd, offset=i * (size >> 2), size=NUM_PAGES * PAGE_SIZE)
             for i in range(NUM_ENTRIES)]
    buf = create_list(udmabuf_dev, items)
    assert buf >= 0 and buf in udmabuf_dev.files.cloexec
    ubuf = udmabuf_dev.dmabuf(buf)
    assert ubuf.pagecount == NUM_ENTRIES * NUM_PAGES
    assert all(f.zone != "Movable" and not f.is_cma for f in ubuf.pinned_folios)      # migrated
    dmap = ubuf.mmap()
    memfds.fill(addr, size, b"b")                      # through the memfd's own mapping
    compare_chunks(dmap, memfds, addr, items)
    assert dmap.read(0, 1) == b"b"


@HUGETLB
def test_6_list_2m_hugetlb_coherent(fake_mm, udmabuf_dev, memfds):
    size = HUGE_MEMFD_PAGES * HPAGE
    fd, mf = memfds.create(size, huge=True)
    addr = memfds.map(mf, size)
    memfds.fill(addr, size, b"a")
    items = [udmabuf_create_item(memfd=fd, offset=i * (size >> 2), size=NUM_PAGES * HPAGE)
             for i in range(NUM_ENTRIES)]                   # 4 x 8 MiB = 32 MiB <= 64 MiB
    buf = create_list(udmabuf_dev, items)
    assert buf >= 0
    ubuf = udmabuf_dev.dmabuf(buf)
    assert ubuf.nr_pinned == NUM_ENTRIES * NUM_PAGES          # one pin per huge folio
    assert ubuf.pagecount == NUM_ENTRIES * NUM_PAGES * 512     # one entry per 4 KiB page
    dmap = ubuf.mmap()
    memfds.fill(addr, size, b"b")
    compare_chunks(dmap, memfds, addr, items)


@HUGETLB
def test_7_pin_before_write_hugetlb(fake_mm, udmabuf_dev, memfds):
    size = HUGE_MEMFD_PAGES * HPAGE
    fd, mf = memfds.create(size, huge=True)
    items = [udmabuf_create_item(memfd=fd, offset=i * (size >> 2), size=NUM_PAGES * HPAGE)
             for i in range(NUM_ENTRIES)]
    buf = create_list(udmabuf_dev, items)                      # the pins allocate the folios
    assert buf >= 0
    dmap = udmabuf_dev.dmabuf(buf).mmap()
    addr = memfds.map(mf, size)
    memfds.fill(addr, size, b"a")
    compare_chunks(dmap, memfds, addr, items)
    memfds.fill(addr, size, b"b")
    compare_chunks(dmap, memfds, addr, items)


# ------------------------------------------------------------------ beyond the selftest


@HUGETLB
def test_hugetlb_item_at_page_offset_inside_a_huge_page(udmabuf_dev, memfds):
    fd, mf = memfds.create(2 * HPAGE, huge=True)
    addr = memfds.map(mf, 2 * HPAGE)
    memfds.k.current.mm.write(addr + HPAGE - PAGE_SIZE, b"X")
    memfds.k.current.mm.write(addr + HPAGE, b"Y")
    buf = create(udmabuf_dev, fd, HPAGE - PAGE_SIZE, 2 * PAGE_SIZE)   # straddles two folios
    ubuf = udmabuf_dev.dmabuf(buf)
    assert ubuf.nr_pinned == 2 and ubuf.offsets[:2] == [HPAGE - PAGE_SIZE, 0]
    assert ubuf.mmap().read(0, 1) == b"X" and ubuf.mmap().read(PAGE_SIZE, 1) == b"Y"


# shmem THPs (shmem_enabled=always): the pool-free way to large folios
THP_SHMEM = pytest.mark.mm_config(shmem_enabled="always")


@THP_SHMEM
def test_thp_shmem_item_inside_a_thp_is_migrated_out_of_cma_whole(fake_mm, udmabuf_dev, memfds):
    """udmabuf over THP shmem: an item at a page offset inside a 2 MiB folio pins that
    folio once, migrated whole out of CMA, and the per-page table starts at the offset."""
    fd, mf = memfds.create(2 * HPAGE)
    addr = memfds.map(mf, 2 * HPAGE)
    with fake_mm.steer("cma"):
        memfds.fill(addr, 2 * HPAGE, b"a")
    old = mf.mapping.pages[0]
    assert old.order == 9 and old.is_cma
    fake_mm.current.mm.write(addr + 3 * PAGE_SIZE, b"Q")
    buf = create(udmabuf_dev, fd, 3 * PAGE_SIZE, 8 * PAGE_SIZE)
    assert buf >= 0
    ubuf = udmabuf_dev.dmabuf(buf)
    assert ubuf.nr_pinned == 1 and ubuf.pagecount == 8
    folio = ubuf.pinned_folios[0]
    assert folio is not old and folio.order == 9 and not folio.is_cma and folio.pincount == 1
    assert ubuf.offsets[:8] == [(3 + i) * PAGE_SIZE for i in range(8)]
    assert ubuf.mmap().read(0, 1) == b"Q"
    memfds.fill(addr, 2 * HPAGE, b"b")               # the mapping refaults onto the new folio
    assert ubuf.mmap().read(7 * PAGE_SIZE, 1) == b"b"


@THP_SHMEM
@pytest.mark.pin_contract(expect="count-honesty")
def test_twin_c_trusts_requested_count_over_thp_shmem(fake_mm, files, memfds):
    """The count-honesty bug shows with THP shmem too, no hugetlb pool needed."""
    dev = TrustCountDevice(fake_mm)
    fd, mf = memfds.create(2 * HPAGE)
    folios = [None] * 1024
    n = dev.udmabuf_pin_folios(mf, 0, 2 * HPAGE, folios)
    assert n == 1024
    real = [f for f in folios if f is not None]
    assert len(real) == 2 and all(f.order == 9 for f in real)
    fake_mm.unpin_folios(real, len(real))


def test_dma_buf_ops(fake_mm, udmabuf_dev, memfds):
    fd, mf = memfds.create(8 * PAGE_SIZE)
    assert mf.pwrite(b"hello", 3 * PAGE_SIZE) == 5
    ubuf = udmabuf_dev.dmabuf(create(udmabuf_dev, fd, 2 * PAGE_SIZE, 4 * PAGE_SIZE))
    assert ubuf.mmap(MAP_PRIVATE) == -errno.EINVAL                    # VM_SHARED required
    assert ubuf.mmap().read(4 * PAGE_SIZE, 1) == -errno.EFAULT        # SIGBUS beyond pagecount
    assert ubuf.mmap().write(4 * PAGE_SIZE, b"x") == -errno.EFAULT
    v = ubuf.vmap()
    assert v.read(PAGE_SIZE, 5) == b"hello"
    assert v.write(0, b"via-vmap") == 8 and mf.pread(8, 2 * PAGE_SIZE) == b"via-vmap"
    ubuf.vunmap(v)
    assert ubuf.end_cpu_access() == -errno.EINVAL                     # no cached sg yet
    assert ubuf.begin_cpu_access() == 0 and ubuf.end_cpu_access() == 0
    sg = ubuf.map_dma_buf()
    ents = [e for _, e in for_each_sgtable_sg(sg)]
    assert len(ents) == 4 and ents[1].page.folio is ubuf.folios[1] and ents[1].dma_address
    ubuf.unmap_dma_buf(sg)


def test_release_on_close_unpins_everything(fake_mm, udmabuf_dev, memfds):
    fd, _ = memfds.create(8 * PAGE_SIZE)
    before = fake_mm.stats.nr_foll_pin_released
    buf = create(udmabuf_dev, fd, 0, 8 * PAGE_SIZE)
    ubuf = udmabuf_dev.dmabuf(buf)
    assert fake_mm.close_fd(buf) == 0
    assert fake_mm.close_fd(buf) == -errno.EBADF                # already closed
    assert ubuf.mmap() == -errno.EBADF                                 # a stale reference
    assert fake_mm.stats.nr_foll_pin_released - before == 8
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released


# ------------------------------------------------------------------ the errno table

# (id, memfd kind, item overrides, expected)
ERRNO_TABLE = [
    ("bad-fd", "sealed", dict(memfd=77), -EBADFD),
    ("not-a-memfd", "sealed", dict(memfd=0), -EBADFD),
    ("no-shrink-seal", "unsealed", {}, -errno.EINVAL),
    ("seal-write", "seal-write", {}, -errno.EINVAL),
    ("seal-future-write", "seal-future-write", {}, -errno.EINVAL),
    ("no-allow-sealing", "no-allow-sealing", {}, -errno.EINVAL),
    ("offset-unaligned", "sealed", dict(offset=100), -errno.EINVAL),
    ("size-unaligned", "sealed", dict(size=PAGE_SIZE + 1), -errno.EINVAL),
    ("size-zero", "sealed", dict(size=0), -errno.EINVAL),
    ("beyond-eof", "sealed", dict(offset=4 * PAGE_SIZE, size=8 * PAGE_SIZE), -errno.EINVAL),
    ("over-size-limit", "big", dict(size=(64 << 20) + PAGE_SIZE), -errno.EINVAL),
    ("at-size-limit", "limit-1mb", dict(size=1 << 20), 4),       # the dma-buf fd
    ("over-size-limit-1mb", "limit-1mb", dict(size=(1 << 20) + PAGE_SIZE), -errno.EINVAL),
    ("pad-ignored", "sealed", dict(pad=0xdead), 4),
]

KINDS = {
    "sealed": dict(seals=F_SEAL_SHRINK),
    "big": dict(seals=F_SEAL_SHRINK, size=(64 << 20) + PAGE_SIZE),
    "limit-1mb": dict(seals=F_SEAL_SHRINK, size=2 << 20, size_limit_mb=1),   # module parameter
    "unsealed": dict(seals=0),
    "seal-write": dict(seals=F_SEAL_SHRINK | F_SEAL_WRITE),
    "seal-future-write": dict(seals=F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE),
    "no-allow-sealing": dict(seals=0, allow_sealing=False),
}


@pytest.mark.mm_config(movablecore=0, cma=0)
@pytest.mark.parametrize("kind,over,expected", [t[1:] for t in ERRNO_TABLE], ids=[t[0] for t in ERRNO_TABLE])
def test_errno_table(fake_mm, udmabuf_dev, memfds, kind, over, expected):
    args = dict(KINDS[kind])
    udmabuf_dev.size_limit_mb = args.pop("size_limit_mb", 64)
    fd, mf = memfds.create(args.pop("size", 8 * PAGE_SIZE), **args)
    assert fd == 3
    item = dict(memfd=fd, offset=0, size=4 * PAGE_SIZE)
    item.update(over)
    assert create_list(udmabuf_dev, [udmabuf_create_item(**item)]) == expected
    if expected < 0:
        assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released
        assert not fake_mm.slab_live


def test_errno_ioctl_level(fake_mm, udmabuf_dev, memfds):
    fd, _ = memfds.create(8 * PAGE_SIZE)
    item = udmabuf_create_item(memfd=fd, size=PAGE_SIZE)
    assert udmabuf_dev.ioctl(0x1234, None) == -errno.ENOTTY
    assert udmabuf_dev.ioctl(UDMABUF_CREATE, None) == -errno.EFAULT
    assert udmabuf_dev.ioctl(UDMABUF_CREATE_LIST, None) == -errno.EFAULT
    assert create_list(udmabuf_dev, []) == -errno.EINVAL                             # count 0
    short = udmabuf_create_list(count=2, list=[item])                                # count > items
    assert udmabuf_dev.ioctl(UDMABUF_CREATE_LIST, short) == -errno.EFAULT
    assert create_list(udmabuf_dev, [item] * 1025) == -errno.EINVAL                   # > list_limit
    udmabuf_dev.list_limit = 2
    assert create_list(udmabuf_dev, [item] * 3) == -errno.EINVAL
    udmabuf_dev.size_limit_mb = 0
    assert create(udmabuf_dev, fd, 0, PAGE_SIZE) == -errno.EINVAL
    # an item that fails after earlier items pinned: everything is unpinned
    udmabuf_dev.list_limit, udmabuf_dev.size_limit_mb = 1024, 64
    bad = udmabuf_create_item(memfd=0, size=PAGE_SIZE)
    assert create_list(udmabuf_dev, [item, item, bad]) == -EBADFD
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released
    udmabuf_dev.files.nofile = 4                                                    # fds 0-3 taken
    assert create(udmabuf_dev, fd, 0, PAGE_SIZE) == -errno.EMFILE
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released


# ------------------------------------------------------------------ the fault matrix

CREATE_SITES = ("memfd_alloc_folio", "try_grab_folio", "alloc_migration_target", "migrate_folio",
                "folio_isolate_lru", "kmalloc", "udmabuf.dma_buf_export",
                "udmabuf.dma_buf_fd", "dma_map_sg")


@pytest.mark.mm_config(gup_retry_limit=8)
# persistent folio_isolate_lru makes memfd_pin_folios' check-and-migrate loop spin for
# ever, and it never checks for a fatal signal: the kernel's outcome (KERNEL), not the driver's.
@pytest.mark.pinfault_matrix(*CREATE_SITES,
                             accept=(-errno.ENOMEM, -errno.EMFILE, -errno.EINVAL, -errno.ENOSPC))
def test_create_matrix(fake_mm, pinfault, udmabuf_dev, memfds):
    fd, mf = memfds.create(8 * PAGE_SIZE)
    with fake_mm.steer("cma"):
        assert mf.pwrite(b"p" * (4 * PAGE_SIZE), 0) == 4 * PAGE_SIZE      # 4 pages in CMA, 4 holes
    items = [udmabuf_create_item(memfd=fd, offset=0, size=6 * PAGE_SIZE),
             udmabuf_create_item(memfd=fd, offset=4 * PAGE_SIZE, size=4 * PAGE_SIZE)]
    buf = pinfault.result(create_list(udmabuf_dev, items))
    if buf >= 0:
        ubuf = udmabuf_dev.dmabuf(buf)
        assert ubuf.pagecount == 10 and ubuf.nr_pinned == 10
        assert ubuf.mmap().read(PAGE_SIZE, 1) == b"p"                      # migrated with its data
        if pinfault.result(ubuf.begin_cpu_access()) == 0:
            assert ubuf.end_cpu_access() == 0
        assert fake_mm.close_fd(buf) == 0
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released
    assert not fake_mm.slab_live


# the matrix is sized from the fault-free run: every kmalloc-site allocation of one
# create_list and of the dma-buf ops below (memdup, ubuf, folios, offsets, pinned, scratch,
# dma_buf_export's file and dma_buf, the cached sg table and its chunk, vmap's pfn array,
# map_dma_buf's table and its chunk) fails in turn
@pytest.mark.mm_config(movablecore=0, cma=0)
@pytest.mark.pinfault_matrix("kmalloc", accept=(-errno.ENOMEM,))
def test_kmalloc_matrix_every_allocation(fake_mm, pinfault, udmabuf_dev, memfds):
    """Every allocation of the create path and of the dma-buf ops fails in turn."""
    fd, _ = memfds.create(8 * PAGE_SIZE)
    buf = pinfault.result(create_list(udmabuf_dev, [udmabuf_create_item(memfd=fd, size=4 * PAGE_SIZE)]))
    if buf >= 0:
        ubuf = udmabuf_dev.dmabuf(buf)
        if pinfault.result(ubuf.begin_cpu_access()) == 0:
            assert ubuf.end_cpu_access() == 0
        v = pinfault.result(ubuf.vmap())
        if not isinstance(v, int):
            ubuf.vunmap(v)
        sg = pinfault.result(ubuf.map_dma_buf())
        if not isinstance(sg, int):
            ubuf.unmap_dma_buf(sg)
        assert fake_mm.close_fd(buf) == 0
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released
    assert not fake_mm.slab_live


# ------------------------------------------------------------------ the buggy twins


@pytest.mark.pin_contract(expect="longterm-placement")
def test_twin_a_pre_611_plain_references_block_cma(fake_mm, files, memfds):
    """Pre-6.11: the pages stay in CMA; cma_alloc fails while the buffer exists."""
    dev = PreV611Device(fake_mm)
    fd, mf = memfds.create(4 * PAGE_SIZE)
    with fake_mm.steer("cma"):
        assert mf.pwrite(b"c" * (4 * PAGE_SIZE), 0) == 4 * PAGE_SIZE
    buf = create(dev, fd, 0, 4 * PAGE_SIZE)
    assert buf >= 0
    ubuf = dev.dmabuf(buf)
    assert all(f.is_cma for f in ubuf.pinned_folios)                          # never migrated
    area = fake_mm.cma_areas[0]
    assert fake_mm.cma_alloc(area, area.count, 0, no_warn=True) is None       # blocked while held
    fake_mm.close_fd(buf)                                                          # put_page per page
    page = fake_mm.cma_alloc(area, area.count, 0, no_warn=True)
    assert page is not None
    fake_mm.cma_release(area, page, area.count)


@pytest.mark.mm_config(boot_reserved="none")
@pytest.mark.pin_contract(expect="longterm-placement")
def test_twin_a_pre_611_plain_references_block_offline(fake_mm, files, memfds):
    """Pre-6.11: the pages stay in ZONE_MOVABLE; offline_pages fails while held."""
    dev = PreV611Device(fake_mm)
    fd, mf = memfds.create(4 * PAGE_SIZE)
    with fake_mm.steer("movable"):
        assert mf.pwrite(b"m" * (4 * PAGE_SIZE), 0) == 4 * PAGE_SIZE
    buf = create(dev, fd, 0, 4 * PAGE_SIZE)
    folio = dev.dmabuf(buf).pinned_folios[0]
    assert folio.zone == "Movable"
    block = next(b for b in fake_mm.memory_blocks.in_zone("Movable")
                 if b.start_pfn <= folio.pfn < b.start_pfn + b.nr_pages)
    assert block.offline() in (-errno.EBUSY, -errno.EINTR)
    fake_mm.close_fd(buf)


@pytest.mark.pinfault_kernels()
def test_the_udmabuf_each_kernel_ships(fake_mm, pinfault, files, memfds, pinfault_kernel):
    """One test, every kernel version (ids kernel-6.1 ... kernel-6.17): each kernel's own
    udmabuf over a memfd in CMA.  6.1 and 6.6 have no memfd_pin_folios (v6.11), so their
    driver holds plain page references where the pages are, which the checker reports as
    a long-term hold in CMA; 6.12 and 6.17 pin with memfd_pin_folios, migrated out."""
    has_pin = hasattr(fake_mm, "memfd_pin_folios")
    assert has_pin is (pinfault_kernel in ("6.12", "6.17"))
    dev = (UdmabufDevice if has_pin else PreV611Device)(fake_mm)
    fd, mf = memfds.create(4 * PAGE_SIZE)
    with fake_mm.steer("cma"):
        assert mf.pwrite(b"k" * (4 * PAGE_SIZE), 0) == 4 * PAGE_SIZE
    if has_pin:
        buf = create(dev, fd, 0, 4 * PAGE_SIZE)
    else:
        with pinfault.expect_violation("longterm-placement"):
            buf = create(dev, fd, 0, 4 * PAGE_SIZE)
    assert buf >= 0
    assert all(f.is_cma is not has_pin for f in dev.dmabuf(buf).pinned_folios)
    fake_mm.close_fd(buf)


@HUGETLB
def test_twin_a_6_1_accepts_hugetlb_memfds(fake_mm, memfds):
    """6.1.y accepts a hugetlbfs memfd: one get_page() per 4 KiB page on the huge folio
    (find_get_page_flags), offsets inside it; a huge page not faulted in yet is -EINVAL.
    Kernel: drivers/dma-buf/udmabuf.c:udmabuf_create, 6.1.176."""
    dev = PreV611Device(fake_mm)
    fd, mf = memfds.create(2 * HPAGE, huge=True)
    addr = memfds.map(mf, 2 * HPAGE)
    fake_mm.current.mm.write(addr + HPAGE - PAGE_SIZE, b"X")
    folio = mf.mapping.lookup(0)
    refs = folio.refcount
    buf = create(dev, fd, HPAGE - 2 * PAGE_SIZE, 2 * PAGE_SIZE)
    assert buf >= 0
    ubuf = dev.dmabuf(buf)
    assert ubuf.pagecount == 2 and ubuf.folios[:2] == [folio, folio]
    assert ubuf.offsets[:2] == [HPAGE - 2 * PAGE_SIZE, HPAGE - PAGE_SIZE]
    assert folio.refcount == refs + 2 and not fake_mm.folio_maybe_dma_pinned(folio)
    assert ubuf.mmap().read(PAGE_SIZE, 1) == b"X"
    assert create(dev, fd, HPAGE, PAGE_SIZE) == -errno.EINVAL     # second huge page: absent
    fake_mm.close_fd(buf)
    assert folio.refcount == refs


def test_twin_a_fixed_driver_keeps_cma_free(fake_mm, udmabuf_dev, memfds):
    """The same scenario with the v6.11+ model: migrated out, cma_alloc succeeds."""
    fd, mf = memfds.create(4 * PAGE_SIZE)
    with fake_mm.steer("cma"):
        assert mf.pwrite(b"c" * (4 * PAGE_SIZE), 0) == 4 * PAGE_SIZE
    buf = create(udmabuf_dev, fd, 0, 4 * PAGE_SIZE)
    ubuf = udmabuf_dev.dmabuf(buf)
    assert not any(f.is_cma for f in ubuf.pinned_folios)
    area = fake_mm.cma_areas[0]
    page = fake_mm.cma_alloc(area, area.count, 0, no_warn=True)
    assert page is not None
    fake_mm.cma_release(area, page, area.count)
    assert ubuf.mmap().read(0, 4) == b"cccc"


@pytest.mark.pin_contract(expect="error-nothing-held")
def test_twin_b_error_path_forgets_to_unpin(fake_mm, pinfault, files, memfds):
    dev = LeakyErrorPathDevice(fake_mm)
    fd, _ = memfds.create(8 * PAGE_SIZE)
    with pinfault.arm("udmabuf.dma_buf_export=1*return"):
        assert create(dev, fd, 0, 8 * PAGE_SIZE) == -errno.ENOMEM
    assert len(dev.leaked) == 8
    fake_mm.unpin_folios(dev.leaked, len(dev.leaked))     # clean up so only rule 2 is shown


def test_twin_b_leak_caught_at_teardown_as_pin_balance(fake_mm, pinfault, files, memfds):
    dev = LeakyErrorPathDevice(fake_mm)
    fd, _ = memfds.create(8 * PAGE_SIZE)
    bad = udmabuf_create_item(memfd=77, size=PAGE_SIZE)                 # 2nd item: -EBADFD
    with pinfault.expect_violation("error-nothing-held") as caught:
        assert create_list(dev, [udmabuf_create_item(memfd=fd, size=8 * PAGE_SIZE), bad]) == -EBADFD
    assert "returned -EBADFD but left 8 new pin(s)" in caught[0].message
    with pinfault.expect_violation("pin-balance") as caught:
        pass                                                            # the final check
    assert "8 pin(s) never released" in caught[0].message
    fake_mm.unpin_folios(dev.leaked, len(dev.leaked))


@HUGETLB
@pytest.mark.pin_contract(expect="count-honesty")
def test_twin_c_trusts_requested_count(fake_mm, files, memfds):
    dev = TrustCountDevice(fake_mm)
    fd, mf = memfds.create(2 * HPAGE, huge=True)
    folios = [None] * 1024
    n = dev.udmabuf_pin_folios(mf, 0, 2 * HPAGE, folios)   # 2 huge folios pinned ...
    assert n == 1024                                        # ... 1024 "pages" reported
    real = [f for f in folios if f is not None]
    assert len(real) == 2
    fake_mm.unpin_folios(real, len(real))


def test_twin_c_is_invisible_with_small_folios(fake_mm, files, memfds):
    """With 4 KiB shmem folios the requested and returned counts agree: only large
    folios expose the bug, which is why the hugetlb selftests matter."""
    dev = TrustCountDevice(fake_mm)
    fd, _ = memfds.create(4 * PAGE_SIZE)
    buf = create(dev, fd, 0, 4 * PAGE_SIZE)
    assert buf >= 0 and dev.dmabuf(buf).nr_pinned == 4
