"""The CI recipes in ci/ (GitHub Actions, GitLab CI): each parses, has its jobs, uploads its
reports whatever the outcome, and runs only commands that exist: every `make X` is a target
of the Makefile, every `python -m parity_tests|load_test ...`, written in the recipe or run
by a make target, is accepted by the tool's own command line. A recipe copied into another
repository fails there, far from this one, so a renamed target or option must fail here."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from load_test.__main__ import build_parser as build_load_test_parser
from parity_tests import cli as parity_cli

ROOT = Path(__file__).resolve().parents[1]
GITHUB = ROOT / "ci" / "github-actions.yml"
GITLAB = ROOT / "ci" / "gitlab-ci.yml"
RECIPES = (GITHUB, GITLAB)

# Values standing in for the shell variables a recipe passes on (URLs the team sets); a
# recipe using a variable not listed here fails, as its arguments could not be checked.
SAMPLE_VALUES = {
    "STAGING_FLASK_URL": "https://flask.staging.example",
    "STAGING_FASTAPI_URL": "https://fastapi.staging.example",
}
# The jobs of each recipe, and the report folders each one's commands write (directly or
# through make): the whole shape a team copies.
REPORTS = {
    "parity": ["reports/parity"],
    "gate": ["reports/gate"],
    "parity-staging": ["reports/parity-staging"],
}
OPERATORS = {"&&", "||", ";", "|", "&"}
GITLAB_KEYWORDS = {
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
}
TOOLS = ("parity_tests", "load_test")


@dataclass(frozen=True)
class Invocation:
    """`python -m <module> <args>`, as a recipe or a make target runs it."""

    module: str
    args: tuple[str, ...]


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: not a mapping"
    return data


def makefile_targets() -> set[str]:
    """The rules' target names (`name: prerequisites`), not variables (`NAME := value`)."""
    targets: set[str] = set()
    rule = re.compile(r"^([A-Za-z0-9_.-][A-Za-z0-9_. -]*?)\s*:(?!=)")
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        match = rule.match(line)
        if match:
            targets.update(match.group(1).split())
    return targets - {".PHONY"}


def simple_commands(script: str) -> Iterator[list[str]]:
    """Each simple command of a shell script, as argv: lines (with `\\` continuations
    joined) split at `&&`, `||`, `;`, `|`, leading `VAR=value` and `sudo` dropped."""
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token not in OPERATORS:
                command.append(token)
                continue
            while command and (command[0] == "sudo" or re.match(r"^\w+=", command[0])):
                command.pop(0)
            if command:
                yield command
            command = []


def invocation(argv: list[str]) -> Invocation | None:
    """`python -m module args` (any python, venv or not), else None."""
    if not re.fullmatch(r"python(3(\.\d+)?)?", Path(argv[0]).name) or "-m" not in argv:
        return None
    at = argv.index("-m")
    return Invocation(argv[at + 1], tuple(argv[at + 2 :]))


def make_targets(argv: list[str]) -> list[str]:
    """The targets of a `make` command line (not its options nor VAR=value)."""
    if argv[0] != "make":
        return []
    return [word for word in argv[1:] if not word.startswith("-") and "=" not in word]


def make_dry_run(target: str) -> tuple[list[list[str]], str | None]:
    """What `make target` would run (`make -n`: printed, not run), and make's complaint
    when it cannot say (no such target)."""
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return [], done.stderr.strip() or f"exit {done.returncode}"
    return list(simple_commands(done.stdout)), None


def jobs_of(path: Path) -> dict[str, list[str]]:
    """Each job's shell scripts, in order."""
    data = load(path)
    if path == GITHUB:
        return {
            name: [step["run"] for step in job["steps"] if "run" in step]
            for name, job in data["jobs"].items()
        }
    default = data.get("default", {})
    scripts: dict[str, list[str]] = {}
    for name, job in data.items():
        if name in GITLAB_KEYWORDS or name.startswith("."):
            continue
        parts = (
            job.get("before_script", default.get("before_script", [])),
            job["script"],
            job.get("after_script", default.get("after_script", [])),
        )
        scripts[name] = [line for part in parts for line in part]
    return scripts


def commands_of(path: Path) -> dict[str, list[list[str]]]:
    return {
        name: [argv for script in scripts for argv in simple_commands(script)]
        for name, scripts in jobs_of(path).items()
    }


def substituted(args: tuple[str, ...]) -> list[str]:
    """The arguments with each `$NAME` / `${NAME}` replaced by its sample value."""
    values = []
    for arg in args:
        match = re.fullmatch(r"\$\{?(\w+)\}?", arg)
        if match:
            assert match.group(1) in SAMPLE_VALUES, f"no sample value for {arg}: add one"
            values.append(SAMPLE_VALUES[match.group(1)])
        else:
            assert "$" not in arg, f"a variable inside an argument: {arg!r}"
            values.append(arg)
    return values


def refusal(call: Invocation) -> str | None:
    """Why the tool's own command line refuses `call`, or None when it accepts it.
    parity_tests: its whole `main` with --list, which checks the options, their pairing,
    the -k expressions, the rules and the corpus, and stops before reaching any stack.
    load_test: its argparse parser."""
    args = substituted(call.args)
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            if call.module == "parity_tests":
                status = parity_cli.main([*args, "--list"])
            elif call.module == "load_test":
                build_load_test_parser().parse_args(args)
                status = 0
            else:
                return f"no command line known for -m {call.module}"
        except SystemExit as error:
            status = error.code if isinstance(error.code, int) else 2
    return None if status == 0 else f"exit {status}: {stderr.getvalue().strip()}"


def invocations_of(commands: list[list[str]]) -> tuple[list[Invocation], dict[str, str]]:
    """The tools' invocations a job runs, written in it or run by its make targets; and the
    make targets make could not expand, with make's reason."""
    found, unknown = [], {}
    for argv in commands:
        direct = invocation(argv)
        if direct is not None:
            found.append(direct)
        for target in make_targets(argv):
            expanded, complaint = make_dry_run(target)
            if complaint is not None:
                unknown[f"make {target}"] = complaint
            for call in map(invocation, expanded):
                if call is not None and call.module in TOOLS:
                    found.append(call)
    return found, unknown


def report_dirs(calls: list[Invocation]) -> list[str]:
    return sorted(
        call.args[call.args.index("--report") + 1].rstrip("/")
        for call in calls
        if "--report" in call.args
    )


def covered(folder: str, paths: list[str]) -> bool:
    return any(
        folder == path.rstrip("/") or folder.startswith(path.rstrip("/") + "/") for path in paths
    )


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_every_make_target_is_defined(recipe: Path) -> None:
    targets = makefile_targets()
    used = [
        target
        for commands in commands_of(recipe).values()
        for argv in commands
        for target in make_targets(argv)
    ]
    assert [target for target in used if target not in targets] == []
    assert {"install", "parity", "gate"} - set(used) == set()


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_every_tool_invocation_is_accepted(recipe: Path) -> None:
    calls: list[Invocation] = []
    refused: dict[str, str] = {}
    for commands in commands_of(recipe).values():
        found, unknown = invocations_of(commands)
        calls += found
        refused |= unknown
    for call in calls:
        why = refusal(call)
        if why is not None:
            refused[f"-m {call.module} {shlex.join(call.args)}"] = why
    assert refused == {}
    assert {call.module for call in calls} == set(TOOLS)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_each_job_writes_its_reports(recipe: Path) -> None:
    written, unknown = {}, {}
    for name, commands in commands_of(recipe).items():
        calls, unknown[name] = invocations_of(commands)
        written[name] = report_dirs(calls)
    assert (written, unknown) == (REPORTS, {name: {} for name in REPORTS})


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_no_failure_is_swallowed(recipe: Path) -> None:
    # `cmd || true` or `cmd; true` would keep a failing suite or gate from failing the job.
    for name, commands in commands_of(recipe).items():
        scripts = " ".join(jobs_of(recipe)[name])
        assert "||" not in scripts, name
        assert [argv for argv in commands if argv[0] in {"true", ":", "exit"}] == [], name


def test_github_workflow() -> None:
    data = load(GITHUB)
    # YAML 1.1 reads the key `on` as True.
    triggers: Mapping[str, Any] = data[True]
    assert set(triggers) == {"push", "pull_request", "workflow_dispatch"}
    assert set(triggers["workflow_dispatch"]["inputs"]) == {"flask_url", "fastapi_url"}
    jobs = data["jobs"]
    assert set(jobs) == set(REPORTS)
    assert jobs["parity-staging"]["if"] == "github.event_name == 'workflow_dispatch'"
    for name, job in jobs.items():
        assert "continue-on-error" not in job, name
        steps = job["steps"]
        assert all("continue-on-error" not in step for step in steps), name
        # Inputs reach the shell through env, never pasted into the script by ${{ }}.
        assert [step["run"] for step in steps if "${{" in step.get("run", "")] == [], name
        uploads = [
            step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@")
        ]
        assert [step["if"] for step in uploads] == ["always()"], name
        assert steps[-1] is uploads[0], f"{name}: the upload comes after every command"
        paths = uploads[0]["with"]["path"].split()
        assert [folder for folder in REPORTS[name] if not covered(folder, paths)] == [], name
    staging_env = jobs["parity-staging"]["env"]
    assert set(staging_env) == set(SAMPLE_VALUES)


def test_gitlab_pipeline() -> None:
    data = load(GITLAB)
    jobs = {name: job for name, job in data.items() if name not in GITLAB_KEYWORDS}
    assert set(jobs) == set(REPORTS)
    assert data["stages"] == ["test"]
    assert set(data["variables"]) == set(SAMPLE_VALUES)
    for name, job in jobs.items():
        assert job["stage"] in data["stages"], name
        artifacts = job["artifacts"]
        assert artifacts["when"] == "always", name
        assert [folder for folder in REPORTS[name] if not covered(folder, artifacts["paths"])] == []
        junit = artifacts["reports"]["junit"]
        assert [str(Path(junit).parent)] == REPORTS[name], name
    assert "allow_failure" not in jobs["parity"]
    assert "allow_failure" not in jobs["gate"]
    # Only when both URLs are set; by itself when started by hand, else a play button.
    rules = jobs["parity-staging"]["rules"]
    assert [rule.get("when", "on_success") for rule in rules] == ["on_success", "manual"]
    assert all(
        rule["if"].startswith("$STAGING_FLASK_URL && $STAGING_FASTAPI_URL") for rule in rules
    )
