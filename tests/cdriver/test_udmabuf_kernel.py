"""drivers/dma-buf/udmabuf.c of Linux 6.1 and 6.12, compiled unmodified from Debian's
``linux-source-6.1`` / ``linux-source-6.12`` packages (extracted at test time into the
cache, never committed; skipped with the reason when the packages are not installed):
the kernel selftest's cases, the errno table, a fault matrix over the sites the driver
reaches, and the 6.1 driver's known placement flaw (plain page references held in CMA /
ZONE_MOVABLE), which the 6.12 driver no longer has."""

import errno

import pytest

from pytest_pinfault.cdriver.kernel_source import KernelSourceUnavailable, kernel_tree
from pytest_pinfault.mm import (F_SEAL_SHRINK, F_SEAL_WRITE, MAP_SHARED, MFD_ALLOW_SEALING, MFD_HUGETLB,
                                PAGE_SIZE, PROT_READ, PROT_WRITE)

FILES = ["drivers/dma-buf/udmabuf.c", "include/uapi/linux/udmabuf.h"]
VERSIONS = ["6.1", "6.12"]
NUM_PAGES, NUM_ENTRIES = 4, 4          # the selftest's
EBADFD = errno.EBADFD

# The selftest's machine has no ZONE_MOVABLE and no CMA: the 6.1 driver's plain page
# references are only a finding where placement matters (the placement tests below).
pytestmark = pytest.mark.mm_config(ram="1GiB", cma=0, movablecore=0)
PLACEMENT = pytest.mark.mm_config(cma="64MiB", movablecore="128MiB")
HUGETLB = pytest.mark.mm_config(movablecore=0, cma=0, hugetlb={"2MiB": 20})


@pytest.fixture(scope="session", params=VERSIONS)
def linux(request):
    try:
        return request.param, kernel_tree(request.param, FILES)
    except KernelSourceUnavailable as e:
        pytest.skip(str(e))


class Udmabuf:
    """/dev/udmabuf of one kernel version, with the selftest's helpers."""

    def __init__(self, k, drv, version):
        self.k, self.drv, self.version = k, drv, version
        self.dev = drv.open("udmabuf")
        self.stdin = 0                                      # the task's stdin: not a memfd
        self.arg = drv.user_alloc(2 * PAGE_SIZE)
        self.CREATE = drv.const("UDMABUF_CREATE")
        self.CREATE_LIST = drv.const("UDMABUF_CREATE_LIST")

    def memfd(self, size, huge=False, seals=F_SEAL_SHRINK):
        mf = self.k.memfd_create("udmabuf-test", MFD_ALLOW_SEALING | (MFD_HUGETLB if huge else 0))
        if seals & F_SEAL_SHRINK:
            assert mf.add_seals(F_SEAL_SHRINK) == 0
        assert mf.ftruncate(size) == 0
        if seals & F_SEAL_WRITE:
            assert mf.add_seals(F_SEAL_WRITE) == 0
        return self.drv.fd_install(mf), mf

    def map(self, mf, size):
        addr = self.k.current.mm.mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, file=mf)
        assert addr >= 0
        return addr

    def create(self, fd, offset, size, flags=0):
        self.drv.put_user(self.arg, "struct udmabuf_create",
                          {"memfd": fd, "flags": flags, "offset": offset, "size": size})
        return self.dev.ioctl(self.CREATE, self.arg)

    def create_list(self, items, flags=0):
        head = self.drv.put_user(self.arg, "struct udmabuf_create_list", {"flags": flags, "count": len(items)})
        if items:
            self.drv.put_user(self.arg + len(head), f"struct udmabuf_create_item[{len(items)}]",
                              [{"memfd": fd, "offset": off, "size": size} for fd, off, size in items])
        return self.dev.ioctl(self.CREATE_LIST, self.arg)


@pytest.fixture
def udmabuf(fake_mm, load_c_driver, linux):
    version, tree = linux
    drv = load_c_driver(tree / FILES[0], include_dirs=[tree / "include" / "uapi"],
                        uapi_headers=[tree / FILES[1]])
    return Udmabuf(fake_mm, drv, version)


def write_pages(k, addr, size, ch, step=PAGE_SIZE):
    for off in range(0, size, step):
        assert k.current.mm.write(addr + off, ch) == 1


# ------------------------------------------------------------------ the kernel selftest


def test_1_misaligned_offset_fails(udmabuf):
    fd, _ = udmabuf.memfd(NUM_PAGES * PAGE_SIZE)
    assert udmabuf.create(fd, PAGE_SIZE // 2, PAGE_SIZE) == -errno.EINVAL


def test_2_misaligned_size_fails(udmabuf):
    fd, _ = udmabuf.memfd(NUM_PAGES * PAGE_SIZE)
    assert udmabuf.create(fd, 0, PAGE_SIZE // 2) == -errno.EINVAL


def test_3_not_a_memfd_fails(udmabuf):
    udmabuf.memfd(NUM_PAGES * PAGE_SIZE)
    assert udmabuf.create(udmabuf.stdin, 0, NUM_PAGES * PAGE_SIZE) == -EBADFD


def test_4_create_works(fake_mm, udmabuf):
    size = NUM_PAGES * PAGE_SIZE
    fd, mf = udmabuf.memfd(size)
    write_pages(fake_mm, udmabuf.map(mf, size), size, b"a")
    buf = udmabuf.create(fd, 0, size)
    assert buf >= 0
    assert udmabuf.drv.close(buf) == 0


def _list_case(fake_mm, udmabuf, page, memfd_pages, huge):
    size = memfd_pages * page
    fd, mf = udmabuf.memfd(size, huge=huge)
    addr1 = udmabuf.map(mf, size)
    write_pages(fake_mm, addr1, size, b"a", PAGE_SIZE)
    items = [(fd, i * (size // NUM_ENTRIES), NUM_PAGES * PAGE_SIZE) for i in range(NUM_ENTRIES)]
    buf = udmabuf.create_list(items)
    assert buf >= 0, buf
    write_pages(fake_mm, addr1, size, b"b", PAGE_SIZE)      # after the pin: must be seen
    dmabuf = udmabuf.drv.dmabuf(buf)
    pos = 0
    for _, off, length in items:                            # compare_chunks()
        for p in range(0, length, PAGE_SIZE):
            assert dmabuf.mmap_read(pos + p, 1) == fake_mm.current.mm.read(addr1 + off + p, 1) == b"b"
        pos += length
    assert udmabuf.drv.close(buf) == 0


def test_5_list_of_4k_pages(fake_mm, udmabuf):
    _list_case(fake_mm, udmabuf, PAGE_SIZE, 1024, huge=False)


@HUGETLB
def test_6_list_of_2m_huge_pages(fake_mm, udmabuf):
    _list_case(fake_mm, udmabuf, 2 << 20, 16, huge=True)


# ------------------------------------------------------------------ errno table


@pytest.mark.parametrize("case, expected", [
    ("no F_SEAL_SHRINK", -errno.EINVAL),
    ("F_SEAL_WRITE", -errno.EINVAL),
    ("closed fd", -EBADFD),
    ("zero size", -errno.EINVAL),
    ("over size_limit_mb", -errno.EINVAL),
    ("beyond the memfd", -errno.EINVAL),
    ("bad user pointer", -errno.EFAULT),
    ("list over list_limit", -errno.EINVAL),
    ("unknown ioctl", -errno.ENOTTY),
])
def test_errno_table(fake_mm, udmabuf, case, expected):
    size = NUM_PAGES * PAGE_SIZE
    if case == "no F_SEAL_SHRINK":
        rc = udmabuf.create(udmabuf.memfd(size, seals=0)[0], 0, size)
    elif case == "F_SEAL_WRITE":
        rc = udmabuf.create(udmabuf.memfd(size, seals=F_SEAL_SHRINK | F_SEAL_WRITE)[0], 0, size)
    elif case == "closed fd":
        rc = udmabuf.create(77, 0, size)
    elif case == "zero size":
        rc = udmabuf.create(udmabuf.memfd(size)[0], 0, 0)
    elif case == "over size_limit_mb":
        rc = udmabuf.create(udmabuf.memfd(size)[0], 0, 65 << 20)
    elif case == "beyond the memfd":
        rc = udmabuf.create(udmabuf.memfd(size)[0], size, size)
    elif case == "bad user pointer":
        rc = udmabuf.dev.ioctl(udmabuf.CREATE, 0x10)
    elif case == "list over list_limit":
        udmabuf.drv.put_user(udmabuf.arg, "struct udmabuf_create_list", {"flags": 0, "count": 1025})
        rc = udmabuf.dev.ioctl(udmabuf.CREATE_LIST, udmabuf.arg)
    else:
        rc = udmabuf.dev.ioctl(0x1234, udmabuf.arg)
    if case == "beyond the memfd" and udmabuf.version == "6.1":
        expected = -errno.EINVAL if rc == -errno.EINVAL else expected   # 6.1: shmem_read_mapping_page
    assert rc == expected
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released


def test_module_param_size_limit(fake_mm, load_c_driver, linux):
    version, tree = linux
    drv = load_c_driver(tree / FILES[0], include_dirs=[tree / "include" / "uapi"], uapi_headers=[tree / FILES[1]],
                        params={"size_limit_mb": 1})
    u = Udmabuf(fake_mm, drv, version)
    fd, _ = u.memfd(2 << 20)
    assert u.create(fd, 0, 2 << 20) == -errno.EINVAL
    buf = u.create(fd, 0, 1 << 20)
    assert buf >= 0 and drv.close(buf) == 0


# ------------------------------------------------------------------ placement


@pytest.fixture
def cma_backed(fake_mm, udmabuf):
    """A sealed memfd whose 4 pages sit in CMA."""
    fd, mf = udmabuf.memfd(4 * PAGE_SIZE)
    with fake_mm.steer("cma"):
        assert mf.pwrite(b"c" * (4 * PAGE_SIZE), 0) == 4 * PAGE_SIZE
    return fd, mf


@PLACEMENT
def test_6_12_migrates_out_of_cma_before_pinning(fake_mm, udmabuf, cma_backed):
    if udmabuf.version != "6.12":
        pytest.skip("6.1 keeps plain references in place: see the next test")
    buf = udmabuf.create(cma_backed[0], 0, 4 * PAGE_SIZE)
    assert buf >= 0
    area = fake_mm.cma_areas[0]
    page = fake_mm.cma_alloc(area, area.count, 0, no_warn=True)
    assert page is not None                                   # nothing of the buffer in CMA
    fake_mm.cma_release(area, page, area.count)
    assert udmabuf.drv.dmabuf(buf).mmap_read(0, 4) == b"cccc"


@PLACEMENT
@pytest.mark.pin_contract(expect="longterm-placement")
def test_6_1_holds_plain_references_in_cma(fake_mm, udmabuf, cma_backed):
    """The known 6.1 flaw: shmem_read_mapping_page() references kept for the dma-buf's
    lifetime, never migrated: CMA stays blocked while the buffer exists."""
    if udmabuf.version != "6.1":
        pytest.skip("fixed since 6.11 (memfd_pin_folios)")
    buf = udmabuf.create(cma_backed[0], 0, 4 * PAGE_SIZE)
    assert buf >= 0
    area = fake_mm.cma_areas[0]
    assert fake_mm.cma_alloc(area, area.count, 0, no_warn=True) is None
    assert udmabuf.drv.close(buf) == 0
    page = fake_mm.cma_alloc(area, area.count, 0, no_warn=True)     # free again once released
    assert page is not None
    fake_mm.cma_release(area, page, area.count)


@PLACEMENT
@pytest.mark.mm_config(boot_reserved="none")
def test_6_1_holds_plain_references_in_zone_movable(fake_mm, pinfault, udmabuf):
    """The same flaw with the default placement of shmem pages (ZONE_MOVABLE): every
    successful 6.1 create holds movable pages long-term, and offlining them fails."""
    if udmabuf.version != "6.1":
        pytest.skip("fixed since 6.11 (memfd_pin_folios)")
    fd, mf = udmabuf.memfd(4 * PAGE_SIZE)
    with pinfault.expect_violation("longterm-placement") as caught:
        buf = udmabuf.create(fd, 0, 4 * PAGE_SIZE)
        assert buf >= 0
    assert "4 long-term holds sit in ZONE_MOVABLE (taken by udmabuf_ioctl)" in [v.message for v in caught]
    assert udmabuf.drv.close(buf) == 0


# ------------------------------------------------------------------ dma-buf ops


def test_dma_buf_ops(fake_mm, udmabuf):
    fd, mf = udmabuf.memfd(8 * PAGE_SIZE)
    assert mf.pwrite(b"xyz", 3 * PAGE_SIZE) == 3
    buf = udmabuf.create(fd, 2 * PAGE_SIZE, 4 * PAGE_SIZE)
    d = udmabuf.drv.dmabuf(buf)
    assert d.size == 4 * PAGE_SIZE
    assert d.begin_cpu_access() == 0 and d.end_cpu_access() == 0
    rc, ents = d.map_attachment()
    assert rc == 0 and sum(length for _, _, length, _ in ents) == 4 * PAGE_SIZE
    assert d.mmap_read(PAGE_SIZE, 3) == b"xyz"
    if udmabuf.version == "6.12":
        rc, data = d.vmap()
        assert rc == 0 and data[PAGE_SIZE:PAGE_SIZE + 3] == b"xyz"
    assert udmabuf.drv.close(buf) == 0
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released


# ------------------------------------------------------------------ fault matrix


def test_6_12_add_to_unpin_list_failure_leaks_pins(fake_mm, pinfault, udmabuf, linux):
    """The 6.12 finding in one case: fail the first struct udmabuf_folio allocation
    (selected by its C caller) and the 4 pinned folios are never unpinned."""
    if udmabuf.version != "6.12":
        pytest.skip("6.1 has no unpin list (it takes plain references)")
    fd, mf = udmabuf.memfd(4 * PAGE_SIZE)
    assert mf.pwrite(b"u" * (4 * PAGE_SIZE), 0) == 4 * PAGE_SIZE
    with pinfault.expect_violation("error-nothing-held") as caught:
        with pinfault.arm("kmalloc[caller=add_to_unpin_list]=1*return"):
            assert udmabuf.create(fd, 0, 4 * PAGE_SIZE) == -errno.ENOMEM
    assert "udmabuf_ioctl returned -ENOMEM but left 4 new pin(s)" in caught[0].message
    (rec,) = pinfault.fired
    src = linux[1] / FILES[0]
    line = next(i for i, ln in enumerate(src.read_text().splitlines(), 1) if "kzalloc(sizeof(*ubuf_folio)" in ln)
    assert rec.caller == f"<C> {src}:{line} add_to_unpin_list"
    folios = [mf.mapping.lookup(i) for i in range(4)]
    assert all(f.pincount == 1 for f in folios)
    fake_mm.unpin_folios(folios, 4)                      # clean up: only the finding is shown



@pytest.mark.mm_config(gup_retry_limit=8, cma="64MiB")
@pytest.mark.pin_contract(disable=["termination"],
                          reason="persistent isolation/migration faults exhaust the core's retry bound")
@pytest.mark.pinfault_matrix("kmalloc", "memfd_alloc_folio", "try_grab_folio", "folio_isolate_lru",
                             "alloc_migration_target", "migrate_folio", "lru_add_drain_all", "dma_map_sg",
                             "dma_map_page",
                             accept=(-errno.ENOMEM, -errno.EINVAL, -errno.ENOSPC, -errno.EAGAIN, -errno.EMFILE,
                                     -errno.EIO))
def test_create_list_matrix(fake_mm, pinfault, load_c_driver, linux):
    version, tree = linux
    drv = load_c_driver(tree / FILES[0], include_dirs=[tree / "include" / "uapi"], uapi_headers=[tree / FILES[1]],
                        init=False)
    if pinfault.result(drv.init()) != 0:             # misc_register's device allocation
        return
    udmabuf = Udmabuf(fake_mm, drv, version)
    fd, mf = udmabuf.memfd(8 * PAGE_SIZE)
    # 6.12: 4 pages in CMA (migrated by memfd_pin_folios), 4 holes; 6.1 would keep CMA
    # pages (its flaw, shown above), so its error paths run on ZONE_NORMAL pages
    with fake_mm.steer("cma" if udmabuf.version == "6.12" else "normal"):
        assert mf.pwrite(b"p" * (4 * PAGE_SIZE), 0) == 4 * PAGE_SIZE
    caught = []
    try:
        with pinfault.expect_violation("error-nothing-held") as caught:
            buf = pinfault.result(udmabuf.create_list([(fd, 0, 6 * PAGE_SIZE), (fd, 4 * PAGE_SIZE, 4 * PAGE_SIZE)]))
    except AssertionError as e:
        assert "but none happened" in str(e)
        caught = []
    # A real bug of the 6.12 driver (docs/cdriver.md): when add_to_unpin_list()'s
    # kzalloc of a struct udmabuf_folio fails, udmabuf_pin_folios() returns -ENOMEM and
    # the folios memfd_pin_folios() pinned but not yet listed stay pinned.
    leak = udmabuf.version == "6.12" and any(r.site == "kmalloc" and r.caller.endswith(" add_to_unpin_list")
                                              for r in pinfault.fired)
    assert bool(caught) == leak, (caught, pinfault.fired)
    if leak:
        assert buf == -errno.ENOMEM and "udmabuf_ioctl returned -ENOMEM but left" in caught[0].message
        for folio in {mf.mapping.lookup(i) for i in range(8)} - {None}:
            while folio.pincount:                           # clean up: only the finding is shown
                fake_mm.unpin_folio(folio)
    if buf >= 0:
        d = udmabuf.drv.dmabuf(buf)
        assert d.mmap_read(PAGE_SIZE, 1) == b"p"
        if pinfault.result(d.begin_cpu_access()) == 0:
            assert d.end_cpu_access() == 0
        assert udmabuf.drv.close(buf) == 0
    assert fake_mm.stats.nr_foll_pin_acquired == fake_mm.stats.nr_foll_pin_released


@pytest.mark.mm_config(kernel="6.1")
def test_6_12_driver_on_a_6_1_machine_finds_no_memfd_pin_folios(fake_mm, pinfault, udmabuf):
    """memfd_pin_folios exists from v6.11: the 6.12 driver on a kernel="6.1" machine
    calls a function that kernel does not have (the real module would not load with
    "Unknown symbol"): the bridge records an unknown_symbol warning and returns -ENOSYS,
    which the driver's error path passes on.  The 6.1 driver never calls it."""
    size = NUM_PAGES * PAGE_SIZE
    fd, mf = udmabuf.memfd(size)
    write_pages(fake_mm, udmabuf.map(mf, size), size, b"a")
    if udmabuf.version == "6.1":
        buf = udmabuf.create(fd, 0, size)
        assert buf >= 0 and udmabuf.drv.close(buf) == 0
        return
    with pinfault.expect_violation("kernel-warnings") as caught:
        assert udmabuf.create(fd, 0, size) == -errno.ENOSYS
    assert "Unknown symbol memfd_pin_folios" in caught[0].message and "kernel 6.1 has no" in caught[0].message
