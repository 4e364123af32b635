"""Helpers shared by the contract-checker tests."""

from __future__ import annotations

from pytest_pinfault.mm import (MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, FakeMM,
                                MMConfig)

NPAGES = 4
PAGE = 4096


def machine(**kw) -> FakeMM:
    """A small machine with CMA and ZONE_MOVABLE and a short GUP retry bound."""
    cfg = dict(ram="1GiB", cma="64MiB", movablecore="128MiB", gup_retry_limit=8)
    cfg.update(kw)
    return FakeMM(MMConfig(**cfg))


def anon_buffer(k, where="cma", npages=NPAGES):
    """An anonymous buffer of *npages* written (faulted in) under steer(*where*)."""
    mm = k.current.mm
    addr = mm.mmap(npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    with k.steer(where):
        assert mm.write(addr, b"payload!" * (npages * 512)) == npages * PAGE
    return addr
