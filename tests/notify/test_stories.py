"""The story tracker, pure: plans, outcomes and views in, the alerts an operator reads out."""

from __future__ import annotations

from healer.model import names
from healer.model.actions import (
    Action,
    AddTaint,
    Cordon,
    Delete,
    Evict,
    ForceDelete,
    Held,
    Notify,
    Outcome,
    OutcomeStatus,
    Plan,
    SetCondition,
    Severity,
    Stage,
    Uncordon,
)
from healer.model.view import ClusterView, ObjectRef
from healer.notify.messages import Message
from healer.notify.stories import Timings, Tracker
from tests.notify.builders import (
    GPU_INCIDENT,
    NODE_INCIDENT,
    applied,
    at,
    node,
    node_ref,
    oceanid,
    pod,
    pod_ref,
)

FAST = Timings(
    settle_s=0,
    verify_deadline_s=90,
    release_wait_s=0,
    dedupe_window_s=300,
    recovery_hold_s=60,
    storm_clear_s=120,
)


def _styx_remediation() -> tuple[Plan, list[Outcome]]:
    actions = (
        Cordon(
            target=node_ref("styx"), rule="node-not-ready", reason="NotReady for 5m", incident=NODE_INCIDENT
        ),
        ForceDelete(
            target=pod_ref("apps", "web-7d9f-aaa"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT
        ),
        ForceDelete(
            target=pod_ref("apps", "web-7d9f-bbb"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT
        ),
        ForceDelete(
            target=pod_ref("apps", "api-5c-ccc"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT
        ),
    )
    return Plan(actions=actions), applied(*actions)


def _lines(message: Message) -> str:
    return message.text()


def test_one_opening_story_after_pods_run_elsewhere_then_one_recovery() -> None:
    tracker = Tracker(timings=FAST)
    plan, outcomes = _styx_remediation()
    assert tracker.observe(plan=plan, outcomes=outcomes, view=oceanid(), now=at(0)) == []

    # two replacements run, one is still Pending: the story waits
    partly = oceanid(
        extra=(
            pod("apps", "web-7d9f-new1", "calypso"),
            pod("apps", "web-7d9f-new2", "tethys", phase="Pending"),
            pod("apps", "api-5c-new", "tethys", owner=("ReplicaSet", "api-5c")),
        )
    )
    assert tracker.tick(view=partly, now=at(5)) == []

    moved = oceanid(
        extra=(
            pod("apps", "web-7d9f-new1", "calypso"),
            pod("apps", "web-7d9f-new2", "tethys"),
            pod("apps", "api-5c-new", "tethys", owner=("ReplicaSet", "api-5c")),
        )
    )
    [story] = tracker.tick(view=moved, now=at(10))
    assert story.stage is Stage.OPENED
    assert story.title == "styx NotReady: 3 pods moved, 2 needs you"
    assert story.severity is Severity.CRITICAL  # something needs a human
    text = _lines(story)
    assert "styx: NotReady since 2026-11-25 01:00 UTC (2d 3h ago)" in text
    assert "Ready=Unknown (kubelet stopped reporting)" in text
    assert "cordoned styx" in text
    assert "force-deleted apps/web-7d9f-aaa, apps/web-7d9f-bbb, apps/api-5c-ccc" in text
    assert "apps/api-5c-ccc now runs on tethys as api-5c-new" in text
    moved_web = {line for line in text.splitlines() if line.startswith("- apps/web-7d9f-")}
    assert moved_web == {
        "- apps/web-7d9f-aaa now runs on calypso as web-7d9f-new1",
        "- apps/web-7d9f-bbb now runs on tethys as web-7d9f-new2",
    }  # web-7d9f-old was running before: it is nobody's replacement
    assert "db/postgres-0 (StatefulSet) wait for styx to be fenced" in text
    assert f"$ kubectl taint node styx {names.OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute" in text
    assert "media/jellyfin-6b-ddd uses node-local storage (PV local-pv) on styx" in text
    assert "node-exporter" not in text  # DaemonSet pods stay
    assert "**What healer did**" in story.markdown()

    # nothing more while styx stays down, however often the engine re-plans
    again = tracker.observe(plan=plan, outcomes=outcomes, view=moved, now=at(40))
    assert again == []
    assert tracker.tick(view=moved, now=at(400)) == []

    # styx comes back and healer uncordoned it: recovery must hold before it is announced
    back = oceanid(styx_ready="True")
    assert tracker.tick(view=back, now=at(3600)) == []
    [recovered] = tracker.tick(view=back, now=at(3661))
    assert recovered.stage is Stage.RESOLVED
    assert recovered.title == "styx recovered"
    assert "3 pods moved away while it was down" in recovered.text()
    assert tracker.tick(view=back, now=at(4000)) == []


def test_story_goes_out_at_the_deadline_with_pending_pods_listed() -> None:
    tracker = Tracker(timings=FAST)
    plan, outcomes = _styx_remediation()
    tracker.observe(plan=plan, outcomes=outcomes, view=oceanid(), now=at(0))
    half = oceanid(extra=(pod("apps", "api-5c-new", "tethys", owner=("ReplicaSet", "api-5c")),))
    assert tracker.tick(view=half, now=at(89)) == []
    [story] = tracker.tick(view=half, now=at(90))
    assert story.title == "styx NotReady: 1 pod moved, 2 pending, 2 needs you"
    assert "apps/web-7d9f-aaa: still pending, no Running replacement yet" in story.text()


def test_rule_title_facts_and_tags_are_used() -> None:
    tracker = Tracker(timings=FAST)
    notify = Notify(
        target=node_ref("styx"),
        rule="node-not-ready",
        reason="r",
        incident=NODE_INCIDENT,
        title="styx is down",
        severity=Severity.WARNING,
        tags=("nodes",),
        facts=(("kubelet", "last heartbeat 2d ago"),),
    )
    cordon = Cordon(target=node_ref("styx"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT)
    [story] = tracker.observe(
        plan=Plan(actions=(notify, cordon)), outcomes=applied(cordon), view=oceanid(), now=at(0)
    )
    assert story.title == "styx is down"  # the engine's facts tell what cannot be done; none here
    assert "kubelet: last heartbeat 2d ago" in story.text()
    assert story.route_tags == {"nodes", "warning"}


def test_storm_guard_gives_exactly_one_alert_while_it_lasts_and_one_when_over() -> None:
    tracker = Tracker(timings=FAST)
    view = oceanid()
    held = Held(
        action=Cordon(target=node_ref("styx"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT),
        guard="storm",
        detail="2 of 3 nodes unhealthy",
    )
    [storm] = tracker.observe(plan=Plan(held=(held,)), outcomes=[], view=view, now=at(0))
    assert storm.key == "storm"
    assert storm.title.startswith("Storm guard: healer is holding back")
    assert "2 of 3 nodes unhealthy" in storm.text()
    assert storm.severity is Severity.CRITICAL
    for t in (10, 60, 100, 170):
        assert tracker.observe(plan=Plan(held=(held,)), outcomes=[], view=view, now=at(t)) == []
        assert tracker.tick(view=view, now=at(t + 1)) == []
    [over] = tracker.tick(view=view, now=at(290))
    assert over.stage is Stage.RESOLVED
    assert over.title == "Storm over: healer acts again"
    assert tracker.tick(view=view, now=at(400)) == []


def test_budget_exhausted_hands_over_with_commands() -> None:
    tracker = Tracker(timings=FAST)
    held = Held(
        action=Cordon(target=node_ref("styx"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT),
        guard="budget",
        detail="3 remediations in 24h",
    )
    [story] = tracker.observe(plan=Plan(held=(held,)), outcomes=[], view=oceanid(cordoned=False), now=at(0))
    text = story.text()
    assert "remediation budget for styx is used up (3 remediations in 24h)" in text
    assert "$ kubectl drain styx --ignore-daemonsets --delete-emptydir-data" in text
    assert f"$ kubectl uncordon styx && kubectl annotate node styx {names.REMEDIATIONS}-" in text
    assert story.severity is Severity.CRITICAL


def test_pdb_blocked_eviction_is_reported_as_retried_not_as_needing_a_human() -> None:
    tracker = Tracker(timings=FAST)
    evict = Evict(target=pod_ref("apps", "api-5c-ccc"), rule="gpu", reason="r", incident="drain/tethys")
    outcome = Outcome(
        action=evict, status=OutcomeStatus.FAILED, detail="429 Too Many Requests", retryable=True
    )
    view = ClusterView.of(
        nodes=[node("tethys")],
        pods=[pod("apps", "api-5c-ccc", "tethys", owner=("ReplicaSet", "api-5c"))],
        pdbs=list(oceanid().pdbs.values()),
    )
    [story] = tracker.observe(plan=Plan(actions=(evict,)), outcomes=[outcome], view=view, now=at(0))
    assert (
        "eviction of apps/api-5c-ccc blocked by PodDisruptionBudget apps/api-pdb; healer retries"
        in story.text()
    )
    assert "needs you" not in story.title


def test_evicted_cleanup_is_one_summary_per_cleanup_with_counts_and_pressure() -> None:
    tracker = Tracker(timings=FAST)
    low_mem = "The node was low on resource: memory. Threshold quantity: 100Mi."
    evicted = [
        pod("a", "x-1", "styx", phase="Failed", reason="Evicted", message=low_mem),
        pod("a", "x-2", "styx", phase="Failed", reason="Evicted", message=low_mem),
        pod(
            "b",
            "y-1",
            "calypso",
            phase="Failed",
            reason="Evicted",
            message="The node was low on resource: ephemeral-storage.",
        ),
    ]
    view = ClusterView.of(nodes=[node("styx", pressure="MemoryPressure"), node("calypso")], pods=evicted)
    deletes = tuple(
        Delete(target=p.ref, rule="evicted-cleanup", reason="Evicted", incident="evicted-cleanup")
        for p in evicted
    )
    [summary] = tracker.observe(plan=Plan(actions=deletes), outcomes=applied(*deletes), view=view, now=at(0))
    assert summary.title == "Cleaned up 3 Evicted pods on calypso, styx"
    text = summary.text()
    assert "- a: 2" in text
    assert "- b: 1" in text
    assert "styx: evicted for memory pressure (2); now under MemoryPressure" in text
    assert "calypso: evicted for ephemeral-storage pressure (1)" in text
    [second] = tracker.observe(
        plan=Plan(actions=deletes[:1]), outcomes=applied(deletes[0]), view=view, now=at(30)
    )
    assert second.title == "Cleaned up 1 Evicted pod on styx"
    assert not second.deduped


def test_a_flapping_incident_is_told_once_per_dedupe_window() -> None:
    tracker = Tracker(timings=FAST)
    view = oceanid()
    cordon = Cordon(target=node_ref("styx"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT)
    resolved = Notify(
        target=node_ref("styx"),
        rule="node-not-ready",
        reason="r",
        incident=NODE_INCIDENT,
        title="",
        stage=Stage.RESOLVED,
    )

    def cycle(t: float) -> list[Message]:
        out = tracker.observe(plan=Plan(actions=(cordon,)), outcomes=applied(cordon), view=view, now=at(t))
        return out + tracker.observe(plan=Plan(actions=(resolved,)), outcomes=[], view=view, now=at(t + 30))

    first = cycle(0)
    assert [(m.stage, m.deduped) for m in first] == [(Stage.OPENED, False), (Stage.RESOLVED, False)]
    second = cycle(100)
    assert [(m.stage, m.deduped) for m in second] == [(Stage.OPENED, True), (Stage.RESOLVED, True)]
    third = cycle(400)
    assert [(m.stage, m.deduped) for m in third] == [(Stage.OPENED, False), (Stage.RESOLVED, False)]


def test_shadow_mode_says_would_have_done_without_waiting_for_pods() -> None:
    tracker = Tracker(timings=FAST, shadow=True)
    plan, _ = _styx_remediation()
    outcomes = applied(*plan.actions, status=OutcomeStatus.SKIPPED, detail="dry-run")
    [story] = tracker.observe(plan=plan, outcomes=outcomes, view=oceanid(), now=at(0))
    assert story.title.startswith("[would have done] styx NotReady: 3 pods would move")
    assert "would have cordoned styx" in story.text()
    assert story.text().startswith("Shadow mode: healer would have done this")


def test_gpu_incident_story_and_recovery_on_uncordon() -> None:
    tracker = Tracker(timings=FAST)
    sick = ClusterView.of(
        nodes=[node("tethys"), node("calypso", gpu="False", cordoned_by_healer=True)],
        pods=[pod("ml", "trainer-0", "calypso", owner=("Job", "trainer"))],
    )
    actions = (
        SetCondition(
            target=node_ref("calypso"),
            rule="gpu",
            reason="Xid 79",
            incident=GPU_INCIDENT,
            type=names.GPU_CONDITION,
            status="False",
            cond_reason="Xid79",
        ),
        AddTaint(
            target=node_ref("calypso"),
            rule="gpu",
            reason="r",
            incident=GPU_INCIDENT,
            key=names.GPU_UNHEALTHY_TAINT,
        ),
        Cordon(target=node_ref("calypso"), rule="gpu", reason="r", incident=GPU_INCIDENT),
        Evict(target=pod_ref("ml", "trainer-0"), rule="gpu", reason="r", incident=GPU_INCIDENT),
    )
    assert tracker.observe(plan=Plan(actions=actions), outcomes=applied(*actions), view=sick, now=at(0)) == []
    [story] = tracker.tick(view=sick, now=at(90))
    assert story.title == "calypso GPU Xid79: 0 pods moved, 1 pending"
    assert "GPU 0 GPU-1c2f fell off the bus (class=reboot)" in story.text()
    assert f"tainted calypso ({names.GPU_UNHEALTHY_TAINT}:NoSchedule)" in story.text()
    assert "gpu" in story.route_tags
    uncordon = Uncordon(target=node_ref("calypso"), rule="gpu", reason="healthy 5m", incident=GPU_INCIDENT)
    [recovered] = tracker.observe(
        plan=Plan(actions=(uncordon,)), outcomes=applied(uncordon), view=sick, now=at(500)
    )
    assert recovered.stage is Stage.RESOLVED
    assert recovered.title == "calypso GPU healthy again"
    assert "gpu" in recovered.route_tags


STORM_NODES = ("doris", "nereus", "styx")


def _storm_view(*, down: tuple[str, ...] = STORM_NODES) -> ClusterView:
    names_ = ("tethys", "calypso", "thetis", *STORM_NODES)
    return ClusterView.of(nodes=[node(n, ready="Unknown" if n in down else "True") for n in names_])


def _not_ready(name: str, *, facts: tuple[tuple[str, str], ...] = ()) -> tuple[Cordon, Notify]:
    incident = f"node-not-ready/{name}"
    cordon = Cordon(target=node_ref(name), rule="node-not-ready", reason="NotReady", incident=incident)
    note = Notify(
        target=node_ref(name),
        rule="node-not-ready",
        reason="r",
        incident=incident,
        title=f"{name} is not ready",
        stage=Stage.OPENED,
        facts=facts,
    )
    return cordon, note


def _ready_again(name: str, *, stage: Stage = Stage.RESOLVED) -> Notify:
    return Notify(
        target=node_ref(name),
        rule="node-ready-again",
        reason="r",
        incident=f"node-not-ready/{name}",
        title=f"{name} is ready again",
        stage=stage,
    )


def _storm_notify(stage: Stage) -> Notify:
    return Notify(
        target=ObjectRef(kind="Cluster", name="cluster"),
        rule="storm-guard",
        reason="r",
        incident="storm",
        title="Storm guard up",
        stage=stage,
        facts=(("Why", "3 of 6 nodes unhealthy (doris, nereus, styx), more than 2: no pod is deleted"),),
    )


def test_per_node_stories_fold_into_the_storm_alert_and_one_follow_up_when_it_ends() -> None:
    """3 of 6 nodes stop together: one alert while it lasts (no per-node opening, update or
    recovery of its own), one "storm over" naming the nodes back, nothing after that."""
    tracker = Tracker(timings=Timings(settle_s=10, storm_clear_s=120))
    sent: list[Message] = []
    view = _storm_view()

    def observe(t: float, *actions: Action, view: ClusterView = view) -> None:
        plan = Plan(actions=actions)
        done = applied(*(a for a in actions if not isinstance(a, Notify)))
        sent.extend(
            m for m in tracker.observe(plan=plan, outcomes=done, view=view, now=at(t)) if not m.deduped
        )

    def tick(t: float, *, view: ClusterView = view) -> None:
        sent.extend(m for m in tracker.tick(view=view, now=at(t)) if not m.deduped)

    observe(0, *_not_ready("styx"))  # the first to be noticed, before the storm guard is up
    observe(3, _storm_notify(Stage.OPENED), *_not_ready("nereus"), *_not_ready("doris"))
    for t in (15, 30, 45):  # the engine re-plans with new facts; the tracker ticks
        for name in STORM_NODES:
            _cordon, note = _not_ready(name, facts=(("Held (storm)", f"at {t}"),))
            observe(t, note)
        tick(t + 1)
    [storm] = sent
    assert storm.key == "storm"
    assert storm.stage is Stage.OPENED
    text = storm.text()
    assert "unhealthy nodes (3/6): doris, nereus, styx" in text
    assert "no pod is deleted" in text
    assert "healer deletes and evicts no pod anywhere until the storm is over" in text

    # all three are back: the storm lifts; healer uncordons them only after 60 s of Ready
    back = ClusterView.of(
        nodes=[
            node(n, cordoned_by_healer=n in STORM_NODES)
            for n in ("tethys", "calypso", "thetis", *STORM_NODES)
        ]
    )
    observe(60, _storm_notify(Stage.RESOLVED), view=back)
    assert sent == [storm]
    tick(62, view=back)
    assert len(sent) == 2
    over = sent[1]
    assert over.key == "storm"
    assert over.stage is Stage.RESOLVED
    for t in (70, 80, 100):  # past settle_s: no story of their own for nodes already back
        tick(t, view=back)
    # the engine's recoveries (twice for doris: its covers changed between plans)
    uncordon = Uncordon(
        target=node_ref("doris"), rule="node-ready-again", reason="r", incident="node-not-ready/doris"
    )
    observe(120, _ready_again("doris"), uncordon, view=back)
    observe(121, _ready_again("doris"), _ready_again("nereus"), _ready_again("styx"), view=back)
    observe(130, _ready_again("doris"), _ready_again("styx"), view=back)
    for t in (200, 400, 1000):
        tick(t, view=back)
    assert sent == [storm, over]


def test_recoveries_while_the_storm_lasts_are_named_by_the_storm_over_message() -> None:
    tracker = Tracker(timings=Timings(settle_s=10, storm_clear_s=120))
    view = _storm_view()
    cordon, note = _not_ready("doris")
    plan = Plan(actions=(_storm_notify(Stage.OPENED), cordon, note))
    [storm] = tracker.observe(plan=plan, outcomes=applied(cordon), view=view, now=at(0))
    assert storm.key == "storm"
    back = _storm_view(down=("nereus", "styx"))
    resolved = Plan(actions=(_ready_again("doris"),))
    assert tracker.observe(plan=resolved, outcomes=[], view=back, now=at(30)) == []
    lifted = Plan(actions=(_storm_notify(Stage.RESOLVED),))
    assert tracker.observe(plan=lifted, outcomes=[], view=back, now=at(40)) == []
    [over] = tracker.tick(view=back, now=at(41))
    assert "ready again: doris" in over.text()


def test_a_node_still_down_when_the_storm_ends_gets_its_own_story_once_it_settles() -> None:
    tracker = Tracker(timings=Timings(settle_s=10, storm_clear_s=120))
    view = _storm_view()
    cordon, note = _not_ready("nereus")
    [storm] = tracker.observe(
        plan=Plan(actions=(_storm_notify(Stage.OPENED), cordon, note)),
        outcomes=applied(cordon),
        view=view,
        now=at(0),
    )
    assert storm.key == "storm"
    assert tracker.tick(view=view, now=at(30)) == []
    one_down = _storm_view(down=("nereus",))
    assert (
        tracker.observe(
            plan=Plan(actions=(_storm_notify(Stage.RESOLVED),)), outcomes=[], view=one_down, now=at(40)
        )
        == []
    )
    [over] = tracker.tick(view=one_down, now=at(41))
    assert over.title == "Storm over: healer acts again"
    assert tracker.tick(view=one_down, now=at(45)) == []  # it settles again first
    [story] = tracker.tick(view=one_down, now=at(52))
    assert (story.key, story.stage) == ("node-not-ready/nereus", Stage.OPENED)
    assert story.title.startswith("nereus is not ready")


def test_the_cordon_and_the_release_a_plan_later_are_one_opening_story() -> None:
    """node-not-ready cordons at 30 s, node-not-ready-release releases at 60 s: one story."""
    tracker = Tracker(timings=Timings(settle_s=10, verify_deadline_s=90, release_wait_s=60))
    plan, outcomes = _styx_remediation()
    cordon, releases = plan.actions[0], plan.actions[1:]
    view = oceanid()
    assert tracker.observe(plan=Plan(actions=(cordon,)), outcomes=applied(cordon), view=view, now=at(0)) == []
    assert tracker.tick(view=view, now=at(20)) == []  # past settle_s: the release is still due
    assert tracker.observe(plan=Plan(actions=releases), outcomes=outcomes[1:], view=view, now=at(30)) == []
    moved = oceanid(
        extra=(
            pod("apps", "web-7d9f-new1", "calypso"),
            pod("apps", "web-7d9f-new2", "tethys"),
            pod("apps", "api-5c-new", "tethys", owner=("ReplicaSet", "api-5c")),
        )
    )
    [story] = tracker.tick(view=moved, now=at(45))
    assert story.stage is Stage.OPENED
    assert "cordoned styx" in story.text()
    assert "apps/api-5c-ccc now runs on tethys as api-5c-new" in story.text()
    assert tracker.tick(view=moved, now=at(400)) == []


def test_a_cordon_with_nothing_to_release_is_told_after_settling() -> None:
    tracker = Tracker(timings=Timings(settle_s=10, verify_deadline_s=90, release_wait_s=60))
    empty = ClusterView.of(nodes=[node("tethys"), node("styx", ready="Unknown")])
    cordon = Cordon(target=node_ref("styx"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT)
    assert (
        tracker.observe(plan=Plan(actions=(cordon,)), outcomes=applied(cordon), view=empty, now=at(0)) == []
    )
    [story] = tracker.tick(view=empty, now=at(11))
    assert story.stage is Stage.OPENED


def test_a_node_roles_tick_without_the_node_does_not_tell_the_story_early() -> None:
    """The leader's and the node role's reconcilers share one notifier; the node role's view
    has only its own node, so it cannot tell whether the release is still due."""
    tracker = Tracker(timings=Timings(settle_s=10, verify_deadline_s=90, release_wait_s=60))
    cordon = Cordon(target=node_ref("styx"), rule="node-not-ready", reason="r", incident=NODE_INCIDENT)
    tracker.observe(plan=Plan(actions=(cordon,)), outcomes=applied(cordon), view=oceanid(), now=at(0))
    own_node_only = ClusterView.of(nodes=[node("calypso", gpu="True")])
    assert tracker.tick(view=own_node_only, now=at(15)) == []
    [story] = tracker.tick(view=own_node_only, now=at(61))  # release_wait_s bounds the wait
    assert story.stage is Stage.OPENED


def test_progress_after_the_opening_waits_for_the_recovery_new_trouble_does_not() -> None:
    """Fencing moves postgres-0: good news, told in the recovery; a PDB refusal is told at once."""
    tracker = Tracker(timings=FAST)
    plan, outcomes = _styx_remediation()
    tracker.observe(plan=plan, outcomes=outcomes, view=oceanid(), now=at(0))
    moved = (
        pod("apps", "web-7d9f-new1", "calypso"),
        pod("apps", "web-7d9f-new2", "tethys"),
        pod("apps", "api-5c-new", "tethys", owner=("ReplicaSet", "api-5c")),
    )
    [story] = tracker.tick(view=oceanid(extra=moved), now=at(10))
    assert "db/postgres-0 (StatefulSet) wait for styx to be fenced" in story.text()

    # the operator fences styx; healer releases postgres-0 and it runs on calypso
    release = ForceDelete(
        target=pod_ref("db", "postgres-0"), rule="node-not-ready", reason="fenced", incident=NODE_INCIDENT
    )
    fenced = oceanid(extra=moved)
    assert (
        tracker.observe(plan=Plan(actions=(release,)), outcomes=applied(release), view=fenced, now=at(600))
        == []
    )
    new_db = pod("db", "postgres-0", "calypso", owner=("StatefulSet", "postgres"))
    after = ClusterView.of(
        nodes=list(fenced.nodes.values()),
        pods=[*(p for p in fenced.pods.values() if p.key != ("db", "postgres-0")), new_db],
    )
    assert tracker.tick(view=after, now=at(620)) == []
    assert tracker.tick(view=after, now=at(1000)) == []

    # new trouble is news: a PodDisruptionBudget refuses an eviction
    evict = Evict(target=pod_ref("apps", "web-7d9f-new1"), rule="r", reason="r", incident=NODE_INCIDENT)
    refused = Outcome(action=evict, status=OutcomeStatus.FAILED, detail="429", retryable=True)
    told = tracker.observe(plan=Plan(actions=(evict,)), outcomes=[refused], view=after, now=at(1100))
    [update] = told + tracker.tick(view=after, now=at(1200))
    assert update.stage is Stage.UPDATED
    assert "blocked by" in update.text()

    # styx returns: the recovery tells what moved, postgres-0 included
    back = ClusterView.of(
        nodes=list(oceanid(styx_ready="True").nodes.values()),
        pods=[p for p in after.pods.values() if p.node_name != "styx"],
    )
    tracker.tick(view=back, now=at(3600))
    [recovered] = tracker.tick(view=back, now=at(3661))
    assert recovered.stage is Stage.RESOLVED
    assert "db/postgres-0 now runs on calypso" in recovered.text()
