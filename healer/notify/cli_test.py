"""`healer notify test [--url URL]`: prove that alerts reach a human before an incident does.

Sends one test alert to each configured target (or to `--url`), right away, and says per
target whether it arrived, with the URL in apprise's redacted form. Exit 0 when every
target took it, 1 otherwise (including configuration lines apprise could not use).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence

from healer.model.actions import Severity, Stage
from healer.notify import delivery, targets
from healer.notify.messages import Item, Message, Section

EXIT_OK = 0
EXIT_FAILED = 1


def test_message() -> Message:
    return Message(
        key="notify-test",
        stage=Stage.OPENED,
        title="healer: test alert",
        sections=(
            Section(
                heading="Test",
                items=(
                    Item(text=f"healer on {socket.gethostname()} can reach this channel."),
                    Item(text="Nothing happened in the cluster; no action is needed."),
                ),
            ),
        ),
        severity=Severity.INFO,
    )


async def send(loaded: targets.Loaded, *, timeout_s: float) -> int:
    failed = False
    for error in loaded.errors:
        print(f"bad URL: {error}", file=sys.stderr)
        failed = True
    if not loaded.targets and not loaded.errors:
        print(
            f"no notification URLs configured: mount them at ${targets.URLS_FILE_ENV} "
            f"(default {targets.DEFAULT_URLS_FILE}), set ${targets.URLS_ENV}, or pass --url",
            file=sys.stderr,
        )
        return EXIT_FAILED
    message = test_message()
    results = await asyncio.gather(
        *(delivery.send_once(t, message, timeout_s=timeout_s) for t in loaded.targets)
    )
    for target, result in zip(loaded.targets, results, strict=True):
        tags = f" [{','.join(sorted(target.tags))}]" if target.tags else ""
        if result.ok:
            print(f"sent: {target.label}{tags}")
        else:
            print(f"failed: {target.label}{tags}: {result.reason}", file=sys.stderr)
            failed = True
    return EXIT_FAILED if failed else EXIT_OK


def cmd_notify_test(args: argparse.Namespace) -> int:
    loaded = targets.parse(args.url, source="--url") if args.url else targets.from_environment()
    return asyncio.run(send(loaded, timeout_s=args.timeout))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("notify", help="work with chat alerts")
    notify_sub = p.add_subparsers(dest="notify_command", metavar="COMMAND", required=True)
    test = notify_sub.add_parser(
        "test",
        help="send a test alert to the configured targets (exit 0 delivered, 1 not)",
        description=f"Targets: ${targets.URLS_FILE_ENV} and ${targets.URLS_ENV}, unless --url is given.",
    )
    test.add_argument(
        "--url",
        action="append",
        metavar="URL",
        help="an apprise URL, optionally 'tag,tag=URL' (repeatable); beware: it lands in your shell history",
    )
    test.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="per target (default 30)"
    )
    test.set_defaults(func=cmd_notify_test)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (same as `healer notify test ...`)."""
    parser = argparse.ArgumentParser(prog="healer")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
