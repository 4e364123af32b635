"""Error-path coverage: which fault reached which line, and which error paths no run reached.

Framework-neutral (no pytest): reads a coverage.py data file whose dynamic contexts were
set by the pytest plugin (``<nodeid>|<site>#<n>/<mode>`` for a ``pinfault_matrix`` case,
``<nodeid>|nofault`` for any other test) and reports, for every measured file of the
named packages:

* the lines executed *only* under injected-fault contexts (error paths reached), with the
  sites (and cases) that reached each;
* the lines that look like error handling (:func:`error_lines`) that no context executed,
  minus those marked intentionally unreachable with a trailing ``# pinfault: never``
  comment (SQLite's ``NEVER()``; on an ``if``/``except`` line it covers the whole body);
* the summary figure: error-path lines reached / error-path lines found.

coverage.py is imported inside the functions that need it, never at import time.

Command line::

    python -m pytest_pinfault.errpaths [.coverage] --packages PKG[,PKG] [--json PATH] [--html DIR]
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import html
import io
import json
import os
import re
import sys
import tokenize
from typing import Any, Iterable, Sequence

__all__ = ["NOFAULT", "NEVER_MARK", "parse_context", "error_lines", "never_lines", "c_error_lines",
           "c_never_lines", "FileReport",
           "Report", "analyze", "load", "format_table", "write_html", "main"]

#: The context suffix of a test that ran without a matrix case.
NOFAULT = "nofault"
#: The trailing comment marking a line (or an if/except and its body) intentionally unreachable.
NEVER_MARK = "pinfault: never"
SCHEMA = "pytest-pinfault-errpaths/1"


# ----------------------------------------------------------------------------- contexts
def context_name(nodeid: str, case: Any) -> str:
    """The dynamic context of one test: ``nodeid|site#n/mode`` or ``nodeid|nofault``."""
    if case is None:
        return f"{nodeid}|{NOFAULT}"
    return f"{nodeid}|{case.site}#{case.nth}/{case.mode}"


def parse_context(ctx: str) -> tuple[str, str | None] | None:
    """``"t.py::f|kmalloc#2/transient"`` -> ``("t.py::f", "kmalloc#2/transient")``;
    ``"t.py::f|nofault"`` -> ``("t.py::f", None)``; a context the plugin did not set
    (``""``, a pytest-cov ``|run`` context...) -> ``None``."""
    nodeid, sep, tail = ctx.rpartition("|")
    if not sep or not nodeid:
        return None
    if tail == NOFAULT:
        return nodeid, None
    site, hsep, rest = tail.rpartition("#")
    nth, ssep, mode = rest.partition("/")
    if not hsep or not site or not ssep or not nth.isdigit() or mode not in ("transient", "persistent"):
        return None
    return nodeid, tail


def case_site(case: str) -> str:
    return case.rpartition("#")[0]


# ----------------------------------------------------------------------------- AST detector
def _is_negative(node: ast.AST) -> bool:
    """``-5``, ``-errno.ENOMEM``, ``-ENOMEM``."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return True
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
        and not isinstance(node.value, bool) and node.value < 0


def _is_zero(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0 and not isinstance(node.value, bool)


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


_ERR_CALLS = {"IS_ERR", "IS_ERR_OR_NULL", "PTR_ERR", "WARN_ON", "WARN_ON_ONCE", "unlikely"}


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def _is_error_test(test: ast.AST, from_calls: set[str]) -> bool:
    """Does an ``if`` test look like a failure check?"""
    if isinstance(test, ast.BoolOp):
        return any(_is_error_test(v, from_calls) for v in test.values)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return isinstance(test.operand, (ast.Name, ast.Call, ast.Attribute))
    if isinstance(test, ast.Name):            # `if ret:` after `ret = call()`
        return test.id in from_calls
    if isinstance(test, ast.Call):
        return _call_name(test) in _ERR_CALLS
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        op, left, right = test.ops[0], test.left, test.comparators[0]
        if isinstance(op, (ast.Lt, ast.LtE)) and (_is_zero(right) or _is_negative(right)):
            return True                       # ret < 0, n <= 0
        if isinstance(op, (ast.Gt, ast.GtE)) and (_is_zero(left) or _is_negative(left)):
            return True                       # 0 > ret
        if isinstance(op, ast.Is) and _is_none(right):
            return True                       # x is None
        if isinstance(op, (ast.Eq, ast.NotEq)) and (_is_negative(right) or _is_negative(left)):
            return True                       # ret == -EAGAIN
        if isinstance(op, ast.NotEq):         # ret != n after ret = call()
            return isinstance(left, ast.Call) or (isinstance(left, ast.Name) and left.id in from_calls)
    return False


def _returns_error(body: Sequence[ast.stmt]) -> bool:
    return any(isinstance(s, ast.Return) and s.value is not None and _is_negative(s.value) for s in body)


def _stmt_lines(stmts: Iterable[ast.stmt], out: dict[int, str], reason: str) -> None:
    """The first line of every statement in *stmts*, nested bodies included."""
    for s in stmts:
        for node in ast.walk(s):
            if isinstance(node, ast.stmt):
                out.setdefault(node.lineno, reason)


class _Detector(ast.NodeVisitor):
    def __init__(self) -> None:
        self.lines: dict[int, str] = {}
        self.heads: dict[int, list[int]] = {}   # if/except line -> its body's lines
        self._calls: list[set[str]] = [set()]

    def _func(self, node: ast.AST) -> None:
        self._calls.append(set())
        self.generic_visit(node)
        self._calls.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _func

    def visit_Assign(self, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Call):
            for t in node.targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        self._calls[-1].add(n.id)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if isinstance(node.value, ast.Call) and isinstance(node.target, ast.Name):
            self._calls[-1].add(node.target.id)
        self.generic_visit(node)

    def _add(self, head: int, body: Sequence[ast.stmt], reason: str) -> None:
        found: dict[int, str] = {}
        _stmt_lines(body, found, reason)
        for ln, r in found.items():
            self.lines.setdefault(ln, r)
        self.heads.setdefault(head, []).extend(found)

    def visit_If(self, node: ast.If) -> None:
        if _is_error_test(node.test, self._calls[-1]) or _returns_error(node.body):
            self._add(node.lineno, node.body, "if")
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        self._add(node.lineno, node.body, "except")
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        if node.value is not None and _is_negative(node.value):
            self.lines.setdefault(node.lineno, "return -errno")


def _detect(source: str) -> _Detector:
    det = _Detector()
    det.visit(ast.parse(source))
    return det


def error_lines(source: str) -> dict[int, str]:
    """Line -> why it looks like error handling (``"if"``, ``"except"``,
    ``"return -errno"``): the statements in the body of an ``if`` testing a failure
    (``< 0``, ``is None``, ``not x``, ``== -E``, ``ret != n`` / ``if ret`` after
    ``ret = call()``, or whose body returns a negative value), of every ``except``
    handler, and every ``return -X``.  Lines marked ``# pinfault: never`` are *not*
    removed here (see :func:`never_lines`)."""
    return dict(sorted(_detect(source).lines.items()))


def never_lines(source: str) -> set[int]:
    """Lines marked intentionally unreachable: a ``# pinfault: never`` comment on the
    line, or on the ``if``/``except`` line heading the body."""
    marked: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT and NEVER_MARK in tok.string.lower():
                marked.add(tok.start[0])
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    if not marked:
        return set()
    det = _detect(source)
    out = set(marked)
    for head, body in det.heads.items():
        if head in marked:
            out.update(body)
    return out


# ----------------------------------------------------------------------------- C sources
_C_RETURN_ERR = re.compile(r"\breturn\s+(?:-E[A-Z0-9]+|ERR_PTR\s*\(|ERR_CAST\s*\(|-1\s*;|NULL\s*;)")
_C_GOTO = re.compile(r"\bgoto\s+\w+\s*;")
_C_LABEL = re.compile(r"^(\w+):\s*(?:/\*.*)?$")
_C_ERR_LABEL = re.compile(r"^(?:err|out_|fail|unwind|undo|free_|cleanup|bail|error|put_|unpin|unmap)", re.I)
_C_FAIL_IF = re.compile(r"^\s*(?:}\s*else\s+)?if\s*\((?:!|.*(?:\(\s*!|<\s*0|IS_ERR|WARN_ON|== NULL|!= 0|"
                        r"\bret\b|\berr\b|\brc\b))")
#: lines gcov never counts: braces alone, `} else {`, declarations without initializer
_C_NOT_STMT = re.compile(r"^(?:[{}]+|}\s*else\s*{?|(?:const\s+)?(?:unsigned\s+|signed\s+)?(?:int|long|short|char|bool|"
                         r"size_t|ssize_t|[us]\d+|pgoff_t|struct\s+\w+)\s*\**\s*\w+(?:\[\w*\])?\s*;)$")
_C_IF_HEAD = re.compile(r"^\s*(?:}\s*else\s+)?if\s*\(")


def _c_if_body(lines: Sequence[str], i: int) -> list[int]:
    """The 1-based lines of the body of the ``if`` on ``lines[i]``: the next line, or a
    braced block (comment-only lines left out)."""
    body: list[int] = []
    j = i + 1
    if lines[i].split("//")[0].split("/*")[0].rstrip().endswith("{"):
        depth = 1
        while j < len(lines) and depth:
            if depth == 1 and lines[j].strip().startswith("}"):
                break                   # the block ends (an `} else {` arm is not the body)
            depth += lines[j].count("{") - lines[j].count("}")
            st = lines[j].strip()
            if depth and st and not st.startswith(("/*", "*", "//")) and not _C_NOT_STMT.match(st):
                body.append(j + 1)
            j += 1
    elif j < len(lines):
        body.append(j + 1)
    return body


_C_NOT_TEST = re.compile(r"^\s*(?:}\s*else\s+)?if\s*\(\s*(?:unlikely\s*\(\s*)?!\s*([\w.>\-]+)\s*\)*\s*{?\s*(?:/\*.*)?$")
#: tests whose body is an error arm whatever it does
_C_STRONG_IF = re.compile(r"<\s*0|IS_ERR|WARN_ON")


def _c_after_alloc(lines: Sequence[str], i: int, name: str) -> bool:
    """Is ``name`` assigned from a call in the few statements before ``lines[i]``?"""
    seen = 0
    for j in range(i - 1, -1, -1):
        st = lines[j].strip()
        if not st:
            continue
        if re.search(re.escape(name) + r"\s*=\s*[^=;]*\w\s*\(", st):
            return True
        seen += 1
        if seen >= 3 or st.endswith("{"):
            return False
    return False


def c_error_lines(source: str) -> dict[int, str]:
    """The C counterpart of :func:`error_lines` for drivers loaded through the C-driver
    bridge (a line heuristic, no C parser).  Line -> reason:

    * ``"goto"``: every ``goto``;
    * ``"return -errno"``: every ``return`` of ``-E...``, ``ERR_PTR``/``ERR_CAST``, ``-1``
      or ``NULL``;
    * ``"if"``: the statements of the one-line or braced body (an ``else`` arm excluded)
      of an ``if`` testing ``< 0`` or ``IS_ERR``; of an ``if`` testing ``!p`` /
      ``unlikely(!p)`` right after ``p = call(...)``, or testing ``ret``/``err``/``rc``,
      when the body returns or jumps; and of any ``if`` whose body returns ``-E...`` /
      ``ERR_PTR``;
    * ``"WARN_ON arm"``: the body of ``if (WARN_ON...)``;
    * ``"error label"``: the statements after an unwind label (``err*:``, ``out_*:``,
      ``fail*:``, ``unwind*:`` ...) up to the end of the block holding the label.

    Lines gcov never counts (braces, declarations without initializer) are left out."""
    lines = source.splitlines()
    out: dict[int, str] = {}
    in_label = False
    label_depth = 0
    depth = 0
    for i, ln in enumerate(lines):
        code = ln.split("//")[0]
        stripped = code.strip()
        no = i + 1
        m = _C_LABEL.match(stripped)
        if stripped.startswith("}") and depth - 1 < label_depth:
            in_label = False
        if m and not stripped.startswith(("default", "case")):
            in_label, label_depth = bool(_C_ERR_LABEL.match(m.group(1))), depth
        elif in_label and stripped and not stripped.startswith(("/*", "*", "#")) \
                and not _C_NOT_STMT.match(stripped):
            out[no] = "error label"
        elif _C_GOTO.search(code):
            out.setdefault(no, "goto")
        elif _C_RETURN_ERR.search(code):
            out.setdefault(no, "return -errno")
        depth += code.count("{") - code.count("}")
        if _C_IF_HEAD.match(code) and not stripped.endswith(";"):
            body = _c_if_body(lines, i)
            text = " ".join(lines[b - 1] for b in body)
            warn = "WARN_ON" in code
            jumps = bool(_C_GOTO.search(text)) or "return" in text
            neg = _C_NOT_TEST.match(code)
            if neg:
                fail = jumps and _c_after_alloc(lines, i, neg.group(1))
            else:
                fail = bool(_C_FAIL_IF.match(code)) and (jumps or bool(_C_STRONG_IF.search(code)))
            if fail or _C_RETURN_ERR.search(text):
                for b in body:
                    out.setdefault(b, "WARN_ON arm" if warn else "if")
    return dict(sorted(out.items()))


def c_never_lines(source: str) -> set[int]:
    """C lines marked ``/* pinfault: never */`` (or ``// pinfault: never``); the mark on
    an ``if`` line covers its body too (as ``# pinfault: never`` does in Python)."""
    lines = source.splitlines()
    out: set[int] = set()
    for i, ln in enumerate(lines):
        if NEVER_MARK in ln.lower():
            out.add(i + 1)
            if _C_IF_HEAD.match(ln) and not ln.split("/*")[0].split("//")[0].strip().endswith(";"):
                out.update(_c_if_body(lines, i))
    return out


# ----------------------------------------------------------------------------- the report
@dataclasses.dataclass
class FileReport:
    path: str                                   # as measured
    relpath: str
    fault_only: dict[int, list[str]]            # line -> sorted sites
    fault_cases: dict[int, list[str]]           # line -> sorted cases (site#n/mode)
    found: list[int]                            # error-path lines (never-marked excluded)
    reached: list[int]
    unreached: list[int]
    never: list[int]
    executed: list[int]

    def as_json(self) -> dict[str, Any]:
        """This file's entry of the JSON report (schema ``pytest-pinfault-errpaths/1``)."""
        return {"path": self.relpath, "found": len(self.found), "reached": len(self.reached),
                "unreached": self.unreached, "never": self.never,
                "fault_only": {str(k): {"sites": v, "cases": self.fault_cases[k]}
                               for k, v in sorted(self.fault_only.items())}}


@dataclasses.dataclass
class Report:
    files: list[FileReport]
    packages: list[str]

    @property
    def found(self) -> int:
        """Error-path lines found, all files."""
        return sum(len(f.found) for f in self.files)

    @property
    def reached(self) -> int:
        """Error-path lines some run reached, all files."""
        return sum(len(f.reached) for f in self.files)

    def summary(self) -> str:
        """The closing line: ``error-path lines reached / found: R / F (P%)``."""
        pct = f" ({100.0 * self.reached / self.found:.1f}%)" if self.found else ""
        return f"error-path lines reached / found: {self.reached} / {self.found}{pct}"

    def as_json(self) -> dict[str, Any]:
        """The JSON report (schema ``pytest-pinfault-errpaths/1``)."""
        return {"schema": SCHEMA, "packages": self.packages, "found": self.found,
                "reached": self.reached, "files": [f.as_json() for f in self.files]}


def _matches(path: str, packages: Sequence[str], root: str) -> bool:
    norm = os.path.normpath(os.path.abspath(path))
    rel = os.path.relpath(norm, root) if norm.startswith(root + os.sep) else norm
    mod = os.path.splitext(rel)[0].replace(os.sep, ".")
    for pkg in packages:
        pkg = pkg.strip().rstrip("/")
        if not pkg:
            continue
        dotted = pkg.replace("/", ".").replace(os.sep, ".")
        if mod == dotted or mod.startswith(dotted + ".") or f".{dotted}." in f".{mod}.":
            return True
        p = os.path.normpath(os.path.abspath(pkg)) if os.sep in pkg or "/" in pkg else None
        if p and (norm == p or norm.startswith(p + os.sep)):
            return True
    return False


def analyze(data: Any, packages: Sequence[str], root: str | None = None,
            sources: dict[str, str] | None = None) -> Report:
    """The error-path report of the measured files of *packages* in a
    :class:`coverage.CoverageData` (read, with contexts).  A package matches by dotted
    module prefix (relative to *root*, default the working directory, or anywhere in the
    path) or by directory path.  *sources* maps a measured path to its text (for tests;
    default: read the file)."""
    root = os.path.normpath(os.path.abspath(root or os.getcwd()))
    packages = [p for p in packages if p.strip()]
    files = []
    for path in sorted(data.measured_files()):
        is_c = path.endswith(".c")
        if not (path.endswith(".py") or is_c) or not _matches(path, packages, root):
            continue
        if sources is not None and path in sources:
            text = sources[path]
        else:
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
        try:
            err = c_error_lines(text) if is_c else error_lines(text)
        except SyntaxError:
            continue
        never = c_never_lines(text) if is_c else never_lines(text)
        by_line = data.contexts_by_lineno(path)
        fault_only: dict[int, list[str]] = {}
        fault_cases: dict[int, list[str]] = {}
        for ln, ctxs in by_line.items():
            if not ctxs:
                continue
            parsed = [parse_context(c) for c in ctxs]
            if all(p is not None and p[1] is not None for p in parsed):
                cases = sorted({p[1] for p in parsed if p is not None and p[1] is not None})
                fault_cases[ln] = cases
                fault_only[ln] = sorted({case_site(c) for c in cases})
        executed = sorted(ln for ln, c in by_line.items() if c)
        exec_set = set(executed)
        found = [ln for ln in err if ln not in never]
        reached = [ln for ln in found if ln in exec_set]
        unreached = [ln for ln in found if ln not in exec_set]
        norm = os.path.normpath(path)
        rel = os.path.relpath(norm, root) if norm.startswith(root + os.sep) else norm
        files.append(FileReport(path, rel, dict(sorted(fault_only.items())), fault_cases, found, reached,
                                unreached, sorted(never & set(err)), executed))
    return Report(files, list(packages))


def load(path: str) -> Any:
    """Read a coverage data file (and, if *path* has none but parallel ``path.*`` files
    exist, combine them in memory)."""
    import glob

    import coverage

    data = coverage.CoverageData(basename=path)
    if os.path.exists(path):
        data.read()
        return data
    parts = sorted(glob.glob(glob.escape(path) + ".*"))
    if not parts:
        raise FileNotFoundError(f"no coverage data file {path!r} (nor {path}.*)")
    for part in parts:
        d = coverage.CoverageData(basename=part)
        d.read()
        data.update(d)
    return data


def _ranges(lines: Sequence[int]) -> str:
    out: list[list[int]] = []
    for ln in lines:
        if out and isinstance(out[-1], list) and out[-1][1] == ln - 1:
            out[-1][1] = ln
        else:
            out.append([ln, ln])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def format_table(report: Report) -> list[str]:
    """The terminal report: one row per file, then the fault-only lines with their sites
    and the unreached error-path lines."""
    width = max([len("file")] + [len(f.relpath) for f in report.files])
    lines = [f"{'file':<{width}}  {'found':>5}  {'reached':>7}  {'fault-only':>10}  unreached"]
    for f in report.files:
        lines.append(f"{f.relpath:<{width}}  {len(f.found):>5}  {len(f.reached):>7}  {len(f.fault_only):>10}  "
                     f"{_ranges(f.unreached) or '-'}")
    for f in report.files:
        if f.fault_only:
            lines.append(f"{f.relpath}: reached only under injected faults:")
            groups: dict[tuple[str, ...], list[int]] = {}
            for ln, sites in f.fault_only.items():
                groups.setdefault(tuple(sites), []).append(ln)
            for site_names, lns in sorted(groups.items(), key=lambda kv: kv[1][0]):
                lines.append(f"  {_ranges(lns)}: {', '.join(site_names)}")
        if f.unreached:
            lines.append(f"{f.relpath}: error-path lines no run reached: {_ranges(f.unreached)}")
    lines.append(report.summary())
    return lines


_CSS = """body{font-family:sans-serif} pre{margin:0} table{border-collapse:collapse}
td.n{color:#888;text-align:right;padding-right:1em} td{font-family:monospace;white-space:pre}
tr.fault td.s{background:#cfc} tr.unreached td.s{background:#fcc} tr.never td.s{background:#eee}
tr.reached td.s{background:#eef}"""


def write_html(report: Report, directory: str) -> str:
    """One annotated page per file plus ``index.html``; returns the index path.  Lines
    reached only under faults are green (their sites and cases in the tooltip), unreached
    error-path lines red, ``# pinfault: never`` lines grey, other reached error-path lines
    blue."""
    os.makedirs(directory, exist_ok=True)
    rows = []
    for i, f in enumerate(report.files):
        name = f"f{i}_" + "".join(c if c.isalnum() else "_" for c in f.relpath) + ".html"
        try:
            with open(f.path, encoding="utf-8") as src:
                text = src.read().splitlines()
        except OSError:
            text = []
        unreached, never, reached = set(f.unreached), set(f.never), set(f.reached)
        body = []
        for ln, line in enumerate(text, 1):
            cls, title = "normal", ""
            if ln in f.fault_only:
                cls, title = "fault", "reached only under: " + ", ".join(f.fault_cases[ln])
            elif ln in unreached:
                cls, title = "unreached", "error path no run reached"
            elif ln in never:
                cls, title = "never", "marked # pinfault: never"
            elif ln in reached:
                cls, title = "reached", "error path reached (also without a fault)"
            body.append(f'<tr class="{cls}" title="{html.escape(title)}"><td class="n">{ln}</td>'
                        f'<td class="s">{html.escape(line) or " "}</td></tr>')
        with open(os.path.join(directory, name), "w", encoding="utf-8") as out:
            out.write(f"<!doctype html><meta charset=utf-8><title>{html.escape(f.relpath)}</title>"
                      f"<style>{_CSS}</style><h1>{html.escape(f.relpath)}</h1>"
                      f"<p>{len(f.reached)} / {len(f.found)} error-path lines reached</p>"
                      f"<table>{''.join(body)}</table>\n")
        rows.append(f'<tr><td><a href="{name}">{html.escape(f.relpath)}</a></td><td>{len(f.found)}</td>'
                    f'<td>{len(f.reached)}</td><td>{len(f.fault_only)}</td>'
                    f'<td>{html.escape(_ranges(f.unreached))}</td></tr>')
    index = os.path.join(directory, "index.html")
    with open(index, "w", encoding="utf-8") as out:
        out.write(f"<!doctype html><meta charset=utf-8><title>pinfault error paths</title><style>{_CSS}</style>"
                  f"<h1>Error-path coverage</h1><p>{html.escape(report.summary())}</p><table>"
                  f"<tr><th>file</th><th>found</th><th>reached</th><th>fault-only</th><th>unreached</th></tr>"
                  f"{''.join(rows)}</table>\n")
    return index


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``python -m pytest_pinfault.errpaths``): print the report of the
    coverage data file for ``--packages``, write ``--json``/``--html``; the exit status."""
    ap = argparse.ArgumentParser(prog="python -m pytest_pinfault.errpaths",
                                 description="Error-path coverage from a coverage.py data file "
                                             "recorded with the pytest-pinfault plugin.")
    ap.add_argument("data", nargs="?", default=".coverage", help="coverage data file (default .coverage)")
    ap.add_argument("--packages", required=True, help="PKG[,PKG]: dotted module prefixes or directories")
    ap.add_argument("--json", dest="json_path", metavar="PATH", help="write the JSON report to PATH")
    ap.add_argument("--html", dest="html_dir", metavar="DIR", help="write annotated HTML pages to DIR")
    ap.add_argument("--root", default=None, help="directory module names are relative to (default: cwd)")
    args = ap.parse_args(argv)
    try:
        data = load(args.data)
    except FileNotFoundError as e:
        print(f"errpaths: {e}", file=sys.stderr)
        return 2
    if not any(parse_context(c) for c in data.measured_contexts()):
        print("errpaths: warning: the data has no pinfault contexts (was the plugin loaded while "
              "coverage ran?)", file=sys.stderr)
    report = analyze(data, args.packages.split(","), root=args.root)
    if not report.files:
        # a report of 0 / 0 would read as "nothing to do" and pass CI: refuse it
        print(f"errpaths: error: {args.data} has no measured file of {args.packages} (was coverage "
              f"measuring it, and under pytest-xdist with `coverage run`, were the workers' files "
              f"combined? `[run] patch = subprocess` needs coverage >= 7.10)", file=sys.stderr)
        return 1
    for line in format_table(report):
        print(line)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump(report.as_json(), f, indent=2, sort_keys=True)
            f.write("\n")
    if args.html_dir:
        print(f"HTML: {write_html(report, args.html_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
