"""The rule engine: YAML + templates → immutable RuleSet; (RuleSet, Message, now) → Decision.

Pure: nothing here does I/O, reads the clock or imports aiohttp.
"""

from .compile import SourceFile, compile_ruleset
from .decide import decide
from .ruleset import Fallback, Rule, RuleSet

__all__ = ["Fallback", "Rule", "RuleSet", "SourceFile", "compile_ruleset", "decide"]
