"""`healer`: the command line. One function per subcommand, registered in `COMMANDS`.

Exit codes: 0 success, 2 bad input or invalid rules (one line per problem, never a
traceback), 1 an unexpected failure. To add a subcommand, write `_add_<name>(subparsers)`
that builds its parser and sets `func`, and append it to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from healer import __version__, render, snapshot
from healer.engine import planning
from healer.engine.state import EngineState
from healer.model.view import ClusterView
from healer.notify import cli_test as notify_cli
from healer.rules import loading, schema

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit 2."""


def parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise UsageError(f"--now {text!r}: not an RFC 3339 time, e.g. 2025-10-15T12:00:00Z") from e
    if when.tzinfo is None:
        raise UsageError(f"--now {text!r}: give a time zone, e.g. 2025-10-15T12:00:00Z")
    return when


def _load_rules(directory: str | None) -> tuple[Path, schema.RuleSet]:
    path = Path(directory) if directory else loading.default_directory()
    try:
        return path, loading.load_rules(path)
    except loading.RuleError as e:
        raise UsageError(str(e)) from e


# --- healer plan --------------------------------------------------------------------------------


def live_view(args: argparse.Namespace) -> ClusterView:
    """The live cluster's view: nodes, pods, PVs, PVCs and PDBs listed once (nothing is written)."""
    import asyncio

    from healer.kube import client, errors
    from healer.runtime import logs, oneshot

    logs.configure(fmt="console")  # retries are logged to stderr; stdout stays the plan
    try:
        return asyncio.run(oneshot.live_view(kubeconfig=args.kubeconfig))
    except client.ConfigError as e:
        raise UsageError(str(e)) from e
    except errors.ApiError as e:
        raise UsageError(f"reading the cluster failed: {type(e).__name__}: {e}") from e
    except snapshot.SnapshotError as e:
        raise UsageError(str(e)) from e


def cmd_plan(args: argparse.Namespace) -> int:
    now = parse_now(args.now)
    rules_dir, rules = _load_rules(args.rules)
    if args.snapshot:
        try:
            view = snapshot.load(args.snapshot)
        except snapshot.SnapshotError as e:
            raise UsageError(str(e)) from e
        source = args.snapshot
        if args.now is None:  # a saved snapshot plans as of when it was taken
            now = snapshot.taken_at(view) or now
    else:
        view = live_view(args)
        source = "the live cluster"
    plan = planning.plan(view=view, rules=rules, state=EngineState(), now=now, scope="all")
    if args.output == "json":
        print(render.as_json(plan))
    else:
        header = (
            f"healer plan for {source}: {len(view.nodes)} nodes, {len(view.pods)} pods, "
            f"at {now.isoformat().replace('+00:00', 'Z')}, rules from {rules_dir} (nothing is changed)"
        )
        print(render.as_table(plan, header=header))
    return EXIT_OK


def _add_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="print what healer would do now (never writes)",
        description="One evaluation of every rule (cluster and node scope), printed; nothing is changed.",
    )
    p.add_argument(
        "--snapshot",
        metavar="FILE",
        help="output of `kubectl get nodes,pods,pdb,pv,pvc -A -o yaml` (or -o json)",
    )
    p.add_argument(
        "--now",
        metavar="RFC3339",
        help="plan as of this time (default: now; a --snapshot: when taken, i.e. its newest node heartbeat)",
    )
    p.add_argument(
        "--rules", metavar="DIR", help="rules directory (default: $HEALER_RULES_DIR or the packaged rules)"
    )
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    p.add_argument(
        "--kubeconfig", metavar="FILE", help="without --snapshot: the cluster to read (default: in-cluster)"
    )
    p.set_defaults(func=cmd_plan)


# --- healer rules check -------------------------------------------------------------------------


def cmd_rules_check(args: argparse.Namespace) -> int:
    path, rules = _load_rules(args.dir)
    files = len(rules.sources)
    print(f"{path}: {len(rules.rules)} rules in {files} file{'s' if files != 1 else ''}, valid")
    return EXIT_OK


def _add_rules(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rules", help="work with rule files")
    rules_sub = p.add_subparsers(dest="rules_command", metavar="COMMAND", required=True)
    check = rules_sub.add_parser("check", help="validate a rules directory (exit 0 valid, 2 not)")
    check.add_argument(
        "dir", nargs="?", metavar="DIR", help="default: $HEALER_RULES_DIR or the packaged rules"
    )
    check.set_defaults(func=cmd_rules_check)


# --- healer run ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from healer.runtime import daemon, logs, settings

    try:
        config = settings.Settings.from_args(
            dry_run=args.dry_run,
            node=args.node,
            kubeconfig=args.kubeconfig,
            rules=args.rules,
            http_port=args.http_port,
        )
    except ValueError as e:
        raise UsageError(str(e)) from e
    logs.configure(fmt=config.log_format)
    return asyncio.run(daemon.run(config))


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the daemon (SIGTERM drains and exits 0)",
        description="Watch the cluster and heal it: the node role for --node, the cluster role while leader.",
    )
    p.add_argument("--dry-run", action="store_true", help="decide and log, never write")
    p.add_argument("--node", metavar="NAME", help="this pod's node (default: $NODE_NAME)")
    p.add_argument("--kubeconfig", metavar="FILE", help="default: in-cluster configuration")
    p.add_argument(
        "--rules", metavar="DIR", help="rules directory (default: $HEALER_RULES_DIR or the packaged rules)"
    )
    p.add_argument(
        "--http-port",
        type=int,
        metavar="N",
        help="/healthz /readyz /metrics (default: $HEALER_HTTP_PORT or 9180)",
    )
    p.set_defaults(func=cmd_run)


# --- registration -------------------------------------------------------------------------------

# Each entry adds one subcommand; add `run`, `notify test`... here.
COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_plan,
    _add_rules,
    _add_run,
    notify_cli.add_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healer", description="Event-driven self-healing for Kubernetes nodes, pods and GPUs."
    )
    parser.add_argument("--version", action="version", version=f"healer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as e:
        print("\n".join(f"healer: {line}" for line in str(e).splitlines()), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
