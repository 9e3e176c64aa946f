"""Rules are data: validated YAML describing what healer may do, and the guards that bound it.

`load_rules(directory)` returns a `RuleSet`; a broken file raises `RuleError` naming file, rule
and field. The engine reads the schema's models; nothing here does I/O beyond reading files.
"""

from healer.rules.loading import RuleError, load_rules
from healer.rules.schema import GpuPolicy, Guards, Rule, RuleSet

__all__ = ["GpuPolicy", "Guards", "Rule", "RuleError", "RuleSet", "load_rules"]
