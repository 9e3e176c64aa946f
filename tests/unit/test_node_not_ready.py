"""The NotReady policy: cordon at 30 s, release at 60 s within the eligibility rules, uncordon
after 60 s Ready only when healer cordoned; a flapping node gets nothing."""

from __future__ import annotations

import pytest

from healer.model import names
from tests.unit.builders import cordoned_by, held, node, notes, plan, pod, rows, view, volume

CP = node("tethys", labels={names.CONTROL_PLANE_LABEL: "true"})
GPU = node("calypso")


@pytest.mark.parametrize(
    ("ready", "for_s", "expected"),
    [
        ("Unknown", 10, set()),  # flapping: not long enough
        ("False", 29, set()),
        ("Unknown", 30, {("cordon", "styx")}),
        ("False", 45, {("cordon", "styx")}),
        ("Unknown", 60, {("cordon", "styx"), ("force-delete", "apps/web-1")}),
        ("Unknown", 172800, {("cordon", "styx"), ("force-delete", "apps/web-1")}),
        ("True", 172800, set()),
    ],
)
def test_not_ready_cordons_at_30s_and_releases_at_60s(
    ready: str, for_s: float, expected: set[tuple[str, str]]
) -> None:
    styx = node("styx", ready=ready, for_s=for_s)
    p = plan(view(CP, styx, GPU, pods=(pod("web-1", "styx"),)))
    assert rows(p) == expected


def test_a_flapping_node_gets_nothing_at_all() -> None:
    p = plan(view(CP, node("styx", ready="Unknown", for_s=20), GPU, pods=(pod("web-1", "styx"),)))
    assert not p


def test_an_already_cordoned_node_is_not_cordoned_again() -> None:
    styx = node("styx", ready="Unknown", for_s=120, unschedulable=True)
    p = plan(view(CP, styx, GPU, pods=(pod("web-1", "styx"),)))
    assert rows(p) == {("force-delete", "apps/web-1")}


def _eligibility_view(fenced: bool) -> tuple[object, ...]:
    annotations = {names.FENCED: "true"} if fenced else {}
    styx = node("styx", ready="Unknown", for_s=3600, annotations=annotations, unschedulable=True)
    pods = (
        pod("rs-pod", "styx", owner="ReplicaSet"),
        pod("job-pod", "styx", owner="Job"),
        pod("rc-pod", "styx", owner="ReplicationController"),
        pod("ds-pod", "styx", owner="DaemonSet", terminating=False),
        pod("static-pod", "styx", owner="Node", mirror=True, namespace="kube-system"),
        pod("bare-pod", "styx", owner=None),
        pod("sts-0", "styx", owner="StatefulSet", claims=("data-sts-0",)),
        pod("rwo-pod", "styx", owner="ReplicaSet", claims=("shared-rwo",)),
        pod("rwx-pod", "styx", owner="ReplicaSet", claims=("shared-rwx",)),
        pod("local-pod", "styx", owner="ReplicaSet", claims=("local-data",)),
        pod("local-sts-0", "styx", owner="StatefulSet", claims=("local-sts-data",)),
        pod("custom-pod", "styx", owner="SparkApplication"),
        pod("done-pod", "styx", owner="Job", phase="Succeeded", terminating=False),
        pod("elsewhere", "calypso", owner="ReplicaSet"),
    )
    volumes = (
        volume("data-sts-0"),
        volume("shared-rwo"),
        volume("shared-rwx", modes=("ReadWriteMany",)),
        volume("local-data", pinned_to="styx", local=True),
        volume("local-sts-data", pinned_to="styx", local=True),
    )
    return styx, pods, volumes


# (pod, unfenced verdict, fenced verdict): "release" or the held guard
ELIGIBILITY = [
    ("apps/rs-pod", "release", "release"),
    ("apps/job-pod", "release", "release"),
    ("apps/rc-pod", "release", "release"),
    ("apps/ds-pod", "eligibility", "eligibility"),
    ("kube-system/static-pod", "eligibility", "eligibility"),
    ("apps/bare-pod", "eligibility", "eligibility"),
    ("apps/sts-0", "eligibility", "release"),
    ("apps/rwo-pod", "eligibility", "release"),
    ("apps/rwx-pod", "release", "release"),
    ("apps/local-pod", "eligibility", "eligibility"),
    ("apps/local-sts-0", "eligibility", "eligibility"),
    ("apps/custom-pod", "eligibility", "eligibility"),
    ("apps/done-pod", None, None),  # finished and not stuck: nothing to release
    ("apps/elsewhere", None, None),  # on a healthy node
]


@pytest.mark.parametrize("fenced", [False, True], ids=["unfenced", "fenced"])
@pytest.mark.parametrize(("key", "unfenced", "fenced_verdict"), ELIGIBILITY)
def test_release_eligibility(
    key: str, unfenced: str | None, fenced_verdict: str | None, fenced: bool
) -> None:
    styx, pods, volumes = _eligibility_view(fenced)
    p = plan(view(CP, styx, GPU, pods=pods, volumes=volumes))  # type: ignore[arg-type]
    expected = fenced_verdict if fenced else unfenced
    released = ("force-delete", key) in rows(p)
    guard = held(p).get(("force-delete", key))
    assert released is (expected == "release")
    assert guard == (expected if expected != "release" else None)


def test_the_fence_taint_counts_as_fenced() -> None:
    styx = node("styx", ready="Unknown", for_s=3600, taints=(f"{names.OUT_OF_SERVICE_TAINT}:NoExecute",))
    p = plan(view(CP, styx, GPU, pods=(pod("sts-0", "styx", owner="StatefulSet"),)))
    assert ("force-delete", "apps/sts-0") in rows(p)


def test_alert_explains_what_cannot_be_released_and_gives_the_fence_command() -> None:
    styx, pods, volumes = _eligibility_view(fenced=False)
    p = plan(view(CP, styx, GPU, pods=pods, volumes=volumes))  # type: ignore[arg-type]
    (note,) = [n for n in notes(p) if n.incident == "node-not-ready/styx"]
    facts = {label: text for label, text in note.facts if label != "Not released"}
    not_released = {text.split(":")[0]: text for label, text in note.facts if label == "Not released"}
    assert facts["Fence"].endswith(
        "kubectl taint nodes styx node.kubernetes.io/out-of-service=nodeshutdown:NoExecute"
    )
    assert "lives on styx" in not_released["apps/local-pod"]
    assert "never force-deleted" in not_released["apps/local-pod"]
    assert "fenced" in not_released["apps/sts-0"]
    assert "bare pod" in not_released["apps/bare-pod"]
    assert (note.target.kind, note.target.name) == ("Node", "styx")
    assert (note.stage.value, note.severity.value) == ("opened", "critical")


def test_a_fenced_node_gets_no_fence_command() -> None:
    styx, pods, volumes = _eligibility_view(fenced=True)
    p = plan(view(CP, styx, GPU, pods=pods, volumes=volumes))  # type: ignore[arg-type]
    (note,) = [n for n in notes(p) if n.incident == "node-not-ready/styx"]
    assert "Fence" not in dict(note.facts)


def test_release_never_happens_on_a_ready_node() -> None:
    styx = node("styx", ready="True", for_s=3600)
    p = plan(view(CP, styx, GPU, pods=(pod("web-1", "styx"),)))
    assert not any(a.verb == "force-delete" for a in p.actions)
    assert not p.held


@pytest.mark.parametrize(
    ("ready_for_s", "annotations", "unschedulable", "uncordons"),
    [
        (120, cordoned_by("node-not-ready"), True, True),
        (59, cordoned_by("node-not-ready"), True, False),  # not back for long enough
        (120, {}, True, False),  # cordoned by a human: left cordoned
        (120, cordoned_by("gpu-hardware-fault"), True, False),  # a GPU quarantine is not ours to lift
        (120, cordoned_by("node-not-ready"), False, False),  # someone uncordoned it already
    ],
)
def test_uncordon_after_60s_ready_only_if_healer_cordoned(
    ready_for_s: float, annotations: dict[str, str], unschedulable: bool, uncordons: bool
) -> None:
    styx = node("styx", ready="True", for_s=ready_for_s, annotations=annotations, unschedulable=unschedulable)
    p = plan(view(CP, styx, GPU))
    assert (("uncordon", "styx") in rows(p)) is uncordons
    resolved = [n for n in notes(p) if n.stage.value == "resolved"]
    assert bool(resolved) is uncordons
    if uncordons:
        assert resolved[0].incident == "node-not-ready/styx"


def test_every_action_carries_its_incident() -> None:
    styx = node("styx", ready="Unknown", for_s=3600)
    p = plan(view(CP, styx, GPU, pods=(pod("web-1", "styx"),)))
    assert {a.incident for a in p.actions} == {"node-not-ready/styx"}
    assert len(notes(p)) == 1  # one message per incident per plan


def test_scope_cluster_ignores_node_rules_and_scope_node_only_its_node() -> None:
    gpu_faulty = node("calypso", gpus=1, gpu=("False", "Xid79", "GPU 0 fell off the bus"))
    styx = node("styx", ready="Unknown", for_s=3600)
    v = view(CP, styx, gpu_faulty, node("spare", gpus=1))
    cluster = plan(v, scope="cluster")
    assert {a.target.name for a in cluster.actions} == {"styx"}
    agent = plan(v, scope="node", node_name="calypso")
    assert {a.target.name for a in agent.actions} == {"calypso"}
    assert plan(v, scope="node", node_name="styx").actions == ()


def test_unknown_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="scope"):
        plan(view(CP), scope="everything")


def test_a_node_ready_again_with_a_faulty_gpu_stays_cordoned() -> None:
    calypso = node(
        "calypso",
        for_s=600,
        gpus=1,
        gpu=("False", "Xid79", "GPU 0 fell off the bus"),
        unschedulable=True,
        annotations=cordoned_by("node-not-ready"),
    )
    p = plan(view(CP, calypso, node("spare", gpus=1)))
    assert ("uncordon", "calypso") not in rows(p)


def test_a_recovered_gpu_on_a_node_that_is_not_ready_stays_cordoned() -> None:
    calypso = node(
        "calypso",
        ready="Unknown",
        for_s=10,  # even before node-not-ready's 30 s
        gpus=1,
        gpu=("True", "GpuHealthy", "GPU 0 healthy"),
        unschedulable=True,
        annotations=cordoned_by("gpu-hardware-fault"),
    )
    p = plan(view(CP, calypso, node("styx")))
    assert ("uncordon", "calypso") not in rows(p)
