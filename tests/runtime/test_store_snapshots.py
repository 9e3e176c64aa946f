"""Store snapshots copy only the nodes whose pods changed, and stay exactly what a full copy gives."""

from __future__ import annotations

import random

from healer.model.events import Change, PodEvent
from healer.model.view import ClusterView, Pod, PodKey
from healer.runtime.store import Store


def _pod(name: str, node: str, rv: str = "1") -> Pod:
    return Pod(namespace="apps", name=name, node_name=node, uid=name, resource_version=rv)


def _put(store: Store, pod: Pod, change: Change = Change.ADDED) -> None:
    store.apply(PodEvent(change=change, pod=pod))


def test_an_untouched_node_keeps_its_frozen_pods_and_a_touched_one_gets_new_ones() -> None:
    store = Store(resources=["pods"])
    _put(store, _pod("a", "styx"))
    _put(store, _pod("b", "tethys"))
    first = store.view()
    _put(store, _pod("a", "styx", rv="2"), Change.MODIFIED)
    second = store.view()
    assert second.pods_by_node["tethys"] is first.pods_by_node["tethys"]
    assert second.pods_by_node["styx"] is not first.pods_by_node["styx"]
    assert first.pods_by_node["styx"][("apps", "a")].resource_version == "1"  # the old view did not move
    assert second.pods_by_node["styx"][("apps", "a")].resource_version == "2"


def test_a_pod_moving_away_empties_its_old_node() -> None:
    store = Store(resources=["pods"])
    _put(store, _pod("a", "styx"))
    before = store.view()
    _put(store, _pod("a", "calypso"), Change.MODIFIED)
    after = store.view()
    assert "styx" not in after.pods_by_node
    assert [p.name for p in after.pods_on("calypso")] == ["a"]
    assert [p.name for p in before.pods_on("styx")] == ["a"]


def test_snapshots_equal_a_full_regrouping_after_random_events() -> None:
    rng = random.Random(7)
    store = Store(resources=["pods"])
    nodes = ["", "styx", "tethys", "calypso"]
    taken: list[tuple[ClusterView, dict[str, dict[PodKey, Pod]]]] = []
    for step in range(400):
        name = f"p{rng.randrange(30)}"
        change = Change.DELETED if rng.random() < 0.2 else Change.MODIFIED
        _put(store, _pod(name, rng.choice(nodes), rv=str(step)), change)
        if rng.random() < 0.3:
            view = store.view()
            grouped: dict[str, dict[PodKey, Pod]] = {}
            for key, pod in view.pods.items():
                if pod.node_name:
                    grouped.setdefault(pod.node_name, {})[key] = pod
            assert set(view.pods_by_node) == set(store._by_node)  # every node with pods, no other
            taken.append((view, grouped))
    for view, grouped in taken:  # every snapshot is still what it was when taken
        assert {n: dict(p) for n, p in view.pods_by_node.items()} == grouped


def test_the_sharded_pods_of_a_snapshot_are_every_pod_and_stay_as_taken() -> None:
    """`view.pods` (frozen shards, only the changed ones copied) is exactly a dict of the pods
    applied so far, for lookups, membership, length and values, and never moves afterwards."""
    rng = random.Random(11)
    store = Store(resources=["pods"])
    expected: dict[PodKey, Pod] = {}
    taken: list[tuple[ClusterView, dict[PodKey, Pod]]] = []
    for step in range(600):
        pod = _pod(f"p{rng.randrange(80)}", rng.choice(["", "styx", "tethys"]), rv=str(step))
        if rng.random() < 0.25:
            _put(store, pod, Change.DELETED)
            expected.pop(pod.key, None)
        else:
            _put(store, pod, Change.MODIFIED)
            expected[pod.key] = pod
        if rng.random() < 0.3:
            view = store.view()
            assert dict(view.pods) == expected
            assert len(view.pods) == len(expected)
            assert sorted(p.key for p in view.pods.values()) == sorted(expected)
            assert all(view.pods.get(k) is p and k in view.pods for k, p in expected.items())
            assert ("apps", "absent") not in view.pods
            assert view.pods.get(("apps", "absent")) is None
            taken.append((view, dict(expected)))
    for view, then in taken:
        assert dict(view.pods) == then
