"""Where alerts go: apprise URLs from a mounted Secret file or the environment, never logged raw.

Notification URLs carry tokens and passwords, so they live in a Secret (mounted as a file,
`HEALER_NOTIFY_URLS_FILE`) or in `HEALER_NOTIFY_URLS`, never in the rules or the ConfigMap.
Each line is an apprise URL with an optional tag prefix, as in apprise's text config:
`gpu,critical=tgram://...`. Routing: a target without tags gets every alert; a target with
tags gets the alerts whose tags (the rule's `tags` plus its severity, e.g. `critical`)
share at least one with it. Everything this module says about a URL uses apprise's
privacy form (`url(privacy=True)`), so a log line never carries a secret.

apprise (~2 MiB of RSS and ~55 modules beyond what healer imports anyway, bench/memory.py) is
imported only when a URL is parsed: a node agent without notification URLs never loads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

URLS_FILE_ENV = "HEALER_NOTIFY_URLS_FILE"
URLS_ENV = "HEALER_NOTIFY_URLS"
DEFAULT_URLS_FILE = "/etc/healer/notify/urls"

_LINE = re.compile(r"^\s*(?:(?P<tags>[\w .,:-]+?)\s*=\s*)?(?P<url>[A-Za-z][A-Za-z0-9+.-]*://\S+)\s*$")
_SCHEMA = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One apprise service. `service` is the apprise plugin instance; `label` is log-safe."""

    service: Any
    tags: frozenset[str]
    label: str

    def wants(self, tags: frozenset[str]) -> bool:
        return not self.tags or bool(self.tags & tags)

    @property
    def takes_markdown(self) -> bool:
        """Whether this target renders Markdown (or HTML, which apprise converts Markdown to)."""
        import apprise

        fmt = self.service.resolve_format(apprise.NotifyFormat.MARKDOWN)
        return fmt in (apprise.NotifyFormat.MARKDOWN, apprise.NotifyFormat.HTML)


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """Targets that loaded, and a log-safe error for each line that did not."""

    targets: tuple[Target, ...]
    errors: tuple[str, ...]
    source: str


def privacy_url(service: Any) -> str:
    """apprise's redacted URL without its query string (defaults only, and sometimes secrets)."""
    return str(service.url(privacy=True)).split("?", 1)[0]


def make_target(url: str, *, tags: Iterable[str] = ()) -> Target | None:
    import apprise

    service = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if service is None:
        return None
    return Target(service=service, tags=frozenset(t for t in tags if t), label=privacy_url(service))


def parse(lines: Iterable[str], *, source: str) -> Loaded:
    """Parses URL lines; bad lines become errors naming the line and schema only."""
    targets: list[Target] = []
    errors: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        match = _LINE.match(line)
        where = f"{source} line {number}"
        if match is None:
            errors.append(f"{where}: not an apprise URL (expected [tag,tag=]schema://...)")
            continue
        tags = [t.strip().lower() for t in (match["tags"] or "").split(",")]
        target = make_target(match["url"], tags=tags)
        if target is None:
            schema = _SCHEMA.match(match["url"])
            name = schema.group(1) if schema else "?"
            errors.append(f"{where}: apprise cannot use this {name}:// URL (unknown schema or bad arguments)")
            continue
        targets.append(target)
    return Loaded(targets=tuple(targets), errors=tuple(errors), source=source)


def from_environment(env: Mapping[str, str] | None = None) -> Loaded:
    """The URLs file (if it exists) plus `HEALER_NOTIFY_URLS` (whitespace separated)."""
    env = os.environ if env is None else env
    targets: list[Target] = []
    errors: list[str] = []
    sources: list[str] = []
    path_name = env.get(URLS_FILE_ENV, "")
    path = Path(path_name or DEFAULT_URLS_FILE)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path_name:  # asked for explicitly: say so; the default path may simply be absent
            errors.append(f"{URLS_FILE_ENV}={path}: no such file")
    except (OSError, UnicodeDecodeError) as e:
        errors.append(f"{path}: cannot read ({type(e).__name__})")
    else:
        loaded = parse(content.splitlines(), source=str(path))
        targets += loaded.targets
        errors += loaded.errors
        sources.append(str(path))
    inline = env.get(URLS_ENV, "")
    if inline.strip():
        loaded = parse(inline.split(), source=URLS_ENV)
        targets += loaded.targets
        errors += loaded.errors
        sources.append(URLS_ENV)
    return Loaded(targets=tuple(targets), errors=tuple(errors), source=" + ".join(sources) or "none")
