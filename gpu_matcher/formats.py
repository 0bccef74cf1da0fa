"""The project's text files: ``lstm.yml`` (read safely, written atomically) and ``.dict`` dictionaries.

The one place that parses or writes them: the loader (``project``), the writer and CoNLL reader
(``io``) and the Zarr converter all come here. Reading is hardened for files a stranger wrote: the YAML
is size-limited, alias expansion is bounded (a "billion laughs" document fails at once, before anything
walks it), and every path under ``files:`` must resolve inside the project folder (symlinks followed),
so a project can never make the server read, or show, a file outside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from gpu_matcher.errors import ProjectError

CONFIG_NAME = "lstm.yml"
#: lstm.yml larger than this is refused (real ones are a few KiB).
MAX_CONFIG_BYTES = 1 * 2**20
#: Alias uses (``*name``) allowed in one document.
MAX_ALIASES = 100
#: Nodes the document would have with every alias expanded.
MAX_EXPANDED_NODES = 100_000
#: Characters of a bad dictionary line shown in an error (the rest is cut).
SHOWN_LINE_CHARS = 40


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts aliases while composing and checks the expanded size after."""

    def __init__(self, stream: str, where: Path):
        super().__init__(stream)
        self._where, self._aliases = where, 0

    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ProjectError(f"{self._where}: more than {MAX_ALIASES} YAML aliases; refused")
        return super().compose_node(parent, index)

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expanded(node, self._where)
        return node


def _check_expanded(root: yaml.Node, where: Path) -> None:
    """Refuse a node graph whose alias-expanded size exceeds ``MAX_EXPANDED_NODES`` (or that loops)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ProjectError(f"{where}: a YAML alias refers to itself; refused")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                raise ProjectError(f"{where}: the YAML expands to more than {MAX_EXPANDED_NODES} nodes "
                                   "(alias bomb?); refused")
        active.discard(key)
        sizes[key] = total
        return total

    size(root)


def parse_yaml(text: str, where: Path) -> Any:
    """``yaml.safe_load`` of ``text`` with the alias and expansion bounds; errors are one-line ProjectErrors."""
    loader = _BoundedLoader(text, where)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ProjectError(f"{where}: unreadable YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise ProjectError(f"{where}: the YAML nests too deeply; refused") from None
    finally:
        loader.dispose()


def read_text_limited(path: Path, limit: int, what: str) -> str:
    """The text of ``path`` if it is at most ``limit`` bytes (one-line ProjectError otherwise)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > limit:
        raise ProjectError(f"{path}: {what} is larger than {limit} bytes; refused")
    return data.decode("utf-8", errors="replace")


def config_path_of(path: str | os.PathLike) -> Path:
    """``folder/lstm.yml`` for a project folder, or ``path`` itself when it names the lstm.yml."""
    path = Path(path)
    return path if (path.name == CONFIG_NAME and not path.is_dir()) else path / CONFIG_NAME


def load_config(config_path: str | os.PathLike) -> dict:
    """Parse an ``lstm.yml``: a mapping at the top level, size- and alias-bounded, ``files:`` checked."""
    config_path = Path(config_path)
    config = parse_yaml(read_text_limited(config_path, MAX_CONFIG_BYTES, CONFIG_NAME), config_path)
    if not isinstance(config, dict):
        raise ProjectError(f"{config_path}: expected a mapping at the top level, got {type(config).__name__}")
    files = config.get("files")
    if isinstance(files, dict):
        for key, value in files.items():
            inside(config_path.parent, value, f"files.{key}", config_path)
    return config


def write_config(folder: str | os.PathLike, config: Mapping) -> Path:
    """Write ``folder/lstm.yml`` atomically (a temporary file renamed into place); returns its path."""
    path = Path(folder) / CONFIG_NAME
    tmp = path.with_name(CONFIG_NAME + ".tmp")
    tmp.write_text(yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None), encoding="utf-8")
    os.replace(tmp, path)
    return path


def inside(folder: Path, name: Any, key: str, config_path: Path) -> Path:
    """``folder / name`` if it resolves (symlinks followed) inside ``folder``, else a ProjectError naming ``key``."""
    if not isinstance(name, (str, int, float)) or isinstance(name, bool) or str(name) == "":
        raise ProjectError(f"{config_path}: {key} must be a file name, got {type(name).__name__}")
    path = folder / str(name)
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise ProjectError(f"{config_path}: {key} is {str(name)!r}, which lies outside the project folder; "
                           "files must be inside it")
    return path


# --- .dict files -------------------------------------------------------------------------------------
def check_token(token: str, where: str) -> None:
    """A token must survive a round trip through a ``.dict`` file."""
    if token == " ":
        return                                   # the one white-space token the format allows
    if token == "" or any(ch.isspace() for ch in token):
        raise ProjectError(f"{where}: token {token!r} cannot be stored in a .dict file "
                           "(empty, or holds white space other than the single-space token ' ')")


def _shown(line: str) -> str:
    return repr(line if len(line) <= SHOWN_LINE_CHARS else line[:SHOWN_LINE_CHARS] + "...")


def read_dictionary(path: str | os.PathLike) -> dict[int, str]:
    """Read an LSTMVis ``.dict`` file: ``token id`` per line; a line starting with a space is ``" "``."""
    path = Path(path)
    mapping: dict[int, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read dictionary ({exc.strerror})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith(" "):
            token, rest = " ", line.strip()
        else:
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise ProjectError(f"{path}:{lineno}: expected 'token id', got {_shown(line)}")
            token, rest = parts
        try:
            mapping[int(rest)] = token
        except ValueError:
            raise ProjectError(f"{path}:{lineno}: id {_shown(rest)} is not an integer") from None
    return mapping


def write_dictionary(path: str | os.PathLike, mapping: Mapping[int, str]) -> None:
    """Write ``mapping`` (id -> token) as a ``.dict`` file, sorted by id; atomically replaces ``path``."""
    path = Path(path)
    lines = []
    seen: dict[str, int] = {}
    for idx in sorted(mapping):
        token = str(mapping[idx])
        check_token(token, f"{path}: id {idx}")
        if token in seen:
            raise ProjectError(f"{path}: token {token!r} has two ids ({seen[token]} and {idx})")
        seen[token] = idx
        lines.append(f"{token} {int(idx)}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
