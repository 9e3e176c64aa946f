"""Snapshots: what `kubectl get nodes,pods,pdb,pv,pvc -A -o yaml|json` prints becomes a view;
anything else is a SnapshotError with a one-line reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from healer import snapshot
from tests.unit.builders import REPO

EXAMPLE = REPO / "examples" / "oceanid.yaml"


def test_the_oceanid_example_decodes() -> None:
    v = snapshot.load(EXAMPLE)
    assert sorted(v.nodes) == ["calypso", "styx", "tethys"]
    styx = v.nodes["styx"]
    assert styx.ready.value == "Unknown"
    assert styx.has_taint("node.kubernetes.io/unreachable")
    assert v.nodes["tethys"].is_control_plane
    assert v.nodes["calypso"].gpu_allocatable == 1
    on_styx = {p.name: p for p in v.pods_on("styx")}
    assert on_styx["redis-0"].owner_kind == "StatefulSet"
    assert on_styx["debug-shell"].owner is None
    assert all(p.terminating for n, p in on_styx.items() if not n.startswith("tailscale"))
    assert "styx" in v.pvs["pvc-label-studio-data"].node_affinity
    assert v.pvs["pvc-label-studio-data"].local
    assert not v.pvs["pv-redis-data"].local
    assert v.pdbs[("apps", "redis")].disruptions_allowed == 0


def test_json_and_yaml_give_the_same_view(tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    as_json = tmp_path / "oceanid.json"
    as_json.write_text(json.dumps(doc, indent=2))
    assert snapshot.load(as_json) == snapshot.load(EXAMPLE)


def test_a_single_object_and_typed_lists_are_accepted() -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"}}
    assert list(snapshot.view_from(node).nodes) == ["a"]
    assert list(snapshot.view_from({"kind": "NodeList", "items": [node]}).nodes) == ["a"]
    assert not snapshot.view_from({"kind": "List", "items": None}).nodes


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "expected a Kubernetes List"),
        ("just text", "expected a Kubernetes List"),
        ("kind: List\nitems: [\n", "not valid YAML at line"),
        ('{"kind": "List", "items": [}', "not valid JSON"),
        ("- a\n- b\n", "got list"),
        ("kind: Deployment\nmetadata: {name: x}", "got kind 'Deployment'"),
        ("kind: List\nitems: {a: 1}", "`items` of the List is not a list"),
        ("kind: List\nitems: [3]", "item 1 is not an object"),
        ("kind: List\nitems: [{kind: Service, metadata: {name: x}}]", "item 1 has kind 'Service'"),
        ("kind: List\nitems: [{kind: Node, metadata: {}}]", "item 1: Node ?"),
        (
            "kind: List\nitems: [{kind: Pod, metadata: {name: p}, status: {startTime: 7}}]",
            "item 1: Pod",
        ),
        (
            "kind: List\nitems: [{kind: Node, metadata: {name: a}, status: {conditions: [{status: Maybe}]}}]",
            "item 1: Node a",
        ),
    ],
)
def test_bad_snapshots_are_one_line_errors(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "snap.yaml"
    path.write_text(content)
    with pytest.raises(snapshot.SnapshotError) as e:
        snapshot.load(path)
    message = str(e.value)
    assert "\n" not in message
    assert problem in message
    assert message.startswith(str(path))


def test_missing_binary_and_directory_inputs(tmp_path: Path) -> None:
    with pytest.raises(snapshot.SnapshotError, match="no such file"):
        snapshot.load(tmp_path / "absent.yaml")
    with pytest.raises(snapshot.SnapshotError, match="is a directory"):
        snapshot.load(tmp_path)
    binary = tmp_path / "blob"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(snapshot.SnapshotError, match="not a text file"):
        snapshot.load(binary)


def test_taken_at_is_the_newest_heartbeat_and_none_without_one() -> None:
    from healer.model.view import ClusterView, Condition, ConditionStatus, Node

    old = datetime(2025, 10, 13, tzinfo=UTC)
    new = datetime(2025, 10, 15, 11, 59, 41, tzinfo=UTC)
    view = ClusterView.of(
        nodes=[
            Node(
                name="a",
                conditions=(Condition(type="Ready", status=ConditionStatus.TRUE, last_heartbeat=new),),
            ),
            Node(
                name="b",
                conditions=(Condition(type="Ready", status=ConditionStatus.UNKNOWN, last_heartbeat=old),),
            ),
        ]
    )
    assert snapshot.taken_at(view) == new
    assert snapshot.taken_at(ClusterView.of(nodes=[Node(name="c")])) is None
