"""A small slab for driver code: kmalloc / kvmalloc_array / kfree.

Kernel: mm/slub.c (__kmalloc), mm/util.c (kvmalloc_node), include/linux/slab.h
(ZERO_SIZE_PTR, kmalloc_array overflow check), v6.12.  Every allocation hits the
``kmalloc`` fault site (failslab), so driver error paths for allocation failure are
reachable.  Objects are Python ``bytearray``s wrapped in :class:`KmallocObject`; the
model tracks what is live so leaks are visible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["ZERO_SIZE_PTR", "KmallocObject", "KMALLOC_MAX_SIZE"]

KMALLOC_MAX_SIZE = 4 << 20  # order MAX_PAGE_ORDER pages
SIZE_MAX = (1 << 64) - 1
INT_MAX = (1 << 31) - 1
_GFP_NOWARN = 0x2000
_GFP_NOFAIL = 0x8000


class _ZeroSizePtr:
    """ZERO_SIZE_PTR: what kmalloc(0) returns; kfree accepts it."""

    def __repr__(self) -> str:
        return "ZERO_SIZE_PTR"

    def __bool__(self) -> bool:
        return True


ZERO_SIZE_PTR = _ZeroSizePtr()


class KmallocObject:
    """One slab object: ``size`` bytes in ``data``; ``items`` is a Python list a driver
    may use as the array the allocation stands for (``kvmalloc_array``)."""

    __slots__ = ("size", "data", "items", "caller", "freed")

    def __init__(self, size: int, caller: str, n: int = 0) -> None:
        self.size: int = size
        self.data: bytearray | None = bytearray(size) if size <= 4096 else None
        self.items: list[Any] = [None] * n
        self.caller: str = caller
        self.freed: bool = False

    def __repr__(self) -> str:
        return f"<kmalloc {self.size}B from {self.caller}>"


class SlabMixin(_Base):
    """Slab half of :class:`~pytest_pinfault.FakeMM`."""

    def kmalloc(self, size: int, gfp: int) -> Any:
        """An object of *size* bytes, ZERO_SIZE_PTR for 0, or None (failure, the
        ``kmalloc`` fault site, or size > KMALLOC_MAX_SIZE, which also records the
        page allocator's WARN unless __GFP_NOWARN).  Kernel: mm/slub.c:__kmalloc."""
        return self._kmalloc(size, gfp, 0)

    def kzalloc(self, size: int, gfp: int) -> Any:
        """Like :meth:`kmalloc`, zeroed (the model's objects always start zeroed): an object
        of *size* bytes, ZERO_SIZE_PTR for 0, or None; hits the ``kmalloc`` fault site.
        Kernel: include/linux/slab.h:kzalloc (kmalloc with __GFP_ZERO, v6.12)."""
        return self._kmalloc(size, gfp, 0)

    def kvmalloc_array(self, n: int, size: int, gfp: int) -> Any:
        """An array of *n* elements of *size* bytes (``.items`` has *n* slots), or None
        on multiplication overflow, failure, or more than INT_MAX bytes (a warning
        unless __GFP_NOWARN).  Kernel: include/linux/slab.h:kvmalloc_array,
        mm/util.c:__kvmalloc_node (v5.15+ size check)."""
        for name, v in (("n", n), ("size", size)):
            if not isinstance(v, int):
                raise TypeError(f"kvmalloc_array: {name} must be an int, got {type(v).__name__}")
        if n < 0 or size < 0 or n * size > SIZE_MAX:
            return None
        if n * size > INT_MAX:
            if not int(gfp) & _GFP_NOWARN:
                self._warn("kvmalloc", f"WARN_ON_ONCE(size > INT_MAX): {n} * {size} bytes")
            return None
        return self._kmalloc(n * size, gfp, n, limit=False)

    def kmalloc_array(self, n: int, size: int, gfp: int) -> Any:
        """As :meth:`kvmalloc_array` but physically contiguous: None above
        KMALLOC_MAX_SIZE.  Kernel: include/linux/slab.h:kmalloc_array."""
        for name, v in (("n", n), ("size", size)):
            if not isinstance(v, int):
                raise TypeError(f"kmalloc_array: {name} must be an int, got {type(v).__name__}")
        if n < 0 or size < 0 or n * size > SIZE_MAX:
            return None
        return self._kmalloc(n * size, gfp, n)

    def _kmalloc(self, size: int, gfp: int, n: int, limit: bool = True) -> Any:
        from .bug import external_caller
        if not isinstance(size, int):
            raise TypeError(f"kmalloc: size must be an int, got {type(size).__name__}")
        if not isinstance(gfp, int):
            raise TypeError(f"kmalloc: gfp must be an int (gfp_t), got {type(gfp).__name__}")
        if size == 0:
            return ZERO_SIZE_PTR
        if size < 0 or (limit and size > KMALLOC_MAX_SIZE):
            # a negative size_t is huge: the large-kmalloc page allocation's order is
            # above MAX_PAGE_ORDER, WARN_ON_ONCE_GFP unless __GFP_NOWARN
            if not int(gfp) & _GFP_NOWARN:
                self._warn("kmalloc", f"WARN_ON_ONCE_GFP(order > MAX_PAGE_ORDER): kmalloc of {size} bytes")
            return None
        fi = self.faults
        if fi.active and not int(gfp) & _GFP_NOFAIL and fi.hit("kmalloc", size=size, gfp=int(gfp)) is not None:
            return None
        obj = KmallocObject(size, external_caller(3), n)
        self._slab_live[id(obj)] = obj
        return obj

    def kfree(self, obj: Any) -> None:
        """Free a kmalloc object; None and ZERO_SIZE_PTR are no-ops; a double free is a
        recorded warning.  ``kvfree`` is the same function here (the model has no vmalloc
        side).  Kernel: mm/slub.c:kfree, mm/util.c:kvfree (v6.12)."""
        if obj is None or obj is ZERO_SIZE_PTR:
            return
        if not isinstance(obj, KmallocObject) or obj.freed:
            self._warn("kfree", f"kfree of {'a freed' if getattr(obj, 'freed', False) else 'a non-kmalloc'} object {obj!r}")
            return
        obj.freed = True
        self._slab_live.pop(id(obj), None)

    kvfree = kfree

    @property
    def slab_live(self) -> list[KmallocObject]:
        """Objects allocated and not yet freed."""
        return list(self._slab_live.values())
