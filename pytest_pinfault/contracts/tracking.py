"""What a call touched: before-states kept per call, and the driver calls the checker
finds by itself.

**Touched folios.**  An attached checker hears of every refcount change before it
happens (``folio_ref``, mm/observer.py).  The first time a call touches a folio its hold
units are recorded in that call's :class:`CallSnapshot`, so judging the call's return
costs what the call touched, never what the machine holds.

**Root calls.**  Every refcount change happens inside some call that the test (or a
fixture, or a pytest hook) made: the *root call*, the frame whose caller is the test
function, found when the call first touches a folio (a walk up the stack, or one look at
the depth where the previous root call was found).  When the root call is driver code
(outside this package) it is a driver entry point, declared or not: once it has
returned, the folios it touched that are still held are holds that outlived the call --
long-term holds whatever flag took them (rule 1), and a negative return must have left
none (rule 2).  That the root call returned is noticed cheaply at
the next refcount change, core pinning call, ``check()`` or teardown: its frame's last
instruction is a return, or its caller has moved on.
"""

from __future__ import annotations

import dataclasses
import dis
import os
import sys
from types import FrameType
from typing import Any

__all__ = ["CallSnapshot", "RootCall", "ModelOp", "find_root_call", "find_model_op", "returned",
           "return_value", "PKG_DIR"]

#: this package's directory: frames in it are the model, the checker or the plugin
PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

_RETURN_OPS = frozenset(dis.opmap[n] for n in ("RETURN_VALUE", "RETURN_CONST") if n in dis.opmap)
_STORE_OPS = frozenset(("STORE_FAST", "STORE_NAME", "STORE_DEREF", "STORE_GLOBAL"))
_framework_dirs: tuple[str, ...] | None = None


def _framework() -> tuple[str, ...]:
    """Directories of the test framework (pytest, pluggy) if it is loaded: frames there
    call the test function and fixtures."""
    global _framework_dirs
    if _framework_dirs is None or not _framework_dirs:
        dirs = []
        for name in ("_pytest", "pluggy"):
            m = sys.modules.get(name)
            file = getattr(m, "__file__", None) if m is not None else None
            if file:
                dirs.append(os.path.dirname(file) + os.sep)
        m = sys.modules.get("pytest")
        file = getattr(m, "__file__", None) if m is not None else None
        if file:
            dirs.append(os.path.abspath(file))
        _framework_dirs = tuple(dirs)
    return _framework_dirs


@dataclasses.dataclass(eq=False, slots=True)
class CallSnapshot:
    """State before a call: the hold units of the user folios it touched
    (``id -> (folio, pins, refs, isolated)``), pin counters, NR_ISOLATED, per-mm
    locked_vm/pinned_vm, the trace position and the fault log position.

    ``tracked`` snapshots are filled as the call touches folios (an attached checker);
    untracked ones hold every held user folio of the machine, taken up front."""

    folios: dict[int, tuple[Any, int, int, bool]]
    pins_acquired: int
    pins_released: int
    nr_isolated: tuple[int, int]
    isolated: set[int] | frozenset[int]
    mms: dict[int, tuple[Any, int, int]]
    seq: int
    faults_at: int = 0
    tracked: bool = False
    serial: int = 0               # folios with a higher _serial were created after it
    counters: dict[Any, Any] = dataclasses.field(default_factory=dict)   # fake_mm.counters before it

    def units(self, f: Any) -> tuple[int, int]:
        """The (pin, reference) hold units folio *f* had before the call: ``(0, 0)`` for a
        folio the snapshot does not hold."""
        b = self.folios.get(id(f))
        if b is None or b[0] is not f:
            return 0, 0
        return b[1], b[2]


@dataclasses.dataclass(eq=False, slots=True)
class RootCall:
    """A call the test made (see the module docstring).  ``frame`` is the callee's frame,
    ``parent`` the caller's (the test function) and ``parent_lasti`` where the caller was
    when the call was found; ``driver``: the callee is outside this package (a driver
    entry point); ``snap``: what the call touched."""

    frame: Any
    parent: Any
    parent_lasti: int
    code: bytes
    driver: bool
    name: str
    caller: str
    snap: CallSnapshot | None      # None when not a driver call (nothing to judge)


@dataclasses.dataclass(eq=False, slots=True)
class ModelOp:
    """The model call (the outermost frame of this package on the stack) that moved,
    unmapped or freed a page a hold or device mapping may refer to: coherence is judged
    once it returned.  ``all``: every hold and device mapping, else the holds in
    ``folios``."""

    frame: Any
    parent: Any
    parent_lasti: int
    code: bytes
    all: bool = False
    folios: set[Any] = dataclasses.field(default_factory=set)


def find_model_op() -> tuple[Any, Any]:
    """(outermost frame of this package on the stack, its caller)."""
    f: FrameType | None = sys._getframe(2)
    outer = f
    while f is not None and f.f_code.co_filename.startswith(PKG_DIR):
        outer = f
        f = f.f_back
    return outer, f


def find_root_call(hint: Any = None) -> tuple[Any, Any]:
    """(callee frame, caller frame) of the root call running now: the frame called by
    the outermost frame that is not the test framework's (the test function, a fixture,
    a hook), or by the bottom of the stack.  *hint*: the caller of the previous root
    call; when it is still on the stack the walk stops there (usually a few frames)."""
    f: FrameType | None = sys._getframe(2)
    if hint is not None:
        g, inner = f, None
        while g is not None:
            if g is hint:
                if inner is not None:
                    return inner, g
                break
            inner = g
            g = g.f_back
    fw = _framework()
    inner = None
    while f is not None:
        fn = f.f_code.co_filename
        if fw and fn.startswith(fw):
            break
        back = f.f_back
        if back is None:
            break
        bfn = back.f_code.co_filename
        if fw and bfn.startswith(fw):
            break              # f is the test function / fixture / hook
        inner = f
        f = back
    if inner is None:          # the change happened in the root frame itself
        return f, None
    return inner, f


def returned(rc: RootCall) -> bool:
    """Has the root call returned?  Its frame stopped on a return instruction, or its
    caller's current instruction moved on (an exception, a generator's yield)."""
    fr = rc.frame
    i = fr.f_lasti
    if 0 <= i < len(rc.code) and rc.code[i] in _RETURN_OPS:
        return True
    p = rc.parent
    return p is not None and p.f_lasti != rc.parent_lasti


_after_cache: dict[tuple[Any, int], str | None] = {}


def return_value(rc: RootCall) -> Any:
    """The value the root call returned, when its caller stored it in a local
    (``ret = drv.create(...)`` or ``ret, data = ...``: the first item), else None."""
    p = rc.parent
    if p is None:
        return None
    key = (p.f_code, rc.parent_lasti)
    if key not in _after_cache:
        name = None
        unpack = False
        for ins in dis.get_instructions(p.f_code):
            if ins.offset <= rc.parent_lasti:
                continue
            if ins.opname in ("CACHE", "PRECALL", "EXTENDED_ARG"):
                continue
            if ins.opname == "UNPACK_SEQUENCE" and not unpack:
                unpack = True
                continue
            if ins.opname in _STORE_OPS:
                name = ins.argval
            break
        if len(_after_cache) > 4096:
            _after_cache.clear()
        _after_cache[key] = name
    name = _after_cache[key]
    if name is None:
        return None
    try:
        return p.f_locals.get(name)
    except Exception:                 # pragma: no cover - defensive
        return None
