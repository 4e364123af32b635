"""vmstat-style counters (/proc/vmstat names).

Kernel: include/linux/vm_event_item.h, include/linux/mmzone.h (node_stat_item), v6.12.
"""

from __future__ import annotations

__all__ = ["VMStat"]

_COUNTERS = (
    "nr_foll_pin_acquired", "nr_foll_pin_released",
    "pgmigrate_success", "pgmigrate_fail",
    "nr_isolated_anon", "nr_isolated_file",
    "cma_alloc_success", "cma_alloc_fail",
    "oom", "offline_fail", "pageblock_claimed",
    "lru_add_drain_all", "migrate_pages_calls",
    "gup_longterm_retries", "livelocks",
    "thp_file_alloc", "thp_file_fallback", "thp_migration_split", "thp_split_page",
    # reclaim and compaction (mm/vmscan.py)
    "allocstall", "pgscan_direct", "pgsteal_direct", "pgscan_anon", "pgscan_file",
    "pgsteal_anon", "pgsteal_file", "pswpin", "pswpout",
    "compact_stall", "compact_fail", "compact_success", "compact_isolated",
)


class VMStat:
    """Counters by their /proc/vmstat names; ``as_dict()`` snapshots them, ``diff(old)``
    gives what changed since a snapshot."""

    __slots__ = _COUNTERS

    # One declaration per name of _COUNTERS, in its order, so type checkers know them
    # (tests/test_typing.py keeps the two lists equal).
    nr_foll_pin_acquired: int
    nr_foll_pin_released: int
    pgmigrate_success: int
    pgmigrate_fail: int
    nr_isolated_anon: int
    nr_isolated_file: int
    cma_alloc_success: int
    cma_alloc_fail: int
    oom: int
    offline_fail: int
    pageblock_claimed: int
    lru_add_drain_all: int
    migrate_pages_calls: int
    gup_longterm_retries: int
    livelocks: int
    thp_file_alloc: int
    thp_file_fallback: int
    thp_migration_split: int
    thp_split_page: int
    allocstall: int
    pgscan_direct: int
    pgsteal_direct: int
    pgscan_anon: int
    pgscan_file: int
    pgsteal_anon: int
    pgsteal_file: int
    pswpin: int
    pswpout: int
    compact_stall: int
    compact_fail: int
    compact_success: int
    compact_isolated: int

    def __init__(self) -> None:
        for name in _COUNTERS:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _COUNTERS}

    def __getitem__(self, name: str) -> int:
        if name not in _COUNTERS:
            raise KeyError(name)
        value: int = getattr(self, name)
        return value

    def diff(self, before: dict[str, int]) -> dict[str, int]:
        now = self.as_dict()
        return {k: now[k] - before.get(k, 0) for k in now if now[k] != before.get(k, 0)}

    def __repr__(self) -> str:
        return "VMStat(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items() if v) + ")"
