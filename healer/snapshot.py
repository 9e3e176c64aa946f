"""A `kubectl get nodes,pods,pdb,pv,pvc -A -o yaml` (or `-o json`) file as a ClusterView.

`healer plan --snapshot FILE` plans against what an operator can capture with one command,
so a plan can be reviewed (or a bug reported) without healer touching the cluster. Input is
untrusted: every problem becomes a `SnapshotError` with a one-line reason.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from healer.model import decode
from healer.model.view import ClusterView

KINDS = tuple(decode.DECODERS)
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SnapshotError(ValueError):
    """The snapshot cannot be used; the message is one line."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def parse(text: str, *, source: str = "snapshot") -> Any:
    """JSON when it looks like JSON, YAML otherwise (YAML is a superset, JSON is faster)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SnapshotError(f"{source}: not valid JSON: {e.msg} at line {e.lineno}") from e
    try:
        return yaml.load(text, Loader=_SAFE_LOADER)  # CSafeLoader or SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or _one_line(str(e))
        raise SnapshotError(f"{source}: not valid YAML{where}: {problem}") from e


def view_from(document: Any, *, source: str = "snapshot") -> ClusterView:
    """A parsed `List` (or one object of a known kind) to a ClusterView."""
    if not isinstance(document, dict):
        raise SnapshotError(
            f"{source}: expected a Kubernetes List (kubectl get ... -o yaml), got {type(document).__name__}"
        )
    kind = document.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and kind not in KINDS:
        items = document.get("items")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise SnapshotError(f"{source}: `items` of the {kind} is not a list")
    elif kind in KINDS:
        items = [document]
    else:
        raise SnapshotError(
            f"{source}: expected a Kubernetes List (kubectl get nodes,pods,pdb,pv,pvc -A -o yaml), "
            f"got kind {kind!r}"
        )
    buckets: dict[str, list[Any]] = {k: [] for k in KINDS}
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise SnapshotError(f"{source}: item {i} is not an object")
        item_kind = item.get("kind")
        if item_kind not in decode.DECODERS:
            raise SnapshotError(
                f"{source}: item {i} has kind {item_kind!r}; healer reads {', '.join(KINDS)} "
                "(kubectl get nodes,pods,pdb,pv,pvc -A -o yaml)"
            )
        try:
            buckets[item_kind].append(decode.DECODERS[item_kind](item))
        except decode.DecodeError as e:
            raise SnapshotError(f"{source}: item {i}: {_one_line(str(e))}") from e
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise SnapshotError(f"{source}: item {i} ({item_kind}) is malformed: {_one_line(str(e))}") from e
    return ClusterView.of(
        nodes=buckets["Node"],
        pods=buckets["Pod"],
        pvs=buckets["PersistentVolume"],
        pvcs=buckets["PersistentVolumeClaim"],
        pdbs=buckets["PodDisruptionBudget"],
    )


def load(path: Path | str) -> ClusterView:
    """Read and decode a snapshot file; `SnapshotError` for anything unusable."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise SnapshotError(f"{p}: no such file") from e
    except IsADirectoryError as e:
        raise SnapshotError(f"{p}: is a directory, not a snapshot file") from e
    except UnicodeDecodeError as e:
        raise SnapshotError(f"{p}: not a text file ({e.reason})") from e
    except OSError as e:
        raise SnapshotError(f"{p}: cannot read: {e.strerror}") from e
    return view_from(parse(text, source=str(p)), source=str(p))


def taken_at(view: ClusterView) -> datetime | None:
    """When the snapshot was taken, as well as the file can tell: its newest node heartbeat.

    kubectl prints no capture time, but every live kubelet renews its conditions'
    `lastHeartbeatTime` within minutes, so the newest one is a close, never-later estimate.
    Planning a saved snapshot "as of then" keeps `for:` durations what they were at capture
    (an estimate a little early only makes conditions look younger: never a premature action).
    """
    beats = [
        cond.last_heartbeat
        for node in view.nodes.values()
        for cond in node.conditions
        if cond.last_heartbeat is not None
    ]
    return max(beats, default=None)
