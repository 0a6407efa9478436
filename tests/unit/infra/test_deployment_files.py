"""docker-compose.yml and the Kubernetes manifests, checked without a container runtime (this
machine has a docker client but no daemon): every process `autoops up` starts is a service of
its own, each command is one the CLI takes, and each environment is one the settings accept
in production, with no `AUTOOPS_*` name that no setting reads."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from infra.cli import _parser
from infra.keys import credentials_keys
from infra.settings import PREFIX, Settings, load_settings
from infra.supervisor import PROCESSES

ROOT = Path(__file__).resolve().parents[3]
KNOWN = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
#: What an operator must put in the environment (compose refuses to start without them).
GIVEN = {"AUTOOPS_JWT_SECRET": "j" * 48, "AUTOOPS_CREDENTIALS_KEY": Fernet.generate_key().decode()}
_VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def _interpolate(value: Any) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}` against GIVEN."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if name in GIVEN:
            return GIVEN[name]
        if kind == "?":
            raise AssertionError(f"{name} must be given: {rest}")
        return rest if kind == "-" else ""

    return _VARIABLE.sub(one, str(value))


def _service_of(process: str) -> tuple[str, list[str]]:
    """(compose service, command) of a process of `autoops up` (`runner:browser` …)."""
    name, _, pool = process.partition(":")
    if name == "runner":
        pool = pool or "default"
        return ("runner" if pool == "default" else f"runner-{pool}"), [
            "autoops", "runner", "--pool", pool,
        ]  # fmt: skip
    return name, ["autoops", name]


def _accepted(environment: dict[str, str]) -> Settings:
    unknown = sorted(k for k in environment if k.startswith(PREFIX) and k not in KNOWN)
    assert not unknown, f"no setting reads {unknown}"
    settings = load_settings(environment)
    assert settings.production
    assert credentials_keys(settings)
    return settings


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_every_process_of_autoops_up_is_a_compose_service_the_cli_runs(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for process in PROCESSES:
        name, command = _service_of(process)
        assert name in services, f"{process} has no service"
        assert services[name]["command"] == command
        _parser().parse_args(command[1:])  # exits (SystemExit) on a command it does not know
        for dependency in ("postgres", "redis", "kafka"):
            assert services[name]["depends_on"][dependency] == {"condition": "service_healthy"}
            assert "healthcheck" in services[dependency]


def test_each_compose_service_environment_loads_as_production_settings(
    compose: dict[str, Any],
) -> None:
    for process in PROCESSES:
        name, _ = _service_of(process)
        environment = {
            k: _interpolate(v) for k, v in compose["services"][name]["environment"].items()
        }
        settings = _accepted(environment)
        assert settings.database_url and settings.kafka_bootstrap == "kafka:9092"
        assert settings.redis_url == "redis://redis:6379/0"


def test_compose_runs_apache_kafka_in_kraft_mode_and_lets_autoops_create_topics(
    compose: dict[str, Any],
) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "zookeeper" not in compose["services"]
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # we create them
    declared = set(compose["volumes"])
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in declared, f"volume {source} is not declared"
    stages = re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / "Dockerfile").read_text())
    for service in compose["services"].values():
        target = (
            (service.get("build") or {}).get("target")
            if isinstance(service.get("build"), dict)
            else None
        )
        assert target is None or target in stages, f"no Dockerfile stage {target}"


def test_kubernetes_workloads_run_cli_commands_with_settings_it_accepts() -> None:
    documents = [
        d
        for path in sorted((ROOT / "infra" / "k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]
    config = next(d for d in documents if d["kind"] == "ConfigMap")["data"]
    secrets = {"AUTOOPS_DATABASE_URL": "postgresql://u:p@db:5432/autoops", **GIVEN}
    _accepted({**config, **secrets})
    commands = [
        container["args"]
        for d in documents
        if d["kind"] == "Deployment"
        for container in d["spec"]["template"]["spec"]["containers"]
    ]
    for command in commands:
        assert command[0] == "autoops"
        _parser().parse_args(command[1:])
    for process in PROCESSES:
        assert _service_of(process)[1] in commands, f"no Deployment runs {process}"
