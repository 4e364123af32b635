"""A Faker provider for random-but-realistic fake machines, workloads and fault specs.

Opt-in: this module imports :mod:`faker` and is only imported when the feature is used
(the ``pinfault_faker`` fixture, or ``faker.add_provider(MachineProvider)`` by hand).  It
never imports pytest.  Every random choice goes through the provider's generator
(``self.generator.random`` and the ``random_*`` helpers of
:class:`faker.providers.BaseProvider`), so seeding the Faker instance -- for example
through Faker's own pytest plugin and its ``faker_seed`` fixture -- makes every output
reproducible.

::

    from faker import Faker
    from pytest_pinfault import FakeMM
    from pytest_pinfault.faker_provider import MachineProvider, replay

    fake = Faker()
    fake.add_provider(MachineProvider)
    fake.seed_instance(1234)
    config = fake.mm_config(thp="never")      # an MMConfig; overrides are kept
    k = FakeMM(config)
    results = replay(k, fake.workload(n=20, config=config))
    spec = fake.fault_spec()                  # e.g. "folio_isolate_lru[nth=2]=1*return"

Workload operations
-------------------
:meth:`MachineProvider.workload` returns a list of plain tuples; :func:`replay` runs them
on a :class:`~pytest_pinfault.FakeMM` (a property test may also interpret them itself).
Three numbered lists are built while replaying: *regions* (every ``mmap_anon`` and
``memfd`` op creates the next one, numbered from 0 whether or not it succeeded), *pins*
(every ``pin`` op) and *cma allocations* (every ``cma_alloc`` op).

``("mmap_anon", length, where)``
    ``mmap`` *length* bytes (a multiple of 4 KiB) of private anonymous memory in the
    current task's mm and write to every page, inside ``fake_mm.steer(where)`` when
    *where* is ``"cma"``, ``"movable"`` or ``"normal"`` (``None``: no steering).
``("memfd", size, hugetlb)``
    ``memfd_create`` (``MFD_HUGETLB`` of the default huge page size when *hugetlb*),
    ``ftruncate`` to *size* bytes (a multiple of 2 MiB when *hugetlb*, else of 4 KiB),
    ``fallocate`` it and map it ``MAP_SHARED``.
``("pin", region, longterm)``
    ``pin_user_pages`` over the whole of region number *region* with ``FOLL_WRITE`` (and
    ``FOLL_LONGTERM`` when *longterm*).  Only emitted for regions that are still mapped.
``("unpin", pin)``
    ``unpin_user_pages`` of what pin number *pin* pinned.  Emitted at most once per pin.
``("cma_alloc", count)``
    ``cma_alloc`` of *count* pages (a power of two, 1..512) from the first CMA area.
    Only emitted when the machine has CMA (or no config was given).
``("cma_release", alloc)``
    ``cma_release`` of cma allocation number *alloc*.  Emitted at most once per alloc.
``("munmap", region)``
    ``munmap`` region number *region* (pins taken on it stay valid, as in the kernel).
``("drain",)``
    ``lru_add_drain_all()``.

Operation tuples always have a string name first, then ints, bools or (for ``where``) a
string or ``None``.  With ``balanced=True`` (the default) the list ends with the
``unpin`` / ``cma_release`` ops that give back everything still held.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterable, Mapping
from typing import Any

from faker.providers import BaseProvider

from .mm.config import (DEFAULT_KERNEL, KERNELS, QUIRK_KERNELS, ConfigError, MMConfig, QUIRKS,
                        kernel_key, parse_size)
from .mm.memblock import compute_layout

__all__ = ["MachineProvider", "WORKLOAD_OPS", "replay"]

MiB = 1 << 20
GiB = 1 << 30
_BLOCK = 128 * MiB                         # movablecore / ram granularity
PAGE_SIZE = 4096
HPAGE_2M = 2 * MiB

#: Operation names :meth:`MachineProvider.workload` can produce, with their arity.
WORKLOAD_OPS: Mapping[str, int] = {
    "mmap_anon": 3, "memfd": 3, "pin": 3, "unpin": 2,
    "cma_alloc": 2, "cma_release": 2, "munmap": 2, "drain": 1,
}

_RAM_CHOICES = (1 * GiB, 2 * GiB, 4 * GiB, 8 * GiB, 16 * GiB)
_CMA_SIZES = (16 * MiB, 32 * MiB, 64 * MiB, 128 * MiB, 256 * MiB, 512 * MiB)
_MAX_TRIES = 200


def _fmt(nbytes: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return str(nbytes)


def _split(ram: int) -> tuple[int, int]:
    """(RAM below 4 GiB, RAM above 4 GiB) as QEMU's ``pc`` machine splits it."""
    low = ram if ram < 3 * GiB + GiB // 2 else 3 * GiB
    return low, ram - low


class MachineProvider(BaseProvider):
    """Faker provider: ``mm_config()``, ``workload()`` and ``fault_spec()``."""

    # ------------------------------------------------------------------ helpers
    def _chance(self, p: float) -> bool:
        r: float = self.generator.random.random()
        return r < p

    def _weighted(self, choices: Mapping[Any, float]) -> Any:
        keys = list(choices)
        return self.generator.random.choices(keys, weights=[choices[k] for k in keys])[0]

    # ------------------------------------------------------------------ machines
    def mm_config(self, **overrides: Any) -> MMConfig:
        """A random, valid :class:`~pytest_pinfault.MMConfig` of a small x86-64 VM.

        RAM is 1, 2, 4, 8 or 16 GiB; ``movablecore`` is 0 or a multiple of 128 MiB up to
        about a quarter of the highest zone; 0 to 2 CMA areas of 16 MiB..512 MiB (at most
        an eighth of the RAM below 4 GiB in all), placed by default or inside explicit
        bounds; a 2 MiB hugetlb pool (and rarely a 1 GiB one on 8 GiB+ machines) that
        fits in the memory left; a THP mode; 1..4 CPUs; a seed; a kernel version
        (:data:`~pytest_pinfault.mm.config.KERNELS`, the default v6.17 most often) that
        the overridden ``quirks`` and ``shmem_mthp`` allow (``QUIRK_KERNELS``; per-size
        shmem controls from v6.11 on); rarely a quirk that version's history has.

        Keyword *overrides* are MMConfig fields kept as given; the random fields are
        chosen to fit them (e.g. ``ram="2GiB"`` sizes movablecore and CMA for 2 GiB).
        Every candidate is checked by constructing the MMConfig and computing its boot
        layout (zones, reservations, CMA placement); a candidate that fails is redrawn.
        Raises :class:`~pytest_pinfault.ConfigError` only when the overrides themselves
        cannot be satisfied.
        """
        unknown = set(overrides) - set(MMConfig.__dataclass_fields__)
        if unknown:
            raise TypeError(f"mm_config: unknown MMConfig fields {sorted(unknown)}")
        last: ConfigError | None = None
        for _ in range(_MAX_TRIES):
            fields = self._draw_config(overrides)
            fields.update(overrides)
            try:
                cfg = MMConfig(**fields)
                compute_layout(cfg)
            except ConfigError as exc:
                last = exc
                continue
            return cfg
        raise ConfigError(f"mm_config: no valid machine with overrides {overrides!r} "
                          f"after {_MAX_TRIES} draws; last error: {last}")

    def _draw_config(self, ov: Mapping[str, Any]) -> dict[str, Any]:
        r = self.generator.random
        out: dict[str, Any] = {}
        if "ram" in ov:
            try:
                ram = parse_size(ov["ram"], "ram")
            except ConfigError:
                ram = 4 * GiB         # the MMConfig built from the override reports it
        else:
            ram = self.random_element(_RAM_CHOICES)
            out["ram"] = _fmt(ram)
        low, high = _split(ram)
        top_zone = high if high else max(0, low - 16 * MiB)   # Normal, else DMA32

        if "movablecore" in ov:
            try:
                movable = parse_size(ov["movablecore"], "movablecore")
            except ConfigError:
                movable = 0
        else:
            max_blocks = (top_zone // 4) // _BLOCK
            movable = 0
            if max_blocks and self._chance(0.6):
                movable = r.randint(1, max_blocks) * _BLOCK
            out["movablecore"] = _fmt(movable) if movable else 0

        cma_total = 0
        if "cma" not in ov:
            cma, cma_total = self._draw_cma(ram, low, high, movable)
            out["cma"] = cma

        if "hugetlb" not in ov:
            # what the buddy allocator has outside ZONE_MOVABLE and CMA, roughly
            budget = ram - movable - cma_total - 64 * MiB
            pools: dict[str, int] = {}
            if self._chance(0.5):
                pools["2MiB"] = r.randint(1, max(1, min(512, budget // 8 // HPAGE_2M)))
            if ram >= 8 * GiB and self._chance(0.15) and high - movable >= 2 * GiB:
                pools["1GiB"] = 1
            out["hugetlb"] = pools
            if "default_hugepagesz" not in ov and "1GiB" in pools and self._chance(0.3):
                out["default_hugepagesz"] = "1GiB"
        if "thp" not in ov:
            out["thp"] = self._weighted({"always": 0.5, "madvise": 0.35, "never": 0.15})
        if "memlock" not in ov:
            out["memlock"] = self._weighted({"64KiB": 0.15, "8MiB": 0.6, "64MiB": 0.15, "1GiB": 0.1})
        if "nr_cpus" not in ov:
            out["nr_cpus"] = r.randint(1, 4)
        if "seed" not in ov:
            out["seed"] = r.randrange(1 << 32)
        if "kernel" not in ov:
            out["kernel"] = self._draw_kernel(ov)
        kernel = out.get("kernel", ov.get("kernel"))
        if "quirks" not in ov:
            # only quirks the version's history has (a bad kernel override: MMConfig says so)
            allowed = [q for q in sorted(QUIRKS) if kernel not in KERNELS or kernel in QUIRK_KERNELS[q]]
            out["quirks"] = tuple(q for q in allowed if self._chance(0.05))
        return out

    def _draw_kernel(self, ov: Mapping[str, Any]) -> str:
        """A version the overrides allow: every overridden quirk in its history, and
        v6.11+ for per-size shmem controls.  Overrides no version allows get the default
        (whose MMConfig then names the problem, if any)."""
        quirks: Any = ov.get("quirks", ())
        if isinstance(quirks, str):
            quirks = [q.strip() for q in quirks.split(",") if q.strip()]
        known = [q for q in quirks if isinstance(q, str) and q in QUIRK_KERNELS]
        mthp = ov.get("shmem_mthp")
        candidates = [k for k in KERNELS
                      if all(k in QUIRK_KERNELS[q] for q in known)
                      and not (mthp and kernel_key(k) < (6, 11))]
        if not candidates:
            return DEFAULT_KERNEL
        weights = {k: (0.4 if k == DEFAULT_KERNEL else 0.2) for k in candidates}
        kernel: str = self._weighted(weights)
        return kernel

    def _draw_cma(self, ram: int, low: int, high: int, movable: int) -> tuple[Any, int]:
        r = self.generator.random
        n = self._weighted({0: 0.4, 1: 0.4, 2: 0.2})
        if not n:
            return 0, 0
        budget = low // 8
        areas: dict[str, str] = {}
        total = 0
        for i in range(n):
            sizes = [s for s in _CMA_SIZES if total + s <= budget]
            if not sizes:
                break
            size = self.random_element(sizes)
            total += size
            name = "reserved" if i == 0 else f"cma{i}"
            kind = self._weighted({"default": 0.6, "bounded": 0.3, "fixed": 0.1})
            if kind == "default":
                areas[name] = _fmt(size)
            elif kind == "bounded":
                # bounds in low memory, or rarely in the RAM above 4 GiB (outside movable)
                if high - movable >= 2 * size + _BLOCK and self._chance(0.25):
                    base, limit = 4 * GiB, 4 * GiB + high - movable
                else:
                    base, limit = 64 * MiB, low
                span = max(size, (limit - base) // 2)
                lo = base + r.randrange(0, max(1, (limit - base - span) // _BLOCK + 1)) * _BLOCK
                hi = min(limit, lo + span + r.randrange(0, 4) * _BLOCK)
                hi -= hi % HPAGE_2M
                areas[name] = f"{_fmt(size)}@{_fmt(lo)}-{_fmt(hi)}"
            else:
                at = r.randrange(64 * MiB // HPAGE_2M, max(64 * MiB // HPAGE_2M + 1, (low // 2) // HPAGE_2M)) * HPAGE_2M
                areas[name] = f"{_fmt(size)}@{_fmt(at)}"
        if not areas:
            return 0, 0
        if list(areas) == ["reserved"] and "@" not in areas["reserved"] and self._chance(0.5):
            return areas["reserved"], total           # plain cma=SIZE
        return areas, total

    # ------------------------------------------------------------------ workloads
    def workload(self, n: int = 20, config: MMConfig | None = None,
                 balanced: bool = True) -> list[tuple[Any, ...]]:
        """*n* random operation tuples (see the module docstring for their meaning).

        With *config*, ops the machine cannot serve at all are left out (``cma_alloc``
        without CMA, hugetlb memfds without a 2 MiB default pool, steering to
        ``"movable"`` without ZONE_MOVABLE).  With *balanced*, closing ``unpin`` and
        ``cma_release`` ops are appended for everything still held, so the list can be
        longer than *n*.
        """
        r = self.generator.random
        has_cma = True if config is None else bool(config.cma)
        has_huge = True if config is None else (
            config.default_hugepagesz == HPAGE_2M and config.hugetlb.get(HPAGE_2M, 0) > 0)
        wheres: list[Any] = [None, "normal"]
        if config is None or config.cma:
            wheres.append("cma")
        if config is None or config.movablecore:
            wheres.append("movable")

        ops: list[tuple[Any, ...]] = []
        mapped: list[int] = []            # region numbers still mapped
        nregions = 0
        held: list[int] = []              # pin numbers not unpinned yet
        npins = 0
        allocs: list[int] = []            # cma allocation numbers not released yet
        nallocs = 0
        for _ in range(n):
            weights = {"mmap_anon": 3.0, "memfd": 2.0, "drain": 0.5}
            if mapped:
                weights["pin"] = 4.0
                weights["munmap"] = 0.5
            if held:
                weights["unpin"] = 2.5
            if has_cma:
                weights["cma_alloc"] = 1.0
            if allocs:
                weights["cma_release"] = 1.0
            op = self._weighted(weights)
            if op == "mmap_anon":
                pages = self.random_element((1, 2, 4, 16, 64, 256, 512, 1024))
                ops.append(("mmap_anon", pages * PAGE_SIZE, self.random_element(wheres)))
                mapped.append(nregions)
                nregions += 1
            elif op == "memfd":
                huge = has_huge and self._chance(0.25)
                size = r.randint(1, 4) * HPAGE_2M if huge else \
                    self.random_element((1, 4, 16, 128, 512, 1024)) * PAGE_SIZE
                ops.append(("memfd", size, huge))
                mapped.append(nregions)
                nregions += 1
            elif op == "pin":
                ops.append(("pin", self.random_element(mapped), self._chance(0.7)))
                held.append(npins)
                npins += 1
            elif op == "unpin":
                i = self.random_element(held)
                held.remove(i)
                ops.append(("unpin", i))
            elif op == "munmap":
                i = self.random_element(mapped)
                mapped.remove(i)
                ops.append(("munmap", i))
            elif op == "cma_alloc":
                ops.append(("cma_alloc", 1 << r.randint(0, 9)))
                allocs.append(nallocs)
                nallocs += 1
            elif op == "cma_release":
                i = self.random_element(allocs)
                allocs.remove(i)
                ops.append(("cma_release", i))
            else:
                ops.append(("drain",))
        if balanced:
            ops.extend(("unpin", i) for i in held)
            ops.extend(("cma_release", i) for i in allocs)
        return ops

    # ------------------------------------------------------------------ fault specs
    def fault_spec(self, sites: Mapping[str, Any] | Iterable[str] | None = None) -> str:
        """One random, valid fault spec in the engine's grammar, for property sweeps.

        *sites*: a mapping of site name to :class:`~pytest_pinfault.faults.sites.Site`
        (default: the built-in catalogue) or plain site names.  Most specs are the matrix
        forms ``site[nth=N]=1*return`` (transient) and ``site[nth=N]=return``
        (persistent); the rest use ``K*return``, ``every=``, ``times=``, ``p%``, a named
        errno the site may produce, and ``K*off->J*return`` chains.
        """
        if sites is None:
            from .faults.sites import BUILTIN_SITES
            sites = BUILTIN_SITES
        names = sorted(sites)
        if not names:
            raise ValueError("fault_spec: expected at least one site, got none")
        site = self.random_element(names)
        info = sites[site] if isinstance(sites, Mapping) else None
        errnos = tuple(getattr(info, "errnos", ()) or ())
        r = self.generator.random
        nth = r.randint(1, 4)
        form = self._weighted({"transient": 0.35, "persistent": 0.25, "count": 0.1,
                               "every": 0.07, "times": 0.07, "prob": 0.06,
                               "errno": 0.05, "chain": 0.05})
        if form == "transient":
            return f"{site}[nth={nth}]=1*return"
        if form == "persistent":
            return f"{site}[nth={nth}]=return"
        if form == "count":
            return f"{site}={r.randint(1, 3)}*return"
        if form == "every":
            return f"{site}[every={r.randint(2, 4)}]=return"
        if form == "times":
            return f"{site}[nth={nth},times={r.randint(1, 3)}]=return"
        if form == "prob":
            return f"{site}={r.randint(1, 99)}%return"
        if form == "errno" and errnos:
            name = _errno.errorcode.get(self.random_element(errnos))
            if name:
                return f"{site}[nth={nth}]=1*return({name})"
            return f"{site}[nth={nth}]=1*return"
        if form == "chain":
            return f"{site}={r.randint(1, 3)}*off->{r.randint(1, 2)}*return"
        return f"{site}[nth={nth}]=1*return"

    def fault_specs(self, n: int = 2, sites: Mapping[str, Any] | Iterable[str] | None = None) -> str:
        """*n* specs from :meth:`fault_spec` joined with ``;`` (one ``--pinfault-faults`` value)."""
        if sites is not None and not isinstance(sites, Mapping):
            sites = list(sites)
        return ";".join(self.fault_spec(sites) for _ in range(n))


# ---------------------------------------------------------------------- replay
def replay(fake_mm: Any, ops: Iterable[tuple[Any, ...]]) -> list[Any]:
    """Run workload *ops* on *fake_mm* (in its current task's mm); one result per op.

    Results: the region number for a successful ``mmap_anon``/``memfd``, else the negative
    errno; the ``pin_user_pages`` return value for ``pin``; the first page (or ``None``)
    for ``cma_alloc``; ``cma_release``'s bool; ``None`` for the rest and for an op whose
    target does not exist (a failed region, pin or allocation, or a machine without CMA).
    """
    from .mm import (FOLL_LONGTERM, FOLL_WRITE, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED,
                     MFD_ALLOW_SEALING, MFD_HUGETLB, PROT_READ, PROT_WRITE)

    mm = fake_mm.current.mm
    regions: list[tuple[int, int] | None] = []
    pins: list[tuple[list[Any], int] | None] = []
    allocs: list[Any] = []
    out: list[Any] = []
    rw = PROT_READ | PROT_WRITE
    for op in ops:
        name = op[0]
        res: Any = None
        if name == "mmap_anon":
            _, length, where = op
            addr = mm.mmap(length, rw, MAP_PRIVATE | MAP_ANONYMOUS)
            if addr < 0:
                regions.append(None)
                res = addr
            else:
                if where:
                    with fake_mm.steer(where):
                        w = mm.write(addr, b"\x5a" * length)
                else:
                    w = mm.write(addr, b"\x5a" * length)
                regions.append((addr, length) if w >= 0 else None)
                res = len(regions) - 1 if w >= 0 else w
        elif name == "memfd":
            _, size, huge = op
            f = fake_mm.memfd_create("workload", MFD_ALLOW_SEALING | (MFD_HUGETLB if huge else 0))
            ret = f if isinstance(f, int) else f.ftruncate(size)
            if ret == 0:
                ret = f.fallocate(0, 0, size)
            if ret == 0:
                ret = mm.mmap(size, rw, MAP_SHARED, file=f)
            if ret < 0:
                regions.append(None)
                res = ret
            else:
                regions.append((ret, size))
                res = len(regions) - 1
        elif name == "pin":
            _, idx, longterm = op
            reg = regions[idx] if idx < len(regions) else None
            if reg is None:
                pins.append(None)
            else:
                pages: list[Any] = []
                flags = FOLL_WRITE | (FOLL_LONGTERM if longterm else 0)
                res = fake_mm.pin_user_pages(reg[0], reg[1] // PAGE_SIZE, flags, pages)
                pins.append((pages, res) if res > 0 else None)
        elif name == "unpin":
            pin = pins[op[1]] if op[1] < len(pins) else None
            if pin is not None:
                fake_mm.unpin_user_pages(pin[0], pin[1])
                pins[op[1]] = None
        elif name == "munmap":
            reg = regions[op[1]] if op[1] < len(regions) else None
            if reg is not None:
                res = mm.munmap(*reg)
                regions[op[1]] = None
        elif name == "cma_alloc":
            if fake_mm.cma_areas:
                area = fake_mm.cma_areas[0]
                page = fake_mm.cma_alloc(area, op[1], 0, no_warn=True)
                allocs.append((area, page, op[1]) if page is not None else None)
                res = page
            else:
                allocs.append(None)
        elif name == "cma_release":
            a = allocs[op[1]] if op[1] < len(allocs) else None
            if a is not None:
                res = fake_mm.cma_release(*a)
                allocs[op[1]] = None
        elif name == "drain":
            fake_mm.lru_add_drain_all()
        else:
            raise ValueError(f"replay: expected an op from {sorted(WORKLOAD_OPS)}, got {op!r}")
        out.append(res)
    return out
