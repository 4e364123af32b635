"""The design's §3 sketch, verbatim: the public surface it uses must keep working."""

from __future__ import annotations


def test_design_sketch_runs():
    """The fake-mm sketch from docs/design §3 runs as written."""
    import errno
    from pytest_pinfault import FakeMM, MMConfig, Out
    from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MFD_ALLOW_SEALING,
                                    F_SEAL_SHRINK, PROT_READ, PROT_WRITE, MAP_SHARED)

    k = FakeMM(MMConfig(ram="4GiB", movablecore="512MiB", cma="128MiB"))
    f = k.memfd_create("guest-ram", MFD_ALLOW_SEALING)
    assert f.ftruncate(16 << 20) == 0 and f.add_seals(F_SEAL_SHRINK) == 0
    with k.steer("cma"):                       # movable allocations prefer CMA here
        f.pwrite(b"x" * (16 << 20), 0)         # page cache filled, folios in CMA
    folios, off = [], Out(0)
    n = k.memfd_pin_folios(f, 0, (16 << 20) - 1, folios, 4096, off)
    assert n == 4096 and off.value == 0
    assert all(k.folio_is_longterm_pinnable(x) for x in folios)      # migrated out
    assert f.pread(4, 0) == b"xxxx"                                   # data intact
    k.unpin_folios(folios, n)
    assert k.memfd_pin_folios(f, 10, 5, [], 1, Out(0)) == -errno.EINVAL

    mm = k.current.mm
    addr = mm.mmap(1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, file=f, offset=0)
    pages = []
    assert k.pin_user_pages(addr, 256, FOLL_LONGTERM | FOLL_WRITE, pages) == 256
    k.unpin_user_pages(pages, 256)


def test_design_sketch_end_state():
    """After the sketch every pin is released and the folios really left CMA."""
    from pytest_pinfault import FakeMM, MMConfig, Out
    from pytest_pinfault.mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_SHARED, MFD_ALLOW_SEALING,
                                    PROT_READ, PROT_WRITE)

    k = FakeMM(MMConfig(ram="4GiB", movablecore="512MiB", cma="128MiB"))
    f = k.memfd_create("guest-ram", MFD_ALLOW_SEALING)
    f.ftruncate(16 << 20)
    with k.steer("cma"):
        f.pwrite(b"x" * (16 << 20), 0)
    assert all(x.is_cma for x in f.mapping.pages.values())
    folios = []
    n = k.memfd_pin_folios(f, 0, (16 << 20) - 1, folios, 4096, Out(0))
    assert n == 4096
    assert all(f.mapping.lookup(i) is folios[i] for i in range(4096))
    assert not any(x.is_cma or x.zone == "Movable" for x in folios)
    assert k.stats.pgmigrate_success == 4096
    k.unpin_folios(folios, n)
    mm = k.current.mm
    addr = mm.mmap(1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, file=f, offset=0)
    pages = []
    assert k.pin_user_pages(addr, 256, FOLL_LONGTERM | FOLL_WRITE, pages) == 256
    assert [p.folio for p in pages] == folios[:256]
    k.unpin_user_pages(pages, 256)
    # 4096 pins dropped for the migration, 4096 re-pinned, 256 through the mapping
    assert k.stats.nr_foll_pin_acquired == k.stats.nr_foll_pin_released == 2 * 4096 + 256
    assert k.warnings == [] and k.livelocks == []
    assert k.current.flags == 0
