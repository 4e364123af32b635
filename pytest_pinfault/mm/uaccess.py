"""User memory access from kernel code: ``copy_from_user``, ``copy_to_user``,
``memdup_user``, ``get_user``/``put_user``, ``access_ok``.

Kernel: include/linux/uaccess.h (copy_from_user, _copy_from_user, copy_to_user,
access_ok, get_user/put_user semantics), mm/util.c (memdup_user), v6.12.

Accesses go through the current task's address space and fault pages in as a user access
would (``handle_mm_fault``: a read of untouched anonymous memory maps the zero page, a
write allocates, COW breaks).  A range outside the user address space fails whole; a
fault inside it stops the copy there: ``copy_*_user`` return the number of bytes *not*
copied (``copy_from_user`` zero-fills the rest of the destination, as
``_copy_from_user`` does), ``get_user``/``put_user`` and ``memdup_user`` return -EFAULT.

Destinations and sources on the kernel side are ``bytearray``/``bytes`` or a
:class:`~pytest_pinfault.mm.slab.KmallocObject` (its ``data``).

.. note:: No SMAP/``user_access_begin`` sections, no ``might_fault`` lockdep check; a
   fault in the middle of a page copies the page's part before it (the kernel's
   byte-exact tail handling is architecture-specific).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from .folio import PAGE_SIZE
from .mm_types import TASK_SIZE

if TYPE_CHECKING:  # pragma: no cover
    from .fakemm import FakeMM

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["TASK_SIZE"]

_SIZES = (1, 2, 4, 8)


def _buf(obj: Any, who: str, name: str) -> Any:
    from .slab import KmallocObject
    if not isinstance(obj, (bytearray, bytes, memoryview, KmallocObject)):
        raise TypeError(f"{who}: {name} must be a bytearray or a kmalloc object, got {type(obj).__name__}")
    data = getattr(obj, "data", obj)
    if data is None and isinstance(obj, KmallocObject):      # a large kmalloc object: contents on demand
        data = obj.data = bytearray(obj.size)
    return data


class UaccessMixin(_Base):
    """include/linux/uaccess.h half of :class:`~pytest_pinfault.FakeMM`."""

    def access_ok(self, addr: int, size: int) -> bool:
        """The range lies in the user address space.  Kernel: include/asm-generic/access_ok.h."""
        return 0 <= addr and size >= 0 and addr + size <= TASK_SIZE

    def _user_copy(self, addr: int, n: int, data: bytes | None) -> tuple[int, bytes]:
        """Copy page by page from/to the current mm: (bytes done, bytes read)."""
        mm = self.current.mm
        done = 0
        out = bytearray()
        while done < n:
            take = min(n - done, PAGE_SIZE - ((addr + done) & (PAGE_SIZE - 1)))
            if data is None:
                r = mm.read(addr + done, take)
                if isinstance(r, int):
                    break
                out += r
            else:
                if mm.write(addr + done, data[done:done + take]) < 0:
                    break
            done += take
        return done, bytes(out)

    def copy_from_user(self, to: Any, from_: int, n: int) -> int:
        """Copy *n* bytes from user address *from_* into *to*; returns the bytes not
        copied (0 on success), zero-filling them in *to*.
        Kernel: include/linux/uaccess.h:copy_from_user / _copy_from_user (v6.12)."""
        buf = _buf(to, "copy_from_user", "to")
        if isinstance(buf, (bytes, memoryview)) and not isinstance(buf, bytearray):
            buf = bytearray(buf) if isinstance(buf, bytes) else buf
        if n < 0 or n > len(buf):
            self._warn("copy_from_user", f"Buffer overflow detected ({len(buf)} < {n})")
            return n
        if not self.access_ok(from_, n) or self.current.mm is None:
            buf[:n] = bytes(n)
            return n
        done, data = self._user_copy(from_, n, None)
        buf[:done] = data
        buf[done:n] = bytes(n - done)
        return n - done

    def copy_to_user(self, to: int, from_: Any, n: int) -> int:
        """Copy *n* bytes of *from_* to user address *to*; returns the bytes not copied.
        Kernel: include/linux/uaccess.h:copy_to_user / _copy_to_user (v6.12)."""
        src = bytes(_buf(from_, "copy_to_user", "from_")[:max(n, 0)])
        if n < 0 or len(src) < n:
            self._warn("copy_to_user", f"Buffer overflow detected ({len(src)} < {n})")
            return n
        if not self.access_ok(to, n) or self.current.mm is None:
            return n
        done, _ = self._user_copy(to, n, src)
        return n - done

    def memdup_user(self, src: int, len: int) -> Any:
        """A kmalloc'ed copy of *len* user bytes at *src*, or -ENOMEM (the kmalloc site)
        / -EFAULT (nothing allocated is left behind).
        Kernel: mm/util.c:memdup_user (v6.12; ERR_PTR returns become -errno)."""
        from .gfp import GFP_USER
        if len < 0:                            # a size_t: far beyond KMALLOC_MAX_SIZE
            return -errno.ENOMEM
        obj = self.kmalloc(len, GFP_USER)
        if obj is None:
            return -errno.ENOMEM
        if len and self.copy_from_user(obj, src, len):
            self.kfree(obj)
            return -errno.EFAULT
        return obj

    def get_user(self, x: Any, ptr: int, size: int = 8) -> int:
        """Read a *size*-byte little-endian integer at user address *ptr* into the box
        *x* (``x.value``); 0 or -EFAULT (``x.value`` set to 0).
        Kernel: include/linux/uaccess.h / arch/x86/include/asm/uaccess.h:get_user."""
        from .gup import Out
        if not isinstance(x, Out):
            raise TypeError(f"get_user: x must be an Out, got {type(x).__name__}")
        if size not in _SIZES:                 # __get_user_bad(): a build error in C
            self._warn("get_user", f"get_user of a {size}-byte object (sizes: {_SIZES})")
            x.value = 0
            return -errno.EFAULT
        buf = bytearray(size)
        if self.copy_from_user(buf, ptr, size):
            x.value = 0
            return -errno.EFAULT
        x.value = int.from_bytes(buf, "little")
        return 0

    def put_user(self, x: int, ptr: int, size: int = 8) -> int:
        """Write *x* as a *size*-byte little-endian integer at user address *ptr*;
        0 or -EFAULT.  Kernel: arch/x86/include/asm/uaccess.h:put_user."""
        if size not in _SIZES:                 # __put_user_bad(): a build error in C
            self._warn("put_user", f"put_user of a {size}-byte object (sizes: {_SIZES})")
            return -errno.EFAULT
        data = (x & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        return -errno.EFAULT if self.copy_to_user(ptr, data, size) else 0
