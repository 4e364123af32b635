"""A coverage.py plugin that puts C-driver files into coverage's own reports.

The C lines a driver ran under the C-driver bridge are recorded into coverage.py's data
(:mod:`pytest_pinfault.plugin.covctx`), but coverage has no file reporter for C: its
term, HTML, XML and JSON reports pass ``.c`` files over without a word.  Naming this
module in coverage's configuration::

    [run]                                  # .coveragerc; [tool.coverage.run] in pyproject.toml
    plugins = pytest_pinfault.covplugin

makes them report C drivers: the pytest plugin then records the C lines of every test
that loads a driver while coverage measures (not only under ``--pinfault-errpaths``),
marks each recorded ``.c`` file in the data as this plugin's, and keeps the driver's
executable lines -- every line gcc's coverage notes (``.gcno``) list for it, read with
``gcov`` when the lines were collected -- in a directory next to the data file
(``<data file>-pinfault-c/``), one JSON file per source text (its SHA-256), so each
pytest-xdist worker writes its own entries whole and a record never applies to an edited
source.  :class:`CFileReporter` reads them back: ``coverage report`` counts the
statements and missing lines of the ``.c`` file as gcov does.

The plugin is registered as a *configurer* (``reg.add_configurer``; its ``configure``
learns where the data file is): coverage looks a file reporter up among all its plugins
by the name the data carries, and a configurer traces nothing, so the plugin adds no
cost to the measurement of Python code and leaves coverage's choice of tracer core
alone.  A file whose record is missing (the source changed after the run, or the record
directory was deleted) is left out of the report, as coverage does with a file it cannot
read, with a warning naming it.  Data that names the plugin needs it to be reported:
keep the ``plugins`` line in the configuration ``coverage report``/``html`` read.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable

import coverage
from coverage.exceptions import NotPython

__all__ = ["PLUGIN_MODULE", "TRACER_NAME", "CDriverFiles", "CFileReporter", "coverage_init",
           "record_dir", "write_executable_lines", "read_executable_lines"]

#: The module name to list in ``[run] plugins``.
PLUGIN_MODULE = "pytest_pinfault.covplugin"
#: The name coverage gives the plugin (``<module>.<class>``), recorded per C file in the data.
TRACER_NAME = f"{PLUGIN_MODULE}.CDriverFiles"


def record_dir(data_file: str) -> Path:
    """Where the executable-line records of the data file *data_file* are kept."""
    return Path(os.path.abspath(data_file) + "-pinfault-c")


def _key(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def write_executable_lines(data_file: str, path: str, lines: Iterable[int]) -> None:
    """Record *lines* as the executable lines of the C source *path* as it reads now
    (written whole: a temporary file renamed over the record)."""
    try:
        text = Path(path).read_bytes()
    except OSError:
        return
    out = record_dir(data_file)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=out)
    with os.fdopen(fd, "w") as f:
        json.dump({"source": os.path.basename(path), "lines": sorted(set(lines))}, f)
    os.replace(tmp, out / f"{_key(text)}.json")


def read_executable_lines(data_file: str, path: str) -> set[int] | None:
    """The executable lines recorded for the C source *path* as it reads now, or None."""
    try:
        text = Path(path).read_bytes()
        rec = json.loads((record_dir(data_file) / f"{_key(text)}.json").read_text())
    except (OSError, ValueError):
        return None
    return {int(n) for n in rec.get("lines", ())}


class CFileReporter(coverage.FileReporter):
    """A C driver source: its executable lines are the ones gcov listed for it."""

    def __init__(self, filename: str, data_file: str) -> None:
        super().__init__(filename)
        self.data_file = data_file

    def lines(self) -> set[int]:
        lines = read_executable_lines(self.data_file, self.filename)
        if lines is None:
            warnings.warn(f"pytest-pinfault: no executable-line record of {self.filename} as it reads now "
                          f"(in {record_dir(self.data_file)}); left out of the coverage report: run the tests "
                          f"again", stacklevel=2)
            raise NotPython(f"no executable-line record of {self.filename}")
        return lines

    def source(self) -> str:
        return Path(self.filename).read_text(encoding="utf-8", errors="replace")

    def should_be_python(self) -> bool:
        """Not a Python file (coverage asks when :meth:`lines` gives up)."""
        return False


class CDriverFiles(coverage.CoveragePlugin):
    """The plugin: file reporters for the C files the data names it for."""

    def __init__(self) -> None:
        self.data_file = ".coverage"

    def configure(self, config: Any) -> None:
        self.data_file = str(config.get_option("run:data_file") or ".coverage")

    def file_reporter(self, filename: str) -> CFileReporter:
        return CFileReporter(filename, self.data_file)


def coverage_init(reg: Any, options: dict[str, str]) -> None:
    """coverage.py's entry point (``[run] plugins = pytest_pinfault.covplugin``)."""
    reg.add_configurer(CDriverFiles())
