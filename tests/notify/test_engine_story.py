"""The real engine's plans for the Oceanid incident, told by the notifier: one story, one recovery."""

from __future__ import annotations

from healer.engine import planning
from healer.engine.state import EngineState
from healer.model.actions import Notify, Outcome, OutcomeStatus, Plan
from healer.model.view import ClusterView
from healer.notify.messages import Message
from healer.notify.stories import Timings, Tracker
from healer.rules import loading
from tests.notify.builders import at, oceanid, pod

TIMINGS = Timings(settle_s=0, verify_deadline_s=90, release_wait_s=0, dedupe_window_s=300, recovery_hold_s=60)


def _run(plan: Plan) -> list[Outcome]:
    return [
        Outcome(action=a, status=OutcomeStatus.SKIPPED if isinstance(a, Notify) else OutcomeStatus.APPLIED)
        for a in plan.actions
    ]


def test_oceanid_incident_is_one_story_and_one_recovery() -> None:
    rules = loading.load_rules(loading.default_directory())
    tracker = Tracker(timings=TIMINGS)
    sent: list[Message] = []
    state = EngineState()

    def step(view: ClusterView, t: float) -> None:
        nonlocal state
        plan = planning.plan(view=view, rules=rules, state=state, now=at(t), scope="all")
        outcomes = _run(plan)
        state = state.after(outcomes=outcomes, now=at(t))
        sent.extend(tracker.observe(plan=plan, outcomes=outcomes, view=view, now=at(t)))
        sent.extend(tracker.tick(view=view, now=at(t)))

    step(oceanid(cordoned=False), 0)
    moved = oceanid(
        extra=(
            pod("apps", "web-7d9f-new1", "calypso"),
            pod("apps", "web-7d9f-new2", "tethys"),
            pod("apps", "api-5c-new", "tethys", owner=("ReplicaSet", "api-5c")),
        )
    )
    for t in (10, 20, 30):
        step(moved, t)
    back = oceanid(styx_ready="True", cordoned=True)
    for t in range(600, 1500, 60):
        step(back, t)

    assert [(m.key, m.stage.value) for m in sent if not m.deduped] == [
        ("node-not-ready/styx", "opened"),
        ("node-not-ready/styx", "resolved"),
    ]
    story = sent[0]
    assert story.title.endswith(": 3 pods moved, 2 needs you")
    text = story.text()
    assert "apps/api-5c-ccc now runs on tethys as api-5c-new" in text
    assert "Not released: db/postgres-0: StatefulSet pod" in text
    assert "$ kubectl taint nodes styx node.kubernetes.io/out-of-service=nodeshutdown:NoExecute" in text
    assert "node-exporter" not in text
    assert "cordoned styx" in text
