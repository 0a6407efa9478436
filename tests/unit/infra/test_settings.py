from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra.errors import ConfigError
from infra.settings import eventsourcing_env_for, load_settings, settings_env


def test_defaults_are_the_embedded_development_setup() -> None:
    s = load_settings({})
    assert (s.env, s.api_port, s.database_url, s.kafka_bootstrap) == (
        "development",
        8000,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTOOPS_API_PORT", "eighty"),
        ("AUTOOPS_API_PORT", "0"),
        ("AUTOOPS_ENV", "staging"),
        ("AUTOOPS_GRAPHIQL", "maybe"),
        ("AUTOOPS_DATABASE_URL", "mysql://x"),
        ("AUTOOPS_KAFKA_PARTITIONS", "-1"),
        ("AUTOOPS_KAFKA_FETCH_MAX_WAIT_MS", "-1"),
        ("AUTOOPS_KAFKA_IDLE_FETCH_MAX_WAIT_MS", "0"),
        ("AUTOOPS_KAFKA_IDLE_FETCH_MAX_WAIT_MS", "60000"),
        ("AUTOOPS_KAFKA_IDLE_AFTER_S", "0"),
        ("AUTOOPS_BACKGROUND_NICE", "-1"),
        ("AUTOOPS_BACKGROUND_NICE", "20"),
        ("AUTOOPS_BACKGROUND_NICE", "low"),
        ("AUTOOPS_API_PORT", "70000"),
        ("AUTOOPS_DATABASE_URL", "postgresql://h:abc/db"),
        ("AUTOOPS_DATABASE_URL", "postgresql://h:99999/db"),
        ("AUTOOPS_DATABASE_URL", "postgresql://[::1/db"),
        ("AUTOOPS_LOG_LEVEL", "VERBOSE"),
        ("AUTOOPS_LOG_LEVEL", ""),
        ("AUTOOPS_STEP_TIMEOUT_S", "nan"),
        ("AUTOOPS_STEP_HEARTBEAT_TIMEOUT_S", "nan"),
        ("AUTOOPS_SCHEDULER_INTERVAL_S", "inf"),
        ("AUTOOPS_PRESENCE_TIMEOUT_S", "1e400"),
        ("AUTOOPS_RELAY_POLL_INTERVAL_S", "0"),
        ("AUTOOPS_RELAY_POLL_INTERVAL_S", "-5"),
        ("AUTOOPS_READ_WAIT_TIMEOUT_S", "-1"),
        ("AUTOOPS_RUNNER_SHUTDOWN_GRACE_S", "-100"),
        ("AUTOOPS_KAFKA_GROUP_TIMEOUT_MS", "0"),
        ("AUTOOPS_KAFKA_GROUP_TIMEOUT_MS", "200"),
        ("AUTOOPS_KAFKA_GROUP_TIMEOUT_MS", "400000"),
        ("AUTOOPS_KAFKA_FETCH_MAX_WAIT_MS", "40000"),
        ("AUTOOPS_RUNNER_POOL", "defualt"),
        ("AUTOOPS_REDIS_URL", "http://x"),
        ("AUTOOPS_REDIS_URL", "redis://h:port/0"),
        ("AUTOOPS_KAFKA_BOOTSTRAP", "host:abc"),
        ("AUTOOPS_KAFKA_BOOTSTRAP", "host:"),
        ("AUTOOPS_LLM_BASE_URL", "nonsense"),
        ("AUTOOPS_DATA_DIR", ""),
        ("AUTOOPS_CREDENTIALS_KEY", "notakey"),
        ("AUTOOPS_CREDENTIALS_KEY", " , "),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    assert name in str(info.value) or "database URL" in str(info.value)


def test_a_kafka_host_alone_and_no_read_wait_are_allowed() -> None:
    settings = load_settings(
        {"AUTOOPS_KAFKA_BOOTSTRAP": "kafka,b:9093", "AUTOOPS_READ_WAIT_TIMEOUT_S": "0"}
    )
    assert settings.read_wait_timeout_s == 0


def test_an_empty_optional_path_is_unset_not_the_working_directory() -> None:
    assert load_settings({"AUTOOPS_ARTIFACT_DIR": ""}).artifact_dir is None


def test_a_fetch_wait_of_zero_is_allowed() -> None:
    assert load_settings({"AUTOOPS_KAFKA_FETCH_MAX_WAIT_MS": "0"}).kafka_fetch_max_wait_ms == 0


@pytest.mark.parametrize("value", ["0", "19"])
def test_background_niceness_takes_the_range_linux_has(value: str) -> None:
    assert load_settings({"AUTOOPS_BACKGROUND_NICE": value}).background_nice == int(value)


def test_production_refuses_to_start_without_real_services() -> None:
    with pytest.raises(ConfigError, match="AUTOOPS_DATABASE_URL"):
        load_settings({"AUTOOPS_ENV": "production"})


def test_settings_round_trip_through_the_environment() -> None:
    s = load_settings({"AUTOOPS_REDIS_URL": "redis://h:1/0", "AUTOOPS_GRAPHIQL": "false"})
    assert load_settings(settings_env(s)) == s


def test_socket_urls_of_embedded_postgres_translate_for_eventsourcing() -> None:
    env = eventsourcing_env_for("postgresql://postgres:@/autoops?host=/tmp/pg")
    assert (env["POSTGRES_HOST"], env["POSTGRES_DBNAME"], env["POSTGRES_USER"]) == (
        "/tmp/pg",
        "autoops",
        "postgres",
    )


def test_the_cli_reports_bad_configuration_clearly() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", "relay"],
        capture_output=True,
        text=True,
        env={"AUTOOPS_API_PORT": "x", "PATH": ""},
        check=False,
    )
    assert result.returncode == 2
    assert "AUTOOPS_API_PORT" in result.stderr
    alone = subprocess.run(
        [sys.executable, "-m", "infra.cli", "relay"],
        capture_output=True,
        text=True,
        env={"PATH": ""},
        check=False,
    )
    assert alone.returncode == 2 and "AUTOOPS_DATABASE_URL" in alone.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {
                "AUTOOPS_ENV": "production",
                "AUTOOPS_DATABASE_URL": "postgresql://h/db",
                "AUTOOPS_KAFKA_BOOTSTRAP": "k:9092",
                "AUTOOPS_REDIS_URL": "redis://r",
            },
            "AUTOOPS_JWT_SECRET",
        ),
        ({"AUTOOPS_JWT_SECRET": "short"}, "at least 32 bytes"),
        ({"AUTOOPS_JWT_ALGORITHM": "RS256"}, "AUTOOPS_JWT_PRIVATE_KEY_FILE"),
        ({"AUTOOPS_JWT_ALGORITHM": "none"}, "AUTOOPS_JWT_ALGORITHM"),
        ({"AUTOOPS_BCRYPT_COST": "3"}, "AUTOOPS_BCRYPT_COST"),
        (
            {"AUTOOPS_STEP_HEARTBEAT_TIMEOUT_S": "1", "AUTOOPS_STEP_HEARTBEAT_INTERVAL_S": "2"},
            "AUTOOPS_STEP_HEARTBEAT_TIMEOUT_S",
        ),
    ],
)
def test_insecure_token_settings_refuse_to_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_the_default_password_hash_cost_is_at_least_12() -> None:
    assert load_settings({}).bcrypt_cost >= 12


def test_production_hides_the_schema_unless_told_otherwise() -> None:
    base = {
        "AUTOOPS_ENV": "production",
        "AUTOOPS_DATABASE_URL": "postgresql://h/db",
        "AUTOOPS_KAFKA_BOOTSTRAP": "k:9092",
        "AUTOOPS_REDIS_URL": "redis://r",
        "AUTOOPS_JWT_SECRET": "x" * 40,
        "AUTOOPS_CREDENTIALS_KEY": "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg=",
    }
    hidden = load_settings(base)
    assert (hidden.graphiql, hidden.introspection) == (False, False)
    shown = load_settings({**base, "AUTOOPS_INTROSPECTION": "true"})
    assert shown.introspection is True
    assert load_settings({}).introspection is True  # development shows it


def test_credentials_need_a_configured_key_in_production_only(tmp_path: Path) -> None:
    from infra.keys import credentials_keys

    production = load_settings(
        {
            "AUTOOPS_ENV": "production",
            "AUTOOPS_DATABASE_URL": "postgresql://h/db",
            "AUTOOPS_KAFKA_BOOTSTRAP": "k:9092",
            "AUTOOPS_REDIS_URL": "redis://r",
            "AUTOOPS_JWT_SECRET": "x" * 40,
        }
    )  # the relay or orchestrator never see a secret: they start without it
    with pytest.raises(ConfigError, match="AUTOOPS_CREDENTIALS_KEY"):
        credentials_keys(production)
    development = load_settings({"AUTOOPS_DATA_DIR": str(tmp_path)})
    assert credentials_keys(development) == credentials_keys(development)  # generated once
    with pytest.raises(ConfigError, match="Fernet"):
        credentials_keys(load_settings({"AUTOOPS_CREDENTIALS_KEY": "not-a-key"}))
