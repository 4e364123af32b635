"""pytest-pinfault: a fake Linux mm with fault injection and a long-term pinning
contract checker, as a pytest plugin."""

from .contracts import Checker, Violation, pin_entry_point
from .mm import KERNEL_VERSION, FakeMM, MMConfig, Out

#: This package's version (PEP 440).
__version__ = "0.1.0.dev0"

__all__ = ["FakeMM", "MMConfig", "Out", "KERNEL_VERSION", "Checker", "Violation", "pin_entry_point",
           "__version__"]
