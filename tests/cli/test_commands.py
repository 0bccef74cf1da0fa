"""The command-line package: subcommands registered by entry points, choices and defaults from one place."""

from __future__ import annotations

import inspect
import logging
import sys
import types
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import gpu_matcher.cli as cli
from gpu_matcher import defaults
from gpu_matcher.backends import BACKEND_NAMES
from gpu_matcher.engine import Engine
from gpu_matcher.threshold import SCALES

GROUP = cli.ENTRY_POINT_GROUP


def _fake_plugin(monkeypatch, *eps: EntryPoint, checkout: bool = False) -> None:
    """Installed metadata replaced by ``eps`` (and, unless ``checkout``, no pyproject table)."""
    monkeypatch.setattr(cli, "entry_points", lambda group: [ep for ep in eps if ep.group == group])
    if not checkout:
        monkeypatch.setattr(cli, "_checkout_entry_points", lambda: [])


@pytest.fixture()
def hello_module(monkeypatch):
    """A module the fake entry point names: it adds ``hello NAME``."""
    module = types.ModuleType("lstmvis_fake_plugin")

    def register(sub):
        p = sub.add_parser("hello", help="say hello")
        p.add_argument("name")
        p.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)

    module.register = register
    monkeypatch.setitem(sys.modules, "lstmvis_fake_plugin", module)
    return module


def _commands(parser) -> dict:
    return next(a for a in parser._actions if a.dest == "command").choices


def test_entry_point_adds_a_command(monkeypatch, capsys, hello_module):
    _fake_plugin(monkeypatch, EntryPoint("hello", "lstmvis_fake_plugin:register", GROUP))
    assert "hello" in _commands(cli.build_parser())
    assert cli.main(["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"


def test_without_entry_points_there_is_no_serve(monkeypatch):
    _fake_plugin(monkeypatch)
    commands = _commands(cli.build_parser())
    assert "serve" not in commands and {"info", "match", "stats", "demo", "convert-zarr"} <= set(commands)


def test_a_plugin_cannot_replace_a_builtin(monkeypatch, hello_module):
    _fake_plugin(monkeypatch, EntryPoint("match", "lstmvis_fake_plugin:register", GROUP))
    commands = _commands(cli.build_parser())
    assert "hello" not in commands and "--threshold" in commands["match"].format_help()


def test_a_plugin_whose_package_is_missing_is_skipped(monkeypatch):
    _fake_plugin(monkeypatch, EntryPoint("ghost", "lstmvis_no_such_package.cli:register", GROUP))
    assert "ghost" not in _commands(cli.build_parser())


def test_the_checkout_registers_serve(monkeypatch):
    """pyproject.toml declares serve; read from the checkout even when the installed metadata lacks it."""
    _fake_plugin(monkeypatch, checkout=True)
    plugins = cli.command_plugins()
    assert plugins["serve"].value.endswith(".cli:register")
    assert "serve" in _commands(cli.build_parser())


@pytest.mark.parametrize("command", ["match", "stats", "suggest", "compare", "serve"])
def test_backend_choices_are_the_backends(command):
    parser = _commands(cli.build_parser())[command]
    action = next(a for a in parser._actions if a.dest == "backend")
    assert tuple(action.choices) == BACKEND_NAMES


@pytest.mark.parametrize("command", ["match", "stats", "suggest"])
def test_scale_choices_are_the_scales(command):
    parser = _commands(cli.build_parser())[command]
    assert tuple(next(a for a in parser._actions if a.dest == "scale").choices) == SCALES


def test_match_defaults_come_from_the_shipped_file():
    match, select = defaults.section("match"), defaults.section("select")
    args = cli.build_parser().parse_args(["match", "P", "--threshold", "0.3", "--start", "1", "--end", "2"])
    assert (args.top, args.min_length, args.phrase_length) == (match["top"], match["min_length"],
                                                                match["phrase_length"])
    assert (args.left, args.right) == (select["left"], select["right"])
    stats_args = cli.build_parser().parse_args(["stats", "P", "--threshold", "0.3", "--track", "x"])
    assert stats_args.top == match["top"]


def test_an_override_file_changes_the_cli_default(monkeypatch, tmp_path):
    override = tmp_path / "ui.yaml"
    override.write_text("match: {top: 7}\n")
    monkeypatch.setenv("LSTMVIS_UI_DEFAULTS", str(override))
    args = cli.build_parser().parse_args(["match", "P", "--threshold", "0.3"])
    assert args.top == 7


def test_shipped_defaults_agree_with_the_engine():
    """The yaml and the engine's own Python defaults name the same top and min_length."""
    params = inspect.signature(Engine.match).parameters
    match = defaults.section("match")
    assert match["top"] == params["top"].default
    assert match["min_length"] == params["min_length"].default


def test_unknown_key_warns_once_naming_key_and_file(tmp_path, caplog):
    override = tmp_path / "ui.yaml"
    override.write_text("match: {top: 9, colour: red}\nsurprise: 1\n")
    with caplog.at_level(logging.WARNING, logger="gpu_matcher"):
        values = defaults.load(override)
    assert values["match"]["top"] == 9 and "colour" not in values["match"] and "surprise" not in values
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(str(override) in line and "\n" not in line for line in lines)
    assert any("'match.colour'" in line for line in lines) and any("'surprise'" in line for line in lines)


def test_app_defaults_cover_the_shipped_file(caplog):
    """Every key of the shipped file is used by the app's typed defaults (else it would warn)."""
    from bokeh_app.config import MatchDefaults, SelectDefaults, load_defaults

    load_defaults.cache_clear()
    with caplog.at_level(logging.WARNING):
        ui = load_defaults()
    assert not caplog.records
    assert ui.match.top == defaults.section("match")["top"]
    shipped = defaults.load()
    assert set(shipped["select"]) == {f for f in SelectDefaults.__dataclass_fields__}
    assert set(shipped["match"]) == {f for f in MatchDefaults.__dataclass_fields__}


def test_shipped_defaults_are_the_checkouts_file():
    """Run from a checkout (PYTHONPATH=. or an editable install), the file read is configs/defaults.yaml."""
    repo = Path(__file__).resolve().parents[2]
    assert defaults.shipped_path().read_bytes() == (repo / "configs" / "defaults.yaml").read_bytes()
