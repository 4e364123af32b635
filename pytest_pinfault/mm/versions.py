"""Kernel functions that do not exist in every modelled version.

``MMConfig(kernel=...)`` chooses the kernel the machine follows.  A function added after
that version is absent from it, as an unknown symbol is absent from an older kernel: the
attribute lookup on the :class:`~pytest_pinfault.FakeMM` raises ``AttributeError``
naming the function, the configured version and the version that added it, so
``hasattr(fake_mm, "memfd_pin_folios")`` is the feature test a driver model can make
(the C driver bridge reports a call to such a function as an ``unknown_symbol`` kernel
warning and -ENOSYS; the real module would not load).
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["SINCE", "VersionedFunction", "install_versioned", "bind_present"]

#: Function -> (first version that has it in the modelled branches, kernel file, why).
#: Read in source: 6.1.192 has none of them; 6.12.118 has memfd_pin_folios,
#: unpin_folio(s), check_and_migrate_movable_folios and (backported) unpin_user_folio,
#: but not folio_add_pins.
SINCE: dict[str, tuple[str, str, str]] = {
    "memfd_pin_folios": ("6.11", "mm/gup.c", "'mm/gup: introduce memfd_pin_folios() for pinning memfd folios' (v6.11)"),
    "unpin_folio": ("6.11", "mm/gup.c", "'mm/gup: introduce unpin_folio/unpin_folios helpers' (v6.11)"),
    "unpin_folios": ("6.11", "mm/gup.c", "'mm/gup: introduce unpin_folio/unpin_folios helpers' (v6.11)"),
    "check_and_migrate_movable_folios": ("6.11", "mm/gup.c", "'mm/gup: introduce check_and_migrate_movable_folios()' (v6.11)"),
    "unpin_user_folio": ("6.12", "mm/gup.c", "v6.13 upstream, in 6.12.y (6.12.118 has it)"),
    "folio_add_pins": ("6.13", "mm/gup.c", "v6.13 (not in 6.12.118)"),
    "replace_free_hugepage_folios": ("6.12", "mm/hugetlb.c",
                                     "'mm: replace free hugepage folios after migration' (v6.14; "
                                     "in 6.12.y, 6.12.118 has it; 6.1.192 has not)"),
}


class VersionedFunction:
    """A FakeMM method that exists only from a kernel version on (non-data descriptor:
    an instance attribute of the same name still wins, so monkeypatching works)."""

    def __init__(self, name: str, func: Callable[..., Any], since: str, where: str, why: str) -> None:
        self.name = name
        self.func = func
        self.since = since
        self.where = where
        self.why = why
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self.func
        if not obj.config.kernel_at_least(self.since):
            raise AttributeError(
                f"{type(obj).__name__} has no {self.name} with kernel={obj.config.kernel!r}: "
                f"{self.where}:{self.name} was added in {self.why} (kernel >= {self.since})")
        return self.func.__get__(obj, cls)

    def __set_name__(self, owner: Any, name: str) -> None:
        self.name = name


def install_versioned(cls: Any) -> None:
    """Wrap the :data:`SINCE` methods of *cls* (after ``typed_api`` wrapped them)."""
    for name, (since, where, why) in SINCE.items():
        func = cls.__dict__.get(name)
        if func is None:
            for base in cls.__mro__[1:]:
                if name in base.__dict__:
                    func = base.__dict__[name]
                    break
        if func is None or isinstance(func, VersionedFunction):
            continue
        setattr(cls, name, VersionedFunction(name, func, since, where, why))


#: (class, kernel version) -> the (name, VersionedFunction) pairs that version has
_PRESENT: dict[tuple[Any, str], list[tuple[str, VersionedFunction]]] = {}


def bind_present(obj: Any) -> None:
    """Store the bound methods *obj*'s version has in its instance dict, so that looking
    them up costs what any method lookup costs (the descriptor then only answers for the
    absent ones).  Which ones that is is worked out once per class and version; a
    descriptor replaced on the class since is looked up again."""
    cls = type(obj)
    config = obj.config
    key = (cls, config.kernel)
    present = _PRESENT.get(key)
    if present is None:
        present = []
        for name in SINCE:
            desc = cls.__dict__.get(name)
            if isinstance(desc, VersionedFunction) and config.kernel_at_least(desc.since):
                present.append((name, desc))
        _PRESENT[key] = present
    d = obj.__dict__
    cd = cls.__dict__
    for name, desc in present:
        func = desc.func
        if cd.get(name) is not desc:      # the class changed since: the long way
            _PRESENT.pop(key, None)
            return bind_present(obj)
        if name not in d:
            d[name] = func.__get__(obj, cls)
