"""The lstm.yml / .dict layer (gpu_matcher.formats) against files a stranger wrote: YAML bombs, oversized
documents, ``files:`` paths leaving the project folder, and errors that must not echo a foreign file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpu_matcher import ProjectError, open_project
from gpu_matcher.formats import (MAX_ALIASES, MAX_CONFIG_BYTES, SHOWN_LINE_CHARS, load_config, parse_yaml,
                                 read_dictionary, write_config, write_dictionary)
from gpu_matcher.io import ProjectWriter

REPO = Path(__file__).resolve().parents[2]
SECRET = "root:x:0:0:root:/root:/bin/bash-SECRET-LINE"


def billion_laughs(levels: int = 10) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + f"\nfiles: {{states: *a{levels - 1}}}\n"


@pytest.fixture()
def project(tmp_path) -> Path:
    """A small valid project written by ProjectWriter (states, words, a discrete track)."""
    folder = tmp_path / "proj"
    rng = np.random.default_rng(0)
    with ProjectWriter(folder, dictionary={1: "a", 2: "b"}) as writer:
        writer.add_source("cells", layer=1)
        writer.add_meta("pos", kind="discrete", labels=["N", "V"])
        writer.append(states={"cells": rng.standard_normal((12, 4)).astype(np.float32)},
                      tokens=rng.integers(1, 3, 12), meta={"pos": rng.integers(0, 2, 12)}, starts=[0])
    return folder


@pytest.fixture()
def secret(tmp_path) -> Path:
    """A file outside every project whose content must never appear in an error."""
    path = tmp_path / "outside" / "passwd"
    path.parent.mkdir()
    path.write_text(SECRET + "\n")
    return path


def set_files(folder: Path, **entries: str) -> None:
    config = load_config(folder / "lstm.yml")
    config["files"].update(entries)
    write_config(folder, config)


def one_line_error(folder: Path) -> str:
    with pytest.raises(ProjectError) as info:
        open_project(folder)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_written_project_opens(project):
    opened = open_project(project)
    assert opened.T == 12 and opened.meta["pos"].kind == "discrete"
    opened.close()


def test_billion_laughs_fails_at_once(project):
    (project / "lstm.yml").write_text(billion_laughs(10))
    t0 = time.perf_counter()
    message = one_line_error(project)
    assert time.perf_counter() - t0 < 0.5
    assert "lstm.yml" in message and ("alias" in message or "expands" in message)


def test_expansion_bound_without_many_aliases(project):
    # 6 levels of 9 aliases each: 54 aliases (under MAX_ALIASES) but 9**6 = 531,441 leaves once expanded
    lines = ['a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 7)]
    assert 6 * 9 < MAX_ALIASES
    (project / "lstm.yml").write_text("\n".join(lines) + "\n")
    assert "expands to more than" in one_line_error(project)


def test_recursive_alias_refused(tmp_path):
    with pytest.raises(ProjectError, match="refers to itself"):
        parse_yaml("a: &a [1, *a]\n", tmp_path / "lstm.yml")


def test_a_few_anchors_still_load(project):
    text = (project / "lstm.yml").read_text()
    config = parse_yaml(text + "shared: &vis {type: scalar}\nother: {vis: *vis}\n", project / "lstm.yml")
    assert config["other"]["vis"] == {"type": "scalar"}


def test_oversized_lstm_yml_refused(project):
    with open(project / "lstm.yml", "a") as fh:
        fh.write("# " + "x" * MAX_CONFIG_BYTES + "\n")
    assert f"larger than {MAX_CONFIG_BYTES} bytes" in one_line_error(project)


def test_deep_nesting_refused(project):
    (project / "lstm.yml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    message = one_line_error(project)
    assert "lstm.yml" in message


def test_absolute_path_outside_refused_without_echo(project, secret):
    set_files(project, words=str(secret))
    message = one_line_error(project)
    assert "files.words" in message and "outside the project folder" in message
    assert "root:x" not in message and "SECRET" not in message


def test_dotdot_escape_refused(project, secret):
    set_files(project, words=os.path.relpath(secret, project))
    message = one_line_error(project)
    assert "files.words" in message and "outside the project folder" in message and "SECRET" not in message


def test_symlink_out_of_the_project_refused(project, secret):
    (project / "link.dict").symlink_to(secret)
    set_files(project, words="link.dict")
    message = one_line_error(project)
    assert "files.words" in message and "SECRET" not in message


def test_symlink_within_the_project_allowed(project):
    (project / "sub").mkdir()
    os.replace(project / "words.dict", project / "sub" / "words.dict")
    (project / "words.dict").symlink_to(project / "sub" / "words.dict")
    opened = open_project(project)
    assert opened.tokens(0, 2)[0] in ("a", "b")
    opened.close()


def test_absolute_path_inside_allowed(project):
    set_files(project, words=str((project / "words.dict").resolve()))
    open_project(project).close()


def test_unused_files_entry_outside_refused(project, secret):
    set_files(project, spare=str(secret))
    assert "files.spare" in one_line_error(project)


def test_dictionary_error_shows_a_short_excerpt(project):
    long_line = "token-without-id-" + "z" * 200
    (project / "words.dict").write_text(f"a 1\n{long_line}\n")
    message = one_line_error(project)
    assert "words.dict:2" in message and long_line not in message
    assert long_line[:SHOWN_LINE_CHARS] in message


def test_dictionary_round_trip(tmp_path):
    mapping = {7: " ", 3: "b", 10: "a"}
    write_dictionary(tmp_path / "x.dict", mapping)
    assert read_dictionary(tmp_path / "x.dict") == mapping


def test_cli_bomb_fails_in_one_line(project):
    (project / "lstm.yml").write_text(billion_laughs(10))
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "gpu_matcher.cli", "info", str(project)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert time.perf_counter() - t0 < 30       # the interpreter's start dominates; the bomb took 28 s
    assert "ERROR" in result.stdout and "alias" in result.stdout
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
