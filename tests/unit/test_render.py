"""Plan output: the JSON contract and the table people read."""

from __future__ import annotations

import json

from healer import render
from healer.model import actions, names
from tests.unit.builders import node, plan, pod, view

CP = node("tethys", labels={names.CONTROL_PLANE_LABEL: "true"})


def test_empty_plan() -> None:
    p = plan(view(CP, node("calypso")))
    assert json.loads(render.as_json(p)) == {"actions": [], "held": []}
    assert render.as_table(p, header="h").splitlines() == ["h", "", "Nothing to do."]


def test_json_rows_name_cluster_scoped_objects_with_an_empty_namespace() -> None:
    p = plan(
        view(
            CP,
            node("styx", ready="False", for_s=120),
            node("calypso"),
            pods=(pod("db-0", "styx", owner="StatefulSet"),),
        )
    )
    doc = json.loads(render.as_json(p))
    cordon = next(r for r in doc["actions"] if r["action"] == "cordon")
    assert cordon == {
        "action": "cordon",
        "kind": "Node",
        "namespace": "",
        "name": "styx",
        "rule": "node-not-ready",
        "reason": "Ready=False for 2m (NodeStatusUnknown)",
    }
    notify = next(r for r in doc["actions"] if r["action"] == "notify")
    assert (notify["kind"], notify["name"]) == ("Node", "styx")
    (held,) = doc["held"]
    assert (held["action"], held["namespace"], held["name"], held["guard"]) == (
        "force-delete",
        "apps",
        "db-0",
        "eligibility",
    )


def test_table_lists_actions_held_and_messages() -> None:
    p = plan(
        view(
            CP,
            node("styx", ready="False", for_s=120),
            node("calypso"),
            pods=(pod("db-0", "styx", owner="StatefulSet"),),
        )
    )
    text = render.as_table(p)
    assert "ACTIONS (1)" in text
    assert "cordon  Node/styx" in text
    assert "HELD (1)" in text
    assert "force-delete  Pod/apps/db-0  eligibility" in text
    assert "[critical] node-not-ready/styx (opened): styx is not ready" in text
    assert all(isinstance(a, actions.Notify) or a.verb in text for a in p.actions)
