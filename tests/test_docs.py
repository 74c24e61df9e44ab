"""The documentation: the MkDocs site builds with --strict (no broken link, anchor or include), the
README fits a screen, no page points outside the repository or speaks of how the project was built,
and every `logloop ...` command shown in docs/, README.md and ARCHITECTURE.md exists in the CLI's
parser with the flags it is shown with (and every `benchmarks/*.py` command with flags its script
defines). The commands are read from the Markdown and the parser is walked as built, so a new command
or flag is checked without touching this file."""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.cli.app import build_parser

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150


def doc_files() -> list[Path]:
    return sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md", ROOT / "ARCHITECTURE.md"]


def test_site_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "index.html").is_file()
    # the includes really included: the architecture notes and the dataset's licence notice
    assert "Dependencies point one way" in (tmp_path / "site" / "architecture" / "index.html").read_text()
    assert "LICENSE OF LOGHUB" in (tmp_path / "site" / "loghub-data" / "index.html").read_text()


def test_readme_fits_a_screen_and_its_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == 1 and images[0].endswith(".svg"), images
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"


# Words about how the project was made have no place in its docs, nor paths that climb out of the
# repository (a clone elsewhere would find nothing there).
FORBIDDEN = re.compile(r"\bissues? ?#?\d+|\bno GPU was lent|\bthis turn\b|\bthis task\b|"
                       r"\bmeasured on this task|\bhelpers?\b")
CLIMBING = re.compile(r"(?:\.\./)+[\w.-]+")


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_speak_to_users(path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FORBIDDEN.search(line)
        assert not match, f"{path.relative_to(ROOT)}:{number}: {match.group(0)!r} in: {line.strip()}"
        for climb in CLIMBING.findall(line):
            target = (path.parent / climb).resolve()
            assert target.is_relative_to(ROOT), f"{path.relative_to(ROOT)}:{number}: {climb!r} leaves the repository"


# --- every `logloop ...` command in the docs against the CLI's parser ---------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`([^`]+)`")
# a command starts a segment of a shell line: after a pipe, `&&` or `;`, a prompt and VAR=value words
SEGMENT_SPLIT = re.compile(r"\s\|\s|&&|;")
LEADING = re.compile(r"^(?:\$\s+)?(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*")
COMMAND = re.compile(r"^(?:\S*/)?logloop(?:\s+(?P<args>.*))?$")


def code_snippets(path: Path):
    """(line number, text) for each line of a fenced block (continuation lines joined) and each
    inline code span outside them."""
    in_fence, pending, pending_line = False, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            if not pending:
                pending_line = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield pending_line, pending + line
            pending = ""
        else:
            for span in INLINE_CODE.findall(line.replace("\\|", "|")):
                yield number, span


def shown_commands() -> list[tuple[str, list[str]]]:
    """Every `logloop` invocation shown in the docs: (where, the words after `logloop`)."""
    found = []
    for path in doc_files():
        for number, snippet in code_snippets(path):
            for segment in SEGMENT_SPLIT.split(snippet):
                match = COMMAND.match(LEADING.sub("", segment.strip()))
                if not match or not match.group("args"):
                    continue
                try:
                    words = shlex.split(match.group("args"), comments=True)
                except ValueError:  # an unbalanced quote in an abbreviated example
                    words = match.group("args").split()
                if words:
                    found.append((f"{path.relative_to(ROOT)}:{number}", words))
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def problems(parser: argparse.ArgumentParser, words: list[str], path: tuple[str, ...]) -> tuple[list[str], set]:
    """What in `words` the parser lacks, and the command paths the words reach."""
    subs = subcommands(parser)
    if subs:
        if not words or words[0] in ("-h", "--help", "..."):
            return [], {path}
        out, reached = [], set()
        for name in words[0].split("|"):  # `validate|create|local`: each must exist
            if name not in subs:
                out.append(f"`logloop {' '.join(path + (name,))}`: no such command "
                           f"(commands: {', '.join(sorted(subs))})")
            else:
                more, where = problems(subs[name], words[1:], path + (name,))
                out += more
                reached |= where
        return out, reached
    out = []
    known = options(parser)
    for word in words:
        word = word.strip("[](),")
        if not word.startswith("-") or word == "-" or re.match(r"-\d", word):
            continue
        for flag in word.split("|"):
            flag = flag.split("=", 1)[0]
            if flag.startswith("-") and flag not in known:
                out.append(f"`logloop {' '.join(path)}` has no option {flag} "
                           f"(it has: {', '.join(sorted(known))})")
    return out, {path}


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    subs = subcommands(parser)
    if not subs:
        return {path}
    return set().union(*(leaf_commands(sub, path + (name,)) for name, sub in subs.items()))


SHOWN = shown_commands()


def test_the_docs_show_commands():
    # the extraction itself works: the README and the CLI reference show commands
    places = {where.split(":")[0] for where, _ in SHOWN}
    assert {"README.md", "docs/reference/cli.md"} <= places, places


@pytest.mark.parametrize("where,words", SHOWN, ids=[f"{w}:{' '.join(c[:2])}" for w, c in SHOWN])
def test_documented_command_exists(where, words):
    found, _ = problems(build_parser(), words, ())
    assert not found, f"{where}: " + "; ".join(found)


def test_every_command_is_documented():
    parser = build_parser()
    reached = set()
    for _, words in SHOWN:
        reached |= problems(parser, words, ())[1]
    missing = sorted(" ".join(path) for path in leaf_commands(parser) - reached)
    assert not missing, f"commands no page shows: {missing} (add them to docs/reference/cli.md)"


def test_the_check_catches_what_the_cli_lacks():
    parser = build_parser()
    assert problems(parser, ["score", "--batch", "B", "--artefact", "s3://x"], ())[0]
    assert not problems(parser, ["score", "--artifact", "s3://x", "--format", "json", "F"], ())[0]
    assert problems(parser, ["models", "promte", "B", "1"], ())[0]
    assert problems(parser, ["train", "validate|create|launch", "-f", "F"], ())[0]
    assert not problems(parser, ["push", "--batch", "B", "[--format", "text|json]", "-"], ())[0]


# --- every `benchmarks/NAME.py ...` command in the docs against the script's own options ---------------

BENCHMARK = re.compile(r"(?:^|\s)(?:\S*python3?\s+)?(?P<script>benchmarks/[\w-]+\.py)(?P<args>[^#]*)")


def script_options(script: Path) -> set[str]:
    """The option strings a script's argparse calls define (read from its source, without running it)."""
    out = {"-h", "--help"}
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("-"):
                    out.add(arg.value)
                    if any(getattr(k.value, "attr", "") == "BooleanOptionalAction" for k in node.keywords
                           if k.arg == "action"):
                        out.add("--no-" + arg.value[2:])
    return out


def shown_benchmarks() -> list[tuple[str, str, list[str]]]:
    found = []
    for path in doc_files():
        for number, snippet in code_snippets(path):
            for match in BENCHMARK.finditer(snippet):
                flags = [w.strip("[](),") for w in match.group("args").split()]
                found.append((f"{path.relative_to(ROOT)}:{number}", match.group("script"),
                              [f for f in flags if f.startswith("--")]))
    return found


BENCHMARKS_SHOWN = shown_benchmarks()


def test_documented_benchmarks_exist_with_their_options():
    assert BENCHMARKS_SHOWN, "no benchmark command found in the docs"
    wrong = []
    for where, script, flags in BENCHMARKS_SHOWN:
        if not (ROOT / script).is_file():
            wrong.append(f"{where}: {script} does not exist")
            continue
        known = script_options(ROOT / script)
        wrong += [f"{where}: {script} has no option {flag}"
                  for word in flags for flag in word.split("|") if flag.split("=")[0] not in known]
    assert not wrong, "\n".join(wrong)
