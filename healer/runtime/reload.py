"""Rules hot-reload: pick up edited rule files, and never trade good rules for broken ones.

Rules arrive as a mounted ConfigMap, which kubelet updates by swapping a symlink; polling
the files' (name, size, mtime) is the simplest change check that sees that and works on
every filesystem. A reload that fails validation keeps the last good rules and logs why, so
a typo in a ConfigMap degrades to "nothing changed", never to "healer stopped healing".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(directory: Path) -> Fingerprint:
    """(name, size, mtime) of every rule file, following symlinks; () when unreadable."""
    entries: list[tuple[str, int, int]] = []
    try:
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".") or path.suffix not in (".yaml", ".yml"):
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            entries.append((path.name, st.st_size, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(entries)


class RulesHolder(Generic[T]):
    """The current rules; `check()` reloads when the files changed.

    `on_change(ok, error)` is told about every reload attempt (for metrics).
    """

    def __init__(
        self,
        *,
        directory: Path,
        load: Callable[[Path], T],
        on_reload: Callable[[bool, str], None] = lambda ok, error: None,
    ) -> None:
        self.directory = directory
        self._load = load
        self._on_reload = on_reload
        self._fingerprint = fingerprint(directory)
        self.current: T = load(directory)  # the first load must succeed: no rules, no daemon
        self.generation = 0
        self.last_error = ""

    def check(self) -> bool:
        """Reload if the files changed; True when new rules are now current."""
        seen = fingerprint(self.directory)
        if seen == self._fingerprint:
            return False
        self._fingerprint = seen
        try:
            rules = self._load(self.directory)
        except Exception as e:  # RuleError, YAML errors, a vanished directory: all keep the old rules
            self.last_error = str(e)
            log.error(
                "rules reload failed, keeping the last good rules",
                directory=str(self.directory),
                error=str(e),
            )
            self._on_reload(False, str(e))
            return False
        self.current = rules
        self.generation += 1
        self.last_error = ""
        log.info("rules reloaded", directory=str(self.directory), generation=self.generation)
        self._on_reload(True, "")
        return True

    async def watch(self, *, interval_s: float = 2.0, changed: Callable[[], None] = lambda: None) -> None:
        """Poll forever; `changed()` after each successful reload (the daemon re-plans)."""
        while True:
            await asyncio.sleep(interval_s)
            if self.check():
                changed()
