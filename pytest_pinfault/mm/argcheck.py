"""Python-level argument types of the public mm API.

The kernel's C compiler rejects a pointer where an ``int`` is expected; Python would
instead fail somewhere deep inside the model with a message about ``>>`` or ``<``, or
even carry on.  :func:`typed_api` wraps every public method of a class so that an
argument of the wrong Python type is a ``TypeError`` naming the function and the
parameter, raised before the model is touched.  The check follows each parameter's
annotation (``int``, ``bool``, ``bytes``, ``str``, folio/page, mm, file, list ...);
parameters annotated ``Any`` are not checked.  Right-typed bad *values* are the
model's business: errno, NULL or a recorded kernel warning.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

__all__ = ["typed_api"]


def _types_for(annotation: str, names: dict[str, Any]) -> tuple[tuple[type, ...], str] | None:
    """The accepted Python types of an annotation string, or None (not checked)."""
    ann = annotation.strip().strip("'\"").replace(" ", "")
    optional = ann.endswith("|None") or ann.startswith("None|")
    ann = ann.replace("|None", "").replace("None|", "")
    if ann == "int":
        types: tuple[type, ...] = (int,)
        what = "an int"
    elif ann == "bool":
        types, what = (int,), "a bool"
    elif ann == "bytes":
        types, what = (bytes, bytearray, memoryview), "bytes"
    elif ann == "str":
        types, what = (str,), "a str"
    elif ann in ("list", "tuple[str,int]") or ann.startswith(("list[", "Sequence[")):
        types, what = (list, tuple), "a list"
    elif ann in ("Folio", "Page", "Page|Folio", "Folio|Page"):
        types, what = (names["Page"], names["Folio"]), "a Page or Folio"
    elif ann in ("MMStruct", "AddressSpace", "MemFile", "HState", "VMA", "Zone", "MigrationTargetControl"):
        types, what = (names[ann],), f"a {ann}"
    elif ann == "CMA|str":
        types, what = (names["CMA"], str), "a CMA area or its name"
    elif ann == "int|str":
        types, what = (int, str), "an int or a size string"
    elif ann in names:                         # the driver plumbing's structs
        types, what = (names[ann],), f"a {ann}"
    else:
        return None
    if optional:
        types += (type(None),)
        what += " or None"
    return types, what


def _wrap(qualname: str, func: Callable[..., Any], names: dict[str, Any],
          static: bool = False) -> Callable[..., Any]:
    sig = inspect.signature(func)
    checks = []
    for i, p in enumerate(list(sig.parameters.values())[0 if static else 1:]):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        if not isinstance(p.annotation, str):
            continue
        t = _types_for(p.annotation, names)
        if t is not None:
            checks.append((i, p.name, t[0], t[1]))
    if not checks:
        return func
    checks_t = tuple(checks)

    if static:
        @functools.wraps(func)
        def checked_static(*args: Any, **kwargs: Any) -> Any:
            n = len(args)
            for i, name, types, what in checks_t:
                v = args[i] if i < n else kwargs.get(name, None)
                if (i < n or name in kwargs) and not isinstance(v, types):
                    raise TypeError(f"{qualname}: {name} must be {what}, got {type(v).__name__}")
            return func(*args, **kwargs)
        checked_static.__wrapped_unchecked__ = func  # type: ignore[attr-defined]
        return checked_static

    @functools.wraps(func)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        n = len(args)
        for i, name, types, what in checks_t:
            if i < n:
                v = args[i]
            elif name in kwargs:
                v = kwargs[name]
            else:
                continue
            if not isinstance(v, types):
                raise TypeError(f"{qualname}: {name} must be {what}, got {type(v).__name__}")
        return func(self, *args, **kwargs)

    checked.__wrapped_unchecked__ = func  # type: ignore[attr-defined]
    return checked


def typed_api(cls: type, skip: tuple[str, ...] = ()) -> type:
    """Wrap the public methods of *cls* (its own and inherited) with argument type
    checks; *skip* names methods left unwrapped."""
    from .cma import CMA
    from .folio import Folio, Page
    from .hugetlb import HState
    from .memfd import AddressSpace, MemFile
    from .migrate import MigrationTargetControl
    from .mm_types import VMA, MMStruct
    from .mmzone import Zone
    from .dma_buf import DmaBuf, DmaBufAttachment, DmaBufExportInfo, IosysMap
    from .dma_mapping import Device
    from .scatterlist import Scatterlist, SgAppendTable, SgTable
    from .sched import Task
    from .user import UserStruct
    names = {"Folio": Folio, "Page": Page, "CMA": CMA, "HState": HState, "MemFile": MemFile,
             "AddressSpace": AddressSpace, "MMStruct": MMStruct, "VMA": VMA, "Zone": Zone,
             "MigrationTargetControl": MigrationTargetControl, "Device": Device,
             "Scatterlist": Scatterlist, "SgTable": SgTable, "SgAppendTable": SgAppendTable,
             "DmaBuf": DmaBuf, "DmaBufAttachment": DmaBufAttachment,
             "DmaBufExportInfo": DmaBufExportInfo, "IosysMap": IosysMap, "UserStruct": UserStruct,
             "Task": Task}
    for name in dir(cls):
        if name.startswith("_") or name in skip:
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, staticmethod) and inspect.isfunction(attr.__func__):
            if getattr(attr.__func__, "__wrapped_unchecked__", None) is None:
                setattr(cls, name, staticmethod(_wrap(name, attr.__func__, names, static=True)))
            continue
        if isinstance(attr, (property, classmethod)) or not inspect.isfunction(attr):
            continue
        if getattr(attr, "__wrapped_unchecked__", None) is not None:
            continue
        setattr(cls, name, _wrap(f"{name}", attr, names))
    return cls
