"""dynalite on loopback: a second, independent DynamoDB, run by Node beside moto's.

dynalite (npm, DynamoDB's wire protocol over an in-memory LevelDB) shares no code with moto,
so session code that behaves the same on both leans on neither one's quirks; it also costs
about a third of moto's CPU a request, which lifts the load test's store ceiling.

- `install()` puts the version pinned by ``node/package-lock.json`` (dynalite 4.0.0 and
  every dependency, by hash) into the project's cache folder with ``npm ci``: once, on
  demand, never globally. `installed()` finds it without installing (tests never download).
- `DynaliteServer` runs ``node node/serve-dynalite.js`` as a child process in a process
  group of its own (`ServerProcess`): it binds a free loopback port itself and prints it,
  and `stop()` ends that group only.
- dynalite has no ``UpdateTimeToLive``: `create_table()` leaves TTL off there and
  ``ttl_enabled`` says so (the stacks ignore expired records themselves).

    python -m harness.local.emulators.dynalite install   # prints the package folder
    python -m harness.local.emulators.dynalite check     # exit 0 when Node can run it
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.local.emulators.dynamodb import DynamoDB
from harness.local.processes import ServerProcess

__all__ = [
    "CHOICES",
    "VERSION",
    "DynaliteServer",
    "cache_root",
    "choose_store",
    "install",
    "installed",
    "node_missing",
]

VERSION = "4.0.0"
NODE_DIR = Path(__file__).with_name("node")
"""package.json and package-lock.json (the pinned tree) and serve-dynalite.js."""
_SERVE = NODE_DIR / "serve-dynalite.js"
_MIN_NODE = 20  # dynalite 4's `engines`
CACHE_ENV = "DUALSTACK_CACHE_DIR"
_DONE = ".installed"


def cache_root() -> Path:
    """The project's cache folder: ``$DUALSTACK_CACHE_DIR``, else ``.cache`` at the root of
    the checkout (beside pyproject.toml), else ``~/.cache/dualstack`` for an installed copy."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".cache"
    return Path.home() / ".cache" / "dualstack"


def _install_dir(root: Path) -> Path:
    # Named by the lock's hash: a changed pin is a new folder, never a half-updated one.
    digest = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()[:12]
    return root / f"dynalite-{VERSION}-{digest}"


def node_missing() -> str | None:
    """Why Node cannot run dynalite here (no ``node``/``npm`` on PATH, or Node older than
    20), or None when it can."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are not both on PATH"
    try:
        version = subprocess.run(  # noqa: S603 - node from PATH, a fixed argument
            [node, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return "node --version failed"
    if major < _MIN_NODE:
        return f"dynalite {VERSION} needs Node {_MIN_NODE} or later, found {version}"
    return None


def installed(root: Path | None = None) -> Path | None:
    """The installed dynalite package folder (the one ``require()`` takes), or None."""
    folder = _install_dir(root or cache_root())
    return folder / "node_modules" / "dynalite" if (folder / _DONE).is_file() else None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    # Two runs installing at once (two venvs' test passes, say) take turns.
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".dynalite.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def install(root: Path | None = None) -> Path:
    """Install the pinned dynalite into the cache folder unless it is there; returns the
    package folder. ``npm ci --ignore-scripts``: exactly the locked tree, no install
    scripts (the one native part, classic-level, ships prebuilt binaries). RuntimeError,
    with npm's own words, when Node is missing or npm fails."""
    root = root or cache_root()
    found = installed(root)
    if found is not None:
        return found
    missing = node_missing()
    if missing is not None:
        raise RuntimeError(f"cannot install dynalite: {missing}")
    with _locked(root):
        found = installed(root)  # another run may have finished meanwhile
        if found is not None:
            return found
        folder = _install_dir(root)
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted earlier attempt
        folder.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(NODE_DIR / name, folder / name)
        npm = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        done = subprocess.run(  # noqa: S603 - a fixed command line
            npm, cwd=folder, capture_output=True, text=True, check=False, timeout=600
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"npm ci (dynalite {VERSION}) failed in {folder}:\n{done.stderr.strip()}"
            )
        package = json.loads((folder / "node_modules" / "dynalite" / "package.json").read_text())
        if package.get("version") != VERSION:
            raise RuntimeError(f"npm installed dynalite {package.get('version')}, not {VERSION}")
        (folder / _DONE).write_text(VERSION + "\n")
    found = installed(root)
    assert found is not None
    return found


CHOICES = ("auto", "moto", "dynalite")
"""What the command lines' ``--dynamodb`` takes: ``auto`` is dynalite where Node is."""


def choose_store(choice: str) -> tuple[str, str]:
    """The store to start for ``--dynamodb choice``, and for ``auto`` a line saying why
    ("" for an explicit choice). ``dynalite`` is installed on demand (RuntimeError when it
    cannot be); ``auto`` takes dynalite when Node can run it and the install succeeds, and
    moto otherwise."""
    if choice in ("moto", "dynalite"):
        if choice == "dynalite":
            install()
        return choice, ""
    if choice != "auto":
        raise ValueError(f"unknown DynamoDB {choice!r}: expected one of {', '.join(CHOICES)}")
    missing = node_missing()
    if missing is not None:
        return "moto", f"moto, as dynalite needs Node: {missing}"
    try:
        install()
    except RuntimeError as error:
        return "moto", f"moto, as dynalite could not be installed: {error}"
    return "dynalite", f"dynalite {VERSION}, as Node is present"


class DynaliteServer(DynamoDB):
    """dynalite on ``host:port`` (0: a free port, bound by the server itself), in memory,
    in a Node process of its own; ``start()``, ``create_table()``, ``stop()``, or as a
    context manager. Its output goes to ``log_path`` (else a temporary file, removed at
    ``stop()``); ``process`` is its `ServerProcess` (its CPU, its group) while it runs.

    It must be installed already (`install()`): starting never downloads anything."""

    kind = "dynalite"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_path: Path | None = None,
        package: Path | None = None,
    ) -> None:
        super().__init__()
        self._host = host
        self._port = port
        self._log_path = log_path
        self._package = package
        self._temporary_log: Path | None = None
        self.process: ServerProcess | None = None

    def start(self) -> str:
        """Start Node; returns the url once dynalite listens. RuntimeError when dynalite is
        not installed or does not start (with its output's tail)."""
        if self.process is not None:
            raise RuntimeError("dynalite already started")
        package = self._package or installed()
        if package is None:
            raise RuntimeError(
                f"dynalite {VERSION} is not installed in {cache_root()}: run "
                "`python -m harness.local.emulators.dynalite install` (make does it when "
                "Node is present)"
            )
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("cannot start dynalite: node is not on PATH")
        log_path = self._log_path
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="dynalite-", suffix=".log")
            os.close(handle)
            log_path = self._temporary_log = Path(name)
        process = ServerProcess(
            "dynalite",
            (node, str(_SERVE), str(package), self._host, str(self._port)),
            env={},
            log_path=log_path,
            stdout=subprocess.PIPE,
            host=self._host,
            port=self._port,
        )
        self.process = process
        try:
            exports = process.read_exports("AWS_ENDPOINT_URL_DYNAMODB", timeout_s=30)
        except BaseException:
            self.stop()
            raise
        self._url = exports["AWS_ENDPOINT_URL_DYNAMODB"]
        return self._url

    def stop(self) -> None:
        """Stop the Node process's group (only it) and remove a temporary log."""
        process, self.process = self.process, None
        if process is not None:
            process.stop()
        log, self._temporary_log = self._temporary_log, None
        if log is not None:
            log.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``install``: install (if needed) and print the package folder; ``check``: exit 0
    when Node can run dynalite here, 1 (saying why) when it cannot."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["install"]:
        try:
            print(install())
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    if args == ["check"]:
        missing = node_missing()
        if missing is not None:
            print(f"dynalite cannot run here: {missing}", file=sys.stderr)
            return 1
        return 0
    print("usage: python -m harness.local.emulators.dynalite install|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
