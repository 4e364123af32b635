"""Machine configuration: the frozen, validated description a :class:`FakeMM` is built from.

``MMConfig`` plays the role of the kernel command line and the firmware memory map of a
small x86-64 virtual machine: how much RAM there is, how much of it is ZONE_MOVABLE
(``movablecore=``), which CMA areas exist (``cma=``), the hugetlb pools (``hugepages=``),
the THP mode, RLIMIT_MEMLOCK, the seed and the historical quirks to emulate.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, Union

__all__ = ["MMConfig", "CMASpec", "CMA_MIN_ALIGNMENT_BYTES", "parse_size", "QUIRKS", "ConfigError", "FrozenMap", "MAX_RAM",
           "RLIM_INFINITY", "SHMEM_ENABLED", "SHMEM_MTHP_SETTINGS", "KERNELS", "DEFAULT_KERNEL",
           "KERNEL_QUIRKS", "QUIRK_KERNELS", "kernel_key"]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
NR_CPUS_MAX = 8192              # CONFIG_NR_CPUS_RANGE_END on x86-64 with MAXSMP

_K = TypeVar("_K")
_V = TypeVar("_V")

#: A size as MMConfig takes it: a byte count or a string like ``"512MiB"``.
Size = Union[int, str]
#: ``MMConfig(cma=...)``: one area's size or ``"size@start-end"``, a mapping of area name
#: to such a spec, or the parsed tuple of :class:`CMASpec`; 0 or None for no CMA.
CMAInput = Union[Size, Mapping[str, Size], "tuple[CMASpec, ...]", None]

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}
# ASCII digits only (``\d`` would read Arabic-Indic or fullwidth digits as numbers), and
# at most 24 of them (int() of thousands of digits is slow or refused).
_SIZE_RE = re.compile(r"^\s*([0-9]{1,24})\s*([a-zA-Z]*)\s*$", re.ASCII)

#: Kernel behaviours other than v6.17's that ``MMConfig(quirks=...)`` can switch on.  Each
#: maps to the upstream change whose *absence* it emulates, or for a stable-branch
#: behaviour to the branch that has it (see docs/kernel-map.md).
QUIRKS: Mapping[str, str] = {
    "pcp_thp_shared_list": (
        "one per-cpu THP list shared by every migratetype (5d0a661d808f, v6.0..v6.9): a "
        "non-movable THP-order request can be served a CMA pageblock; fixed by bf14ed81f571 "
        "'mm/page_alloc: Separate THP PCP into movable and non-movable categories' (v6.10)"
    ),
    "gup_keep_pins_on_isolation_failure": (
        "pre-v5.13 GUP: when LRU isolation or migration of an unpinnable folio fails, keep "
        "the pins and return success (pin-anyway of 9a4e9f3b2d73, removed by 'mm/gup: "
        "return an error on migration failure' and 'mm/gup: check for isolation errors')"
    ),
    "gup_drain_on_unexpected_ref_only": (
        "6.12.y stable (since 6.12.111): the long-term pin's collect step counts the pin "
        "itself (GUP_PIN_COUNTING_BIAS for a small folio) in the expected reference count, "
        "so it drains the LRU caches only for a folio holding an unexpected reference; "
        "v6.17 compares with expected + 1 and drains whenever it collects a pinned small folio"
    ),
}


#: Values of ``/sys/kernel/mm/transparent_hugepage/shmem_enabled`` (mm/shmem.c, v6.12).
SHMEM_ENABLED = ("never", "always", "within_size", "advise", "deny", "force")
#: Values of ``hugepages-<size>kB/shmem_enabled`` (mm/shmem.c:thpsize_shmem_enabled_store).
SHMEM_MTHP_SETTINGS = ("always", "inherit", "within_size", "advise", "never")


#: The kernel versions ``MMConfig(kernel=...)`` accepts, oldest first.  A series name
#: stands for its stable branch as read in source: "6.1" is 6.1.192 and "6.12" is 6.12.118
#: (Debian's linux-source packages; the conformance recordings are 6.1.176 and 6.12.117),
#: "6.6" the 6.6.y branch as read in a 6.6.89-based tree (with vendor backports), "6.17" mainline
#: v6.17 (the default, today's behaviour).  docs/kernel-map.md, "Kernel versions", lists
#: every difference with its kernel function and commit.
KERNELS: tuple[str, ...] = ("6.1", "6.6", "6.12", "6.17")
DEFAULT_KERNEL = "6.17"

#: The quirks a kernel version implies: behaviours of that branch that the default
#: (v6.17) models differently and that a quirk already names.
KERNEL_QUIRKS: Mapping[str, tuple[str, ...]] = {
    "6.1": (),
    "6.6": (),
    "6.12": ("gup_drain_on_unexpected_ref_only",),
    "6.17": (),
}

#: For each quirk, the versions other than the default whose history contains it: an
#: explicit ``kernel=`` outside this set with that quirk is a contradiction
#: (:class:`ConfigError` naming both).  The default "6.17" accepts every quirk: on it a
#: quirk emulates a historical kernel, as before versions could be chosen.
QUIRK_KERNELS: Mapping[str, tuple[str, ...]] = {
    # v6.0..v6.9; 6.1.y and 6.6.y until bf14ed81f571 was backported (6.1.192 has
    # NR_PCP_THP 2); never in a 6.12 release
    "pcp_thp_shared_list": ("6.1", "6.6", "6.17"),
    # v5.1..v5.12: no 6.x release keeps pins on isolation failure
    "gup_keep_pins_on_isolation_failure": ("6.17",),
    # 6.12.y since 6.12.111; 6.1.192's collect step compares with expected + 1
    "gup_drain_on_unexpected_ref_only": ("6.12", "6.17"),
}


def kernel_key(version: str) -> tuple[int, ...]:
    """``"6.12"`` -> ``(6, 12)``: versions compare as tuples, never as strings."""
    return tuple(int(p) for p in version.split("."))


_KERNEL_KEYS = {k: kernel_key(k) for k in KERNELS}
#: kernel_key of the versions kernel_at_least was asked about (a few, from the code)
_VERSION_KEYS: dict[str, tuple[int, ...]] = dict(_KERNEL_KEYS)

#: The most RAM a config may have: 64 TiB, x86-64's physical address space with
#: 4-level paging (``MAX_PHYSMEM_BITS`` 46, arch/x86/include/asm/sparsemem.h).
MAX_RAM = 1 << 46
#: RLIMIT_MEMLOCK's largest value (``RLIM_INFINITY``, include/uapi/asm-generic/resource.h).
RLIM_INFINITY = (1 << 64) - 1


class ConfigError(ValueError):
    """A bad :class:`MMConfig` value; the message names field, expectation and value."""


def parse_size(value: Size, field: str = "size") -> int:
    """Parse ``4096``, ``"512MiB"``, ``"4G"`` or ``"1TiB"`` into a byte count.

    Raises :class:`ConfigError` naming *field* when the value is not a non-negative size.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a size in bytes or a string like '512MiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{field}: expected a size >= 0, got {value!r}")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _UNITS:
            return int(m.group(1)) * _UNITS[m.group(2).lower()]
    raise ConfigError(f"{field}: expected a size in bytes or a string like '512MiB', got {value!r}")


class FrozenMap(Mapping[_K, _V]):
    """A read-only, hashable mapping (``MMConfig.hugetlb``): a frozen config shared by
    every test of a run must give no test a way to change another's machine.  Compares
    equal to a dict with the same items."""

    __slots__ = ("_items",)
    _items: tuple[tuple[_K, _V], ...]

    def __init__(self, items: Mapping[_K, _V] | Iterable[tuple[_K, _V]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        object.__setattr__(self, "_items", tuple(sorted(dict(pairs).items())))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __getitem__(self, key: _K) -> _V:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[_K]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return repr(dict(self._items))

    def __reduce__(self) -> tuple[type[FrozenMap[_K, _V]], tuple[tuple[tuple[_K, _V], ...]]]:
        return (type(self), (self._items,))


def _fmt(nbytes: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return str(nbytes)


@dataclasses.dataclass(frozen=True)
class CMASpec:
    """One CMA area as the ``cma=size[@start[-end]]`` boot parameter describes it.

    ``start``/``end`` bound where the area is placed (top-down, like memblock); with no
    bounds the area goes at the top of memory below 4 GiB, as ``dma_contiguous_reserve``
    does on x86-64.
    """

    name: str
    size: int
    start: int | None = None
    end: int | None = None

    @classmethod
    def parse(cls, name: str, spec: Size, field: str) -> "CMASpec":
        """One area from *spec*: a size, or ``"size@start-end"`` with placement bounds
        (either bound may be left out); a ConfigError naming *field* otherwise."""
        if isinstance(spec, str) and "@" in spec:
            size_s, _, where = spec.partition("@")
            start_s, dash, end_s = where.partition("-")
            size = parse_size(size_s, field)
            start = parse_size(start_s, field) if start_s else None
            end = parse_size(end_s, field) if dash else None
            return cls(name, size, start, end)
        return cls(name, parse_size(spec, field))


#: CMA_MIN_ALIGNMENT_BYTES (include/linux/cma.h): a CMA area's base and size are whole
#: pageblocks (``pageblock_nr_pages`` pages, 2 MiB on x86-64) in every modelled version.
CMA_MIN_ALIGNMENT_BYTES = 2 << 20


def _declare_cma(spec: CMASpec) -> CMASpec:
    """What ``cma_declare_contiguous_nid`` makes of one ``cma=size[@base[-limit]]`` area
    before placing it, as :class:`MMConfig` checks it: the area is at a fixed base when
    ``@base`` has no limit or the limit is ``base + size`` (``dma_contiguous_reserve``);
    a fixed base that is not a multiple of CMA_MIN_ALIGNMENT_BYTES is refused (the
    kernel's -EINVAL, "Region at ... must be aligned to ... bytes", which leaves the
    machine without the area: here a ConfigError naming the base and the alignment).
    Otherwise the base is rounded up, the size rounded up and the limit rounded down to
    the alignment, and an area that then no longer fits below its limit is refused
    ("Size ... of region at ... exceeds limit"; so ``"3MiB@256MiB"`` is, while ``"3MiB"``
    is an area of 4 MiB).  A size of 0 is refused (the kernel's ``cma=0`` means no area).
    Kernel: mm/cma.c:cma_declare_contiguous_nid (6.1.192, 6.12.118; v6.15+
    ``__cma_declare_contiguous_nid``, the same rules), kernel/dma/contiguous.c:early_cma,
    dma_contiguous_reserve; include/linux/cma.h:CMA_MIN_ALIGNMENT_BYTES."""
    field = f"cma[{spec.name!r}]"
    align = CMA_MIN_ALIGNMENT_BYTES
    if spec.size <= 0:
        raise ConfigError(f"{field}: expected a non-zero size (a multiple of {_fmt(align)} or rounded up to one), "
                          f"got {_fmt(spec.size)}")
    start, end = spec.start, spec.end
    fixed = start is not None and (end is None or end == start + spec.size)
    if fixed and start is not None and start % align:
        raise ConfigError(f"{field}: expected a base aligned to {_fmt(align)} (CMA_MIN_ALIGNMENT_BYTES, one "
                          f"pageblock) for an area at a fixed base, got {_fmt(start)}")
    size = -(-spec.size // align) * align
    if start is not None or end is not None:
        base = -(-(start or 0) // align) * align
        limit = end if end is not None else (start or 0) + spec.size
        limit -= limit % align
        if limit and base + size > limit:
            raise ConfigError(f"{field}: expected the area, its size rounded up to {_fmt(align)} "
                              f"({_fmt(size)}), to fit between {_fmt(base)} and its limit {_fmt(limit)} "
                              f"(rounded down to {_fmt(align)}), got {_fmt(spec.size)}@{_fmt(start or 0)}"
                              f"{'' if end is None else '-' + _fmt(end)}")
    return spec if size == spec.size else dataclasses.replace(spec, size=size)


@dataclasses.dataclass(frozen=True)
class MMConfig:
    """The fake machine.  Frozen and validated at construction.

    ram
        Total RAM (bytes or ``"4GiB"``).  As on a QEMU ``pc`` machine, RAM of 3.5 GiB or
        more is split: 3 GiB below the 4 GiB PCI hole, the rest from 4 GiB up.
    movablecore
        Size of ZONE_MOVABLE, carved from the top of the highest zone (``movablecore=``).
    cma
        CMA areas: a size (one area named ``"reserved"``, like ``cma=``, placed with
        ``"128MiB@256MiB-1GiB"``), or several as ``"a:64MiB,b:32MiB@1GiB"`` or a mapping
        ``{"a": "64MiB", ...}``.  Each is checked as the kernel checks a ``cma=`` area
        (:func:`_declare_cma`): sizes are rounded up to CMA_MIN_ALIGNMENT_BYTES (2 MiB),
        a fixed base that is not a multiple of it is a ConfigError.
    hugetlb
        Boot-time hugetlb pools: page size and number of pages, ``"2MiB:512,1GiB:1"``
        or ``{"2MiB": 512, "1GiB": 1}``; stored as a read-only mapping of byte sizes (``{2097152: 512}``), so a config
        shared by many tests cannot be changed by one of them.
    default_hugepagesz
        The default huge page size (``MFD_HUGETLB`` without a size flag).
    thp
        ``"always" | "madvise" | "never"`` (``/sys/kernel/mm/transparent_hugepage/enabled``).
    shmem_enabled
        ``"never" | "always" | "within_size" | "advise" | "deny" | "force"``
        (``/sys/kernel/mm/transparent_hugepage/shmem_enabled``; the first four are also
        the ``huge=`` of the internal shm mount memfds and shared anonymous mappings live
        on, as shmem_init copies it there).  PMD-sized (2 MiB) shmem folios.
        Kernel: mm/shmem.c:shmem_huge_global_enabled (v6.12).
    shmem_mthp
        Per-size shmem mTHP controls (``/sys/kernel/mm/transparent_hugepage/
        hugepages-<size>kB/shmem_enabled``): folio size (8KiB to 2MiB, a power of two) ->
        ``"always" | "inherit" | "within_size" | "advise" | "never"``, as a mapping or as
        ``"64KiB:always,2MiB:inherit"``.  Sizes not given
        keep the kernel's default: 2 MiB ``"inherit"``, the others ``"never"``.  They
        apply to shared anonymous mappings only, as in v6.12
        (mm/shmem.c:shmem_allowable_huge_orders); stored as a read-only mapping of
        byte sizes.
    memlock
        RLIMIT_MEMLOCK of the first task, in bytes.
    swap
        Size of the one fake swap device (bytes or ``"1GiB"``, a multiple of 4 KiB); 0,
        the default, is a machine without swap, where reclaim can free only clean page
        cache (mm/vmscan.c, mm/swapfile.c).
    nr_cpus
        CPUs (1 to 8192), each with its own per-cpu page lists and LRU batches.
    boot_reserved
        ``"auto"`` reserves the kernel image and the memmap (64 bytes per page, at the top
        of RAM, as memblock does top-down), which makes the top memory block unofflinable,
        as on real machines; ``"none"`` reserves nothing.
    firmware
        The firmware memory map.  ``"ideal"``: every page below the PCI hole but the
        legacy ISA hole is RAM.  ``"seabios"``: what a QEMU ``pc`` guest's kernel sees --
        page 0 trimmed from the usable map and the top 128 KiB below the PCI hole
        reserved by SeaBIOS -- so the DMA zone starts at pfn 1, DMA32 has 32 pages fewer
        present, and a ``movablecore`` below 4 GiB no longer ends on a memory block
        boundary (tests/conformance replays the recorded guests with it).
    offline_retry_budget
        How many passes ``offline_pages`` makes before the modelled signal arrives and it
        returns ``-EINTR`` (the real kernel loops until a signal).
    gup_retry_limit
        Bound on the ``-EAGAIN`` re-pin loops (unbounded in the kernel); exceeding it is
        recorded as a livelock.
    seed
        Seed for probabilistic fault injection and generated layouts (the model itself
        makes no random choices).
    quirks
        Historical kernel behaviours to emulate: names from :data:`QUIRKS`, ``"a,b"`` or
        a list.  They compose with *kernel*: the version's own quirks
        (:data:`KERNEL_QUIRKS`) are added, and a quirk the chosen version's history cannot
        have (:data:`QUIRK_KERNELS`) is a :class:`ConfigError` naming both.
    kernel
        The kernel version whose behaviour the machine follows: one of :data:`KERNELS`
        (``"6.1"``, ``"6.6"``, ``"6.12"``, ``"6.17"``; default ``"6.17"``).  Older
        versions lack the functions added after them (``memfd_pin_folios`` before
        v6.11 is an ``AttributeError``, as an unknown symbol), imply their quirks and
        select their behaviour where docs/kernel-map.md ("Kernel versions") says it
        differs.

    Every field takes the text the ``pinfault_mm_config`` ini key uses (integers as
    ``"4"`` too), so one spelling works in the ini key, in
    ``@pytest.mark.mm_config(...)`` and here; :meth:`spelling` gives it for a value.
    """

    # The attributes hold what __post_init__ normalises the input to (byte counts, CMASpec
    # tuples, a FrozenMap); the constructor type checkers see (below) takes the input forms.
    ram: int = parse_size("4GiB")
    movablecore: int = 0
    cma: tuple[CMASpec, ...] = ()
    hugetlb: Mapping[int, int] = dataclasses.field(default_factory=FrozenMap)
    default_hugepagesz: int = parse_size("2MiB")
    thp: str = "always"
    shmem_enabled: str = "never"
    shmem_mthp: Mapping[int, str] = dataclasses.field(default_factory=FrozenMap)
    memlock: int = parse_size("8MiB")
    swap: int = 0
    nr_cpus: int = 2
    boot_reserved: str = "auto"
    firmware: str = "ideal"
    offline_retry_budget: int = 100
    gup_retry_limit: int = 64
    seed: int = 0
    quirks: tuple[str, ...] = ()
    kernel: str = DEFAULT_KERNEL

    if TYPE_CHECKING:
        # One parameter per field, in field order (tests/test_typing.py checks it).
        # Integers and hugetlb also take the ini spelling ("4", "2MiB:512").
        def __init__(self, ram: Size = ..., movablecore: Size = ..., cma: CMAInput = ...,
                     hugetlb: Mapping[Size, int] | str = ..., default_hugepagesz: Size = ...,
                     thp: str = ..., shmem_enabled: str = ...,
                     shmem_mthp: Mapping[Size, str] | str = ..., memlock: Size = ..., swap: Size = ...,
                     nr_cpus: int | str = ...,
                     boot_reserved: str = ..., firmware: str = ...,
                     offline_retry_budget: int | str = ..., gup_retry_limit: int | str = ...,
                     seed: int | str = ..., quirks: str | Collection[str] = ..., kernel: str = ...) -> None: ...

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _from_text(self)
        ram = parse_size(self.ram, "ram")
        if ram < 64 << 20 or ram % (128 << 20):
            raise ConfigError(f"ram: expected a multiple of 128MiB, at least 128MiB, got {self.ram!r}")
        if ram > MAX_RAM:
            raise ConfigError(f"ram: expected at most {_fmt(MAX_RAM)} (x86-64 MAX_PHYSMEM_BITS 46), "
                              f"got {self.ram!r}")
        set_(self, "ram", ram)
        movable = parse_size(self.movablecore, "movablecore")
        if movable % (128 << 20) or movable >= ram:
            raise ConfigError(
                f"movablecore: expected a multiple of 128MiB smaller than ram ({_fmt(ram)}), "
                f"got {self.movablecore!r}")
        set_(self, "movablecore", movable)
        set_(self, "cma", self._parse_cma(self.cma))
        set_(self, "hugetlb", self._parse_hugetlb(self.hugetlb))
        hps = parse_size(self.default_hugepagesz, "default_hugepagesz")
        if hps not in (2 << 20, 1 << 30):
            raise ConfigError(f"default_hugepagesz: expected '2MiB' or '1GiB', got {self.default_hugepagesz!r}")
        set_(self, "default_hugepagesz", hps)
        if self.thp not in ("always", "madvise", "never"):
            raise ConfigError(f"thp: expected 'always', 'madvise' or 'never', got {self.thp!r}")
        if self.shmem_enabled not in SHMEM_ENABLED:
            raise ConfigError(f"shmem_enabled: expected one of {', '.join(repr(v) for v in SHMEM_ENABLED)}, "
                              f"got {self.shmem_enabled!r}")
        set_(self, "shmem_mthp", self._parse_shmem_mthp(self.shmem_mthp))
        memlock = parse_size(self.memlock, "memlock")
        if memlock > RLIM_INFINITY:
            raise ConfigError(f"memlock: expected at most RLIM_INFINITY (2**64 - 1), got {self.memlock!r}")
        set_(self, "memlock", memlock)
        swap = parse_size(self.swap, "swap")
        if swap % 4096:
            raise ConfigError(f"swap: expected a multiple of 4KiB, got {self.swap!r}")
        set_(self, "swap", swap)
        for name, lo, hi in (("nr_cpus", 1, NR_CPUS_MAX), ("offline_retry_budget", 1, None),
                             ("gup_retry_limit", 1, None)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                want = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi} (x86-64 NR_CPUS with MAXSMP)"
                raise ConfigError(f"{name}: expected {want}, got {v!r}")
        if self.boot_reserved not in ("auto", "none"):
            raise ConfigError(f"boot_reserved: expected 'auto' or 'none', got {self.boot_reserved!r}")
        if self.firmware not in ("ideal", "seabios"):
            raise ConfigError(f"firmware: expected 'ideal' or 'seabios', got {self.firmware!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed: expected an integer, got {self.seed!r}")
        quirks = self.quirks
        if isinstance(quirks, str):            # "a,b": the ini spelling
            quirks = tuple(q.strip() for q in quirks.split(",") if q.strip())
        elif not isinstance(quirks, (tuple, list, set, frozenset)):
            raise ConfigError(f"quirks: expected a name or a list of names from {sorted(QUIRKS)}, "
                              f"got {self.quirks!r}")
        quirks = tuple(quirks)
        for q in quirks:
            if not isinstance(q, str) or q not in QUIRKS:
                raise ConfigError(f"quirks: expected names from {sorted(QUIRKS)}, got {q!r}")
        kernel = self.kernel
        if not isinstance(kernel, str) or kernel not in KERNELS:
            raise ConfigError(f"kernel: expected one of {', '.join(repr(k) for k in KERNELS)}, got {kernel!r}")
        if self.shmem_mthp and _KERNEL_KEYS[kernel] < (6, 11):
            # per-size hugepages-<size>kB/shmem_enabled: mm/shmem.c:thpsize_shmem_enabled_store,
            # v6.11 (in 6.12.118, not in 6.1.192)
            raise ConfigError(f"shmem_mthp: contradicts kernel={kernel!r}: the per-size shmem_enabled "
                              f"controls exist from v6.11 on, got {dict(self.shmem_mthp)!r}")
        for q in quirks:
            if kernel not in QUIRK_KERNELS[q]:
                raise ConfigError(
                    f"quirks: {q!r} contradicts kernel={kernel!r}: that behaviour is not in the "
                    f"{kernel} branch (it belongs to kernel {' or '.join(repr(k) for k in QUIRK_KERNELS[q] if k != DEFAULT_KERNEL) or 'releases before 6.1'}; "
                    f"config.QUIRKS[{q!r}])")
        set_(self, "quirks", quirks)

    @staticmethod
    def _parse_cma(cma: Any) -> tuple[CMASpec, ...]:
        if cma in (0, None, "", "0"):
            return ()
        if isinstance(cma, tuple) and all(isinstance(c, CMASpec) for c in cma):
            specs = cma
            out = tuple(_declare_cma(s) for s in specs)
            return specs if out == specs else out
        if isinstance(cma, str) and ":" in cma:     # "name:size,...": the ini spelling
            cma = _pairs(cma, "cma", "'name:size,...' like 'a:64MiB,b:32MiB@1GiB'", "name")
        if isinstance(cma, Mapping):
            specs = tuple(CMASpec.parse(str(n), s, f"cma[{n!r}]") for n, s in cma.items())
        else:
            specs = (CMASpec.parse("reserved", cma, "cma"),)
        out = tuple(_declare_cma(s) for s in specs)
        return specs if out == specs else out

    @staticmethod
    def _parse_hugetlb(pools: Mapping[Size, int] | Mapping[int, int] | str) -> "FrozenMap[int, int]":
        given: Any = pools
        if isinstance(pools, str):                 # "2MiB:512,1GiB:1": the ini spelling
            given = {} if pools.strip() in ("", "0") else _pairs(
                pools, "hugetlb", "'size:count,...' like 2MiB:16", "size")
        if not isinstance(given, Mapping):
            raise ConfigError(f"hugetlb: expected a mapping of page size to count like {{'2MiB': 512}} "
                              f"or a string like '2MiB:512', got {pools!r}")
        out: dict[int, int] = {}
        for size, count in given.items():
            nbytes = parse_size(size, "hugetlb")
            if nbytes not in (2 << 20, 1 << 30):
                raise ConfigError(f"hugetlb: expected page sizes '2MiB' or '1GiB', got {size!r}")
            n = _ascii_int(count) if isinstance(count, str) else count    # "512": the ini spelling
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ConfigError(f"hugetlb[{size!r}]: expected a count >= 0, got {count!r}")
            if nbytes in out:
                raise ConfigError(f"hugetlb: expected each size once, got {size!r} twice")
            out[nbytes] = n
        return FrozenMap(out)

    @staticmethod
    def _parse_shmem_mthp(sizes: Mapping[Size, str] | Mapping[int, str] | str) -> "FrozenMap[int, str]":
        given: Any = sizes
        if isinstance(sizes, str):                 # "64KiB:always,2MiB:never": the ini spelling
            given = {} if not sizes.strip() else _pairs(
                sizes, "shmem_mthp", "'size:setting,...' like 64KiB:always", "size")
        if not isinstance(given, Mapping):
            raise ConfigError(f"shmem_mthp: expected a mapping of folio size to a setting like "
                              f"{{'64KiB': 'always'}} or a string like '64KiB:always', got {sizes!r}")
        out: dict[int, str] = {}
        for size, value in given.items():
            nbytes = parse_size(size, "shmem_mthp")
            if nbytes < 2 * PAGE_SIZE or nbytes > (2 << 20) or nbytes & (nbytes - 1):
                raise ConfigError(f"shmem_mthp: expected folio sizes from '8KiB' to '2MiB', powers of "
                                  f"two, got {size!r}")
            if value not in SHMEM_MTHP_SETTINGS:
                raise ConfigError(f"shmem_mthp[{size!r}]: expected one of "
                                  f"{', '.join(repr(v) for v in SHMEM_MTHP_SETTINGS)}, got {value!r}")
            out[nbytes] = value
        return FrozenMap(out)

    def replace(self, **changes: Any) -> "MMConfig":
        """A copy with *changes* applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_seed(self, seed: int) -> "MMConfig":
        """A copy with another *seed* (no need to validate the other fields again)."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed: expected an integer, got {seed!r}")
        new = copy.copy(self)
        object.__setattr__(new, "seed", seed)
        return new

    def has_quirk(self, name: str) -> bool:
        """True when the quirk *name* is in force: given in ``quirks`` or implied by
        ``kernel`` (:data:`KERNEL_QUIRKS`)."""
        return name in self.quirks or name in KERNEL_QUIRKS[self.kernel]

    def kernel_at_least(self, version: str) -> bool:
        """True when the configured ``kernel`` is *version* or newer (``"6.11"`` ->
        False for ``kernel="6.6"``).  Versions compare numerically."""
        want = _VERSION_KEYS.get(version)
        if want is None:
            want = kernel_key(version)
            if len(_VERSION_KEYS) < 256:
                _VERSION_KEYS[version] = want
        return _KERNEL_KEYS[self.kernel] >= want

    def spelling(self, field: str) -> str:
        """The value of *field* in the spelling every place accepts: the
        ``pinfault_mm_config`` ini key, ``@pytest.mark.mm_config(field="...")`` and
        ``MMConfig(field="...")`` all read it back to the same value.

        Sizes as ``"4GiB"`` (``"0"`` for none), ``hugetlb`` as ``"2MiB:512,1GiB:1"``,
        ``cma`` as ``"128MiB"`` (one area named ``reserved``, with ``@start-end`` when
        placed) or ``"name:size,..."``, ``quirks`` as ``"a,b"``, integers in decimal and
        booleans as ``"true"``/``"false"``.  ``""`` means empty (no pools, no quirks).
        """
        if field not in {f.name for f in dataclasses.fields(self)}:
            raise ConfigError(f"spelling: expected an MMConfig field, got {field!r}")
        return _spell(field, getattr(self, field))

    def as_ini(self) -> str:
        """This config as one ``pinfault_mm_config`` ini value (``field=value`` tokens,
        empty values left out); ``parse_mm_config_line(c.as_ini()) == c``."""
        tokens = ((f.name, self.spelling(f.name)) for f in dataclasses.fields(self))
        return " ".join(f"{k}={v}" for k, v in tokens if v != "")


_SIZE_FIELDS = ("ram", "movablecore", "memlock", "default_hugepagesz", "swap")


def _ascii_int(text: str) -> int | None:
    """``"12"`` or ``"-3"`` -> int; None for anything else (other digits than ASCII's,
    ``"1_000"``, more than 30 digits)."""
    t = text.strip()
    digits = t[1:] if t.startswith("-") else t
    if not digits or len(digits) > 30 or not all(c in "0123456789" for c in digits):
        return None
    return int(t)


_BOOLS = {"true": True, "yes": True, "on": True, "1": True,
          "false": False, "no": False, "off": False, "0": False}


def _from_text(config: "MMConfig") -> None:
    """Read the ini spelling of integer and boolean fields (``nr_cpus="4"``,
    ``flag="true"``), so a marker, ``MMConfig(...)`` and the ini key take the same text.
    Text that is no such value is left for the field's own check to refuse by name."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not isinstance(value, str) or f.type not in ("int", "bool"):
            continue
        parsed: Any = _ascii_int(value) if f.type == "int" else _BOOLS.get(value.strip().lower())
        if parsed is not None:
            object.__setattr__(config, f.name, parsed)


def _pairs(text: str, field: str, want: str, key: str) -> dict[str, str]:
    """``"a:1,b:2"`` -> ``{"a": "1", "b": "2"}``; ConfigError naming *field* otherwise."""
    pairs: dict[str, str] = {}
    for part in text.split(","):
        k, sep, v = (x.strip() for x in part.partition(":"))
        if not sep or not k or not v:
            raise ConfigError(f"{field}: expected {want}, got {text!r}")
        if k in pairs:
            raise ConfigError(f"{field}: expected each {key} once, got {k!r} twice")
        pairs[k] = v
    return pairs


def _spell(field: str, value: Any) -> str:
    if field in _SIZE_FIELDS:
        return _fmt(value) if value else "0"
    if field in ("hugetlb", "shmem_mthp"):
        return ",".join(f"{_fmt(size)}:{v}" for size, v in value.items())
    if field == "cma":
        if not value:
            return "0"

        def one(s: CMASpec) -> str:
            where = "" if s.start is None and s.end is None else \
                f"@{'' if s.start is None else _fmt(s.start)}" + ("" if s.end is None else f"-{_fmt(s.end)}")
            return f"{_fmt(s.size)}{where}"
        if len(value) == 1 and value[0].name == "reserved":
            return one(value[0])
        return ",".join(f"{s.name}:{one(s)}" for s in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list, frozenset)):
        return ",".join(str(v) for v in value)
    return str(value)
