"""Rule files to a validated `RuleSet`, or one `RuleError` listing every problem.

A broken rule file must never reach the engine, and must never cost the operator a Python
traceback to understand: each problem is one line naming the file, the rule and the field
(`rules/nodes.yaml: rule node-not-ready: match.for: expected a duration such as 30s ...`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
import yaml

from healer.rules import schema

ENV_RULES_DIR = "HEALER_RULES_DIR"
SYSTEM_RULES_DIR = Path("/etc/healer/rules")
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


class RuleError(ValueError):
    """Rules that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def packaged_directory() -> Path:
    """The shipped default rules: copied into the wheel as `healer/default_rules/`,
    read straight from the checkout's top-level `rules/` in a source or editable install."""
    installed = _PACKAGE_DIR / "default_rules"
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / "rules"


def default_directory(environ: Mapping[str, str] | None = None) -> Path:
    """`$HEALER_RULES_DIR`, else `/etc/healer/rules` when present, else the packaged rules."""
    env = os.environ if environ is None else environ
    if env.get(ENV_RULES_DIR):
        return Path(env[ENV_RULES_DIR])
    if SYSTEM_RULES_DIR.is_dir():
        return SYSTEM_RULES_DIR
    return packaged_directory()


def rule_files(path: Path) -> list[Path]:
    """A directory's `*.yaml`/`*.yml` (sorted; dotfiles such as ConfigMap `..data` links skipped)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RuleError([f"{path}: no such rules directory"])
    files = sorted(
        p
        for p in path.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )
    if not files:
        raise RuleError([f"{path}: no rule files (*.yaml) found"])
    return files


def _where(loc: tuple[int | str, ...], *, raw: Any) -> tuple[str, str]:
    """('rules', 2, 'match', 'for') -> ('rule node-not-ready', 'match.for')."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = raw.get("rules") if isinstance(raw, dict) else None
        name: object = None
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            name = rules[loc[1]].get("name")
        who = f"rule {name}" if isinstance(name, str) and name else f"rule #{loc[1] + 1}"
        rest = loc[2:]
    elif loc:
        who, rest = str(loc[0]), loc[1:]
    else:
        return "", ""
    return who, ".".join(str(part) for part in rest)


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field missing"
    msg = str(error.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def _validation_problems(file: Path, *, raw: Any, error: pydantic.ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        who, field = _where(loc, raw=raw)
        message = _message(item)
        if item.get("type") == "extra_forbidden" and len(loc) >= 3 and loc[-3] == "actions":
            message = f"unknown action; one of {', '.join(schema.ACTION_NAMES)}"
        parts = [str(file), who, field, message]
        problems.append(": ".join(p for p in parts if p))
    return list(dict.fromkeys(problems))


def _read(file: Path) -> tuple[Any, list[str]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, [f"{file}: cannot read: {e}"]
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        return None, [f"{file}: {where}not valid YAML: {problem}"]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return None, [f"{file}: expected a mapping with `rules`, `guards` or `gpu`, got {type(raw).__name__}"]
    return raw, []


def _cross_checks(files: Iterable[tuple[Path, schema.RuleFile]]) -> tuple[list[str], schema.RuleSet]:
    problems: list[str] = []
    seen: dict[str, Path] = {}
    rules: list[schema.Rule] = []
    guards: tuple[Path, schema.Guards] | None = None
    gpu: tuple[Path, schema.GpuPolicy] | None = None
    sources = []
    for file, parsed in files:
        sources.append(str(file))
        for rule in parsed.rules:
            if rule.name in seen:
                problems.append(f"{file}: rule {rule.name}: name: already defined in {seen[rule.name]}")
                continue
            seen[rule.name] = file
            rules.append(rule)
        if parsed.guards is not None:
            if guards is not None:
                problems.append(f"{file}: guards: already defined in {guards[0]}")
            else:
                guards = (file, parsed.guards)
        if parsed.gpu is not None:
            if gpu is not None:
                problems.append(f"{file}: gpu: already defined in {gpu[0]}")
            else:
                gpu = (file, parsed.gpu)
    cordoning = {r.name for r in rules if any(a.name == "cordon" for a in r.actions)}
    for rule in rules:
        for i, action in enumerate(rule.actions):
            if action.uncordon is None:
                continue
            for name in action.uncordon.cordoned_by:
                if name not in cordoning:
                    problems.append(
                        f"{seen[rule.name]}: rule {rule.name}: actions.{i}.uncordon.cordoned_by: "
                        f"no rule named {name!r} cordons nodes"
                    )
    ruleset = schema.RuleSet(
        rules=tuple(rules),
        guards=guards[1] if guards else schema.Guards(),
        gpu=gpu[1] if gpu else schema.GpuPolicy(),
        sources=tuple(sources),
    )
    return problems, ruleset


def load_rules(directory: Path | str) -> schema.RuleSet:
    """Every rule file in `directory` (or one file), validated; raises `RuleError`."""
    path = Path(directory)
    problems: list[str] = []
    parsed: list[tuple[Path, schema.RuleFile]] = []
    for file in rule_files(path):
        raw, read_problems = _read(file)
        problems.extend(read_problems)
        if raw is None:
            continue
        try:
            parsed.append((file, schema.RuleFile.model_validate(raw)))
        except pydantic.ValidationError as e:
            problems.extend(_validation_problems(file, raw=raw, error=e))
    cross, ruleset = _cross_checks(parsed)
    problems.extend(cross)
    if problems:
        raise RuleError(problems)
    return ruleset
