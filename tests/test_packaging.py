"""The production install: the wheel, with the locked runtime dependencies only (no extra,
no dev group), in a virtualenv of its own, serves `uvicorn gateway:app`; the tools' libraries
(moto, PyYAML, locust, httpx) are not there; the wheel carries the data files the code opens.

Built from uv's cache, offline: `make install` has put every locked wheel there (and
setuptools, to build this project), so nothing is downloaded while the tests run."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from harness.gateway.settings import GatewaySettings
from harness.local.emulators import LocalEmulators
from harness.local.emulators import __main__ as emulators_main
from harness.local.processes import run_server
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PROJECT["tool"]["setuptools"]

# What the tools, the suites and the tests need, and production must not carry.
NOT_IN_PRODUCTION = ("moto", "yaml", "locust", "httpx", "pytest", "mypy", "ruff")
# What `uvicorn gateway:app` needs: the project's runtime packages and their libraries.
IN_PRODUCTION = (
    "gateway",
    "harness.gateway",
    "legacy_flask",
    "fastapi_app",
    "shared",
    "flask",
    "flask_cors",
    "gunicorn",
    "boto3",
    "aioboto3",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "pydantic_settings",
    "a2wsgi",
    "structlog",
    "prometheus_client",
)


@dataclass(frozen=True)
class ProductionInstall:
    python: Path
    wheel: Path
    seconds: float


def _uv(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> None:
    """Run uv (the one the dev group installed beside this interpreter), offline."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH")
    }
    environment.update(env or {})
    finished = subprocess.run(
        [sys.executable, "-m", "uv", *args, "--offline", "--quiet"],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, f"uv {' '.join(args)} failed:\n{finished.stderr}"


def _package_dirs() -> list[str]:
    """The top-level packages the wheel is built from (`packages.find.include`)."""
    return [pattern.rstrip("*") for pattern in SETUPTOOLS["packages"]["find"]["include"]]


def _copy_sources(into: Path) -> None:
    # Built from a copy: a build in the work tree would leave build/ behind, whose stale
    # files setuptools would put in the next wheel.
    into.mkdir()
    for name in ["pyproject.toml", PROJECT["project"]["readme"]]:
        shutil.copy2(ROOT / name, into / name)
    for module in SETUPTOOLS["py-modules"]:
        shutil.copy2(ROOT / f"{module}.py", into / f"{module}.py")
    for package in _package_dirs():
        shutil.copytree(
            ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__")
        )


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionInstall]:
    """The wheel built from the work tree, installed with the runtime dependencies from
    uv.lock into a fresh virtualenv on this interpreter (removed afterwards: ~100 MB)."""
    base = tmp_path_factory.mktemp("production")
    started = time.monotonic()
    _copy_sources(base / "src")
    _uv("build", "--wheel", "--out-dir", str(base / "dist"), str(base / "src"), cwd=base)
    (wheel,) = (base / "dist").glob("*.whl")
    venv = base / "venv"
    _uv(
        "sync",
        "--frozen",
        "--no-dev",
        "--no-install-project",
        "--python",
        sys.executable,
        cwd=ROOT,
        env={"UV_PROJECT_ENVIRONMENT": str(venv)},
    )
    python = venv / "bin" / "python"
    _uv("pip", "install", "--no-deps", "--python", str(python), str(wheel), cwd=base)
    yield ProductionInstall(python=python, wheel=wheel, seconds=time.monotonic() - started)
    shutil.rmtree(base, ignore_errors=True)


def test_the_production_install_is_quick_from_the_cache(production: ProductionInstall) -> None:
    # Warm it takes a few seconds; minutes would mean it is not coming from the cache.
    print(f"production install: {production.seconds:.1f} s")
    assert production.seconds < 60, f"the production install took {production.seconds:.0f} s"


def test_the_production_install_has_the_runtime_and_not_the_tools(
    production: ProductionInstall,
) -> None:
    probe = (
        "import importlib, json, sys\n"
        "found = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "        found[name] = 'ok'\n"
        "    except ImportError as error:\n"
        "        found[name] = type(error).__name__ + ': ' + str(error.name)\n"
        "print(json.dumps(found))\n"
    )
    names = [*IN_PRODUCTION, *NOT_IN_PRODUCTION]
    finished = subprocess.run(
        # -I: the installed packages only, not this work tree or a PYTHONPATH.
        [str(production.python), "-I", "-c", probe, *names],
        cwd=production.python.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(finished.stdout)
    assert found == {
        **dict.fromkeys(IN_PRODUCTION, "ok"),
        **{name: f"ModuleNotFoundError: {name}" for name in NOT_IN_PRODUCTION},
    }


def test_the_wheel_carries_the_code_and_the_data_files(production: ProductionInstall) -> None:
    with zipfile.ZipFile(production.wheel) as wheel:
        shipped = set(wheel.namelist())
    expected: set[str] = {f"{module}.py" for module in SETUPTOOLS["py-modules"]}
    for package in _package_dirs():
        expected |= {
            path.relative_to(ROOT).as_posix()
            for path in (ROOT / package).rglob("*.py")
            if "__pycache__" not in path.parts
        }
    data: set[str] = set()
    for package, patterns in SETUPTOOLS["package-data"].items():
        directory = ROOT / package.replace(".", "/")
        for pattern in patterns:
            data |= {
                path.relative_to(ROOT).as_posix()
                for path in directory.glob(pattern)
                if path.is_file()
            }
    # The globs must find what the code opens, or this test would prove nothing about it.
    assert "parity_tests/rules.yaml" in data
    assert any(name.startswith("parity_tests/corpus/") for name in data)
    assert sorted((expected | data) - shipped) == []
    assert not any(name.startswith("tests/") for name in shipped)


@pytest.fixture
def empty_cwd(tmp_path: Path) -> Iterator[Path]:
    # uvicorn puts its --app-dir (the working directory) on sys.path: an empty one, so the
    # gateway can only come from the installed wheel.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    yield cwd


def test_the_production_install_serves_the_gateway(
    production: ProductionInstall, emulators: LocalEmulators, empty_cwd: Path, tmp_path: Path
) -> None:
    argv = [
        str(production.python),
        "-I",
        "-m",
        "uvicorn",
        "gateway:app",
        "--host=127.0.0.1",
        "--port={port}",
        "--http=shared.serving:SnapshotHttpToolsProtocol",  # as the image runs it: the wheel has it
    ]
    env = {**emulators.env(), "LOG_LEVEL": "WARNING", "GATEWAY_OVERRIDE_HEADER": "open"}
    with (
        run_server(
            "gateway",
            argv,
            env=env,
            log_path=tmp_path / "gateway.log",
            ready_path="/health",
            cwd=empty_cwd,
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=30) as client,
    ):
        health = client.get("/health")
        rollout = client.get("/_gateway/rollout")
        chats = {
            backend: client.post(
                "/api/v1/chat",
                json={"message": "hello from production"},
                headers={"X-Dualstack-Backend": backend},
            )
            for backend in ("flask", "fastapi")
        }

    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    assert health.headers["x-dualstack-backend"] in ("flask", "fastapi")
    assert rollout.status_code == 200, rollout.text
    assert set(rollout.json()) >= {"fastapi_percent", "routes", "version"}
    for backend, chat in chats.items():
        assert chat.status_code == 200, chat.text
        assert chat.headers["x-dualstack-backend"] == backend
        assert chat.json()["response"]


# --- the container files (no Docker daemon here: what can be checked without one) -----------


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile as (instruction, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(arguments.split())))
            pending = ""
    return instructions


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Each named stage's instructions."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, arguments in _dockerfile():
        if keyword == "FROM":
            current = stages.setdefault(arguments.split()[-1], [])
        current.append((keyword, arguments))
    return stages


def test_the_dockerfile_copies_what_the_gateway_imports_and_nothing_missing() -> None:
    copied = [
        source
        for keyword, arguments in _dockerfile()
        if keyword == "COPY" and not arguments.startswith("--from=")
        for source in arguments.split()[:-1]
    ]
    assert [source for source in copied if not (ROOT / source).exists()] == []
    defaults = GatewaySettings.model_fields
    needed = {
        "gateway.py",
        "pyproject.toml",
        "uv.lock",
        "harness",  # the gateway itself
        "shared",
        # the default pair, mounted when GATEWAY_FLASK_APP/GATEWAY_FASTAPI_APP are unset
        str(defaults["flask_app"].default).split(".")[0].split(":")[0],
        str(defaults["fastapi_app"].default).split(".")[0].split(":")[0],
    }
    assert needed <= {source.rstrip("/") for source in copied}


def test_the_images_are_production_and_tools() -> None:
    stages = _stages()
    runs = {name: [a for k, a in body if k == "RUN"] for name, body in stages.items()}
    # The runtime image gets its venv from the stage that syncs without the dev group or
    # any extra; the tools image from the one that adds the `tools` extra.
    runtime, tools = stages["runtime"], stages["tools"]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    assert ("COPY", "--from=build-tools /opt/venv /opt/venv") in tools
    syncs = [run for run in runs["build"] if run.startswith("uv sync")]
    assert syncs and all("--no-dev" in run and "--extra" not in run for run in syncs)
    assert any("--extra tools" in run for run in runs["build-tools"])
    cmd = json.loads(dict(runtime)["CMD"])
    assert cmd[:2] == ["uvicorn", "gateway:app"] and "--port=8000" in cmd
    assert "--http=shared.serving:SnapshotHttpToolsProtocol" in cmd  # trailers never become headers
    # The default target (the last stage) is the production one.
    assert list(stages)[-1] == "runtime"


def test_compose_runs_the_gateway_beside_each_stack_and_the_emulators() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    gateway = services["gateway"]
    assert gateway["command"][:2] == ["uvicorn", "gateway:app"]
    assert "--port=8000" in gateway["command"]
    assert "--http=shared.serving:SnapshotHttpToolsProtocol" in gateway["command"]
    assert gateway["ports"] == ["8000:8000"]
    assert gateway["build"]["target"] == "runtime"
    assert gateway["depends_on"] == {"bedrock": {"condition": "service_healthy"}}
    env = gateway["environment"]
    assert env["AWS_ENDPOINT_URL_DYNAMODB"] == "http://dynamodb:8000"
    assert env["AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME"] == "http://bedrock:9100"
    assert env["AWS_ENDPOINT_URL_CLOUDWATCH"] == "http://bedrock:9200"  # FastAPI's metrics

    bedrock = services["bedrock"]
    assert bedrock["build"]["target"] == "tools"
    assert bedrock["command"][:3] == ["python", "-m", "harness.local.emulators"]
    assert "--dynamodb-url=http://dynamodb:8000" in bedrock["command"]
    assert "--bedrock-port=9100" in bedrock["command"]
    assert "--cloudwatch-port=9200" in bedrock["command"]
    assert services["dynamodb"]["image"].startswith("amazon/dynamodb-local")

    # Each stack alone, for comparison, from the production image.
    assert services["flask"]["command"][:2] == ["gunicorn", "legacy_flask:create_app()"]
    assert services["flask"]["ports"] == ["8001:8001"]
    assert services["fastapi"]["command"][:2] == ["uvicorn", "fastapi_app.main:app"]
    assert "--http=shared.serving:SnapshotHttpToolsProtocol" in services["fastapi"]["command"]
    assert services["fastapi"]["ports"] == ["8002:8002"]
    assert {services[name]["build"]["target"] for name in ("flask", "fastapi")} == {"runtime"}
    # Every build target named exists in the Dockerfile.
    targets = {s["build"]["target"] for s in services.values() if "build" in s}
    assert targets <= set(_stages())


def _loads(spec: str) -> object:
    """What a command's `module:attribute` (gunicorn's `()` dropped) names, imported."""
    module, _, attribute = spec.removesuffix("()").partition(":")
    return getattr(importlib.import_module(module), attribute)


def test_compose_runs_a_gateway_upstream_of_the_two_stacks() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    upstream = services["gateway-upstream"]
    assert upstream["build"]["target"] == "runtime"
    assert upstream["command"] == [
        *("uvicorn", "gateway:app", "--host=0.0.0.0", "--port=8003", "--no-access-log"),
        "--http=shared.serving:SnapshotHttpToolsProtocol",
    ]
    assert upstream["ports"] == ["8003:8003"]
    # The apps the commands name exist (`gateway:app` is built on first access: its factory).
    import gateway

    assert callable(gateway.create_gateway)
    assert callable(_loads(services["flask"]["command"][1]))
    assert _loads(services["fastapi"]["command"][1]) is not None

    # Each upstream is the service of that name on the port its own command serves.
    env = upstream["environment"]
    assert env["GATEWAY_FLASK_URL"] == "http://flask:8001"
    assert "--bind=0.0.0.0:8001" in services["flask"]["command"]
    assert env["GATEWAY_FASTAPI_URL"] == "http://fastapi:8002"
    assert "--port=8002" in services["fastapi"]["command"]
    assert env["AWS_ENDPOINT_URL_DYNAMODB"] == "http://dynamodb:8000"
    # Each side's routes, as the stacks serve them: Flask's url_map, FastAPI's docs pages.
    from fastapi_app.main import app as fastapi_app
    from harness.gateway.upstream import parse_routes
    from legacy_flask import create_app

    flask_rules = {rule.rule for rule in create_app().url_map.iter_rules()}
    assert set(parse_routes(env["GATEWAY_FLASK_ROUTES"]) or []) == {
        re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: f"{{{m[2]}:path}}" if m[1] else f"{{{m[2]}}}", r)
        for r in flask_rules
    }
    documented = set(fastapi_app.openapi()["paths"])
    for page in parse_routes(env["GATEWAY_FASTAPI_ROUTES"]) or []:
        assert page not in documented
        assert any(
            getattr(route, "path", None) == page.removesuffix("/{path:path}")
            for route in fastapi_app.routes
        ), page
    # Every variable is a setting.
    for name in env:
        if name.startswith("GATEWAY_"):
            assert name.removeprefix("GATEWAY_").lower() in GatewaySettings.model_fields, name
        else:
            assert name.startswith("AWS_") or name.lower() in Settings.model_fields, name

    # It starts once both stacks answer /health, and each healthcheck asks its own port.
    assert upstream["depends_on"] == {
        name: {"condition": "service_healthy"} for name in ("bedrock", "flask", "fastapi")
    }
    for name, port in (("flask", 8001), ("fastapi", 8002), ("gateway-upstream", 8003)):
        probe = f"urllib.request.urlopen('http://127.0.0.1:{port}/health')"
        assert services[name]["healthcheck"]["test"] == [
            *("CMD", "python", "-c", f"import urllib.request; {probe}")
        ]

    # A state table of its own (two deployments, two rollouts), which the emulators'
    # service creates beside the all-in-one gateway's before it reports healthy.
    default = GatewaySettings.model_fields["state_table"].default
    mounted = services["gateway"]["environment"].get("GATEWAY_STATE_TABLE", default)
    assert env["GATEWAY_STATE_TABLE"] != mounted
    bedrock = services["bedrock"]["command"]
    assert bedrock[:3] == ["python", "-m", "harness.local.emulators"]
    # Compose's ${NAME:-default} read as its default, as docker compose would without NAME.
    argv = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", arg) for arg in bedrock[3:]]
    created = emulators_main._parser().parse_args(argv).gateway_table
    assert sorted(created) == sorted([mounted, env["GATEWAY_STATE_TABLE"]])
