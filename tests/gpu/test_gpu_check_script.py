"""scripts/gpu-check as a real process: JSON out, clean answer without a driver, full path on the fake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check"


def run(*args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, json.loads(done.stdout)


def test_without_a_driver_it_reports_unavailable_and_exits_0() -> None:
    rc, out = run("--wait", "1")
    if out.get("nvml") == "available":  # a machine with a GPU: the real path must have passed
        assert rc == 0
        assert out["ok"] is True
        return
    assert rc == 0
    assert out["nvml"] == "unavailable"
    assert out["reason"] in {"LibraryNotFound", "DriverNotLoaded"} or "device count 0" in str(out["reason"])


def test_fake_self_test_sees_the_injected_xid_and_stops_the_thread() -> None:
    rc, out = run("--fake", "--wait", "1.5")
    assert rc == 0
    assert out["ok"] is True
    assert out["events_registered"] is True
    assert out["wait_thread_alive_before_stop"] is True
    assert out["wait_thread_alive_after_stop"] is False
    kinds = [s["kind"] for batch in out["batches"] for s in batch]  # type: ignore[attr-defined]
    assert kinds[0] == "healthy"
    assert {"kind": "xid", "xid": 79} in [
        {"kind": s["kind"], "xid": s["xid"]} for b in out["batches"] for s in b
    ]  # type: ignore[attr-defined]
