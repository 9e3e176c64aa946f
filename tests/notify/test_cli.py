"""`healer notify test`, run as a real process against a real receiver on loopback."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.notify.conftest import REPO_ROOT, SECRET, HttpReceiver


async def _healer(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEALER_NOTIFY")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "healer.cli",
        *args,
        cwd=REPO_ROOT,
        env={**base, "HEALER_NOTIFY_URLS_FILE": "/nonexistent/urls", **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_notify_test_delivers_to_the_given_url(http_receiver: HttpReceiver) -> None:
    rc, out, err = await _healer("notify", "test", "--url", http_receiver.url())
    assert (rc, err) == (0, "")
    assert out == f"sent: json://healer:****@127.0.0.1:{http_receiver.port}/hook\n"
    arrival = await http_receiver.next()
    assert arrival.title == "healer: test alert"
    assert "no action is needed" in arrival.body


async def test_notify_test_reports_a_failure_with_the_url_redacted(http_receiver: HttpReceiver) -> None:
    http_receiver.script = [500]
    rc, out, err = await _healer("notify", "test", "--url", http_receiver.url())
    assert rc == 1
    assert err.startswith(f"failed: json://healer:****@127.0.0.1:{http_receiver.port}/hook: ")
    assert "error=500" in err
    assert SECRET not in out + err


async def test_notify_test_uses_the_configured_secret_file(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    urls = tmp_path / "urls"
    urls.write_text(f"gpu,critical={http_receiver.url(path='gpu')}\n", encoding="utf-8")
    rc, out, _ = await _healer("notify", "test", env={"HEALER_NOTIFY_URLS_FILE": str(urls)})
    assert rc == 0
    assert out == f"sent: json://healer:****@127.0.0.1:{http_receiver.port}/gpu [critical,gpu]\n"
    assert (await http_receiver.next()).path == "/gpu"


async def test_notify_test_without_any_url_says_how_to_configure_one() -> None:
    rc, _, err = await _healer("notify", "test")
    assert rc == 1
    assert "bad URL: HEALER_NOTIFY_URLS_FILE=/nonexistent/urls: no such file" in err
