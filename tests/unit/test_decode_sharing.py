"""The decoder shares repeated values between pods (memory) without changing any decoded value."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from healer.model import decode

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
