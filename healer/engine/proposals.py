"""A planned action before the guards have had their say, with what the guards need to know."""

from __future__ import annotations

from dataclasses import dataclass

from healer.model import actions
from healer.rules import schema


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """`guard` is set once something stopped the action (eligibility, protected, storm...)."""

    action: actions.Action
    rule: schema.Rule | None
    node: str  # the node the action is about ("" when none)
    guard: str = ""
    detail: str = ""
    needs_fence: bool = False  # held only until the node is fenced

    @property
    def held(self) -> bool:
        return bool(self.guard)

    @property
    def mutating(self) -> bool:
        return not isinstance(self.action, actions.Notify)

    @property
    def cover(self) -> str:
        """The key an incident's message uses to say it already told about this."""
        t = self.action.target
        base = f"{self.action.verb} {t.kind}/{t.key}"
        return f"{base} [{self.guard}]" if self.guard else base
