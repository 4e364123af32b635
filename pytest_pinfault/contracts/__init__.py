"""The pin contract checker (design §6): eleven rules judged against the fake mm's real
state.  Pure Python: never imports pytest.

``from pytest_pinfault.contracts import Checker, pin_entry_point, expect_violation``
"""

from .checker import (CallSnapshot, Checker, check_core_pin_return, checker_for, entry_point,
                      expect_violation, pin_entry_point)
from .rules import RULES, Rule, get_rule
from .violation import FolioSnapshot, Violation

__all__ = ["Checker", "CallSnapshot", "check_core_pin_return", "checker_for", "entry_point",
           "expect_violation", "pin_entry_point", "RULES", "Rule", "get_rule", "FolioSnapshot",
           "Violation"]
