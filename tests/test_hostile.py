"""Every command on every hostile case (tests/hostile.py), under a timeout and RLIMIT_AS of 512 MiB: exit 0, 1
or 2, a one-line error when it fails, never exit 3 (an internal error), never a traceback, never a hang.

A tar case is packed first; when pack takes it, every command that reads a layer runs on the result. The
corrupted compressed inputs are many: pack and diff run on a fixed sample of them here (every flip of the
sample is packed in-process by test_compressed_input.py). Crafted layers run the commands that read them.
The FUSE mount joins this list with the crafted-layer families of the mount's own items.
"""

from __future__ import annotations

import subprocess

import hostile
import pytest

TIMEOUT = 120

#: Commands on a layer that pack made from a case (or a crafted layer): ``{layer}``, ``{src}``, ``{out}``
#: are filled in; ``{file}`` is a regular file of the layer when there is one.
LAYER_COMMANDS = {
    "info": ["info", "{layer}"],
    "toc": ["toc", "{layer}"],
    "ls": ["ls", "-R", "-l", "{layer}"],
    "cat": ["cat", "{layer}", "{file}"],
    "chunks": ["chunks", "{layer}"],
    "unpack-tar": ["unpack", "-q", "{layer}", "-o", "{out}/unpacked.tar"],
    "unpack-stdout": ["unpack", "-q", "{layer}", "-o", "-"],
    "unpack-dir": ["unpack", "-q", "{layer}", "--to-dir", "{out}/dir"],
    "diff": ["diff", "{src}", "{layer}"],
    "verify": ["verify", "-q", "{layer}"],
    "verify-source": ["verify", "-q", "{layer}", "--source", "{src}"],
    "cache-file": ["cache-file", "{layer}", "-o", "{out}/cache"],
    "merge": ["merge", "{layer}", "-o", "{out}/merged.boot"],
}
#: What a crafted bootstrap (no blob, no source tar) is given to.
CRAFTED_COMMANDS = ("ls", "verify", "unpack-tar", "unpack-stdout", "unpack-dir", "merge")


#: Commands that still fail on a family, with why: each is an open item, with a strict xfail test of its own
#: that turns red when it is fixed, so that it moves back into the run (none today).
DEFERRED: dict[str, dict[str, str]] = {}


def _corrupt_sample() -> list[hostile.Case]:
    cases = list(hostile.corrupted_compressed())
    return [c for i, c in enumerate(cases) if i % 16 == 0 or "cut" in c.name]


CASES = [
    *_corrupt_sample(),
    *[c for name, make in hostile.TAR_FAMILIES.items() if name != "corrupt-compressed" for c in make()],
    *hostile.cases(hostile.LAYER_FAMILIES),
]


def _check(what: str, proc: subprocess.CompletedProcess) -> str | None:
    """None when ``proc`` ended as a command may end on hostile input; else what is wrong."""
    err = proc.stderr.decode("utf-8", "replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if "Traceback" in err:
        return f"{what}: traceback: {err[-500:]}"
    if proc.returncode not in (0, 1, 2):
        return f"{what}: exit {proc.returncode}: {err[-300:]}"
    if proc.returncode == 2:
        errors = [ln for ln in lines if ln.startswith("nydus-inspect: error: ")]
        if len(errors) != 1 or errors[0] != lines[-1] or "internal error" in errors[0]:
            return f"{what}: not one error line: {err[-300:]}"
    return None


def _run(what: str, args: list, problems: list[str], **kw) -> subprocess.CompletedProcess | None:
    try:
        proc = hostile.run_limited(*args, timeout=TIMEOUT, **kw)
    except subprocess.TimeoutExpired:
        problems.append(f"{what}: no answer in {TIMEOUT} s")
        return None
    problem = _check(what, proc)
    if problem:
        problems.append(problem)
    return proc


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_command_ends_cleanly(tmp_path, case):
    src = tmp_path / f"input{case.suffix}"
    case.write(src)
    out = tmp_path / "out"
    out.mkdir()
    problems: list[str] = []
    if case.kind == "tar":
        layer = tmp_path / "layer.blob"
        proc = _run("pack", ["pack", "-q", src, "-o", layer], problems)
        if proc is not None and case.pack != "either":
            want = 0 if case.pack == "accept" else 2
            if proc.returncode != want:
                problems.append(f"pack: exit {proc.returncode}, expected {want}")
        packed = proc is not None and proc.returncode == 0
        commands = list(LAYER_COMMANDS) if packed and case.family != "corrupt-compressed" else []
        if case.family == "corrupt-compressed" and packed:
            commands = ["diff"]
    else:
        layer = src
        commands = list(CRAFTED_COMMANDS)
    commands = [c for c in commands if c not in DEFERRED.get(case.family, {})]
    file = "/"
    if commands and "cat" in commands:
        listing = hostile.run_limited("ls", "-R", layer, stdout=subprocess.PIPE, timeout=TIMEOUT)
        names = [ln for ln in listing.stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
        file = next((n for n in reversed(names) if not n.endswith("/")), "/")
    for name in commands:
        args = [
            a.format(layer=layer, src=src, out=out, file=file) if isinstance(a, str) else a
            for a in LAYER_COMMANDS[name]
        ]
        _run(name, args, problems)
        for leftover in ("unpacked.tar", "cache"):
            (out / leftover).unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(out / "dir")], check=True)
    assert not problems, f"{case.id}:\n" + "\n".join(problems)


def test_every_family_has_cases():
    for name, make in {**hostile.TAR_FAMILIES, **hostile.LAYER_FAMILIES}.items():
        assert list(make()), name


def test_the_generator_is_deterministic(tmp_path):
    for case in [*_corrupt_sample()[:5], *hostile.nul_names(), *hostile.crafted_fields()]:
        a, b = tmp_path / "a", tmp_path / "b"
        case.write(a)
        case.write(b)
        assert a.read_bytes() == b.read_bytes(), case.id
