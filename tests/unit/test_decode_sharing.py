"""The decoder shares repeated values between pods (memory) without changing any decoded value."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from healer.model import decode
from healer.model.view import Pod, Volume, VolumeKind

RAW: dict[str, Any] = {
    "metadata": {
        "name": "api-7d9f-abcde",
        "namespace": "payments",
        "uid": "u-1",
        "resourceVersion": "11",
        "creationTimestamp": "2026-11-20T08:15:42Z",
        "labels": {"app": "api", "pod-template-hash": "7d9f"},
        "annotations": {"prometheus.io/scrape": "true"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "api-7d9f", "uid": "rs-1", "controller": True}],
    },
    "spec": {"nodeName": "styx", "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}]},
    "status": {"phase": "Running", "startTime": "2026-11-20T08:15:44Z"},
}


def _twin(name: str) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)  # new dicts and strings, as orjson gives for every event
    raw["metadata"]["name"] = name
    raw["metadata"]["uid"] = f"uid-{name}"
    return raw


def test_equal_values_of_two_pods_are_one_object() -> None:
    a, b = decode.pod(_twin("a")), decode.pod(_twin("b"))
    assert a.labels == {"app": "api", "pod-template-hash": "7d9f"}
    assert a.labels is b.labels
    assert a.annotations is b.annotations
    assert a.owner is b.owner
    assert a.created is b.created
    assert a.namespace is b.namespace
    assert a.node_name is b.node_name


def test_shared_values_equal_what_the_raw_object_says() -> None:
    pod = decode.pod(_twin("c"))
    assert (pod.namespace, pod.name, pod.node_name, pod.phase) == ("payments", "c", "styx", "Running")
    assert pod.owner is not None
    assert (pod.owner.kind, pod.owner.name, pod.owner.uid) == ("ReplicaSet", "api-7d9f", "rs-1")
    assert pod.created is not None
    assert pod.created.isoformat() == "2026-11-20T08:15:42+00:00"
    assert pod.claims == ("d",)


def test_different_labels_are_not_merged() -> None:
    other = _twin("d")
    other["metadata"]["labels"] = {"app": "api", "pod-template-hash": "0000"}
    assert decode.pod(other).labels["pod-template-hash"] == "0000"
    assert decode.pod(_twin("e")).labels["pod-template-hash"] == "7d9f"


def test_null_strings_read_as_absent() -> None:
    raw = _twin("f")
    raw["status"]["reason"] = None
    assert decode.pod(raw).reason == ""


def test_a_namespace_that_is_not_a_string_is_a_decode_error_naming_the_pod() -> None:
    raw = _twin("g")
    raw["metadata"]["namespace"] = ["payments"]
    with pytest.raises(decode.DecodeError, match="g"):
        decode.pod(raw)


def test_unhashable_label_values_are_kept_unshared() -> None:
    raw = _twin("h")
    raw["metadata"]["labels"] = {"app": ["not", "a", "string"]}
    assert decode.pod(raw).labels == {"app": ["not", "a", "string"]}


def test_the_shared_table_is_bounded() -> None:
    shared = decode._Shared(3)
    for i in range(10):
        assert shared.put(("k", i), i) == i
    assert len(shared.items) <= 3
    assert shared.items.get(("k", 9)) == 9  # still shared after starting over


def test_a_decoded_pod_is_the_pod_its_fields_make() -> None:
    """`decode.pod` fills a Pod without its dataclass __init__: every field must be set, and the
    result must be the frozen Pod that `Pod(...)` builds from the same values."""
    raw = _twin("i")
    raw["metadata"]["deletionTimestamp"] = "2026-11-27T04:05:00Z"
    raw["metadata"]["deletionGracePeriodSeconds"] = 30
    raw["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    raw["spec"]["containers"] = [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]
    raw["spec"]["priorityClassName"] = "high"
    pod = decode.pod(raw)
    assert type(pod) is Pod
    fields = {f.name: getattr(pod, f.name) for f in dataclasses.fields(Pod) if f.init}
    assert pod == Pod(**fields)
    assert pod.key == Pod(**fields).key == ("payments", "i")
    assert (pod.gpu_request, pod.ready, pod.priority_class, pod.deletion_grace_seconds) == (
        2,
        True,
        "high",
        30,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        pod.name = "other"  # type: ignore[misc]


def test_only_the_volumes_healer_reads_are_kept() -> None:
    raw = _twin("j")
    raw["spec"]["volumes"] = [
        {"name": "token", "projected": {"sources": []}},
        {"name": "logs", "hostPath": {"path": "/var/log"}},
        {"name": "cache", "emptyDir": {}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-j"}},
        {"name": "config", "configMap": {"name": "c"}},
    ]
    pod = decode.pod(raw)
    assert pod.volumes == (
        Volume(name="logs", kind=VolumeKind.HOST_PATH),
        Volume(name="data", kind=VolumeKind.PVC, claim="data-j"),
    )
    assert pod.claims == ("data-j",)
    other = _twin("k")
    other["spec"]["volumes"] = [{"name": "logs", "hostPath": {"path": "/var/log"}}]
    again = _twin("l")
    again["spec"]["volumes"] = [{"name": "logs", "hostPath": {"path": "/var/log"}}]
    assert decode.pod(other).volumes is decode.pod(again).volumes  # a DaemonSet's pods share them
    none = _twin("m")
    none["spec"]["volumes"] = [{"name": "token", "projected": {}}]
    assert decode.pod(none).volumes == ()


@pytest.mark.parametrize("volumes", [["not a map"], [7], "data"])
def test_a_volume_that_is_not_a_map_is_a_decode_error(volumes: object) -> None:
    raw = _twin("n")
    raw["spec"]["volumes"] = volumes
    with pytest.raises(decode.DecodeError, match="n"):
        decode.pod(raw)
