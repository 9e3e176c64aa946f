"""What one chat alert is, and how it reads as Markdown or as plain text.

A story is built once as sections of items (a line of text, optionally followed by
commands a human can copy) and rendered per target: Markdown where the target takes it,
plain text otherwise. Keeping the structure until the last moment is what lets one story
read well on Slack, in an e-mail and in an SMS-sized plain-text client.
"""

from __future__ import annotations

from dataclasses import dataclass

from healer.model.actions import Severity, Stage

MAX_ITEMS = 12  # per section: a phone screen, not a log dump


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    text: str
    commands: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    heading: str
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One alert. `key` and `stage` identify it for dedupe; `tags` route it to targets.

    `deduped` marks a message the story tracker suppressed (it is counted, not sent).
    """

    key: str
    stage: Stage
    title: str
    sections: tuple[Section, ...] = ()
    lead: str = ""
    severity: Severity = Severity.WARNING
    tags: frozenset[str] = frozenset()
    deduped: bool = False

    @property
    def route_tags(self) -> frozenset[str]:
        """Tags a target may subscribe to: the rule's tags plus the severity."""
        return self.tags | {self.severity.value}

    def markdown(self) -> str:
        out: list[str] = []
        if self.lead:
            out += [f"_{self.lead}_", ""]
        for section in self.sections:
            out += [f"**{section.heading}**", ""]
            for item in _capped(section.items):
                out.append(f"- {item.text}")
                out.extend(f"    `{command}`" for command in item.commands)
            out.append("")
        return "\n".join(out).strip()

    def text(self) -> str:
        out: list[str] = []
        if self.lead:
            out += [self.lead, ""]
        for section in self.sections:
            out.append(f"{section.heading}:")
            for item in _capped(section.items):
                out.append(f"- {item.text.replace('`', '')}")
                out.extend(f"  $ {command}" for command in item.commands)
            out.append("")
        return "\n".join(out).strip()


def _capped(items: tuple[Item, ...]) -> tuple[Item, ...]:
    if len(items) <= MAX_ITEMS:
        return items
    rest = len(items) - (MAX_ITEMS - 1)
    return (*items[: MAX_ITEMS - 1], Item(text=f"... and {rest} more"))


def digest(messages: list[Message] | tuple[Message, ...], *, window_s: float) -> Message:
    """Many alerts at once become one: titles only, the worst severity, every tag."""
    order = [Severity.INFO, Severity.WARNING, Severity.CRITICAL]
    worst = max((m.severity for m in messages), key=order.index, default=Severity.WARNING)
    tags: frozenset[str] = frozenset().union(*(m.tags for m in messages))
    minutes = max(1, round(window_s / 60))
    return Message(
        key="digest",
        stage=Stage.UPDATED,
        title=f"healer: {len(messages)} alerts in {minutes} min",
        lead="Too many alerts at once; here they are together.",
        sections=(Section(heading="Alerts", items=tuple(Item(text=m.title) for m in messages)),),
        severity=worst,
        tags=tags,
    )
