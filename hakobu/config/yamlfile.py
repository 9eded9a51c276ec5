"""YAML with line numbers: every configuration error names its file and line."""

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hakobu.errors import ConfigError


def read_yaml(path: Path, errors: list[ConfigError]) -> tuple[Any, dict[tuple, int]] | None:
    """Parse a YAML file; return its data and a map from key path to 1-based line."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        errors.append(ConfigError(f"{path}:{line}: malformed YAML: {exc.problem or exc}",
                                  hint="fix the syntax at that line"))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(ConfigError(f"{path}: cannot read: {exc}"))
        return None
    lines: dict[tuple, int] = {}
    if node is not None:
        index_lines(node, (), lines)
    return data, lines


def index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = path + (key.value,)
            lines[child] = key.start_mark.line + 1
            index_lines(value, child, lines)
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index_lines(item, path + (i,), lines)


def line_of(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple("schema" if p == "schema_" else p for p in loc)
    while loc not in lines and loc:
        loc = loc[:-1]
    return lines.get(loc, 1)


def validation_errors(path: Path, exc: ValidationError, lines: dict[tuple, int],
                       prefix: tuple = ()) -> list[ConfigError]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        field = ".".join(str(p) for p in loc if p != "__root__") or "(file)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against the tenant-file reference in README.md"
        elif err["type"] == "missing":
            msg = "required key is missing"
        out.append(ConfigError(f"{path}:{line_of(lines, loc)}: {field}: {msg}"))
    return out


_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, where: str, errors: list[ConfigError]) -> Any:
    """Expand ${VAR} and ${VAR:-default} in cluster endpoints (not secrets: see password_env)."""
    if isinstance(value, dict):
        return {k: interpolate(v, where, errors) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ and os.environ[name] != "":
            return os.environ[name]
        if default is not None:
            return default
        errors.append(ConfigError(f"{where}: environment variable {name} is not set",
                                  hint=f"export {name}=... or write ${{{name}:-default}}"))
        return ""

    return _ENV_REF.sub(repl, value)
