"""The pin contract checker (design §6): eleven rules judged against the fake mm's real
state.  Pure Python: never imports pytest.

``from pytest_pinfault.contracts import Checker, pin_entry_point, expect_violation``

Modules: :mod:`.checker` (the :class:`Checker`: baseline, declarations, the model's
events, reporting), :mod:`.tracking` (what a call touched; undeclared driver calls),
:mod:`.returns` (rules 1-3 at a call's return), :mod:`.state_rules` (rules read from
state), :mod:`.units` (hold units), :mod:`.entry` (``@pin_entry_point``),
:mod:`.expect` (``expect_violation``), :mod:`.rules`, :mod:`.violation`.
"""

from .checker import Checker, checker_for
from .entry import LIST_PARAMS, entry_point, pin_entry_point
from .expect import expect_violation
from .returns import check_core_pin_return
from .rules import RULES, Rule, get_rule
from .tracking import CallSnapshot
from .units import USER_KINDS
from .violation import FolioSnapshot, Violation

__all__ = ["Checker", "CallSnapshot", "check_core_pin_return", "checker_for", "entry_point",
           "expect_violation", "pin_entry_point", "RULES", "Rule", "get_rule", "FolioSnapshot",
           "Violation", "LIST_PARAMS", "USER_KINDS"]
