"""Files and descriptors: ``struct file`` references and a per-task descriptor table.

Kernel: fs/file.c (get_unused_fd_flags, put_unused_fd, fd_install, fget, close_fd,
alloc_fd), fs/file_table.c (fput, __fput, alloc_file_pseudo), include/linux/fs.h
(get_file), fs/anon_inodes.c (anon_inode_getfile), v6.12.

Files are objects with a reference count ``f_count`` and, for files the model does not
own itself, ``f_op`` with an optional ``release(file)`` called when the last reference
goes (``__fput``).  A memfd (:class:`~pytest_pinfault.mm.memfd.MemFile`) is such a file:
``memfd_create`` installs it in the creating task's table (``memfd.fd``), the object
API's ``memfd.close()`` closes that descriptor, and the page cache goes when the last
reference -- descriptor, ``fget``, mapping -- does.  A file whose last reference is gone
answers -EBADF.  dma-buf files are made by ``dma_buf_export`` (mm/dma_buf.py); device
files by :meth:`FileMixin.anon_inode_getfile`.

Counters: ``file.refs`` (``fget``/``get_file`` references not yet put: rule 4 at
teardown) and ``fd.open`` (descriptors per task; judged on error returns only: a failed
call must not leave a new descriptor behind, while a test may keep descriptors open).

.. note:: No ``O_CLOEXEC`` exec semantics (the flag is only remembered), no
   ``files_struct`` sharing between tasks, RLIMIT_NOFILE is ``files.nofile`` (1024).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .fakemm import FakeMM
    from .sched import Task


def _not_a_file(k: Any, who: str, file: Any) -> bool:
    """A NULL or non-file argument: the kernel dereferences it; recorded here."""
    if file is None or not hasattr(file, "f_count"):
        k._warn(who, f"{who} of {file!r}, which is not a struct file")
        return True
    return False

if TYPE_CHECKING:  # the parts of FakeMM this mixin uses (see _proto.py)
    from ._proto import FakeMMProto as _Base
else:
    _Base = object

__all__ = ["File", "FilesStruct", "O_CLOEXEC", "O_RDWR", "O_RDONLY", "O_WRONLY", "NR_OPEN_DEFAULT"]

O_RDONLY, O_WRONLY, O_RDWR = 0, 1, 2
O_CLOEXEC = 0o2000000
NR_OPEN_DEFAULT = 1024


class File:
    """``struct file`` for a file the driver side owns: ``name``, ``f_op`` (an object with
    an optional ``release(file)``), ``private_data``, ``f_flags``, ``f_count``."""

    #: a dma-buf file's kmalloc'ed ``struct file`` (set by dma_buf_export only)
    _fobj: Any

    def __init__(self, name: str, f_op: Any, private_data: Any, f_flags: int) -> None:
        self.name = name
        self.f_op = f_op
        self.private_data = private_data
        self.f_flags = f_flags
        self.f_count = 1
        self.fd = -1
        self._fdtable: Any = None
        self.closed: bool = False

    def _last_fput(self) -> None:
        self.closed = True
        release = getattr(self.f_op, "release", None)
        if release is not None:
            release(self)

    def __repr__(self) -> str:
        return f"<file {self.name} f_count={self.f_count}{' closed' if self.closed else ''}>"


class FilesStruct:
    """``struct files_struct`` of one task: descriptor -> file, reserved descriptors,
    close-on-exec flags, and ``nofile`` (RLIMIT_NOFILE)."""

    def __init__(self, nofile: int = NR_OPEN_DEFAULT) -> None:
        self.fdt: dict[int, Any] = {}
        self.reserved: set[int] = set()
        self.cloexec: set[int] = set()
        self.nofile = nofile

    def __len__(self) -> int:
        return len(self.fdt)

    def __repr__(self) -> str:
        return f"<files {sorted(self.fdt)}>"


class FileMixin(_Base):
    """fs/file.c half of :class:`~pytest_pinfault.FakeMM`."""

    def _init_files(self) -> None:
        self._file_refs: dict[int, Any] = {}          # id -> file with fget/get_file references
        self.counters.register("file.refs", self._read_file_refs,
                               doc="file references taken with fget/get_file and not put")
        self.counters.register("fd.open", self._read_fd_open,
                               at_teardown=False, doc="open file descriptors")

    def _read_file_refs(self) -> dict[Any, int]:
        if not self._file_refs:
            return {}
        return {f: f._extra_refs for f in self._file_refs.values() if getattr(f, "_extra_refs", 0)}

    def _read_fd_open(self) -> dict[Any, int]:
        return {t: len(t.files) for t in self.tasks if t.files is not None}

    def files(self, task: "Task | None" = None) -> FilesStruct:
        """The descriptor table of *task* (default current), created on first use with
        descriptors 0-2 open on character files (stdin, stdout, stderr)."""
        task = task or self.current
        ft: FilesStruct | None = task.files
        if ft is None:
            ft = task.files = FilesStruct()
            for fd, name in enumerate(("stdin", "stdout", "stderr")):   # a process's first three
                ft.fdt[fd] = File(name, None, None, O_RDWR)
        return ft

    # ---------------------------------------------------------------- descriptors
    def get_unused_fd_flags(self, flags: int) -> int:
        """Reserve the lowest free descriptor: the fd, or -EMFILE.
        Kernel: fs/file.c:get_unused_fd_flags / alloc_fd (v6.12)."""
        ft = self.files()
        for fd in range(ft.nofile):
            if fd not in ft.fdt and fd not in ft.reserved:
                ft.reserved.add(fd)
                if flags & O_CLOEXEC:
                    ft.cloexec.add(fd)
                return fd
        return -errno.EMFILE

    def put_unused_fd(self, fd: int) -> None:
        """Give back a reserved descriptor never installed.  Kernel: fs/file.c:put_unused_fd."""
        ft = self.files()
        if fd not in ft.reserved:
            self._warn("put_unused_fd", f"put_unused_fd({fd}) of a descriptor that was not reserved")
            return
        ft.reserved.discard(fd)
        ft.cloexec.discard(fd)

    def fd_install(self, fd: int, file: Any) -> None:
        """Install *file* at the reserved *fd*; the table takes over the caller's
        reference.  Kernel: fs/file.c:fd_install (v6.12; BUG_ON on an installed fd)."""
        ft = self.files()
        if _not_a_file(self, "fd_install", file):
            return
        if fd not in ft.reserved:
            self._warn("fd_install", f"BUG_ON(fdt->fd[{fd}] != NULL): fd {fd} was not reserved")
            return
        ft.reserved.discard(fd)
        ft.fdt[fd] = file
        if getattr(file, "fd", -1) < 0:
            file.fd = fd
            file._fdtable = ft

    def fget(self, fd: int) -> Any:
        """The file at *fd* with a new reference, or None (-EBADF to the caller).
        Kernel: fs/file.c:fget (v6.12)."""
        f = self.files().fdt.get(fd) if isinstance(fd, int) else None
        if f is None or getattr(f, "f_count", 0) <= 0:
            return None
        self.get_file(f)
        return f

    def get_file(self, file: Any) -> Any:
        """Take another reference on *file*.  Kernel: include/linux/fs.h:get_file."""
        if _not_a_file(self, "get_file", file):
            return file
        if file.f_count <= 0:
            self._warn("get_file", f"get_file on a file with no references left ({file!r})")
            return file
        file.f_count += 1
        file._extra_refs = getattr(file, "_extra_refs", 0) + 1
        self._file_refs[id(file)] = file
        return file

    def fput(self, file: Any) -> None:
        """Drop a reference; the last one releases the file (__fput).
        Kernel: fs/file_table.c:fput (v6.12)."""
        if file is None:
            return
        if _not_a_file(self, "fput", file):
            return
        if file.f_count <= 0:
            self._warn("fput", f"fput of a file with no references left ({file!r})")
            return
        extra = getattr(file, "_extra_refs", 0)
        if extra:
            file._extra_refs = extra - 1
        file.f_count -= 1
        if file.f_count == 0:
            self._file_refs.pop(id(file), None)
            file._last_fput()

    def close_fd(self, fd: int) -> int:
        """close(2): remove *fd* from the table and drop its reference; 0 or -EBADF.
        Kernel: fs/file.c:close_fd / file_close_fd_locked (v6.12)."""
        return self._close_in(self.files(), fd)

    def _close_in(self, ft: FilesStruct, fd: int) -> int:
        f = ft.fdt.pop(fd, None) if isinstance(fd, int) else None
        if f is None:
            return -errno.EBADF
        ft.cloexec.discard(fd)
        if getattr(f, "fd", -1) == fd:
            f.fd = -1
        self._fput_table_ref(f)
        return 0

    def _fput_table_ref(self, f: Any) -> None:
        """The table's reference is not an fget one: drop it without touching _extra_refs."""
        if f.f_count <= 0:
            return
        f.f_count -= 1
        if f.f_count == 0:
            self._file_refs.pop(id(f), None)
            f._last_fput()

    def fd_file(self, fd: int) -> Any:
        """The file installed at *fd* without a reference (None if none; model only)."""
        return self.files().fdt.get(fd)

    # ---------------------------------------------------------------- files
    def anon_inode_getfile(self, name: str, fops: Any, priv: Any, flags: int) -> File:
        """A new file (one reference) for a driver object, e.g. a device or an event fd.
        Kernel: fs/anon_inodes.c:anon_inode_getfile (v6.12)."""
        return File(name, fops, priv, flags)

    def _install_new(self, file: Any, flags: int) -> int:
        """get_unused_fd_flags + fd_install of a new file (its reference goes to the table)."""
        fd = self.get_unused_fd_flags(flags)
        if fd < 0:
            return fd
        self.fd_install(fd, file)
        return fd
