"""YAML from users, read with bounds: `safe_load` that refuses what it could not print or copy in reasonable time.

`yaml.safe_load` constructs no objects, but aliases let a 1 KB document stand for 10^9 nodes (a "billion laughs"):
loading is cheap, since aliases share one Python object, but the first `repr`, `deepcopy`, `json.dumps` or pydantic
validation walks the expanded tree. So the composed node graph is measured before anything is built: its expanded
size (every alias counted as the whole subtree it stands for), its depth, and any alias that contains itself.
Run configs and search spaces are a few hundred nodes; the bounds leave room for a grid over whole sections.
"""

from __future__ import annotations

from typing import Any

import yaml

from mgm_studies.configbase import ConfigError

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
    loader = yaml.SafeLoader(text)
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
