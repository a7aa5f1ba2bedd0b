"""YAML from users (config files and `--set` values), read with bounds, without importing torch or pydantic models:
a bad file is refused in milliseconds, before the heavy imports.

`safe_load` refuses what it could not print or copy in reasonable time.

`yaml.safe_load` constructs no objects, but aliases let a 1 KB document stand for 10^9 nodes (a "billion laughs"):
loading is cheap, since aliases share one Python object, but the first `repr`, `deepcopy`, `json.dumps` or pydantic
validation walks the expanded tree. So the composed node graph is measured before anything is built: its expanded
size (every alias counted as the whole subtree it stands for), its depth, and any alias that contains itself.
Run configs and search spaces are a few hundred nodes; the bounds leave room for a grid over whole sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mgm_studies.configbase import ConfigError, quote

MAX_BYTES = 1_000_000  # a config file or one --set value
MAX_NODES = 100_000  # expanded scalars, sequences and mappings
MAX_DEPTH = 64  # nested sequences and mappings


def safe_load(text: str, *, field: str, source: str) -> Any:
    """Parse `text` (YAML) into plain Python values; a ConfigError naming `field` if it is malformed or too large.

    Args:
        text: the document.
        field: what the error names (`--set train.seed`, `base`, "" for a whole config file).
        source: what the text is, for the message (a file name, `--set KEY`).
    """
    if len(text) > MAX_BYTES:
        raise ConfigError.single(field, f"{source} is {len(text)} characters; at most {MAX_BYTES} are read")
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters already
    except yaml.YAMLError as exc:
        raise ConfigError.single(field, f"{source} is not valid YAML: {_short(exc)}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problem = _measure(node)
        if problem:
            raise ConfigError.single(field, f"{source} is refused: {problem}")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError.single(field, f"{source} is not valid YAML: {_short(exc)}") from None
    finally:
        loader.dispose()


def split_override(override: str) -> tuple[str, str]:
    """(dotted key, raw value) of a `dotted.key=value` override; a ConfigError on `--set` when it is not one."""
    key, sep, raw = override.partition("=")
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError.single("--set", f"expected dotted.key=value, got {quote(override)}")
    return key, raw


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` overrides; values are parsed as YAML (scalars, lists or mappings), with the same
    bounds as a config file. Every problem names `--set KEY`."""
    for override in overrides:
        key, raw = split_override(override)
        node = data
        *parents, leaf = key.split(".")
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                section = ".".join(parents[: depth + 1])
                raise ConfigError.single(f"--set {key}", f"{section!r} is a value, not a section")
            node = child
        node[leaf] = safe_load(raw, field=f"--set {key}", source=f"the value of --set {key}")
    return data


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with `yaml_input.safe_load`'s bounds; a missing, unreadable, malformed or oversized file is a
    ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError.single("", f"config file {quote(str(path))} does not exist")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError.single("", f"{path} is {path.stat().st_size} bytes; a config is at most {MAX_BYTES}")
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.single("", f"cannot read {path}: {exc}") from None
    return safe_load(text, field="", source=str(path))


def read_config(path: str | Path, overrides: list[str] | None = None) -> Any:
    """A config file read and its `--set` overrides applied (when it is a mapping); nothing validated yet."""
    data = read_yaml(path)
    return apply_overrides(data, overrides or []) if isinstance(data, dict) else data


def _measure(root: yaml.Node) -> str | None:
    """Why the document is too large (expanded nodes, depth, a recursive alias), or None. Linear in the distinct
    nodes: each node's expanded size is computed once and reused for every alias that points at it."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative depth-first walk: (node, depth, children visited yet?).
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_NODES:
                return f"it expands to more than {MAX_NODES} nodes (aliases counted in full)"
            continue
        if key in sizes:
            continue
        if key in on_path:
            return "an alias refers to a node that contains it (a recursive structure)"
        if depth > MAX_DEPTH:
            return f"it nests deeper than {MAX_DEPTH} levels"
        on_path.add(key)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in _children(node) if id(child) not in sizes)
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _short(exc: yaml.YAMLError) -> str:
    """The parser's message on one line or a few: the problem and where it is, without the echoed source."""
    return " ".join(str(exc).split())[:300]
