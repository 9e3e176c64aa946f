"""A Plan for people (a table, the incidents' messages) or for machines (JSON).

The JSON shape is a contract (`{"actions": [...], "held": [...]}`, each entry with `action`,
`kind`, `namespace`, `name`, `rule`, `reason`, held ones with `guard`); tests and scripts
parse it. The table is for reading at 3 a.m.: what would be done, what was held and why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from healer.model import actions


def as_json(plan: actions.Plan) -> str:
    doc = {
        "actions": [actions.as_row(a) for a in plan.actions],
        "held": [actions.held_row(h) for h in plan.held],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def _table(headers: Sequence[str], *, rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    widths[-1] = len(headers[-1])  # the last column is free text

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True)) + "  " + cells[-1]

    return [line(headers), *(line(r) for r in rows)]


def _subject(a: actions.Action) -> str:
    t = a.target
    return f"{t.kind}/{t.key}" if t.namespace else f"{t.kind}/{t.name}"


def as_table(plan: actions.Plan, *, header: str = "") -> str:
    out: list[str] = [header, ""] if header else []
    doing = [a for a in plan.actions if not isinstance(a, actions.Notify)]
    notes = [a for a in plan.actions if isinstance(a, actions.Notify)]
    if not plan:
        out.append("Nothing to do.")
        return "\n".join(out)
    out.append(f"ACTIONS ({len(doing)})")
    if doing:
        rows = [(a.verb, _subject(a), a.rule, a.reason) for a in doing]
        out.extend("  " + r for r in _table(("ACTION", "OBJECT", "RULE", "REASON"), rows=rows))
    else:
        out.append("  none")
    out.append("")
    out.append(f"HELD ({len(plan.held)})")
    if plan.held:
        rows = [(h.action.verb, _subject(h.action), h.guard, h.detail or h.action.reason) for h in plan.held]
        out.extend("  " + r for r in _table(("ACTION", "OBJECT", "GUARD", "WHY"), rows=rows))
    else:
        out.append("  none")
    if notes:
        out.append("")
        out.append(f"NOTIFICATIONS ({len(notes)})")
        for n in notes:
            out.append(f"  [{n.severity.value}] {n.incident} ({n.stage.value}): {n.title}")
            width = max((len(label) for label, _ in n.facts), default=0)
            for label, text in n.facts:
                out.append(f"      {label.ljust(width)}  {text}")
    return "\n".join(out)
