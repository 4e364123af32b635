"""The C-driver bridge (design §10): load a driver's unmodified C source into a fake mm.

``load_c_driver(fake_mm, "drv.c")`` compiles the file with gcc against the bridge's own
kernel-API headers (``include/``), links it with the runtime (``runtime/``: each kernel
function calls back into the fake mm, through its fault sites), caches the shared object,
loads it with cffi and runs module_init.  Needs the ``[c]`` extra (cffi) and gcc; nothing
here is imported unless a C driver is used.  See docs/cdriver.md.
"""

from .bridge import CDriver, DeviceFile, DmaBuf, DriverCrash, PF_VMEMMAP_BASE, load_c_driver
from .build import (CDriverBuildError, MissingKernelAPI, MissingSymbol, build_driver,
                    default_cache_dir)

__all__ = ["load_c_driver", "CDriver", "DeviceFile", "DmaBuf", "DriverCrash", "CDriverBuildError",
           "MissingKernelAPI", "MissingSymbol", "build_driver", "default_cache_dir", "PF_VMEMMAP_BASE"]
