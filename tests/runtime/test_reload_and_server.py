"""Rules hot-reload keeps the last good rules; the HTTP server answers health, readiness, metrics."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import yaml

from healer.runtime.metrics import Metrics
from healer.runtime.reload import RulesHolder
from healer.runtime.server import HealthServer


class BrokenRules(ValueError):
    pass


def load(directory: Path) -> dict[str, object]:
    """A stand-in loader with the real one's contract: a value, or an error naming the file."""
    rules: dict[str, object] = {}
    for path in sorted(directory.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or "name" not in data:
            raise BrokenRules(f"{path.name}: rule has no name")
        rules[str(data["name"])] = data
    return rules


def _write(path: Path, text: str, *, bump: int) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def test_reload_picks_up_changes_and_keeps_last_good_rules(tmp_path: Path) -> None:
    rule = tmp_path / "node.yaml"
    _write(rule, "name: node-not-ready\n", bump=0)
    results: list[tuple[bool, str]] = []
    holder = RulesHolder(directory=tmp_path, load=load, on_reload=lambda ok, err: results.append((ok, err)))
    assert set(holder.current) == {"node-not-ready"}
    assert holder.check() is False  # nothing changed

    _write(rule, "name: node-unreachable\n", bump=1)
    assert holder.check() is True
    assert set(holder.current) == {"node-unreachable"}

    _write(rule, "oops: [\n", bump=2)
    assert holder.check() is False
    assert set(holder.current) == {"node-unreachable"}
    assert results[-1][0] is False
    assert holder.last_error

    _write(rule, "label: x\n", bump=3)
    assert holder.check() is False
    assert "node.yaml: rule has no name" in holder.last_error
    assert set(holder.current) == {"node-unreachable"}

    _write(rule, "name: fixed\n", bump=4)
    assert holder.check() is True
    assert set(holder.current) == {"fixed"}
    assert holder.last_error == ""
    assert [ok for ok, _ in results] == [True, False, False, True]


async def test_server_endpoints() -> None:
    metrics = Metrics()
    ready = {"now": False}
    server = HealthServer(metrics=metrics, ready=lambda: ready["now"], host="127.0.0.1", port=0)
    await server.start()
    try:
        metrics.actions.labels(verb="cordon", outcome="applied").inc()
        metrics.held.labels(guard="storm").set(2)
        metrics.leader.set(1)
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            async with http.get(base + "/readyz") as r:
                assert r.status == 503
            ready["now"] = True
            async with http.get(base + "/readyz") as r:
                assert r.status == 200
            async with http.get(base + "/metrics") as r:
                assert r.status == 200
                text = await r.text()
        assert 'healer_actions_total{outcome="applied",verb="cordon"} 1.0' in text
        assert 'healer_held_actions{guard="storm"} 2.0' in text
        assert "healer_leader 1.0" in text
    finally:
        await server.stop()
