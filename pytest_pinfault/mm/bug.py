"""Kernel warnings (WARN_ON_ONCE / VM_BUG_ON class misuse), recorded instead of raised.

Kernel: include/asm-generic/bug.h, include/linux/mmdebug.h.  The kernel prints a splat and
carries on; the model records a :class:`KernelWarning` and carries on the same way.  The
contract checker turns recorded warnings into test failures (rule 11).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from types import FrameType
from typing import Any

__all__ = ["KernelWarning"]


@dataclasses.dataclass(frozen=True)
class KernelWarning:
    """One recorded misuse: a stable ``site`` id, the message, the folio involved (if
    any) and the Python caller that made the bad call (``file:line function``)."""

    site: str
    message: str
    folio: Any = None
    caller: str = ""

    def __str__(self) -> str:
        where = f" (called from {self.caller})" if self.caller else ""
        folio = f"\n  {self.folio!r}" if self.folio is not None else ""
        return f"WARNING: {self.site}: {self.message}{where}{folio}"


_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def external_caller(depth: int = 2) -> str:
    """The nearest stack frame outside this package, as ``file:line function``."""
    f: FrameType | None = sys._getframe(depth)
    while f is not None and f.f_code.co_filename.startswith(_PKG_DIR):
        f = f.f_back
    if f is None:
        return ""
    return f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}"
