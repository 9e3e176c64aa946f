"""The store: events in, one consistent view out; stale until every watch has listed."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from healer.engine import guards
from healer.model.events import Change, Disconnected, Listed, NodeEvent, PodEvent, StorageEvent
from healer.model.view import Condition, ConditionStatus, Node, PersistentVolume, Pod
from healer.runtime.store import Store, table_of
from tests.unit.builders import RULES


def _pod(name: str, node: str) -> Pod:
    return Pod(namespace="apps", name=name, node_name=node, uid=name)


def test_not_synced_until_every_resource_listed() -> None:
    store = Store(resources=["nodes", "pods"])
    assert not store.view().synced
    store.apply(NodeEvent(change=Change.ADDED, node=Node(name="styx")))
    store.apply(Listed(resource="nodes"))
    assert not store.view().synced
    store.apply(Listed(resource="pods"))
    assert store.view().synced
    store.apply(Disconnected(resource="pods", error="connection reset"))
    assert not store.view().synced


def test_pods_follow_their_node_and_deletes_remove_them() -> None:
    store = Store(resources=["pods"])
    store.apply(PodEvent(change=Change.ADDED, pod=_pod("a", "")))
    assert store.view().pods_on("styx") == ()
    store.apply(PodEvent(change=Change.MODIFIED, pod=_pod("a", "styx")))
    assert [p.name for p in store.view().pods_on("styx")] == ["a"]
    store.apply(PodEvent(change=Change.MODIFIED, pod=_pod("a", "calypso")))
    view = store.view()
    assert view.pods_on("styx") == ()
    assert [p.name for p in view.pods_on("calypso")] == ["a"]
    store.apply(PodEvent(change=Change.DELETED, pod=_pod("a", "calypso")))
    assert store.view().pods == {}
    assert store.view().pods_by_node == {}


def test_view_is_a_snapshot_reused_until_a_change() -> None:
    store = Store(resources=["nodes"])
    store.apply(NodeEvent(change=Change.ADDED, node=Node(name="styx")))
    first = store.view()
    assert store.view() is first
    store.apply(NodeEvent(change=Change.ADDED, node=Node(name="tethys")))
    assert set(first.nodes) == {"styx"}  # the old snapshot did not move under the engine
    assert set(store.view().nodes) == {"styx", "tethys"}


def test_a_relist_diff_brings_the_view_back_in_sync() -> None:
    """The watcher relists as a diff: vanished objects come as DELETED, unchanged ones not at all."""
    store = Store(resources=["pods", "persistentvolumes"])
    for name in ("a", "b"):
        store.apply(PodEvent(change=Change.ADDED, pod=_pod(name, "styx")))
    store.apply(StorageEvent(change=Change.ADDED, obj=PersistentVolume(name="pv1")))
    store.apply(Listed(resource="pods"))
    store.apply(Listed(resource="persistentvolumes"))
    store.apply(Disconnected(resource="pods", error="unreachable"))
    assert not store.view().synced
    store.apply(PodEvent(change=Change.DELETED, pod=_pod("a", "styx")))
    store.apply(Listed(resource="pods"))
    view = store.view()
    assert set(view.pods) == {("apps", "b")}
    assert [p.name for p in view.pods_on("styx")] == ["b"]
    assert set(view.pvs) == {"pv1"}
    assert view.synced


def test_resource_names_normalise() -> None:
    assert {table_of(r) for r in ("pods", "Pod", "pod", "v1/pods")} == {"pods"}
    assert table_of("PodDisruptionBudget") == "pdbs"
    assert table_of("persistentvolumeclaims") == "pvcs"


def test_touched_nodes_since_the_last_plan() -> None:
    """A pod event touches its node before and after; a node event its node; a relist, an outage
    or a storage event asks for a full plan (None); each take starts anew."""
    store = Store(resources=["nodes", "pods"])
    assert store.take_touched() is None  # nothing planned yet
    assert store.take_touched() == frozenset()
    store.apply(PodEvent(change=Change.ADDED, pod=_pod("a", "styx")))
    store.apply(PodEvent(change=Change.MODIFIED, pod=_pod("a", "calypso")))  # moved: both
    store.apply(NodeEvent(change=Change.MODIFIED, node=Node(name="tethys")))
    assert store.take_touched() == frozenset({"styx", "calypso", "tethys"})
    store.apply(PodEvent(change=Change.DELETED, pod=_pod("a", "calypso")))
    assert store.take_touched() == frozenset({"calypso"})
    for full in (
        Listed(resource="pods"),
        Disconnected(resource="pods", error="reset"),
        StorageEvent(change=Change.ADDED, obj=PersistentVolume(name="pv")),
    ):
        store.apply(PodEvent(change=Change.ADDED, pod=_pod("b", "styx")))
        store.apply(full)
        store.apply(PodEvent(change=Change.MODIFIED, pod=_pod("b", "styx")))
        assert store.take_touched() is None, full


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from([Change.ADDED, Change.MODIFIED, Change.DELETED]),
            st.sampled_from([None, ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN]),
        ),
        max_size=20,
    )
)
def test_not_ready_is_the_storm_guards_count_of_the_view(
    changes: list[tuple[str, Change, ConditionStatus | None]],
) -> None:
    """The store's `not_ready` (which the storm guard counts) is always the view's nodes whose
    Ready is not True, whatever order nodes come, change and go in (no Ready at all: Unknown)."""
    store = Store(resources=["nodes"])
    for name, change, ready in changes:
        conditions = () if ready is None else (Condition(type="Ready", status=ready),)
        store.apply(NodeEvent(change=change, node=Node(name=name, conditions=conditions)))
        view = store.view()
        unready = frozenset(n.name for n in view.nodes.values() if n.ready is not ConditionStatus.TRUE)
        assert view.not_ready == unready
        counted = guards.storm_status(replace(view, not_ready=None), guard=RULES.guards.storm)
        assert guards.storm_status(view, guard=RULES.guards.storm) == counted
