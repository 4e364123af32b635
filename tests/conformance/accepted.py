"""Accepted differences between the fake mm and the recorded kernels: the only place.

``ACCEPTED[(series, scenario_id, key)] = reason``.  A scenario with entries here runs
under ``pytest.mark.xfail(strict=True, raises=AcceptedDifference)``: the comparison is
the same as for every other scenario, it must fail on exactly these keys (any other
mismatch is an ordinary failure, an accepted key that now agrees is an ordinary
failure telling to remove the entry, and a scenario that agrees everywhere is an XPASS,
which strict mode fails).  For the layout, ``scenario_id`` is ``"layout"`` and the key
one of ``replay.real_layout``'s (``zone.Movable.start_pfn``, ``baseline.top`` ...).

Every entry must name a recorded scenario key (tests/conformance/test_model_conformance.py
checks it) and be listed, by scenario id, under "Conformance differences" in
docs/kernel-map.md.
"""

from __future__ import annotations

ACCEPTED: dict[tuple[str, str, str], str] = {
    # None at present: the model agrees with every recorded outcome.
}
