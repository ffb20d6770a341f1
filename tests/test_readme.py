"""The README cannot drift from the CLI: its walkthrough runs here command by command, every command and
option it shows exists, its pytest example passes under pytester, and every positional and --json flag has
help text."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import textwrap

from conftest import ROOT, VECTORS

from nydus_inspect.cli import build_parser
from nydus_inspect.testing.plugin import fuse_problem

pytest_plugins = ["pytester"]

README = (ROOT / "README.md").read_text()


def block_after(marker: str) -> str:
    """The first fenced code block after the line holding ``marker``."""
    start = README.index(marker)
    m = re.compile(r"```(\w+)\n(.*?)```", re.S).search(README, start)
    assert m is not None, marker
    return m.group(2)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def cli_command() -> str:
    venv = ROOT / ".venv" / "bin" / "nydus-inspect"
    return str(venv) if venv.exists() else f"{shlex.quote(sys.executable)} -m nydus_inspect"


def test_the_walkthrough_runs(vectors, tmp_path):
    script = block_after("<!-- walkthrough:")
    assert script.startswith("N=.venv/bin/nydus-inspect") and "\nV=../shared/vectors/nydus" in script
    script = re.sub(r"^N=\S+", lambda _: f"N={shlex.quote(cli_command())}", script, flags=re.M)
    script = re.sub(r"^V=\S+", lambda _: f"V={shlex.quote(str(VECTORS / 'nydus'))}", script, flags=re.M)
    with_fuse = fuse_problem() is None
    if with_fuse:
        script += block_after("<!-- mount walkthrough:")
    # Whatever fails, leave no mount behind.
    script = (
        'trap \'{ mountpoint -q "$D/mnt" && fusermount3 -u -z "$D/mnt"; } 2>/dev/null || true\' EXIT\n'
        + script
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = proc.stdout
    assert "placeholder (this file: sha256 " in out
    assert "\nhello\n" in out  # cat through the symlink
    assert "no differences" in out
    assert "base.blob, " in out and ": 2 layers; the final image has" in out
    assert "PASS: lowestEfficiency: 1 (limit 0.9)" in out and "FAIL" not in out
    if with_fuse:
        assert 'user.nydus.compressor="zstd"' in out


def test_every_command_and_option_shown_exists():
    commands = subcommands()
    seen = set()
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", README, re.S):
        if lang != "sh":
            continue
        for line in body.splitlines():
            code = line.split("#", 1)[0]
            for m in re.finditer(r"(?:nydus-inspect|\$N)\s+([a-z-]+)(.*)", code):
                name, rest = m.group(1), m.group(2)
                assert name in commands, f"README shows `{name}`, which is no command: {line}"
                seen.add(name)
                known = {o for a in commands[name]._actions for o in a.option_strings}
                for flag in re.findall(r"(?<![\w/.-])(--?[a-zA-Z][\w-]*)", rest):
                    assert flag in known, f"README shows `{name} {flag}`, which it does not take: {line}"
    assert seen == set(commands), f"commands the README never shows: {set(commands) - seen}"


def test_the_plugin_example_passes(pytester):
    pytester.makepyfile(test_readme_example=textwrap.dedent(block_after("<!-- plugin example:")))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "-v", timeout=300)
    if fuse_problem() is None:
        result.assert_outcomes(passed=5)
    else:
        result.assert_outcomes(passed=4, skipped=1)


def test_every_positional_and_json_flag_has_help():
    missing = []
    for name, parser in subcommands().items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if (not action.option_strings or "--json" in action.option_strings) and not action.help:
                missing.append(f"{name} {action.option_strings or action.dest}")
    assert not missing


def test_verify_help_points_at_no_source_file():
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    out = subprocess.run(
        [sys.executable, "-m", "nydus_inspect", "verify", "--help"], capture_output=True, text=True, env=env
    ).stdout
    assert "lowestEfficiency" in out and ".py" not in out
