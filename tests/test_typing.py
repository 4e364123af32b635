"""Types users can check: the declarations type checkers read stay true to the runtime,
the package passes ``mypy --strict``, pyright's type completeness stays at 95 % or more,
and the README's code type-checks under both checkers.

The checker runs need the ``typecheck`` extra (mypy, basedpyright); without it they skip.
CI installs the extra and runs this file after the main test command (.ci/run).
"""

import ast
import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import typing

import pytest

from pytest_pinfault.mm import FakeMM, MMConfig
from pytest_pinfault.mm import vmstat
from pytest_pinfault.mm._proto import FakeMMProto

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: The least pyright type completeness (``--verifytypes``) the package may have.
MIN_COMPLETENESS = 0.95


# ------------------------------------------------------------------ declarations vs runtime
def test_vmstat_declares_every_counter_in_order():
    assert list(typing.get_type_hints(vmstat.VMStat)) == list(vmstat._COUNTERS)
    assert all(t is int for t in typing.get_type_hints(vmstat.VMStat).values())


def test_gfp_bits_are_spelled_out_for_checkers():
    """The ``__GFP_*`` names gfp.py makes from gfp_t are listed statically in its
    ``__all__`` and declared for type checkers, one per member."""
    from pytest_pinfault.mm import gfp
    want = [f"__GFP_{m.name}" for m in gfp.gfp_t]
    assert [n for n in gfp.__all__ if n.startswith("__GFP_")] == want
    tree = ast.parse((ROOT / "pytest_pinfault" / "mm" / "gfp.py").read_text())
    declared = [n.target.id for b in tree.body if isinstance(b, ast.If) and ast.unparse(b.test) == "TYPE_CHECKING"
                for n in b.body if isinstance(n, ast.AnnAssign)]
    assert declared == want


def test_mmconfig_constructor_for_checkers_takes_every_field_in_order():
    """MMConfig's ``if TYPE_CHECKING: def __init__`` (the input forms) must list the
    dataclass fields, or type checkers reject (or miss) a field users may pass."""
    tree = ast.parse((ROOT / "pytest_pinfault" / "mm" / "config.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MMConfig")
    inits = [f for n in cls.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
             for f in n.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
    assert len(inits) == 1
    params = [a.arg for a in inits[0].args.args[1:]]
    assert params == [f.name for f in dataclasses.fields(MMConfig)]
    assert all(d is not None for d in inits[0].args.defaults) and len(inits[0].args.defaults) == len(params)


def test_mmconfig_attributes_hold_the_normalised_values_their_annotations_name():
    cfg = MMConfig(ram="2GiB", movablecore="256MiB", cma={"a": "64MiB"}, hugetlb={"2MiB": 2},
                   default_hugepagesz="2MiB", memlock="1MiB", quirks="pcp_thp_shared_list")
    for name in ("ram", "movablecore", "default_hugepagesz", "memlock"):
        assert type(getattr(cfg, name)) is int, name
    assert cfg.ram == 2 << 30 and cfg.memlock == 1 << 20
    assert isinstance(cfg.cma, tuple) and cfg.cma[0].size == 64 << 20
    assert dict(cfg.hugetlb) == {2 << 20: 2}
    assert cfg.quirks == ("pcp_thp_shared_list",)
    assert MMConfig() == MMConfig(ram="4GiB", default_hugepagesz="2MiB", memlock="8MiB")


def test_every_member_the_protocol_declares_exists_on_fakemm():
    """FakeMMProto (the mixins' self type) declares nothing FakeMM lacks."""
    k = FakeMM()
    declared = set(FakeMMProto.__annotations__) | {
        n for n, v in vars(FakeMMProto).items() if callable(v) and not n.startswith("__")}
    missing = sorted(n for n in declared if not hasattr(k, n))
    assert not missing


# ------------------------------------------------------------------ the checkers
def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, **kw)


def _readme_modules(tmp_path):
    """The README's python blocks as modules: the first two build on each other (one
    module), every other block stands alone."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    sources = [blocks[0] + blocks[1]] + blocks[2:]
    paths = []
    for i, src in enumerate(sources):
        p = tmp_path / f"readme_block_{i}.py"
        p.write_text(src)
        paths.append(str(p))
    return paths


def _need_typecheck_extra():
    from importlib.metadata import PackageNotFoundError, version
    for dist in ("mypy", "types-cffi"):
        try:
            version(dist)
        except PackageNotFoundError:
            pytest.skip(f"needs the typecheck extra ({dist})")


def test_mypy_strict_passes_on_the_package(tmp_path):
    _need_typecheck_extra()
    proc = _run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
                 "pytest_pinfault"])          # strict and per-module settings: pyproject.toml
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_code_passes_mypy_strict(tmp_path):
    _need_typecheck_extra()
    env = dict(os.environ, MYPYPATH=str(ROOT))
    proc = _run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                 "--config-file=", "--cache-dir", str(tmp_path / "cache"),
                 *_readme_modules(tmp_path)], env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _basedpyright():
    exe = shutil.which("basedpyright", path=os.path.dirname(sys.executable)) or shutil.which("basedpyright")
    if exe is None:
        pytest.skip("needs the typecheck extra (basedpyright)")
    return exe


def test_readme_code_passes_pyright_strict(tmp_path):
    exe = _basedpyright()
    (tmp_path / "pyrightconfig.json").write_text(json.dumps({"typeCheckingMode": "strict"}))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = _run([exe, "-p", str(tmp_path / "pyrightconfig.json"), *_readme_modules(tmp_path)], env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pyright_type_completeness_is_at_least_95_percent():
    exe = _basedpyright()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = _run([exe, "--verifytypes", "pytest_pinfault", "--ignoreexternal", "--outputjson"], env=env)
    report = json.loads(proc.stdout)
    tc = report["typeCompleteness"]
    assert tc["packageRootDirectory"] == str(ROOT / "pytest_pinfault")
    score = tc["completenessScore"]
    incomplete = [s["name"] for s in tc["symbols"] if not s["isTypeKnown"] and s["isExported"]]
    assert score >= MIN_COMPLETENESS, f"{score:.1%} < {MIN_COMPLETENESS:.0%}; e.g. {incomplete[:20]}"
