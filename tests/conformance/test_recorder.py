"""The host-side recorder: console parsing, qualitative diffs, result files, the command.

No QEMU here; recording itself is `python conformance/record.py` (docs/conformance.md)."""

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_pinfault.conformance import (SCHEMA, ConformanceError, diff_results, dump_result, load_result,
                                         parse_console, qualitative)

REPO = Path(__file__).resolve().parents[2]
RECORD = REPO / "conformance" / "record.py"

LOG = """\
SeaBIOS (version 1.16.2-debian-1.16.2-1)\r
Booting from ROM..\r
[    0.000000] Linux version 6.1.176 (root@host) (gcc (Debian 12.2.0-14) 12.2.0) #1 SMP\r
[    0.512345] Run /init as init process\r
PF layout zone=DMA start_pfn=1 spanned=4095 present=3998\r
PF layout zone=DMA32 start_pfn=4096 spanned=1044480 present=520160\r
PF layout zone=Normal start_pfn=1048576 spanned=393216 present=393216\r
PF layout zone=Movable start_pfn=1441792 spanned=131072 present=131072\r
PF layout cma=reserved base_pfn=229376 count=32768\r
PF layout block_pages=32768\r
[    1.234567] Offlined Pages 32768\r
PF baseline block=44 first_pfn=1441792 offline=ok\r
PF baseline block=45 first_pfn=1474560 offline=EBUSY\r
PF baseline block=46 first_pfn=1507328 offline=ok\r
PF baseline block=47 first_pfn=1540096 offline=EBUSY\r
  PF scenario id=indented-so-ignored pin=ok\r
PF scenario id=pin/iouring/anon/movable pin=ok moved=all data=intact offline_held=ok offline_released=ok\r
PF scenario id=pin/vmsplice/anon/movable pin=ok moved=none data=intact offline_held=EINTR offline_released=ok\r
PF scenario id=udmabuf/cma pin=skip:no-udmabuf\r
PF scenario id=udmabuf-errno/seal-grow ret=EINVAL\r
PFX not a record\r
PF done\r
PF scenario id=after-done pin=ok\r
[    9.999999] reboot: Restarting system\r
"""


def result():
    r = parse_console(LOG)
    r["kernel"] = {"series": "6.1"}
    return r


def test_parse_console_realistic_log():
    r = parse_console(LOG)
    assert r["schema"] == SCHEMA
    assert r["layout"] == {
        "zones": {"DMA": {"start_pfn": 1, "spanned": 4095, "present": 3998},
                  "DMA32": {"start_pfn": 4096, "spanned": 1044480, "present": 520160},
                  "Normal": {"start_pfn": 1048576, "spanned": 393216, "present": 393216},
                  "Movable": {"start_pfn": 1441792, "spanned": 131072, "present": 131072}},
        "cma": {"reserved": {"base_pfn": 229376, "count": 32768}},
        "block_pages": 32768,
        "baseline": {"1441792": "ok", "1474560": "EBUSY", "1507328": "ok", "1540096": "EBUSY"},
    }
    assert r["scenarios"] == {
        "pin/iouring/anon/movable": {"pin": "ok", "moved": "all", "data": "intact", "offline_held": "ok",
                                     "offline_released": "ok"},
        "pin/vmsplice/anon/movable": {"pin": "ok", "moved": "none", "data": "intact", "offline_held": "EINTR",
                                      "offline_released": "ok"},
        "udmabuf/cma": {"pin": "skip:no-udmabuf"},
        "udmabuf-errno/seal-grow": {"ret": "EINVAL"},
    }


@pytest.mark.parametrize("bad, message", [
    ("PF scenario id=x pin", r"line 2: malformed PF line \(word 'pin' is not key=value\): 'PF scenario id=x pin'"),
    ("PF scenario pin=ok", r"line 2: malformed PF line \(scenario without id=\)"),
    ("PF scenario id=x pin=ok pin=EBUSY", r"line 2: malformed PF line \(key 'pin' twice\)"),
    ("PF layout zone=DMA start_pfn=1 spanned=x present=1", r"line 2: malformed PF line \(not an integer\)"),
    ("PF layout zone=DMA start_pfn=1", r"line 2: malformed PF line \(expected keys"),
    ("PF layout colour=blue", r"line 2: malformed PF line \(unknown layout record\)"),
    ("PF baseline block=3 first_pfn=7", r"line 2: malformed PF line \(expected keys"),
    ("PF frobnicate x=1", r"line 2: malformed PF line \(unknown record 'frobnicate'\): 'PF frobnicate x=1'"),
    ("PF ", r"line 2: malformed PF line \(unknown record ''\)"),
])
def test_parse_console_malformed_line_names_line_and_content(bad, message):
    with pytest.raises(ConformanceError, match=message):
        parse_console(f"noise\n{bad}\r\nPF done\n")


@pytest.mark.parametrize("first, again, message", [
    ("PF scenario id=a pin=ok", "PF scenario id=a pin=EBUSY", r"line 3: duplicate scenario id 'a': 'PF scenario id=a pin=EBUSY'"),
    ("PF layout zone=DMA start_pfn=1 spanned=2 present=2", "PF layout zone=DMA start_pfn=1 spanned=2 present=2",
     r"line 3: duplicate layout entry 'DMA'"),
    ("PF layout block_pages=1", "PF layout block_pages=2", r"line 3: duplicate block_pages"),
    ("PF baseline block=1 first_pfn=8 offline=ok", "PF baseline block=1 first_pfn=8 offline=ok",
     r"line 3: duplicate baseline block first_pfn=8"),
])
def test_parse_console_duplicates(first, again, message):
    with pytest.raises(ConformanceError, match=message):
        parse_console(f"x\n{first}\n{again}\nPF done\n")


def test_parse_console_missing_done():
    with pytest.raises(ConformanceError, match="missing 'PF done'"):
        parse_console(LOG.replace("PF done", "Kernel panic"))
    assert issubclass(ConformanceError, ValueError)


def test_qualitative_keeps_only_the_stable_part():
    q = qualitative(result())
    assert q == {"zones": {"DMA": {}, "DMA32": {}, "Normal": {},
                           "Movable": {"start_pfn": 1441792, "spanned": 131072}},
                 "cma": {"reserved": 32768}, "block_pages": 32768, "top_movable_baseline": "EBUSY",
                 "scenarios": result()["scenarios"]}
    other = result()
    other["layout"]["baseline"] = {"1441792": "EBUSY", "1540096": "EBUSY"}   # another bad block: noise
    other["layout"]["zones"]["DMA32"]["present"] = 1
    other["layout"]["cma"]["reserved"]["base_pfn"] = 1
    other["kernel"] = {"series": "6.1", "release": "6.1.177"}
    assert diff_results(result(), other) == []
    assert diff_results(result(), result()) == []


def test_diff_results_each_kind_of_line():
    old, new = result(), result()
    s = new["scenarios"]
    s["pin/vmsplice/anon/movable"]["offline_held"] = "EBUSY"
    s["pin/iouring/anon/movable"]["cma_held"] = "ok"
    del s["pin/iouring/anon/movable"]["data"]
    s["pin/gup-pin/anon/cma"] = {"pin": "ok"}
    del s["udmabuf/cma"]
    lay = new["layout"]
    lay["zones"]["Movable"]["spanned"] = 131000
    del lay["zones"]["DMA"]
    lay["zones"]["Device"] = {"start_pfn": 0, "spanned": 0, "present": 0}
    lay["cma"]["reserved"]["count"] = 16384
    lay["cma"]["other"] = {"base_pfn": 1, "count": 2}
    lay["block_pages"] = 16384
    lay["baseline"]["1540096"] = "ok"
    assert diff_results(old, new) == [
        "layout: + zone Device",
        "layout: - zone DMA",
        "layout: Movable spanned 131072 -> 131000",
        "layout: + cma other",
        "layout: cma reserved count 32768 -> 16384",
        "layout: block_pages 32768 -> 16384",
        "layout: top movable block baseline EBUSY -> ok",
        "+ scenario pin/gup-pin/anon/cma",
        "- scenario udmabuf/cma",
        "pin/iouring/anon/movable: cma_held (absent) -> ok",
        "pin/iouring/anon/movable: data intact -> (absent)",
        "pin/vmsplice/anon/movable: offline_held EINTR -> EBUSY",
    ]


def test_dump_load_round_trip(tmp_path):
    path = tmp_path / "linux-6.1.json"
    dump_result(result(), path)
    text = path.read_text()
    assert text.endswith("}\n") and text == json.dumps(result(), sort_keys=True, indent=2) + "\n"
    assert load_result(path) == result()


def test_schema_is_checked(tmp_path):
    bad = dict(result(), schema="pytest-pinfault-conformance/0")
    with pytest.raises(ConformanceError, match="schema is 'pytest-pinfault-conformance/0'"):
        dump_result(bad, tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps(bad))
    with pytest.raises(ConformanceError, match="expected 'pytest-pinfault-conformance/1'"):
        load_result(tmp_path / "y.json")
    (tmp_path / "z.json").write_text("{")
    with pytest.raises(ConformanceError, match="not JSON"):
        load_result(tmp_path / "z.json")


def test_record_help_runs_and_every_option_is_documented():
    proc = subprocess.run([sys.executable, str(RECORD), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--series" in proc.stdout and "77" in proc.stdout
    docs = (REPO / "docs" / "conformance.md").read_text()
    options = set(re.findall(r"(--[a-z][a-z-]+)", proc.stdout)) - {"--help"}
    assert len(options) >= 7
    assert sorted(o for o in options if o not in docs) == []


def test_source_version_must_name_a_series():
    proc = subprocess.run([sys.executable, str(RECORD), "--source-version", "7.0=1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--source-version: expected SERIES=VERSION with SERIES one of ['6.1', '6.12'], got '7.0=1'" in proc.stderr


def test_docs_name_the_recorders_pins_and_command_line():
    spec = importlib.util.spec_from_file_location("pinfault_record", RECORD)
    record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record)   # main() only runs as __main__
    docs = re.sub(r"\s+", " ", (REPO / "docs" / "conformance.md").read_text())
    for pkg, version in record.PINS.values():
        assert f"`{pkg}={version}`" in docs
    assert record.APPEND in docs
    for tool in record.TOOLS:
        assert tool in docs
    assert "77" in docs and "--check" in docs


def test_committed_results_parse(tmp_path):
    """Whatever has been recorded must load and survive a round trip."""
    for path in sorted((REPO / "tests" / "conformance").glob("linux-*.json")):
        r = load_result(path)
        assert r["kernel"]["series"] == path.stem.removeprefix("linux-")
        dump_result(r, tmp_path / path.name)
        assert (tmp_path / path.name).read_text() == path.read_text()


def test_committed_results_were_made_by_the_committed_probe():
    """A change to the guest program must come with fresh recordings (the files carry the
    sha256 of the probe source and the init script that produced them)."""
    guest = REPO / "conformance" / "guest"
    want = {"probe_c_sha256": hashlib.sha256((guest / "probe.c").read_bytes()).hexdigest(),
            "init_sha256": hashlib.sha256((guest / "init").read_bytes()).hexdigest()}
    paths = sorted((REPO / "tests" / "conformance").glob("linux-*.json"))
    assert paths
    for path in paths:
        assert load_result(path).get("probe") == want, f"{path.name}: re-record with conformance/record.py"
