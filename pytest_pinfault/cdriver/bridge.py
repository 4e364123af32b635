"""Load a built driver into a fake mm and run it: the Python half of the runtime.

:class:`CDriver` opens the shared object with cffi (ABI mode: no Python headers or
extension build needed), fills the runtime's callback table (``struct pf_ops``) with
functions that do each kernel API's work on the fake mm, runs ``module_init``, and gives
the test the registered devices: ``drv.open("name")`` returns a :class:`DeviceFile`
whose ``ioctl``/``release``/``mmap`` run the driver's file_operations as declared entry
points of the contract checker.

Handles: ``struct page *`` is ``PF_VMEMMAP_BASE + pfn * 64`` (so page arithmetic in the
driver is the kernel's) and a folio is its head page; ``struct mm_struct *`` is a
C struct holding the fields drivers touch (``pinned_vm``, ``locked_vm``), kept in step
with its :class:`~pytest_pinfault.mm.MMStruct`.

Crash isolation: every call into driver code goes through ``pf_call`` (runtime
trampoline.c), which catches SIGSEGV/SIGBUS/SIGFPE/SIGILL and BUG() with
``sigsetjmp``/``siglongjmp`` and returns; the bridge raises :class:`DriverCrash` naming
the driver's file:line (``addr2line`` on the program counter and the frame-pointer
backtrace).  A Python exception raised inside a callback (a model error, the injector's
livelock budget) unwinds the driver the same way and is re-raised at the entry call.
"""

from __future__ import annotations

import bisect
import errno
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..contracts.entry import entry_point
from ..mm.folio import PAGE_SHIFT, PAGE_SIZE, Folio, Page
from ..mm.gfp import GFP_KERNEL
from ..mm.gup import Out
from ..mm.file import O_CLOEXEC
from ..mm.memfd import MemFile
from ..mm.slab import ZERO_SIZE_PTR
from .build import Built, build_driver, load_line_table

__all__ = ["CDriver", "DeviceFile", "DmaBuf", "DriverCrash", "load_c_driver", "PF_VMEMMAP_BASE"]

PF_VMEMMAP_BASE = 0xFFFFEA0000000000
_MM_BASE = 0xFFFF888000000000
_STRUCT_PAGE = 64
_SIGNALS = {11: "SIGSEGV", 7: "SIGBUS", 8: "SIGFPE", 4: "SIGILL"}
_UNWIND_BUG, _UNWIND_PYEXC = 1000, 1001
_MAX_ERRNO = 4095

_CDEF = """
struct pf_ops {
    int (*slab_alloc)(void *, unsigned long, unsigned long, unsigned int, int, void *);
    int (*slab_free)(void *, void *);
    long (*gup)(int, void *, unsigned long, unsigned long, unsigned int, void **);
    void (*unpin)(int, void **, unsigned long, int);
    long (*memfd_pin)(void *, long long, long long, void **, unsigned int, unsigned long *);
    long (*page_op)(int, unsigned long, long);
    unsigned long (*ucopy)(int, void *, unsigned long, unsigned long);
    long (*mm_op)(int, void *, long);
    long (*file_op)(int, void *, long, long);
    long (*dev_op)(int, void *, long, long);
    void (*log)(int, const char *);
    void (*warn)(const char *, int, const char *, const char *, void *);
    long (*pagemap)(int, unsigned long *, unsigned long, void *);
};
struct mm_struct { long long pinned_vm; unsigned long locked_vm; int __pf_id; };
struct pf_crash {
    int sig; int code; unsigned long addr; unsigned long pc; unsigned long sp; int nframes;
    unsigned long frames[16]; const char *bug_file; int bug_line; const char *bug_cond;
};
extern struct pf_ops pf_ops;
extern volatile int pf_exc_pending;
extern struct pf_crash pf_crash;
int pf_call(void *fn, unsigned long, unsigned long, unsigned long, unsigned long, long *ret);
unsigned long pf_load_base(void);
void pf_set_current(int pid, const char *comm, void *mm);
void *pf_file_alloc(void *handle, void *fop, void *priv, unsigned int flags, long long size);
void pf_file_free(void *f);
void *pf_file_inode(void *f);
void *pf_fop(void *fops, int which);
void *pf_dmabuf_op(void *d, int which);
void *pf_dmabuf_priv(void *d);
unsigned long pf_dmabuf_size(void *d);
void pf_dma_buf_free(void *d);
void *pf_attachment_new(void *d, void *dev);
void pf_attachment_free(void *a);
void *pf_device_new(const char *name);
unsigned int pf_sg_entries(void *sgt, unsigned long *out, unsigned int max, int dma);
void *pf_vma_new(unsigned long start, unsigned long end, unsigned long flags, unsigned long pgoff);
void *pf_vma_fault_fn(void *v);
void *pf_vmf_new(void *v, unsigned long pgoff, unsigned long addr);
void *pf_vmf_page(void *f);
void *pf_iosys_vaddr(void *m);
void pf_inode_set_cdev(void *inode, void *cdev, unsigned int devt);
void pf_sg_set_dma(void *sgt, unsigned int idx, unsigned long addr, unsigned int len);
unsigned long long pf_dev_dma_mask(void *dev);
const char *pf_dev_name(void *dev);
void *pf_cdev_ops(void *cdev);
unsigned long pf_last_inserted_pfn(void);
int pf_locks_held(void);
int pf_sgpages_live(void);
int pf_kmaps_live(void);
const char *pf_lock_name(int i);
void pf_locks_reset(void);
void pf_kmap_flush_all(void);
void *pf_raw_alloc(unsigned long size, int zero);
void pf_raw_free(void *p);
int pf_coverage(int dump);
extern unsigned long pf_cstack[16];
extern int pf_cstack_n;
extern unsigned long pf_so_lo;
extern unsigned long pf_so_hi;
extern void *__pf_module_init;
extern void *__pf_module_exit;
"""

_FFI: Any = None


def _ffi() -> Any:
    global _FFI
    if _FFI is None:
        try:
            import cffi
        except ImportError as e:     # pragma: no cover - the [c] extra is missing
            raise ImportError("the C-driver bridge needs cffi: pip install 'pytest-pinfault[c]'") from e
        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        _FFI = ffi
    return _FFI


class DriverCrash(Exception):
    """Driver code crashed (a NULL/ERR_PTR dereference, a bus error, BUG()): the
    message names the signal, the faulting address and the driver's file:line."""

    def __init__(self, message: str, *, entry: str, location: str, signal: str, addr: int | None) -> None:
        super().__init__(message)
        self.entry = entry
        self.location = location
        self.signal = signal
        self.addr = addr


class _File:
    """The C ``struct file`` the runtime allocated for a model file ``mobj`` (a memfd,
    or an mm/file.py ``File`` standing for a dma-buf, a device file or anything the test
    installed); ``obj`` is what it stands for (the MemFile, DmaBuf, DeviceFile ...).
    References and descriptors are the model's (``f_count``, the task's FilesStruct)."""

    __slots__ = ("handle", "cptr", "obj", "mobj", "slab")

    def __init__(self, handle: int, cptr: Any, obj: Any, mobj: Any) -> None:
        self.handle = handle
        self.cptr = cptr
        self.obj = obj
        self.mobj = mobj
        self.slab: Any = None


class _ReleaseOp:
    """``f_op`` of a model File the bridge made: its last fput runs *release*."""

    __slots__ = ("release_fn",)

    def __init__(self, release_fn: Callable[[], None]) -> None:
        self.release_fn = release_fn

    def release(self, file: Any) -> None:
        self.release_fn()


class _Caller:
    """What :func:`entry_point` inspects: the fake mm of the call."""

    __slots__ = ("fake_mm",)

    def __init__(self, fake_mm: Any) -> None:
        self.fake_mm = fake_mm


class CDriver:
    """A C driver loaded into a fake mm.  Build with :func:`load_c_driver`."""

    def __init__(self, fake_mm: Any, built: Built, *, params: Mapping[str, int] | None = None,
                 uapi_headers: Iterable[str | os.PathLike[str]] = (), include_dirs: Iterable[Path] = ()) -> None:
        ffi = _ffi()
        self.ffi = ffi
        self.fake_mm = fake_mm
        self.built = built
        self.source: Path = built.source
        # a private copy per load: dlopen of the same path would share the first load's
        # statics (module params, the driver's globals) between tests
        fd, private = tempfile.mkstemp(prefix=f"pinfault-{built.source.stem}-", suffix=".so")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(built.so_path.read_bytes())
            self.lib: Any = ffi.dlopen(private, ffi.RTLD_NOW | ffi.RTLD_LOCAL)
        finally:
            os.unlink(private)
        self._base = self.lib.pf_load_base()
        self.lib.pf_so_lo = self._base
        self.lib.pf_so_hi = self._base + built.so_path.stat().st_size
        lines = load_line_table(built.so_path)
        self._line_offs = [a for a, _ in lines]
        self._line_nos = [n for _, n in lines]
        self._sym_offs = sorted(built.symbols)
        self._frame_cache: dict[int, tuple[str, int] | None] = {}
        self._pending: BaseException | None = None
        self._slab: dict[int, Any] = {}            # address -> KmallocObject (live)
        self._slab_freed: dict[int, Any] = {}
        self._slab_caller: dict[int, int] = {}
        self._folios: dict[int, Folio] = {}        # pfn -> folio handed to the driver
        self._pages: dict[int, Page] = {}          # handle -> Page GUP handed to the driver
        self._files: dict[int, _File] = {}         # handle -> _File
        self._file_by_ptr: dict[int, _File] = {}
        self._by_model: dict[int, _File] = {}      # id(model file) -> its C struct file
        self._next_handle = 1
        self._mms: dict[int, Any] = {}
        self._mm_handles: dict[int, int] = {}
        self._mm_ptrs: dict[int, list[Any]] = {}
        self._mm_keep: list[Any] = []              # keeps id() keys valid
        self.misc: dict[str, tuple[Any, Any]] = {}  # name -> (struct miscdevice *, fops)
        self.chrdevs: dict[int, tuple[str, Any]] = {}  # major -> (name, fops or NULL)
        self.cdevs: dict[int, tuple[Any, int]] = {}    # first dev_t -> (struct cdev *, count)
        self.devices: dict[str, tuple[int, Any]] = {}  # device_create name -> (dev_t, struct device *)
        self.log: list[tuple[int, str]] = []
        self._devices: dict[int, Any] = {}          # C struct device * -> the model's DMA device
        self._entry_wrappers: dict[str, Callable[..., Any]] = {}
        self._cbs = self._install_callbacks()
        self._uapi_headers = [Path(h) for h in uapi_headers]
        self._include_dirs = list(include_dirs)
        self._uapi_ffi: Any = None
        self._uapi_consts: dict[str, int] | None = None
        self._dev = self.lib.pf_device_new(b"pinfault-importer")
        fake_mm.files()      # the task's descriptor table exists before any driver call
        self._open: list[DeviceFile] = []
        self.loaded: bool = False
        self._unloaded = False
        #: the DriverCrash that tainted the module: no driver code runs after it (the
        #: kernel kills the task after an oops; its state is not judged any further)
        self.tainted: DriverCrash | None = None
        for name, value in (params or {}).items():
            self.set_param(name, value)
        #: built with gcc line coverage (``coverage_lines()``)
        self.coverage: bool = bool(self.lib.pf_coverage(0))
        self._coverage_done = False
        #: the lines of the driver's own source gcc's coverage notes list (executed or
        #: not), filled by ``coverage_lines()``: source path -> line numbers
        self.executable_lines: dict[str, set[int]] = {}

    # ------------------------------------------------------------------ params, uapi
    def _param_ptr(self, name: str) -> Any:
        try:
            addr = self._symbol_address(f"__pf_param_{name}")
        except KeyError:
            raise KeyError(f"{self.source.name} declares no module_param {name!r}") from None
        return self.ffi.cast("void **", addr)[0]

    def _symbol_address(self, sym: str) -> int:
        """Address of a data symbol of the module glue (``__pf_param_*`` ...), from the
        build's symbol table."""
        off = self.built.data_symbols.get(sym)
        if off is None:
            raise KeyError(sym)
        return self._base + off

    def param(self, name: str) -> int:
        """The value of ``module_param(name, int|uint|long|ulong|bool, ...)``."""
        ptr = self._param_ptr(name)
        return int(self.ffi.cast(self._param_ctype(name), ptr)[0])

    def set_param(self, name: str, value: int) -> None:
        """Set a module parameter (as ``modprobe drv name=value`` does before init)."""
        ptr = self._param_ptr(name)
        self.ffi.cast(self._param_ctype(name), ptr)[0] = value

    def _param_ctype(self, name: str) -> str:
        addr = self._symbol_address(f"__pf_paramtype_{name}")
        t = self.ffi.string(self.ffi.cast("char **", addr)[0]).decode()
        return {"int": "int *", "uint": "unsigned int *", "long": "long *", "ulong": "unsigned long *",
                "bool": "_Bool *", "short": "short *", "ushort": "unsigned short *",
                "byte": "unsigned char *"}.get(t, "int *")

    @property
    def uapi(self) -> Any:
        """A cffi FFI knowing the structs of the driver's uapi headers (``uapi_headers=``),
        laid out by the C compiler's rules: ``drv.uapi.new("struct foo *", {...})``."""
        if self._uapi_ffi is None:
            from .uapi import uapi_ffi
            self._uapi_ffi, self._uapi_consts = uapi_ffi(self._uapi_headers, self._include_dirs)
        return self._uapi_ffi

    def const(self, name: str) -> int:
        """An integer macro of the uapi headers (an ioctl number, a flag)."""
        self.uapi
        assert self._uapi_consts is not None
        try:
            return self._uapi_consts[name]
        except KeyError:
            raise KeyError(f"no integer macro {name!r} in {[str(h) for h in self._uapi_headers]}") from None

    def user_alloc(self, size: int) -> int:
        """Map *size* bytes of anonymous read/write memory in the current task: a user
        address for ioctl arguments."""
        from ..mm.mm_types import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
        mm = self.fake_mm.current.mm
        return mm.mmap(max(size, 1), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)

    def put_user(self, addr: int, ctype: str, init: Any = None) -> bytes:
        """Write a uapi struct (``"struct foo"``, fields from *init*) or array
        (``"struct foo[4]"``) at user *addr*; the bytes written."""
        ffi = self.uapi
        obj = ffi.new(ctype if ctype.endswith("]") else f"{ctype} *", init)
        data = bytes(ffi.buffer(obj))
        rc = self.fake_mm.current.mm.write(addr, data)
        if rc < 0:
            raise ValueError(f"put_user: cannot write {ctype} at {addr:#x} ({rc})")
        return data

    def get_user(self, addr: int, ctype: str) -> Any:
        """Read a uapi struct from user *addr* (a cffi struct)."""
        ffi = self.uapi
        size = ffi.sizeof(ctype)
        data = self.fake_mm.current.mm.read(addr, size)
        if isinstance(data, int):
            raise ValueError(f"get_user: cannot read {ctype} at {addr:#x} ({data})")
        obj = ffi.new(f"{ctype} *")
        ffi.buffer(obj)[:] = data
        return obj[0]

    # ------------------------------------------------------------------ lifecycle
    def init(self) -> int:
        """Run module_init; its return code (0 on success)."""
        fn = getattr(self.lib, "__pf_module_init")
        if fn == self.ffi.NULL:
            self.loaded = True
            return 0
        rc = self._int(self._invoke("module_init", fn, ()))
        self.loaded = rc == 0
        return rc

    def unload(self) -> None:
        """Close what the test left open, run module_exit, then report what the module
        leaked (kmemleak): slab objects, registered devices, DMA mappings.  After a crash
        (``tainted``) no driver code runs and nothing is reported: the crash was the
        finding."""
        if self._unloaded:
            return
        self._unloaded = True
        if self.tainted is not None:
            self.loaded = False
            self.misc.clear()
            self.chrdevs.clear()
            self.cdevs.clear()
            self.devices.clear()
            self._open.clear()
            self._slab.clear()
            return
        for dev_file in list(self._open):
            if not dev_file.closed:
                dev_file.close()
        k = self.fake_mm
        ft = k.files()
        for fd in sorted(ft.fdt):          # descriptors of the driver's own files (its dma-bufs)
            f = self._by_model.get(id(ft.fdt[fd]))
            if f is not None and isinstance(f.obj, DmaBuf):
                k.close_fd(fd)
        if self.loaded:
            self.loaded = False
            fn = getattr(self.lib, "__pf_module_exit")
            if fn != self.ffi.NULL:
                self._invoke("module_exit", fn, ())
        k = self.fake_mm
        for name in list(self.misc):
            k._warn("misc_register", f"{self.source.name}: misc device {name!r} still registered after module_exit")
        for f in list(self._files.values()):    # the driver's dma-bufs still referenced
            if isinstance(f.obj, DmaBuf) and not f.obj.released:
                k._warn("dma_buf_put", f"{self.source.name}: {f.obj!r} still referenced after module_exit "
                                       f"(get_dma_buf without dma_buf_put)")
        for major, (name, _) in list(self.chrdevs.items()):
            k._warn("register_chrdev", f"{self.source.name}: character device region {name!r} (major {major}) "
                                       f"still registered after module_exit")
        for name in list(self.devices):
            k._warn("device_create", f"{self.source.name}: device {name!r} not destroyed by module_exit")
        for first in list(self.cdevs):
            k._warn("cdev_add", f"{self.source.name}: cdev {first >> 20}:{first & 0xFFFFF} not deleted by module_exit")
        if self._slab:
            objs = sorted(self._slab.items())
            where = ", ".join(f"{o.size} bytes from {self.addr2line(self._slab_caller.get(a, 0))}"
                              for a, o in objs[:5])
            k._warn("kmemleak", f"{len(objs)} unreferenced object(s) after module_exit of "
                                f"{self.source.name}: {where}")
            for a, o in objs:
                k.kfree(o)
                self.lib.pf_raw_free(self.ffi.cast("void *", a))
            self._slab.clear()
        views = self.lib.pf_kmaps_live()
        if views:
            k._warn("vunmap", f"{views} CPU mapping(s) (vm_map_ram/vmap/kmap_local) of {self.source.name} "
                              f"never unmapped")
        pages = self.lib.pf_sgpages_live()
        if pages:
            k._warn("kmemleak", f"{pages} scatterlist page chunk(s) of {self.source.name} never freed "
                                f"(sg_free_table missing)")
        self._mm_sync()
        for ptr, _, _ in self._mm_ptrs.values():
            self.lib.pf_raw_free(ptr)
        self._mm_ptrs.clear()
        self._mm_handles.clear()
        self._mms.clear()

    def coverage_lines(self, final: bool = False) -> dict[str, set[int]]:
        """Lines of the driver's own source (never the bridge's headers or runtime)
        executed since the load (or the last call), by gcc's coverage counters (a driver
        built with ``coverage=True``); the counters restart at zero.  ``final=True`` is
        the last collection of this load: later calls return ``{}``, and nothing is
        written at process exit.  ``{}`` for a driver built without coverage.  Every
        line gcov lists for the source, executed or not, joins ``executable_lines``."""
        if not self.coverage or self._coverage_done:
            return {}
        self._coverage_done = final
        import json
        import shutil
        with tempfile.TemporaryDirectory(prefix="pinfault-gcov-") as tmp:
            old = os.environ.get("GCOV_PREFIX")
            os.environ["GCOV_PREFIX"] = tmp
            try:
                self.lib.pf_coverage(2 if final else 1)
            finally:
                if old is None:
                    del os.environ["GCOV_PREFIX"]
                else:
                    os.environ["GCOV_PREFIX"] = old
            gcda = next(Path(tmp).rglob("driver.gcda"), None)
            gcno = self.built.so_path.parent / "driver.gcno"
            if gcda is None or not gcno.is_file():
                return {}
            shutil.copy(gcno, gcda.parent / "driver.gcno")
            r = subprocess.run(["gcov", "--json-format", "--stdout", "driver.gcda"], cwd=gcda.parent,
                               capture_output=True, text=True)
        out: dict[str, set[int]] = {}
        for chunk in r.stdout.splitlines():
            if not chunk.strip().startswith("{"):
                continue
            for f in json.loads(chunk).get("files", []):
                # the cached object may have been compiled from another copy of the same
                # source (the cache key is the content): match by name
                if Path(f["file"]).name != self.source.name:
                    continue
                out.setdefault(str(self.source), set()).update(ln["line_number"] for ln in f["lines"] if ln["count"])
                self.executable_lines.setdefault(str(self.source), set()).update(
                    ln["line_number"] for ln in f["lines"])
        return out

    def __enter__(self) -> "CDriver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unload()

    # ------------------------------------------------------------------ devices and fds
    def open(self, name: str, flags: int = 0o2) -> "DeviceFile":
        """open("/dev/<name>") of a registered misc device: runs fops->open if any
        (``file->private_data`` is the miscdevice, as misc_open sets it)."""
        name = name.rsplit("/", 1)[-1]
        cdev, devt = self.ffi.NULL, 0
        if name in self.misc:
            misc, fops = self.misc[name]
        else:
            misc, fops = self.ffi.NULL, None
            if name in self.devices:
                devt = self.devices[name][0]
            else:                         # a region's name: its first registered cdev
                major = next((m for m, (n, _) in self.chrdevs.items() if n == name), -1)
                devt = min((first for first in self.cdevs if first >> 20 == major), default=major << 20) \
                    if major >= 0 else -1
            if devt >= 0:
                for first, (c, count) in self.cdevs.items():
                    if first <= devt < first + count:
                        cdev, fops = c, self.lib.pf_cdev_ops(c)
                        break
                else:
                    reg = self.chrdevs.get(devt >> 20)
                    if reg is not None and reg[1] != self.ffi.NULL:
                        fops = reg[1]
            if fops is None:
                known = sorted(set(self.misc) | set(self.devices) | {n for n, _ in self.chrdevs.values()})
                raise FileNotFoundError(f"/dev/{name}: no misc device, character device or device node of "
                                        f"that name is registered (registered: {known or 'none'})")
        f = DeviceFile(self, name, fops)
        mobj = self.fake_mm.anon_inode_getfile(f"/dev/{name}", _ReleaseOp(lambda: self._release_cfile(f._file)),
                                               f, flags)
        f._file = self._new_file(f, mobj, fops, misc, flags, 0)
        if devt:
            self.lib.pf_inode_set_cdev(self.lib.pf_file_inode(f._file.cptr), cdev, devt)
        fn = self.lib.pf_fop(fops, 0)
        if fn != self.ffi.NULL:
            rc = f._entry("open", fn, (self.lib.pf_file_inode(f._file.cptr), f._file.cptr), ret="int")
            if rc < 0:
                self._drop_file(f._file)
                f.closed = True
                raise OSError(-rc, f"open /dev/{name}: {os.strerror(-rc)}")
        self._open.append(f)
        return f

    def fd_install(self, obj: Any, cloexec: bool = False) -> int:
        """A descriptor for *obj* in the current task's table (the model's FilesStruct):
        a memfd already there (``memfd_create`` installed it) keeps its fd; any other
        object gets the lowest free one (-EMFILE when full)."""
        k = self.fake_mm
        if getattr(obj, "f_count", None) is not None:        # a model file (memfd, File)
            fd = getattr(obj, "fd", -1)
            if fd >= 0 and k.fd_file(fd) is obj:
                return fd
            k.get_file(obj) if obj.f_count > 0 else None
            fd = k._install_new(obj, O_CLOEXEC if cloexec else 0)
            if fd >= 0:                                   # the table's reference, not an fget one
                obj._extra_refs = max(getattr(obj, "_extra_refs", 0) - 1, 0)
            return fd
        mobj = k.anon_inode_getfile(str(obj), None, obj, 0o2)
        return k._install_new(mobj, O_CLOEXEC if cloexec else 0)

    def fget(self, fd: int) -> Any:
        """What *fd* stands for (a MemFile, a :class:`DmaBuf`, the object given to
        :meth:`fd_install` ...), None if closed; takes no reference."""
        mobj = self.fake_mm.fd_file(fd)
        if mobj is None:
            return None
        f = self._by_model.get(id(mobj))
        if f is not None:
            return f.obj
        return mobj.private_data if type(mobj).__name__ == "File" and mobj.private_data is not None else mobj

    def close(self, fd: int) -> int:
        """close(2) in the model's table: the last reference releases the file (a
        dma-buf's release op runs then)."""
        return self.fake_mm.close_fd(fd)

    def dmabuf(self, fd: int) -> "DmaBuf | None":
        """The :class:`DmaBuf` behind file descriptor *fd*, or None when it is no dma-buf."""
        obj = self.fget(fd)
        return obj if isinstance(obj, DmaBuf) else None

    def _new_file(self, obj: Any, mobj: Any, fops: Any, priv: Any, flags: int, size: int) -> _File:
        h = self._next_handle
        self._next_handle += 1
        cptr = self.lib.pf_file_alloc(self.ffi.cast("void *", h), fops, priv, flags, size)
        f = _File(h, cptr, obj, mobj)
        self._files[h] = f
        self._file_by_ptr[int(self.ffi.cast("uintptr_t", cptr))] = f
        self._by_model[id(mobj)] = f
        return f

    def _cfile_for(self, mobj: Any) -> _File:
        """The C struct file of a model file (made on first use)."""
        f = self._by_model.get(id(mobj))
        if f is None:
            obj = mobj
            if type(mobj).__name__ == "File" and mobj.private_data is not None:
                obj = mobj.private_data
            size = mobj.i_size if isinstance(mobj, MemFile) else 0
            f = self._new_file(obj, mobj, self.ffi.NULL, self.ffi.NULL, 0o2, size)
        return f

    def _drop_file(self, f: _File) -> None:
        self._files.pop(f.handle, None)
        self._file_by_ptr.pop(int(self.ffi.cast("uintptr_t", f.cptr)), None)
        self._by_model.pop(id(f.mobj), None)
        self.lib.pf_file_free(f.cptr)

    def _release_cfile(self, f: _File) -> None:
        """The model file's last reference went: release what it stands for."""
        obj = f.obj
        if isinstance(obj, DmaBuf):
            obj._release()
            if f.slab is not None:
                self.fake_mm.kfree(f.slab)
        elif isinstance(obj, DeviceFile):
            obj._release()
        self._drop_file(f)

    # ------------------------------------------------------------------ calling driver code
    def _invoke(self, name: str, fn: Any, args: tuple[Any, ...]) -> int:
        """pf_call with the current task set; a crash or a callback's exception raises."""
        __tracebackhide__ = True
        if self.tainted is not None:
            raise DriverCrash(f"{self.source.name} crashed earlier (tainted): {name} not run\n{self.tainted}",
                              entry=name, location=self.tainted.location, signal=self.tainted.signal,
                              addr=self.tainted.addr)
        ffi, lib = self.ffi, self.lib
        task = self.fake_mm.current
        lib.pf_set_current(task.pid, task.comm.encode()[:15], self._mm_handle(task.mm))
        a = [int(ffi.cast("uintptr_t", x)) if not isinstance(x, int) else x & 0xFFFFFFFFFFFFFFFF for x in args]
        a += [0] * (4 - len(a))
        ret = ffi.new("long *")
        try:
            code = lib.pf_call(fn, a[0], a[1], a[2], a[3], ret)
        finally:
            self._mm_sync()
        if code == 0:
            return ret[0]
        if code == _UNWIND_PYEXC:
            exc, self._pending = self._pending, None
            lib.pf_exc_pending = 0
            assert exc is not None
            raise exc
        lib.pf_locks_reset()
        crash = self._crash(name, code)
        self.tainted = crash
        raise crash

    def _crash(self, entry: str, code: int) -> DriverCrash:
        c = self.lib.pf_crash
        if code == _UNWIND_BUG:
            file = self.ffi.string(c.bug_file).decode() if c.bug_file != self.ffi.NULL else "?"
            cond = self.ffi.string(c.bug_cond).decode() if c.bug_cond != self.ffi.NULL else "BUG()"
            loc = f"{file}:{c.bug_line}"
            msg = f"kernel BUG at {loc}: {cond} (in {entry})"
            return DriverCrash(msg, entry=entry, location=loc, signal="BUG", addr=None)
        sig = _SIGNALS.get(code, f"signal {code}")
        addr = int(c.addr)
        if addr < PAGE_SIZE:
            what = f"NULL pointer dereference at {addr:#x}"
        elif addr >= (1 << 64) - _MAX_ERRNO - PAGE_SIZE:
            what = f"ERR_PTR dereference at {addr:#x} (near ERR_PTR({addr - (1 << 64)}))"
        elif addr >= PF_VMEMMAP_BASE and addr < PF_VMEMMAP_BASE + (1 << 40):
            what = (f"direct access to struct page at {addr:#x} (pfn {(addr - PF_VMEMMAP_BASE) // _STRUCT_PAGE:#x}); "
                    "the bridge keeps struct page opaque")
        elif abs(addr - int(c.sp)) < (1 << 16):
            what = f"stack overflow (access at {addr:#x}, next to the stack pointer; a kernel stack is 16 KiB)"
        else:
            what = f"bad access at {addr:#x}"
        # the pc, then the callers (return addresses minus one: the call instruction)
        where = [self.addr2line(int(c.pc))]
        where += [self.addr2line(int(c.frames[i]) - 1) for i in range(min(c.nframes, 16))]
        where = [w for w in where if not w.startswith("?") and "/cdriver/runtime/" not in w]
        drv_frames = [w for w in where if f"/{self.source.name}:" in w or f"({self.source.name}:" in w]
        loc = drv_frames[0] if drv_frames else (where[0] if where else "?")
        msg = f"driver crash in {entry}: {sig}, {what}\n  at {loc}"
        if where and where[0] != loc:
            msg += f"\n  (faulting instruction in {where[0]})"
        rest = where[where.index(loc) + 1:] if loc in where else where
        msg += "".join(f"\n  called from {t}" for t in rest[:8])
        return DriverCrash(msg, entry=entry, location=loc, signal=sig, addr=addr)

    def addr2line(self, addr: int) -> str:
        """``function (file:line)`` of a code address in the driver object."""
        if not addr:
            return "?"
        off = addr - self._base
        if off < 0 or off > (1 << 32):
            return f"? ({addr:#x}, outside the driver)"
        r = subprocess.run(["addr2line", "-f", "-e", str(self.built.so_path), f"{off:#x}"],
                           capture_output=True, text=True)
        lines = r.stdout.split("\n")
        if len(lines) < 2 or lines[0] in ("", "??"):
            return f"? ({off:#x})"
        return f"{lines[0]} ({lines[1].split(' (')[0]})"

    def symbol(self, fn: Any) -> str:
        """The driver's name for a function pointer."""
        off = int(self.ffi.cast("uintptr_t", fn)) - self._base
        return self.built.symbols.get(off, f"fn@{off:#x}")

    def _entry_call(self, kind: str, fn: Any, args: tuple[Any, ...]) -> int:
        __tracebackhide__ = True
        name = self.symbol(fn)
        wrapper = self._entry_wrappers.get(name)
        if wrapper is None:
            def call(caller: _Caller, fn: Any, args: tuple[Any, ...], _kind: str = kind) -> int:
                __tracebackhide__ = True
                return self._top_call(_kind, fn, args)
            wrapper = self._entry_wrappers[name] = entry_point(name, count=False)(call)
        return wrapper(_Caller(self.fake_mm), fn, args)

    def _top_call(self, kind: str, fn: Any, args: tuple[Any, ...]) -> int:
        __tracebackhide__ = True
        lib = self.lib
        ret = self._invoke(self.symbol(fn), fn, args)
        held = lib.pf_locks_held()
        if held:
            names = ", ".join(self.ffi.string(lib.pf_lock_name(i)).decode() for i in range(held))
            self.fake_mm._warn("lockdep", f"{self.symbol(fn)}: lock(s) held when returning to user space: {names}")
            lib.pf_locks_reset()
        return ret

    @staticmethod
    def _int(v: int) -> int:
        v &= 0xFFFFFFFF
        return v - (1 << 32) if v & 0x80000000 else v

    # ------------------------------------------------------------------ C frames
    def _frame_info(self, addr: int) -> "tuple[str, int] | None":
        """(function, line) of a code address in the driver's own source, else None."""
        off = addr - self._base
        hit = self._frame_cache.get(off, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        info = None
        i = bisect.bisect_right(self._line_offs, off) - 1
        j = bisect.bisect_right(self._sym_offs, off) - 1
        if i >= 0 and j >= 0 and self._line_offs[i] >= self._sym_offs[j]:
            info = (self.built.symbols[self._sym_offs[j]], self._line_nos[i])
        self._frame_cache[off] = info
        return info

    def _c_chain(self) -> "list[tuple[str, int]]":
        """The driver functions (innermost first) on the C stack at the last fault-site
        call of the runtime, with the line of each call."""
        lib = self.lib
        out = []
        for i in range(lib.pf_cstack_n):
            info = self._frame_info(lib.pf_cstack[i] - 1)
            if info is not None:
                out.append(info)
        return out

    _SYNTH: dict[tuple[str, str, int], Callable[..., Any]] = {}

    def _synth(self, name: str, line: int) -> Callable[..., Any]:
        key = (str(self.source), name, line)
        f = CDriver._SYNTH.get(key)
        if f is None:
            src = "\n" * max(line - 2, 0) + f"def {name}(__pf_next):\n    return __pf_next()\n"
            ns: dict[str, Any] = {}
            # "<C> path": coverage.py measures no "<...>" file, so these frames never pass
            # for lines of the .c file (gcov records those); callers read "<C> path:line fn"
            exec(compile(src, f"<C> {self.source}", "exec"), ns)
            f = CDriver._SYNTH[key] = ns[name]
        return f

    def _in_c_frames(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call the model with the driver's C call chain on the Python stack (one frame
        per driver function, named after it, at the driver's file and line): fault
        records then name the driver's caller and ``caller=`` filters match C
        functions.  Only while faults are armed (it costs a frame per C function)."""
        if not self.fake_mm.faults.active:
            return fn(*args)
        g: Callable[..., Any] = lambda: fn(*args)  # noqa: E731
        for name, line in self._c_chain():
            g = (lambda inner, outer: (lambda: outer(inner)))(g, self._synth(name, line))
        return g()

    # ------------------------------------------------------------------ handles
    def _mm_handle(self, mm: Any) -> Any:
        """The ``struct mm_struct *`` of a model MMStruct (C memory holding the fields
        drivers touch, kept in step with the model; see :meth:`_mm_sync`)."""
        if mm is None:
            return self.ffi.NULL
        h = self._mm_handles.get(id(mm))
        if h is None:
            ptr = self.ffi.cast("struct mm_struct *", self.lib.pf_raw_alloc(self.ffi.sizeof("struct mm_struct"), 1))
            setattr(ptr, "__pf_id", len(self._mm_handles) + 1)
            h = int(self.ffi.cast("uintptr_t", ptr))
            self._mm_handles[id(mm)] = h
            self._mms[h] = mm
            self._mm_ptrs[h] = [ptr, mm, 0]
            self._mm_keep.append(mm)
        self._mm_sync()
        return self.ffi.cast("void *", h)

    def _mm_sync(self) -> None:
        """Keep ``mm->pinned_vm``/``locked_vm`` of the C structs and the model equal:
        what the driver added in C since the last sync goes to the model, then the
        model's values go to C.  Run around every call into the driver and every
        accounting callback."""
        for entry in self._mm_ptrs.values():
            ptr, mm, last = entry
            delta = int(ptr.pinned_vm) - last
            if delta:
                mm.pinned_vm += delta
            ptr.pinned_vm = mm.pinned_vm
            ptr.locked_vm = mm.locked_vm
            entry[2] = mm.pinned_vm

    def _mm(self, ptr: Any) -> Any:
        h = int(self.ffi.cast("uintptr_t", ptr))
        if not h:
            return self.fake_mm.current.mm
        return self._mms[h]

    def _folio(self, pfn: int) -> Folio | None:
        f = self._folios.get(pfn)
        if f is not None and not f.freed and f.pfn <= pfn < f.pfn + f.nr_pages:
            return f
        f = self.fake_mm.pfn_to_folio(pfn)
        if f is not None:
            self._folios[pfn] = f
        return f

    def _page(self, h: int) -> Page | None:
        if not h:
            return None
        pg = self._pages.get(h)
        if pg is not None and not pg.folio.freed and pg.folio.pfn <= pg.pfn < pg.folio.pfn + pg.folio.nr_pages:
            return pg
        pfn = (h - PF_VMEMMAP_BASE) // _STRUCT_PAGE
        f = self._folio(pfn)
        return None if f is None else Page(f, pfn)

    def _remember(self, folio: Folio) -> int:
        self._folios[folio.pfn] = folio
        return PF_VMEMMAP_BASE + folio.pfn * _STRUCT_PAGE

    def _file(self, ptr: Any) -> _File | None:
        return self._file_by_ptr.get(int(self.ffi.cast("uintptr_t", ptr)))

    def _handle_file(self, h: Any) -> _File | None:
        return self._files.get(int(self.ffi.cast("uintptr_t", h)))

    # ------------------------------------------------------------------ callbacks
    def _install_callbacks(self) -> list[Any]:
        ffi, lib = self.ffi, self.lib
        ops = lib.pf_ops
        keep = []

        def onerror(exc_type: Any, exc: Any, tb: Any) -> None:
            if self._pending is None:
                self._pending = exc.with_traceback(tb) if exc is not None else exc_type()
            lib.pf_exc_pending = 1

        for name, ctype in (("slab_alloc", "int(void *, unsigned long, unsigned long, unsigned int, int, void *)"),
                            ("slab_free", "int(void *, void *)"),
                            ("gup", "long(int, void *, unsigned long, unsigned long, unsigned int, void **)"),
                            ("unpin", "void(int, void **, unsigned long, int)"),
                            ("memfd_pin", "long(void *, long long, long long, void **, unsigned int, unsigned long *)"),
                            ("page_op", "long(int, unsigned long, long)"),
                            ("ucopy", "unsigned long(int, void *, unsigned long, unsigned long)"),
                            ("mm_op", "long(int, void *, long)"),
                            ("file_op", "long(int, void *, long, long)"),
                            ("dev_op", "long(int, void *, long, long)"),
                            ("log", "void(int, const char *)"),
                            ("warn", "void(const char *, int, const char *, const char *, void *)"),
                            ("pagemap", "long(int, unsigned long *, unsigned long, void *)")):
            cb = ffi.callback(ctype, getattr(self, "_cb_" + name), onerror=onerror)
            keep.append(cb)
            setattr(ops, name, cb)
        return keep

    def _cb_slab_alloc(self, p: Any, n: int, size: int, gfp: int, kind: int, caller: Any) -> int:
        k = self.fake_mm
        obj = self._in_c_frames(k.kmalloc, n * size, gfp) if kind != 1 else \
            self._in_c_frames(k.kvmalloc_array, n, size, gfp)
        if p == self.ffi.NULL:                # refused before allocating (size limits)
            if obj is not None:
                k.kfree(obj)
            return -1
        if obj is None:
            return -1
        if obj is ZERO_SIZE_PTR:          # pragma: no cover - the runtime returns ZERO_SIZE_PTR itself
            return -1
        addr = int(self.ffi.cast("uintptr_t", p))
        where = self._frame_info(int(self.ffi.cast("uintptr_t", caller)) - 1)
        obj.caller = f"{self.source.name}:{where[1]} {where[0]}" if where else f"{self.source.name} (runtime)"
        self._slab[addr] = obj
        self._slab_freed.pop(addr, None)
        self._slab_caller[addr] = int(self.ffi.cast("uintptr_t", caller))
        return 0

    def _cb_slab_free(self, p: Any, caller: Any) -> int:
        addr = int(self.ffi.cast("uintptr_t", p))
        obj = self._slab.pop(addr, None)
        if obj is None:
            where = self.addr2line(int(self.ffi.cast("uintptr_t", caller)))
            freed = self._slab_freed.get(addr)
            if freed is not None:
                self.fake_mm._warn("kfree", f"double free of {freed!r} at {addr:#x} from {where}")
            else:
                self.fake_mm._warn("kfree", f"kfree of {addr:#x}, not a live kmalloc object, from {where}")
            return 0
        self.fake_mm.kfree(obj)
        self._slab_freed[addr] = obj
        return 1

    _GUP = ("pin_user_pages_fast", "pin_user_pages", "pin_user_pages_unlocked", "pin_user_pages_remote",
            "get_user_pages_fast", "get_user_pages", "get_user_pages_unlocked", "get_user_pages_remote")

    def _cb_gup(self, op: int, mm: Any, start: int, nr: int, flags: int, pages: Any) -> int:
        k = self.fake_mm
        name = self._GUP[op]
        lst: list[Any] | None = None if pages == self.ffi.NULL else [None] * min(nr, 1 << 24)
        fn = getattr(k, name)
        if name.endswith("_remote"):
            ret = self._in_c_frames(fn, self._mm(mm), start, nr, flags, lst, None)
        elif name.endswith("_unlocked"):
            ret = self._in_c_frames(fn, start, nr, lst, flags)
        else:
            ret = self._in_c_frames(fn, start, nr, flags, lst)
        if ret > 0 and lst is not None:
            arr = self.ffi.cast("uintptr_t *", pages)
            pmap = self._pages
            out = [0] * ret
            for i in range(ret):
                pg = lst[i]
                h = PF_VMEMMAP_BASE + pg.pfn * _STRUCT_PAGE
                pmap[h] = pg
                out[i] = h
            arr[0:ret] = out
        return ret

    def _cb_unpin(self, op: int, handles: Any, n: int, dirty: int) -> None:
        k = self.fake_mm
        arr = self.ffi.cast("uintptr_t *", handles)
        if op == 3:        # unpin_user_page_range_dirty_lock(page, npages, dirty)
            first = arr[0]
            for i in range(n):
                pg = self._page(first + i * _STRUCT_PAGE)
                if pg is not None:
                    k.unpin_user_pages_dirty_lock([pg], 1, bool(dirty))
            return
        if op == 4:        # unpin_user_folio(folio, npages)
            fn = self._symbol("unpin_user_folio")
            pg = self._page(arr[0])
            if pg is not None and fn is not None:
                fn(pg.folio, n)
            return
        hs = arr[0:n]
        if op == 2:
            fn = self._symbol("unpin_folios")
            folios = [None if not h else self._folio((h - PF_VMEMMAP_BASE) // _STRUCT_PAGE) for h in hs]
            if fn is not None:
                fn(folios, n)
            return
        get = self._pages.get
        pages = []
        for h in hs:
            pg = get(h)
            if pg is None or pg.folio.freed:
                pg = self._page(h)
            pages.append(pg)
        if op == 1:
            k.unpin_user_pages_dirty_lock(pages, n, bool(dirty))
        else:
            k.unpin_user_pages(pages, n)

    def _symbol(self, name: str) -> Any:
        """The model's function *name*, or None after recording an ``unknown_symbol``
        kernel warning when the machine's kernel version has no such function
        (pytest_pinfault/mm/versions.py): the real module would not load there."""
        fn = getattr(self.fake_mm, name, None)
        if fn is None:
            self.fake_mm._warn("unknown_symbol", f"{self.source.name}: Unknown symbol {name} (err -2): kernel "
                                                 f"{self.fake_mm.config.kernel} has no {name}; the module "
                                                 f"would not load")
        return fn

    def _cb_memfd_pin(self, file: Any, start: int, end: int, folios: Any, maxf: int, offset: Any) -> int:
        pin = self._symbol("memfd_pin_folios")
        if pin is None:
            return -errno.ENOSYS
        f = self._file(file)
        memfd = f.obj if f is not None else None
        lst: list[Any] = [None] * maxf
        off = Out(0)
        ret = self._in_c_frames(pin, memfd, start, end, lst, maxf, off)
        if ret > 0:
            arr = self.ffi.cast("uintptr_t *", folios)
            arr[0:ret] = [self._remember(fo) for fo in lst[:ret]]
            if offset != self.ffi.NULL:
                offset[0] = off.value
        return ret

    def _cb_page_op(self, op: int, pfn: int, arg: int) -> int:
        k = self.fake_mm
        if op == 10:       # alloc_pages(gfp=arg, order=pfn)
            page = self._in_c_frames(k.alloc_pages, arg, pfn)
            if page is None:
                return -1
            return (self._remember(page.folio) - PF_VMEMMAP_BASE) // _STRUCT_PAGE + (page.pfn - page.folio.pfn)
        folio = self._folio(pfn)
        if folio is None:
            k._warn("struct page", f"{self.source.name}: page/folio handle for pfn {pfn:#x} is not an allocated folio")
            return -1
        if op == 0:
            return folio.pfn
        if op == 1:
            return folio.nr_pages
        if op == 2:
            return folio.index
        if op == 3:
            return k.folio_ref_count(folio)
        if op == 4:
            return int(k.folio_maybe_dma_pinned(folio))
        if op == 5:
            return int(folio.hstate is not None or folio.kind == "hugetlb")
        if op == 6:
            return int(k.folio_is_longterm_pinnable(folio))
        if op == 7:
            k.folio_get(folio)
        elif op == 8:
            k.folio_put(folio)
        elif op == 9:
            from ..mm.folio import PG_dirty
            folio.flags |= PG_dirty
        elif op == 11:
            k.free_pages_block(Page(folio, pfn), arg)
        return 0

    def _cb_ucopy(self, direction: int, kaddr: Any, uaddr: int, n: int) -> int:
        mm = self.fake_mm.current.mm
        if mm is None:
            return n
        ffi = self.ffi
        done = 0
        while done < n:
            addr = uaddr + done
            take = min(n - done, PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
            if direction == 0:
                data = mm.read(addr, take)
                if isinstance(data, int):
                    break
                ffi.memmove(ffi.cast("char *", kaddr) + done, data, take)
            elif direction == 1:
                data = ffi.unpack(ffi.cast("char *", kaddr) + done, take)
                if mm.write(addr, data) < 0:
                    break
            elif direction == 2:
                if mm.write(addr, bytes(take)) < 0:
                    break
            else:
                if addr >= 1 << 47 or addr + n > 1 << 47:
                    return n
                return 0
            done += take
        return n - done

    def _cb_mm_op(self, op: int, mmp: Any, arg: int) -> int:
        self._mm_sync()
        try:
            return self._mm_op(op, mmp, arg)
        finally:
            self._mm_sync()

    def _mm_op(self, op: int, mmp: Any, arg: int) -> int:
        k = self.fake_mm
        if op in (0, 1):
            return k.account_locked_vm(self._mm(mmp), arg, op == 0)
        mm = self._mm(mmp) if op <= 7 else None
        if op == 2:
            assert mm is not None
            return mm.locked_vm
        if op == 3:
            assert mm is not None
            mm.pinned_vm += arg
            return mm.pinned_vm
        if op in (4, 5, 6, 7):            # mmgrab/mmdrop (mm_count), mmget/mmput (users): the model's
            getattr(k, ("mmgrab", "mmdrop", "mmget", "mmput")[op - 4])(mm)
            return 0
        if op == 8:
            if arg == 8:
                return k.current.mm.rlimit_memlock if k.current.mm is not None else 0
            if arg == 7:
                return k.files().nofile
            return (1 << 64) - 1
        if op == 9:
            if arg == 14:
                return int(k.current_capable_ipc_lock())
            return 0
        if op == 10:
            return k.memalloc_pin_save()
        if op == 11:
            k.memalloc_pin_restore(arg)
            return 0
        if op == 13:                      # signal_pending(current) / fatal_signal_pending(current)
            task = k.current
            return int(task.fatal_signal_pending if arg else task.signal_pending)
        return 0

    def _cb_file_op(self, op: int, fp: Any, a: int, b: int) -> int:
        k = self.fake_mm
        if op == 0:                       # fget(fd): the model's, with its reference
            mobj = k.fget(a & 0xFFFFFFFF)
            if mobj is None:
                return 0
            return int(self.ffi.cast("uintptr_t", self._cfile_for(mobj).cptr))
        if op == 9:                       # get_unused_fd_flags
            return k.get_unused_fd_flags(a)
        if op == 11:                      # put_unused_fd
            k.put_unused_fd(a)
            return 0
        if op in (12, 13, 7, 8, 14):      # by address_space handle
            f = self._handle_file(fp)
        else:
            f = self._file(fp)
        if f is None:
            k._warn("struct file", f"{self.source.name}: a struct file the bridge did not create")
            return 0
        obj = f.obj
        if op == 1:                       # fput
            k.fput(f.mobj)
            return 0
        if op == 2:                       # get_file
            k.get_file(f.mobj)
            return 0
        if op == 10:                      # fd_install(fd, file): the table takes the reference
            k.fd_install(a, f.mobj)
            return 0
        if op == 12:
            return obj.i_size if isinstance(obj, MemFile) else 0
        memfd = obj if isinstance(obj, MemFile) else None
        if op == 3:
            return int(memfd is not None and memfd.shmem_file())
        if op == 13:
            return int(memfd is not None and memfd.shmem_file())
        if op == 4:
            return int(memfd is not None and memfd.is_file_hugepages())
        if op == 5:                       # memfd_fcntl
            if memfd is None:
                return -errno.EINVAL
            if a == 1024 + 10:
                return memfd.get_seals()
            if a == 1024 + 9:
                return memfd.add_seals(b)
            return -errno.EINVAL
        if op == 6:
            return memfd.hstate.order if memfd is not None and memfd.hstate is not None else -1
        if memfd is None:
            return -errno.EINVAL
        if op == 7:                       # shmem_read_mapping_page(mapping, index)
            folio = k.filemap_get_folio(memfd.mapping, a)
            if isinstance(folio, int):
                folio = self._in_c_frames(k.memfd_alloc_folio, memfd, a)
                if isinstance(folio, int):
                    return folio
            return (self._remember(folio) - PF_VMEMMAP_BASE) // _STRUCT_PAGE + (a - folio.index)
        if op in (8, 14):                 # find_get_page_flags / filemap_get_folio
            idx = a << memfd.hstate.order if (op == 8 and memfd.hstate is not None) else a
            folio = k.filemap_get_folio(memfd.mapping, idx)
            if isinstance(folio, int):
                return folio
            self._remember(folio)
            return folio.pfn + (idx - folio.index if op == 8 and memfd.hstate is None else 0)
        return 0

    def _cb_dev_op(self, op: int, obj: Any, a: int, b: int) -> int:
        ffi = self.ffi
        if op == -1:                      # krealloc: size of a live object
            o = self._slab.get(int(ffi.cast("uintptr_t", obj)))
            return o.size if o is not None else 0
        if op == 0:
            name = ffi.string(ffi.cast("char *", a)).decode()
            if name in self.misc:
                return -errno.EBUSY
            self.misc[name] = (obj, ffi.cast("void *", b))
            return 0
        if op == 1:
            for name, (m, _) in list(self.misc.items()):
                if m == obj:
                    del self.misc[name]
            return 0
        if op == 2:                       # dma_buf_export: the file (alloc_file_pseudo)
            slab = self._in_c_frames(self.fake_mm.kmalloc, 256, GFP_KERNEL)
            if slab is None:
                return -errno.ENOMEM
            buf = DmaBuf(self, obj)
            holder: list[Any] = []
            mobj = self.fake_mm.anon_inode_getfile("dmabuf", _ReleaseOp(lambda: self._release_cfile(holder[0])),
                                                   buf, a)
            f = self._new_file(buf, mobj, ffi.NULL, obj, a, b)
            holder.append(f)
            f.slab = slab
            buf._file = f
            return int(ffi.cast("uintptr_t", f.cptr))
        if op == 3:                       # dma_buf_fd: the export's reference goes to the table
            f = self._dmabuf_file(obj)
            return self.fake_mm._install_new(f.mobj, a)
        if op == 6:                       # dma_map_sgtable(dev, sgt, dir)
            return self._in_c_frames(self._dma_map_sgtable, obj, ffi.cast("void *", a), b)
        if op == 7:                       # dma_unmap_sgtable(dev, sgt, dir)
            dev = self._model_device(obj)
            m = dev.mappings.pop(("sg", a), None)
            if m is None:
                self.fake_mm._warn("dma_unmap_sg", f"{dev.name}: device driver tries to free DMA memory it has "
                                                   f"not allocated [sg table at {a:#x}]")
            elif m.dir != b:
                self.fake_mm._warn("dma_unmap_sg", f"{dev.name}: device driver frees DMA sg list with a different "
                                                   f"direction [map {m.dir}] [unmap {b}]")
            return 0
        if op == 16:                      # dma_map_page(dev, {pfn, offset, size}, dir)
            args = ffi.cast("unsigned long *", a)
            page = self._page(PF_VMEMMAP_BASE + args[0] * _STRUCT_PAGE)
            if page is None:
                return -1                 # DMA_MAPPING_ERROR
            dev = self._model_device(obj)
            return self._in_c_frames(self.fake_mm.dma_map_page_attrs, dev, page, args[1], args[2], b, 0)
        if op == 17:                      # dma_unmap_page(dev, {addr, size}, dir)
            args = ffi.cast("unsigned long *", a)
            self.fake_mm.dma_unmap_page_attrs(self._model_device(obj), args[0], args[1], b, 0)
            return 0
        if op == 10:                      # register_chrdev / alloc_chrdev_region
            name = ffi.string(ffi.cast("char *", a)).decode()
            major = b
            if major == 0:
                major = next((m for m in range(254, 233, -1) if m not in self.chrdevs), 0)
                if not major:
                    return -errno.EBUSY
            elif major in self.chrdevs:
                return -errno.EBUSY
            self.chrdevs[major] = (name, obj)
            return major
        if op == 11:                      # unregister_chrdev(_region)
            if self.chrdevs.pop((b & 0xFFFFFFFF) >> 20, None) is None:
                self.fake_mm._warn("unregister_chrdev", f"{self.source.name}: major {b >> 20} is not registered")
            return 0
        if op == 12:                      # cdev_add
            self.cdevs[a] = (obj, b)
            return 0
        if op == 13:                      # cdev_del
            self.cdevs.pop(a, None)
            return 0
        if op == 14:                      # device_create
            name = ffi.string(ffi.cast("char *", a)).decode()
            if name in self.devices or name in self.misc:
                return -errno.EEXIST
            self.devices[name] = (b, obj)
            return 0
        if op == 15:                      # device_destroy(devt): the struct device to free
            for name, (devt, dev) in list(self.devices.items()):
                if devt == a:
                    del self.devices[name]
                    return int(ffi.cast("uintptr_t", dev))
            return 0
        if op == 9:                       # pinfault_fault_point(site)
            site = ffi.string(ffi.cast("char *", a)).decode()
            try:
                rc = self._in_c_frames(self.fake_mm.fault_point, site)
            except KeyError as e:         # UnknownSite: a plugin-level mistake, raised at the entry
                raise LookupError(f"{self.source.name}: pinfault_fault_point({site!r}): {e}") from None
            return rc or 0
        if op == 8:                       # dma_buf_get(fd)
            mobj = self.fake_mm.fget(a)
            if mobj is None:
                return -errno.EBADF
            held = self._by_model.get(id(mobj))
            if held is None or not isinstance(held.obj, DmaBuf):
                self.fake_mm.fput(mobj)
                return -errno.EINVAL
            return int(ffi.cast("uintptr_t", held.obj.cptr))
        return 0

    def _model_device(self, cdev: Any) -> Any:
        """The model's DMA device standing for a C ``struct device`` (its mask read at
        each call)."""
        key = int(self.ffi.cast("uintptr_t", cdev))
        dev = self._devices.get(key)
        if dev is None:
            name = self.ffi.string(self.lib.pf_dev_name(cdev)).decode()
            dev = self._devices[key] = self.fake_mm.create_device(name, int(self.lib.pf_dev_dma_mask(cdev)))
        else:
            dev.dma_mask = int(self.lib.pf_dev_dma_mask(cdev))
        return dev

    def _dma_map_sgtable(self, cdev: Any, sgt: Any, direction: int) -> int:
        """dma_map_sgtable as kernel/dma/mapping.c + direct.c do it, on the model's device:
        the ``dma_map_sg`` site, then every entry through the ``dma_map_page`` path; the
        mapping is the model's (judged by rules 4 and 6).  The number of DMA entries or
        -errno with nothing mapped."""
        from ..mm.bug import external_caller
        from ..mm.dma_mapping import DMA_MAPPING_ERROR, DmaMapping
        k, ffi, lib = self.fake_mm, self.ffi, self.lib
        dev = self._model_device(cdev)
        if direction not in (0, 1, 2):
            k._warn("dma_map_sg", f"BUG_ON(!valid_dma_direction({direction}))")
            return -errno.EINVAL
        out = ffi.new("unsigned long[]", 4 * 8192)
        n = lib.pf_sg_entries(sgt, out, 8192, 0)
        if n <= 0:
            return -errno.EINVAL
        fi = k.faults
        if fi.active:
            rc = fi.hit("dma_map_sg", nents=n)
            if rc is not None:
                return rc
        key = int(ffi.cast("uintptr_t", sgt))
        m = DmaMapping(dev, direction, key, n, external_caller(2))
        for i in range(n):
            page = self._page(PF_VMEMMAP_BASE + out[4 * i] * _STRUCT_PAGE)
            if page is None:
                k._warn("dma_map_sg", f"{self.source.name}: mapping an sg entry with no page")
                return -errno.EINVAL
            addr = k._direct_map_page(dev, page, out[4 * i + 1], out[4 * i + 2])
            if addr == DMA_MAPPING_ERROR:
                for j in range(i):
                    lib.pf_sg_set_dma(sgt, j, 0, 0)
                return -errno.EIO
            lib.pf_sg_set_dma(sgt, i, addr, out[4 * i + 2])
            k._record_view(m, page, out[4 * i + 1], out[4 * i + 2], addr)
        dev.mappings[("sg", key)] = m
        k._trace("dma_map_sg", dev=dev.name, nents=n)
        return n

    def _dmabuf_file(self, dptr: Any) -> _File:
        for f in self._files.values():
            if isinstance(f.obj, DmaBuf) and f.obj.cptr == dptr:
                return f
        raise LookupError("dma-buf without a file")   # pragma: no cover

    def _cb_log(self, level: int, msg: Any) -> None:
        text = self.ffi.string(msg).decode(errors="replace").rstrip("\n")
        self.log.append((level, text))
        self.fake_mm._trace("printk", level=level, message=text)

    def _cb_warn(self, file: Any, line: int, cond: Any, msg: Any, caller: Any) -> None:
        f = self.ffi.string(file).decode()
        c = self.ffi.string(cond).decode()
        m = self.ffi.string(msg).decode() if msg != self.ffi.NULL else ""
        where = f"{f}:{line}" if line else self.addr2line(int(self.ffi.cast("uintptr_t", caller)))
        self.fake_mm._warn("WARN_ON" if line else f, f"{c} at {where}" + (f": {m}" if m else ""))

    def _cb_pagemap(self, op: int, pfns: Any, n: int, buf: Any) -> int:
        ffi = self.ffi
        base = ffi.cast("char *", buf)
        for i in range(n):
            pfn = pfns[i]
            folio = self._folio(pfn)
            if folio is None:
                continue
            off = (pfn - folio.pfn) << PAGE_SHIFT
            if op == 0:
                ffi.memmove(base + i * PAGE_SIZE, folio.read(off, PAGE_SIZE), PAGE_SIZE)
            else:
                data = ffi.unpack(base + i * PAGE_SIZE, PAGE_SIZE)
                if data != folio.read(off, PAGE_SIZE):
                    folio.write(off, data)
        return 0


class DeviceFile:
    """An open device file of a loaded driver: its fops, run as entry points."""

    def __init__(self, drv: CDriver, name: str, fops: Any) -> None:
        self.drv = drv
        self.fake_mm: Any = drv.fake_mm
        self.name = name
        self.fops = fops
        self._file: Any = None
        self.closed: bool = False

    def _entry(self, kind: str, fn: Any, args: tuple[Any, ...], ret: str = "long") -> int:
        __tracebackhide__ = True
        r = self.drv._entry_call(kind, fn, args)
        return CDriver._int(r) if ret == "int" else r

    def ioctl(self, cmd: int, arg: int = 0) -> int:
        """unlocked_ioctl(file, cmd, arg); -ENOTTY without one."""
        __tracebackhide__ = True
        fn = self.drv.lib.pf_fop(self.fops, 2)
        if fn == self.drv.ffi.NULL:
            return -errno.ENOTTY
        return self._entry("ioctl", fn, (self._file.cptr, cmd & 0xFFFFFFFF, arg))

    def read(self, uaddr: int, count: int, pos: int = 0) -> int:
        """read(2) into user memory at *uaddr*: fops->read's return (-EINVAL without one)."""
        return self._rw(4, uaddr, count, pos)

    def write(self, uaddr: int, count: int, pos: int = 0) -> int:
        """write(2) from user memory at *uaddr*: fops->write's return (-EINVAL without one)."""
        return self._rw(5, uaddr, count, pos)

    def _rw(self, which: int, uaddr: int, count: int, pos: int) -> int:
        __tracebackhide__ = True
        drv = self.drv
        fn = drv.lib.pf_fop(self.fops, which)
        if fn == drv.ffi.NULL:
            return -errno.EINVAL
        ppos = drv.ffi.new("long long *", pos)
        return self._entry("read" if which == 4 else "write", fn, (self._file.cptr, uaddr, count, ppos))

    def close(self) -> None:
        """close(2) of the device file: the last reference runs fops->release."""
        if self.closed:
            return
        self.closed = True
        if self in self.drv._open:
            self.drv._open.remove(self)
        self.drv.fake_mm.fput(self._file.mobj)

    def _release(self) -> None:
        fn = self.drv.lib.pf_fop(self.fops, 1)
        if fn != self.drv.ffi.NULL:
            self._entry("release", fn, (self.drv.lib.pf_file_inode(self._file.cptr), self._file.cptr), ret="int")

    def __repr__(self) -> str:
        return f"<{self.drv.source.name} /dev/{self.name}{' closed' if self.closed else ''}>"


class DmaBuf:
    """A dma-buf the driver exported (``struct dma_buf``): the importer's side of it."""

    def __init__(self, drv: CDriver, cptr: Any) -> None:
        self.drv = drv
        self.fake_mm: Any = drv.fake_mm
        self.cptr = cptr
        self._file: Any = None
        self.released: bool = False

    @property
    def size(self) -> int:
        """The dma-buf's size in bytes (``dmabuf->size``)."""
        return int(self.drv.lib.pf_dmabuf_size(self.cptr))

    def _op(self, which: int) -> Any:
        fn = self.drv.lib.pf_dmabuf_op(self.cptr, which)
        return None if fn == self.drv.ffi.NULL else fn

    def _release(self) -> None:
        if self.released:
            return
        self.released = True
        fn = self._op(0)
        if fn is not None:
            self.drv._entry_call("dma_buf_release", fn, (self.cptr,))
        self.drv.lib.pf_dma_buf_free(self.cptr)

    def begin_cpu_access(self, direction: int = 0) -> int:
        """Call the exporter's ``begin_cpu_access`` op (as ``DMA_BUF_IOCTL_SYNC`` start does):
        its return value, or 0 when the driver has none."""
        fn = self._op(3)
        return 0 if fn is None else CDriver._int(self.drv._entry_call("begin_cpu_access", fn, (self.cptr, direction)))

    def end_cpu_access(self, direction: int = 0) -> int:
        """Call the exporter's ``end_cpu_access`` op: its return value, or 0 when the driver
        has none."""
        fn = self._op(4)
        return 0 if fn is None else CDriver._int(self.drv._entry_call("end_cpu_access", fn, (self.cptr, direction)))

    def map_attachment(self, direction: int = 0) -> "tuple[int, list[tuple[int, int, int, int]]]":
        """attach + map_dma_buf: (0, [(pfn, offset, length, dma_address)...]) or (-errno, [])."""
        drv, ffi, lib = self.drv, self.drv.ffi, self.drv.lib
        att = lib.pf_attachment_new(self.cptr, drv._dev)
        fn = self._op(1)
        sgt = drv._entry_call("map_dma_buf", fn, (att, direction))
        sgt_u = sgt & 0xFFFFFFFFFFFFFFFF
        if sgt_u >= (1 << 64) - _MAX_ERRNO or sgt_u == 0:
            lib.pf_attachment_free(att)
            return (sgt if sgt < 0 else -errno.ENOMEM), []
        sgp = ffi.cast("void *", sgt_u)
        out = ffi.new("unsigned long[]", 4 * 4096)
        n = lib.pf_sg_entries(sgp, out, 4096, 1)
        ents = [(out[4 * i], out[4 * i + 1], out[4 * i + 2], out[4 * i + 3]) for i in range(n)]
        drv._entry_call("unmap_dma_buf", self._op(2), (att, sgp, direction))
        lib.pf_attachment_free(att)
        return 0, ents

    def vmap(self) -> "tuple[int, bytes]":
        """vmap + read the whole buffer through the CPU view + vunmap: (0, bytes)."""
        drv, ffi = self.drv, self.drv.ffi
        fn = self._op(5)
        if fn is None:
            return -errno.EINVAL, b""
        m = ffi.new("void *[2]")
        rc = CDriver._int(drv._entry_call("vmap", fn, (self.cptr, m)))
        if rc < 0:
            return rc, b""
        vaddr = drv.lib.pf_iosys_vaddr(m)
        data = ffi.unpack(ffi.cast("char *", vaddr), self.size)
        un = self._op(6)
        if un is not None:
            drv._entry_call("vunmap", un, (self.cptr, m))
        return 0, data

    def mmap_read(self, offset: int, n: int, flags: int = 0x08 | 0x80) -> "bytes | int":
        """mmap (VM_SHARED|VM_MAYSHARE by default) and read *n* bytes at *offset* through
        the driver's fault handler: the bytes, or -errno / -EFAULT on SIGBUS."""
        drv, lib, ffi = self.drv, self.drv.lib, self.drv.ffi
        fn = self._op(7)
        if fn is None:
            return -errno.ENODEV
        size = self.size
        vma = lib.pf_vma_new(0x10000000, 0x10000000 + size, flags, 0)
        try:
            rc = CDriver._int(drv._entry_call("mmap", fn, (self.cptr, vma)))
            if rc < 0:
                return rc
            out = bytearray()
            fault = lib.pf_vma_fault_fn(vma)
            pos = offset
            while pos < offset + n:
                pgoff = pos >> PAGE_SHIFT
                vmf = lib.pf_vmf_new(vma, pgoff, 0x10000000 + (pgoff << PAGE_SHIFT))
                try:
                    code = drv._entry_call("vm_fault", fault, (vmf,)) & 0xFFFFFFFF
                    page = lib.pf_vmf_page(vmf)
                finally:
                    lib.pf_raw_free(vmf)
                if code & 0x2:
                    return -errno.EFAULT
                if code & 0x100:
                    pfn = lib.pf_last_inserted_pfn()
                    pg = drv._page(PF_VMEMMAP_BASE + pfn * _STRUCT_PAGE)
                else:
                    pg = drv._page(int(ffi.cast("uintptr_t", page)))
                    if pg is not None:
                        drv.fake_mm.folio_put(pg.folio)        # the mapping's reference goes at unmap
                if pg is None:
                    return -errno.EFAULT
                inpage = pos & (PAGE_SIZE - 1)
                take = min(offset + n - pos, PAGE_SIZE - inpage)
                out += pg.folio.read(((pg.pfn - pg.folio.pfn) << PAGE_SHIFT) + inpage, take)
                pos += take
            return bytes(out)
        finally:
            lib.pf_raw_free(vma)

    def __repr__(self) -> str:
        return f"<dma-buf {self.size} bytes from {self.drv.source.name}>"


def load_c_driver(fake_mm: Any, source: str | os.PathLike[str], *, defines: Mapping[str, object] | None = None,
                  include_dirs: Iterable[str | os.PathLike[str]] = (), uapi_headers: Iterable[str | os.PathLike[str]] = (),
                  params: Mapping[str, int] | None = None, cflags: Iterable[str] = (),
                  cache_dir: str | os.PathLike[str] | None = None, init: bool = True,
                  coverage: bool = False) -> CDriver:
    """Build *source* (cached) and load it into *fake_mm*; with *init*, run module_init
    and raise ``OSError`` if it fails.  *coverage* builds with gcc line coverage
    (:meth:`CDriver.coverage_lines`).  Call :meth:`CDriver.unload` when done (the
    plugin's ``load_c_driver`` fixture does it at teardown, and under
    ``--pinfault-errpaths`` feeds the driver's lines to the error-path report)."""
    incs = [Path(d) for d in include_dirs]
    built = build_driver(source, defines=defines, include_dirs=incs, cflags=cflags, cache_dir=cache_dir,
                         coverage=coverage)
    drv = CDriver(fake_mm, built, params=params, uapi_headers=uapi_headers, include_dirs=incs)
    if init:
        rc = drv.init()
        if rc != 0:
            raise OSError(-rc if rc < 0 else errno.EINVAL, f"module_init of {built.source.name} failed: {rc}")
    return drv
