"""Incident stories: executed plans in, a few readable alerts out. Pure, no I/O.

The engine acts in small steps (cordon, taint, force-delete, evict) spread over several
plans; an operator wants one message per incident that says what happened, what healer
did, where the pods went and what still needs a human, then one message when it is over.
`Tracker` groups actions and outcomes by `action.incident`, waits until the pods it
released run elsewhere (or a deadline passes) before telling the story, and turns
storm-guard holds and Evicted-pod clean-ups into one alert each. While the storm guard is
up, the per-node not-ready stories fold into the storm alert (it names the unhealthy nodes):
no opening, update or recovery of their own; "Storm over" says which came back. Time comes in as `now`,
so every decision here is testable with plain values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from healer.engine import matching
from healer.model import names
from healer.model.actions import (
    Action,
    AddTaint,
    Delete,
    Evict,
    ForceDelete,
    Held,
    Notify,
    Outcome,
    OutcomeStatus,
    Plan,
    RemoveTaint,
    SetCondition,
    Severity,
    Stage,
    Uncordon,
)
from healer.model.view import ClusterView, ConditionStatus, Node, Pod, VolumeKind
from healer.notify.messages import Item, Message, Section

PodKey = tuple[str, str]
DRY_RUN = "dry-run"  # the detail healer.effects.dryrun puts on its SKIPPED outcomes

STORM = "storm"
CLEANUP = "evicted-cleanup"
_RELEASING = (ForceDelete, Delete, Evict)
_RECOVERING = (Uncordon, RemoveTaint)
_PAST = {
    "cordon": "cordoned",
    "uncordon": "uncordoned",
    "taint": "tainted",
    "untaint": "removed taint from",
    "evict": "evicted",
    "delete": "deleted",
    "force-delete": "force-deleted",
    "set-condition": "set condition on",
}
_SEVERITY_ORDER = (Severity.INFO, Severity.WARNING, Severity.CRITICAL)
_QUIET_GUARDS = frozenset({"cooldown"})
# labels of the engine's Notify.facts (healer.engine.story)
_ACTION_LABELS = frozenset(
    {"Cordon", "Uncordon", "Taint", "Untaint", "Release", "Evict", "Delete", "Set condition", "Deleted"}
)
_REFUSAL_LABELS = ("Not released", "Not evicted", "Held")
_HINT_LABELS = (
    "By hand",
    "Budget",
    "Fence",
)  # commands that go with a refusal, not refusals themselves  # a cooldown hold is a later retry, not news


_COULD_NOT = "What it could not do"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """How long stories wait. Defaults suit production; tests pass small ones."""

    settle_s: float = 10.0  # let the next plans of a remediation arrive before telling it
    verify_deadline_s: float = 90.0  # tell the story by then even if pods are still pending
    # a down node is cordoned first and its pods released a plan or two later (rules/nodes.yaml:
    # 30 s, 60 s): wait this long for the release, so both are one story
    release_wait_s: float = 60.0
    dedupe_window_s: float = 300.0  # one message per (incident, stage) in this window
    recovery_hold_s: float = 60.0  # node/GPU healthy this long (seen on ticks) = recovered
    storm_clear_s: float = 300.0  # no storm hold for this long = storm over
    forget_after_s: float = 86_400.0  # incidents nothing can resolve are dropped after a quiet day


@dataclass(slots=True, kw_only=True)
class _Released:
    """A pod healer deleted or evicted, and what replaced it."""

    namespace: str
    name: str
    verb: str
    owner_kind: str
    owner_name: str
    before: frozenset[str]  # uids of same-owner pods that already existed at release
    replacement: tuple[str, str] | None = None  # (pod name, node)


@dataclass(slots=True, kw_only=True)
class _Incident:
    key: str
    node: str
    opened_at: datetime
    changed_at: datetime
    notifies: list[Notify] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    done: dict[str, list[str]] = field(default_factory=dict)  # verb -> target descriptions
    released: dict[PodKey, _Released] = field(default_factory=dict)
    problems: dict[str, Item] = field(default_factory=dict)  # need a human
    blocked: dict[str, Item] = field(default_factory=dict)  # healer retries by itself
    opened_sent: bool = False
    folded: bool = False  # not told on its own: it began while the storm alert told it
    dirty: bool = False
    told_needs: frozenset[str] = frozenset()  # "could not" lines the last message told
    healthy_since: datetime | None = None

    @property
    def kind(self) -> str:
        return self.key.split("/", 1)[0]


class Tracker:
    """Turns executed plans and ticks into alerts; holds only what the stories need.

    `observe` and `tick` return the messages that are ready now (in order); messages the
    dedupe window suppressed come back with `deduped=True` so the caller can count them.
    """

    def __init__(self, *, timings: Timings | None = None, shadow: bool = False) -> None:
        self.timings = timings or Timings()
        self.shadow = shadow
        self._incidents: dict[str, _Incident] = {}
        self._sent: dict[tuple[str, Stage], datetime] = {}
        self._storm_seen: datetime | None = None
        self._storm_open = False
        self._storm_recovered: list[str] = []  # nodes whose recovery the storm alert stands for
        self._quiet: set[str] = set()  # folded incidents resolved: their late recoveries too
        self._cleanups = 0

    # -- inputs ---------------------------------------------------------------------------

    def observe(
        self, *, plan: Plan, outcomes: tuple[Outcome, ...] | list[Outcome], view: ClusterView, now: datetime
    ) -> list[Message]:
        out: list[Message] = []
        cleaned: list[Outcome] = []
        resolve: dict[str, list[Notify]] = {}
        for notify in (a for a in plan.actions if isinstance(a, Notify)):
            key = _key(notify, view)
            if key.startswith(CLEANUP):
                continue  # the clean-up summary is built from what was really deleted
            if key == STORM:
                out += self._note_storm_notify(notify, view, now)
                continue
            if notify.stage is Stage.RESOLVED:
                resolve.setdefault(key, []).append(notify)
            else:
                self._note_notify(self._incident(key, notify, view, now), notify, now)
        for outcome in outcomes:
            action = outcome.action
            if isinstance(action, Notify):
                continue
            key = _key(action, view)
            if key.startswith(CLEANUP):
                cleaned.append(outcome)
            elif _is_recovery(action):
                if self._done(outcome) and isinstance(action, Uncordon):
                    resolve.setdefault(key, [])
                if key in self._incidents:
                    self._note_outcome(self._incidents[key], outcome, view, now)
            else:
                self._note_outcome(self._incident(key, action, view, now), outcome, view, now)
        for held in plan.held:
            out += self._note_held(held, view, now)
        if cleaned:
            out += self._cleanup_summary(cleaned, view, now)
        for key, notifies in resolve.items():
            out += self._resolve(key, notifies, view, now)
        out += self._flush(view, now)
        return out

    def tick(self, *, view: ClusterView, now: datetime) -> list[Message]:
        out: list[Message] = []
        for incident in list(self._incidents.values()):
            healthy = _healthy(incident, view)
            if healthy is None:
                if incident.opened_sent and _age(incident.changed_at, now) >= self.timings.forget_after_s:
                    del self._incidents[incident.key]
                continue
            if not healthy:
                incident.healthy_since = None
            elif incident.healthy_since is None:
                incident.healthy_since = now
            elif _age(incident.healthy_since, now) >= self.timings.recovery_hold_s:
                out += self._resolve(incident.key, [], view, now)
        if (
            self._storm_open
            and self._storm_seen is not None
            and _age(self._storm_seen, now) >= self.timings.storm_clear_s
        ):
            self._storm_open = False
            items = [Item(text=f"No action held by the storm guard since {_at(self._storm_seen)}")]
            if self._storm_recovered:
                items.append(Item(text=f"ready again: {', '.join(sorted(set(self._storm_recovered)))}"))
            self._storm_recovered = []
            for incident in self._incidents.values():
                if incident.folded:  # still down: told on its own once it settles again
                    incident.opened_at = incident.changed_at = now
            out += self._emit(
                Message(
                    key=STORM,
                    stage=Stage.RESOLVED,
                    title=self._title("Storm over: healer acts again"),
                    lead=self._lead(),
                    sections=(Section(heading="What happened", items=tuple(items)),),
                    severity=Severity.INFO,
                    tags=frozenset({STORM}),
                ),
                now,
            )
        out += self._flush(view, now)
        return out

    # -- bookkeeping ------------------------------------------------------------------------

    def _incident(self, key: str, action: Action, view: ClusterView, now: datetime) -> _Incident:
        incident = self._incidents.get(key)
        if incident is None:
            incident = _Incident(key=key, node=_node_of(action, view), opened_at=now, changed_at=now)
            self._incidents[key] = incident
        elif not incident.node:
            incident.node = _node_of(action, view)
        if action.reason and action.reason not in incident.reasons and not isinstance(action, Notify):
            incident.reasons.append(action.reason)
        return incident

    def _touch(self, incident: _Incident, now: datetime) -> None:
        incident.changed_at = now
        incident.dirty = True

    def _note_notify(self, incident: _Incident, notify: Notify, now: datetime) -> None:
        if all(n.title != notify.title or n.facts != notify.facts for n in incident.notifies):
            incident.notifies.append(notify)
            if incident.opened_sent:
                self._touch(incident, now)

    def _done(self, outcome: Outcome) -> bool:
        if outcome.status in (OutcomeStatus.APPLIED, OutcomeStatus.UNCHANGED):
            return True
        return self.shadow and outcome.status is OutcomeStatus.SKIPPED and outcome.detail == DRY_RUN

    def _note_outcome(self, incident: _Incident, outcome: Outcome, view: ClusterView, now: datetime) -> None:
        action = outcome.action
        what = _describe(action)
        if self._done(outcome):
            targets = incident.done.setdefault(action.verb, [])
            if what not in targets:
                targets.append(what)
                self._touch(incident, now)
            if isinstance(action, _RELEASING) and action.kind == "Pod":
                self._release(incident, action, view, now)
            return
        if outcome.status is not OutcomeStatus.FAILED:
            return
        if isinstance(action, Evict) and (outcome.retryable or "429" in outcome.detail):
            pdb = _pdb_for(action, view)
            blocked_by = f"PodDisruptionBudget {pdb}" if pdb else "a PodDisruptionBudget"
            item = Item(text=f"eviction of {what} blocked by {blocked_by}; healer retries")
            if what not in incident.blocked:
                incident.blocked[what] = item
                self._touch(incident, now)
            return
        retry = "; healer retries" if outcome.retryable else ""
        detail = f": {outcome.detail}" if outcome.detail else ""
        item = Item(text=f"could not {action.verb} {what}{detail}{retry}")
        bucket = incident.blocked if outcome.retryable else incident.problems
        if f"{action.verb} {what}" not in bucket:
            bucket[f"{action.verb} {what}"] = item
            self._touch(incident, now)

    def _release(self, incident: _Incident, action: Action, view: ClusterView, now: datetime) -> None:
        key = (action.namespace, action.name)
        if key in incident.released:
            return
        pod = view.pods.get(key)
        owner_kind = pod.owner_kind if pod else ""
        owner_name = pod.owner.name if pod and pod.owner else ""
        before = frozenset(
            p.uid
            for p in view.pods.values()
            if p.namespace == action.namespace
            and p.owner is not None
            and (p.owner.kind, p.owner.name) == (owner_kind, owner_name)
            and p.key != key
        )
        incident.released[key] = _Released(
            namespace=action.namespace,
            name=action.name,
            verb=action.verb,
            owner_kind=owner_kind,
            owner_name=owner_name,
            before=before if owner_name else frozenset(),
        )
        self._touch(incident, now)

    def _note_storm_notify(self, notify: Notify, view: ClusterView, now: datetime) -> list[Message]:
        """The engine's own storm messages: opening = a storm hold; resolved = storm over."""
        if notify.stage is Stage.RESOLVED:
            if self._storm_open:
                self._storm_seen = now - timedelta(seconds=self.timings.storm_clear_s)
            return []
        self._storm_seen = now
        if self._storm_open:
            return []
        self._storm_open = True
        facts = tuple(_fact_item(label, text) for label, text in notify.facts)
        message = self._storm_story(None, view, extra=facts)
        return self._emit(message, now)

    def _note_held(self, held: Held, view: ClusterView, now: datetime) -> list[Message]:
        action, guard = held.action, held.guard
        if guard in _QUIET_GUARDS:
            return []
        if guard == STORM:
            self._storm_seen = now
            if self._storm_open:
                return []
            self._storm_open = True
            return self._emit(self._storm_story(held, view), now)
        key = _key(action, view)
        incident = self._incident(key, action, view, now)
        node = incident.node or _node_of(action, view)
        what = _describe(action)
        if guard == "budget":
            problem_key = f"budget {node}"
            item = Item(
                text=f"remediation budget for {node} is used up ({held.detail or 'too many remediations'}); "
                "healer stopped acting on it. Take over:",
                commands=(
                    f"kubectl describe node {node}",
                    f"kubectl drain {node} --ignore-daemonsets --delete-emptydir-data",
                    f"kubectl uncordon {node} && kubectl annotate node {node} {names.REMEDIATIONS}-",
                ),
            )
        elif guard == "protected":
            problem_key = f"protected {node}"
            item = Item(
                text=f"{node} is protected (control plane or {names.PROTECTED}=true): healer only alerts; "
                f"it did not {action.verb} {what}"
            )
        elif "fenc" in guard:
            problem_key = f"fence {what}"
            item = _fence_item(node, [what])
        elif "local" in guard:
            problem_key = f"local {what}"
            item = Item(text=f"{what} uses node-local storage on {node}: it cannot run elsewhere")
        else:
            problem_key = f"{guard} {action.verb} {what}"
            detail = f" ({held.detail})" if held.detail else ""
            item = Item(text=f"{guard} guard held: {action.verb} {what}{detail}")
        if problem_key not in incident.problems:
            incident.problems[problem_key] = item
            self._touch(incident, now)
        return []

    # -- output ---------------------------------------------------------------------------

    def _flush(self, view: ClusterView, now: datetime) -> list[Message]:
        out: list[Message] = []
        for incident in list(self._incidents.values()):
            self._verify(incident, view)
            if self._storm_open and _readiness(incident.kind):
                incident.folded = incident.folded or not incident.opened_sent
                continue  # the storm alert tells it; what changes waits for the storm to end
            if not incident.dirty or not self._ready(incident, now, view):
                continue
            if incident.folded and _ready_again(incident, view):
                continue  # back before it was told on its own: the storm alert told it
            stage = Stage.UPDATED if incident.opened_sent else Stage.OPENED
            if stage is Stage.UPDATED and self._recent(incident.key, stage, now):
                continue  # coalesce: the update goes out when the window has passed
            message = self._story(incident, stage, view, now)
            needs = _could_not(message)
            incident.dirty = False
            if stage is Stage.UPDATED and needs <= incident.told_needs:
                continue  # only progress (pods moved, a hold lifted): the recovery message tells it
            incident.opened_sent = True
            incident.folded = False
            incident.told_needs = needs
            self._quiet.discard(incident.key)
            out += self._emit(message, now)
        return out

    def _ready(self, incident: _Incident, now: datetime, view: ClusterView) -> bool:
        since = incident.opened_at if not incident.opened_sent else incident.changed_at
        age = _age(since, now)
        if age >= self.timings.verify_deadline_s:
            return True
        if age < self.timings.release_wait_s and not incident.opened_sent and _release_due(incident, view):
            return False
        return age >= self.timings.settle_s and not self._pending(incident)

    def _pending(self, incident: _Incident) -> list[_Released]:
        if self.shadow:
            return []
        return [r for r in incident.released.values() if r.owner_name and r.replacement is None]

    def _verify(self, incident: _Incident, view: ClusterView) -> None:
        """Finds, for each released pod, a new Running pod of the same owner on another node."""
        pending = self._pending(incident)
        if not pending:
            return
        owners = {(r.namespace, r.owner_kind, r.owner_name) for r in pending}
        taken = {r.replacement[0] for r in incident.released.values() if r.replacement}
        candidates: dict[tuple[str, str, str], list[Pod]] = {}
        for pod in view.pods.values():
            if pod.owner is None or pod.phase != "Running" or pod.terminating:
                continue
            owner = (pod.namespace, pod.owner.kind, pod.owner.name)
            if owner in owners and pod.node_name and pod.node_name != incident.node:
                candidates.setdefault(owner, []).append(pod)
        for released in pending:
            for pod in candidates.get((released.namespace, released.owner_kind, released.owner_name), []):
                if pod.uid not in released.before and pod.name not in taken:
                    released.replacement = (pod.name, pod.node_name)
                    taken.add(pod.name)
                    break

    def _resolve(self, key: str, notifies: list[Notify], view: ClusterView, now: datetime) -> list[Message]:
        out: list[Message] = []
        incident = self._incidents.pop(key, None)
        if _readiness(key.split("/", 1)[0]):
            folded = incident.folded if incident is not None else key in self._quiet
            if folded or self._storm_open:
                if self._storm_open:
                    self._storm_recovered.append(incident.node if incident else key.split("/", 1)[-1])
                self._quiet.add(key)  # the engine's own recovery notice may come a plan later
                return out
        if incident is not None and not incident.opened_sent and incident.dirty:
            self._verify(incident, view)
            out += self._emit(self._story(incident, Stage.OPENED, view, now), now)
        out += self._emit(self._recovery(key, incident, notifies, view, now), now)
        return out

    def _recent(self, key: str, stage: Stage, now: datetime) -> bool:
        sent = self._sent.get((key, stage))
        return sent is not None and _age(sent, now) < self.timings.dedupe_window_s

    def _emit(self, message: Message, now: datetime) -> list[Message]:
        for old in [k for k, at in self._sent.items() if _age(at, now) >= self.timings.dedupe_window_s]:
            del self._sent[old]
        if self._recent(message.key, message.stage, now):
            return [_deduped(message)]
        self._sent[(message.key, message.stage)] = now
        return [message]

    def _title(self, text: str) -> str:
        return f"[would have done] {text}" if self.shadow else text

    def _lead(self) -> str:
        return "Shadow mode: healer would have done this; nothing was changed." if self.shadow else ""

    # -- stories --------------------------------------------------------------------------

    def _story(self, incident: _Incident, stage: Stage, view: ClusterView, now: datetime) -> Message:
        node = view.nodes.get(incident.node)
        signal, since, detail = _signal(incident, node)
        happened: list[Item] = []
        subject = incident.node or incident.key
        if since is not None:
            happened.append(Item(text=f"{subject}: {signal} since {_at(since)} ({_ago(since, now)} ago)"))
        elif signal:
            happened.append(Item(text=f"{subject}: {signal}"))
        if detail:
            happened.append(Item(text=detail))
        facts = [fact for notify in incident.notifies for fact in notify.facts]
        engine_needs: list[Item] = []
        if facts:  # the engine told the story of its plan: use it, but report what really happened
            for label, text in dict.fromkeys(facts):
                if label in _ACTION_LABELS or "DaemonSet pod" in text or (label == "What" and since):
                    continue  # "What healer did" says what was really done; DaemonSet pods stay by design
                if label.startswith(_REFUSAL_LABELS + _HINT_LABELS):
                    engine_needs.append(_fact_item(label, text))
                else:
                    happened.append(Item(text=text if label in ("What", "Why") else f"{label}: {text}"))
            stuck: list[Item] = []
            problems = engine_needs
        else:
            happened += [Item(text=reason) for reason in incident.reasons[:3]]
            stuck = _stuck(incident, view)
            problems = list(incident.problems.values())

        did = [_did(verb, targets, self.shadow) for verb, targets in incident.done.items()]
        moved = self._moved_items(incident, now)
        needs = problems + stuck
        could_not = needs + list(incident.blocked.values())
        if facts:
            needs = [i for i in needs if not i.text.startswith(_HINT_LABELS)]

        sections = [Section(heading="What happened", items=tuple(happened))] if happened else []
        if did:
            sections.append(
                Section(
                    heading="What healer would do" if self.shadow else "What healer did", items=tuple(did)
                )
            )
        if moved:
            sections.append(Section(heading="Pods", items=tuple(moved)))
        if could_not:
            sections.append(Section(heading=_COULD_NOT, items=tuple(could_not)))

        head = incident.notifies[0].title if incident.notifies else f"{subject} {signal or incident.kind}"
        counts = []
        released = len(incident.released)
        if released:
            if self.shadow:
                counts.append(f"{released} {_pods(released)} would move")
            else:
                verified = sum(1 for r in incident.released.values() if r.replacement)
                counts.append(f"{verified} {_pods(verified)} moved")
                pending = released - verified
                if pending:
                    counts.append(f"{pending} pending")
        if needs:
            counts.append(f"{len(needs)} needs you")
        if stage is Stage.UPDATED:
            head = f"Update: {head}"
        title = f"{head}: {', '.join(counts)}" if counts else head
        severity = _max_severity([n.severity for n in incident.notifies] or [Severity.WARNING])
        if needs:
            severity = Severity.CRITICAL
        return Message(
            key=incident.key,
            stage=stage,
            title=self._title(title),
            lead=self._lead(),
            sections=tuple(sections),
            severity=severity,
            tags=_tags(incident.key, incident.notifies),
        )

    def _moved_items(self, incident: _Incident, now: datetime) -> list[Item]:
        items: list[Item] = []
        for r in incident.released.values():
            name = f"{r.namespace}/{r.name}"
            if self.shadow:
                items.append(Item(text=f"{name}: would be {_PAST.get(r.verb, r.verb)}"))
            elif r.replacement:
                new, where = r.replacement
                renamed = f" as {new}" if new != r.name else ""
                items.append(Item(text=f"{name} now runs on {where}{renamed}"))
            elif not r.owner_name:
                items.append(Item(text=f"{name}: no controller owns it, nothing recreates it"))
            else:
                items.append(Item(text=f"{name}: still pending, no Running replacement yet"))
        return items

    def _recovery(
        self, key: str, incident: _Incident | None, notifies: list[Notify], view: ClusterView, now: datetime
    ) -> Message:
        subject = incident.node if incident and incident.node else key.split("/", 1)[-1]
        items: list[Item] = []
        if incident is not None:
            items.append(
                Item(text=f"incident open since {_at(incident.opened_at)} ({_ago(incident.opened_at, now)})")
            )
            moved = sum(1 for r in incident.released.values() if r.replacement)
            if moved:
                items.append(Item(text=f"{moved} {_pods(moved)} moved away while it was down"))
                items += self._moved_items(incident, now)
        for notify in notifies:
            items += [Item(text=f"{label}: {text}") for label, text in notify.facts]
        what = "GPU healthy again" if key.startswith("gpu") else "recovered"
        title = notifies[0].title if notifies and notifies[0].title else f"{subject} {what}"
        tags = _tags(key, list(incident.notifies) if incident else notifies)
        return Message(
            key=key,
            stage=Stage.RESOLVED,
            title=self._title(title),
            lead=self._lead(),
            sections=(Section(heading="Resolved", items=tuple(items)),) if items else (),
            severity=Severity.INFO,
            tags=tags,
        )

    def _storm_story(self, held: Held | None, view: ClusterView, extra: tuple[Item, ...] = ()) -> Message:
        unhealthy = sorted(n.name for n in view.nodes.values() if n.ready is not ConditionStatus.TRUE)
        items = list(extra)
        if held is not None:
            items.append(Item(text=f"held: {held.action.verb} {_describe(held.action)}"))
            if held.detail:
                items.append(Item(text=held.detail))
        if unhealthy:
            items.append(
                Item(text=f"unhealthy nodes ({len(unhealthy)}/{len(view.nodes)}): {', '.join(unhealthy)}")
            )
        if not view.synced:
            items.append(Item(text="healer's view of the API is stale"))
        items.append(Item(text="healer deletes and evicts no pod anywhere until the storm is over"))
        advice = Item(
            text="This looks like a network, API or power problem rather than single nodes; "
            "check the control plane and the network:",
            commands=("kubectl get nodes -o wide",),
        )
        return Message(
            key=STORM,
            stage=Stage.OPENED,
            title=self._title(f"Storm guard: healer is holding back ({len(unhealthy)} nodes unhealthy)"),
            lead=self._lead(),
            sections=(
                Section(heading="What happened", items=tuple(items)),
                Section(heading="What you can do", items=(advice,)),
            ),
            severity=Severity.CRITICAL,
            tags=frozenset({STORM}),
        )

    def _cleanup_summary(self, outcomes: list[Outcome], view: ClusterView, now: datetime) -> list[Message]:
        done = [o for o in outcomes if self._done(o)]
        failed = [o for o in outcomes if o.status is OutcomeStatus.FAILED]
        if not done and not failed:
            return []
        per_ns = Counter(o.action.namespace for o in done)
        pressure: dict[str, Counter[str]] = {}
        for o in done:
            pod = view.pods.get((o.action.namespace, o.action.name))
            where = pod.node_name if pod and pod.node_name else "unknown node"
            pressure.setdefault(where, Counter())[_pressure(pod)] += 1
        self._cleanups += 1
        verb = "Would clean up" if self.shadow else "Cleaned up"
        items_ns = tuple(Item(text=f"{ns}: {n}") for ns, n in sorted(per_ns.items()))
        items_node = []
        for node_name, counts in sorted(pressure.items()):
            now_under = _pressures(view.nodes.get(node_name))
            causes = ", ".join(f"{cause} ({n})" for cause, n in counts.most_common())
            still = f"; now under {', '.join(now_under)}" if now_under else ""
            items_node.append(Item(text=f"{node_name}: evicted for {causes}{still}"))
        sections = [
            Section(heading="Per namespace", items=items_ns),
            Section(heading="Cause", items=tuple(items_node)),
        ]
        if failed:
            sections.append(
                Section(
                    heading="Could not delete",
                    items=tuple(Item(text=f"{_describe(o.action)}: {o.detail or 'failed'}") for o in failed),
                )
            )
        nodes = ", ".join(sorted(pressure)) or "the cluster"
        message = Message(
            key=f"{CLEANUP}#{self._cleanups}",
            stage=Stage.OPENED,
            title=self._title(f"{verb} {len(done)} Evicted {_pods(len(done))} on {nodes}"),
            lead=self._lead(),
            sections=tuple(sections),
            severity=Severity.INFO,
            tags=frozenset({"cleanup"}),
        )
        return self._emit(message, now)


# -- helpers --------------------------------------------------------------------------------


def _could_not(message: Message) -> frozenset[str]:
    """The lines of a story that say what healer could not do (news a human may act on)."""
    return frozenset(
        item.text for section in message.sections if section.heading == _COULD_NOT for item in section.items
    )


def _deduped(message: Message) -> Message:
    return Message(
        key=message.key,
        stage=message.stage,
        title=message.title,
        severity=message.severity,
        tags=message.tags,
        deduped=True,
    )


def _key(action: Action, view: ClusterView) -> str:
    if action.incident:
        return action.incident
    return f"{action.rule or action.verb}/{_node_of(action, view) or action.target.key}"


def _node_of(action: Action, view: ClusterView) -> str:
    if action.kind == "Node":
        return action.name
    if action.kind == "Pod":
        pod = view.pods.get((action.namespace, action.name))
        if pod and pod.node_name:
            return pod.node_name
    tail = action.incident.rsplit("/", 1)[-1] if "/" in action.incident else ""
    return tail if tail in view.nodes else ""


def _is_recovery(action: Action) -> bool:
    if isinstance(action, _RECOVERING):
        return True
    return isinstance(action, SetCondition) and action.status == "True"


def _readiness(kind: str) -> bool:
    """A node not-ready incident (what the storm guard counts), by the incident's kind."""
    return "not-ready" in kind or "unreachable" in kind or kind == "node-down"


def _release_due(incident: _Incident, view: ClusterView) -> bool:
    """A down node's incident that released nothing yet while pods that could move are there.

    A view without the node (a node role's, ticking the same notifier) cannot tell: wait.
    """
    if incident.released or not _readiness(incident.kind):
        return False
    node = view.nodes.get(incident.node)
    if node is None:
        return True
    if node.ready is ConditionStatus.TRUE:
        return False
    return any(
        p.owner_kind != "DaemonSet" and not p.is_mirror and p.phase not in ("Succeeded", "Failed")
        for p in view.pods_on(node.name)
    )


def _ready_again(incident: _Incident, view: ClusterView) -> bool:
    """A readiness incident whose node reports Ready (healer's uncordon may be still to come).

    A view without the node (a node role's) cannot tell: treated as back, so nothing is told.
    """
    node = view.nodes.get(incident.node)
    return _readiness(incident.kind) and (node is None or node.ready is ConditionStatus.TRUE)


def _healthy(incident: _Incident, view: ClusterView) -> bool | None:
    """Whether the incident's node is healthy again; None where the view cannot tell."""
    node = view.nodes.get(incident.node)
    if node is None:
        return None
    if incident.kind.startswith("gpu"):
        cond = node.condition(names.GPU_CONDITION)
        healthy = cond is not None and cond.status is ConditionStatus.TRUE
    elif _readiness(incident.kind):
        healthy = node.ready is ConditionStatus.TRUE
    else:
        return None
    return healthy and not node.cordoned_by_healer


def _signal(incident: _Incident, node: Node | None) -> tuple[str, datetime | None, str]:
    """(short signal, since when, detail line) as the view shows the incident's node."""
    if node is None:
        return "", None, ""
    if incident.kind.startswith("gpu"):
        cond = node.condition(names.GPU_CONDITION)
        if cond is not None and cond.status is not ConditionStatus.TRUE:
            return f"GPU {cond.reason or 'unhealthy'}", cond.last_transition, cond.message
        return "", None, ""
    cond = node.condition("Ready")
    if cond is None or cond.status is ConditionStatus.TRUE:
        return "", None, ""
    why = "kubelet stopped reporting" if cond.status is ConditionStatus.UNKNOWN else cond.reason
    return "NotReady", cond.last_transition, f"Ready={cond.status.value}" + (f" ({why})" if why else "")


def _stuck(incident: _Incident, view: ClusterView) -> list[Item]:
    """Pods left on a dead node that cannot move without a human, grouped by why."""
    node = view.nodes.get(incident.node)
    if node is None or incident.kind.startswith("gpu") or node.ready is ConditionStatus.TRUE:
        return []
    if incident.kind not in ("node-not-ready", "node-unreachable", "node-down") and not incident.released:
        return []
    unfenced: list[str] = []
    items: list[Item] = []
    for pod in view.pods_on(node.name):
        if (
            pod.key in incident.released
            or pod.owner_kind == "DaemonSet"
            or pod.is_mirror
            or pod.phase in ("Succeeded", "Failed")
        ):
            continue
        name = f"{pod.namespace}/{pod.name}"
        local = _local_volume(pod, node.name, view)
        if local:
            items.append(
                Item(text=f"{name} uses node-local storage ({local}) on {node.name}: it cannot run elsewhere")
            )
        elif not node.is_fenced and (pod.owner_kind == "StatefulSet" or _single_attach(pod, view)):
            unfenced.append(f"{name} ({pod.owner_kind or 'RWO volume'})")
    if unfenced:
        items.insert(0, _fence_item(node.name, unfenced))
    return items


def _fact_item(label: str, text: str) -> Item:
    """An engine fact; a kubectl command in it becomes copyable lines."""
    at = text.find("kubectl ")
    if at < 0:
        return Item(text=f"{label}: {text}")
    lead = text[:at].rstrip(" :;,") or "run"
    return Item(
        text=f"{label}: {lead}", commands=tuple(c.strip() for c in text[at:].split("; ") if c.strip())
    )


def _fence_item(node: str, pods: list[str]) -> Item:
    return Item(
        text=f"{', '.join(pods)} wait for {node} to be fenced (it might still be writing). "
        f"Only if {node} is really powered off:",
        commands=(
            f"kubectl taint node {node} {names.OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute",
            f"kubectl annotate node {node} {names.FENCED}=true",
        ),
    )


def _local_volume(pod: Pod, node: str, view: ClusterView) -> str:
    for volume in pod.volumes:
        if volume.kind is VolumeKind.HOST_PATH:
            return f"hostPath {volume.name}"
        if volume.kind is VolumeKind.PVC:
            claim = view.pvcs.get((pod.namespace, volume.claim))
            pv = view.pvs.get(claim.volume_name) if claim else None
            if pv is not None and (pv.local or node in pv.node_affinity):
                return f"PV {pv.name}"
    return ""


def _single_attach(pod: Pod, view: ClusterView) -> bool:
    for claim_name in pod.claims:
        claim = view.pvcs.get((pod.namespace, claim_name))
        pv = view.pvs.get(claim.volume_name) if claim else None
        if pv is not None and pv.single_attach:
            return True
    return False


def _pressures(node: Node | None) -> list[str]:
    if node is None:
        return []
    return [
        c.type for c in node.conditions if c.type.endswith("Pressure") and c.status is ConditionStatus.TRUE
    ]


def _pdb_for(action: Action, view: ClusterView) -> str:
    pod = view.pods.get((action.namespace, action.name))
    if pod is None:
        return ""
    for pdb in view.pdbs.values():
        if pdb.selects(pod):
            return f"{pdb.namespace}/{pdb.name}"
    return ""


def _pressure(pod: Pod | None) -> str:
    """The resource an Evicted pod's message names ("The node was low on resource: memory.")."""
    if pod is None:
        return "unknown pressure"
    marker = "low on resource: "
    if marker in pod.message:
        resource = pod.message.split(marker, 1)[1].split(".", 1)[0].split(",", 1)[0].strip()
        return f"{resource} pressure"
    return pod.reason or "unknown pressure"


def _describe(action: Action) -> str:
    if action.kind == "Pod":
        text = f"{action.namespace}/{action.name}"
    elif action.namespace:
        text = f"{action.kind} {action.namespace}/{action.name}"
    else:
        text = action.name
    if isinstance(action, AddTaint):
        text += f" ({action.key}:{action.effect})"
    elif isinstance(action, RemoveTaint):
        text += f" ({action.key})"
    elif isinstance(action, SetCondition):
        text += f" ({action.type}={action.status})"
    return text


def _did(verb: str, targets: list[str], shadow: bool) -> Item:
    past = _PAST.get(verb, verb)
    prefix = f"would have {past}" if shadow else past
    if verb in ("evict", "delete", "force-delete") and len(targets) > 3:
        return Item(text=f"{prefix} {len(targets)} pods")
    return Item(text=f"{prefix} {', '.join(targets)}")


def _tags(key: str, notifies: list[Notify]) -> frozenset[str]:
    tags = {t for n in notifies for t in n.tags}
    if key.startswith("gpu"):
        tags.add("gpu")
    return frozenset(tags)


def _max_severity(values: list[Severity]) -> Severity:
    return max(values, key=_SEVERITY_ORDER.index)


def _pods(n: int) -> str:
    return "pod" if n == 1 else "pods"


def _age(since: datetime, now: datetime) -> float:
    return (now - since).total_seconds()


def _at(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ago(since: datetime, now: datetime) -> str:
    return matching.ago(now - since)
