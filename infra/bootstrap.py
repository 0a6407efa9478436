"""One bootstrap per process: builds each process from settings with real adapters."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from typing import Any

from infra.errors import ConfigError
from infra.settings import Settings, eventsourcing_env_for

log = logging.getLogger(__name__)


def require(settings: Settings, *names: str) -> None:
    missing = [f"AUTOOPS_{n.upper()}" for n in names if getattr(settings, n) is None]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} must be set to run this process alone "
            "(or use `autoops up`, which starts embedded services)"
        )


def step_back(settings: Settings) -> None:
    """Lower this process's CPU priority by `AUTOOPS_BACKGROUND_NICE` (a process may always
    lower its own): for the catch-up consumers, which batch and catch up. Call it before any
    thread starts: on Linux niceness is per thread, and only threads made later inherit it."""
    if settings.background_nice:
        try:
            os.nice(settings.background_nice)
        except OSError as exc:  # e.g. a sandbox that forbids it: run at the usual priority
            log.warning("could not lower this process's priority: %s", exc)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _: Any) -> None:
        log.info("received signal %d; stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def run_relay(settings: Settings) -> None:
    """One relay per context with an event store, each on its own thread."""
    from command_side.contracts.log import STORES
    from command_side.execution.dispatch import runner_messages
    from command_side.relay import Relay, RelayConfig
    from infra.heartbeat import Heartbeat

    require(settings, "database_url", "kafka_bootstrap", "redis_url")
    assert settings.database_url and settings.kafka_bootstrap and settings.redis_url
    env = eventsourcing_env_for(settings.database_url)
    step_back(settings)
    stop = stop_on_signals()
    heartbeat = Heartbeat(settings.redis_url, "relay")
    stores = [store_class(env=env) for store_class in STORES.values()]
    threads = []
    for context, store in zip(STORES, stores, strict=True):
        relay = Relay(
            store,
            RelayConfig(
                context=context,
                database_url=settings.database_url,
                bootstrap=settings.kafka_bootstrap,
                partitions=settings.kafka_partitions,
                batch_size=settings.relay_batch_size,
                poll_interval_s=settings.relay_poll_interval_s,
            ),
            heartbeat=heartbeat,
            route=runner_messages if context == "execution" else None,
        )
        threads.append(threading.Thread(target=_until_failure, args=(relay, stop), name=context))
    gc.freeze()  # start-up objects live forever: spare them the collector's full passes
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    if _failed.is_set():
        raise SystemExit(70)


_failed = threading.Event()


def _until_failure(relay: Any, stop: threading.Event) -> None:
    """Run one relay; if it fails, stop the others too so the process restarts whole."""
    try:
        relay.run(stop)
    except BaseException:
        log.exception("relay failed; stopping the process")
        _failed.set()
        stop.set()


def projector_config(settings: Settings) -> Any:
    from projections.projector import ProjectorConfig

    require(settings, "database_url", "kafka_bootstrap", "redis_url")
    assert settings.database_url and settings.kafka_bootstrap and settings.redis_url
    return ProjectorConfig(
        database_url=settings.database_url,
        eventsourcing_env=eventsourcing_env_for(settings.database_url),
        bootstrap=settings.kafka_bootstrap,
        redis_url=settings.redis_url,
        partitions=settings.kafka_partitions,
        batch_size=settings.projector_batch_size,
        batch_window_s=settings.projector_batch_window_ms / 1000,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        idle_fetch_max_wait_ms=settings.kafka_idle_fetch_max_wait_ms,
        idle_after_s=settings.kafka_idle_after_s,
        group_timeout_ms=settings.kafka_group_timeout_ms,
        data_dir=str(settings.data_dir),
    )


def run_projector(settings: Settings) -> None:
    from projections.projector import Projector

    config = projector_config(settings)
    step_back(settings)
    Projector(config).run()


def orchestrator_config(settings: Settings) -> Any:
    from command_side.execution.orchestrator import OrchestratorConfig

    require(settings, "database_url", "kafka_bootstrap")
    assert settings.database_url and settings.kafka_bootstrap
    return OrchestratorConfig(
        database_url=settings.database_url,
        eventsourcing_env=eventsourcing_env_for(settings.database_url),
        bootstrap=settings.kafka_bootstrap,
        partitions=settings.kafka_partitions,
        artifact_root=str(settings.artifact_dir or settings.data_dir / "artifacts"),
        artifact_s3_url=settings.artifact_s3_url,
        artifact_s3_endpoint=settings.artifact_s3_endpoint,
        heartbeat_interval_s=settings.step_heartbeat_interval_s,
        heartbeat_timeout_s=settings.step_heartbeat_timeout_s,
        queue_timeout_s=settings.step_queue_timeout_s,
        step_timeout_s=settings.step_timeout_s,
        output_inline_limit=settings.output_inline_limit,
        batch_size=settings.orchestrator_batch_size,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        idle_fetch_max_wait_ms=settings.kafka_idle_fetch_max_wait_ms,
        idle_after_s=settings.kafka_idle_after_s,
        group_timeout_ms=settings.kafka_group_timeout_ms,
    )


def run_orchestrator(settings: Settings) -> None:
    """`autoops orchestrator`: one instance per process; run several to share partitions."""
    from command_side.execution.orchestrator import Orchestrator
    from infra.heartbeat import Heartbeat

    config = orchestrator_config(settings)
    heartbeat = Heartbeat(settings.redis_url, "orchestrator") if settings.redis_url else None
    gc.freeze()
    Orchestrator(config, heartbeat=heartbeat).run(stop_on_signals())


def run_scheduler(settings: Settings) -> None:
    """`autoops scheduler`: starts cron-triggered executions (any number may run)."""
    from command_side.execution.scheduler import Scheduler
    from infra.heartbeat import Heartbeat

    require(settings, "database_url")
    assert settings.database_url
    Scheduler(
        eventsourcing_env_for(settings.database_url),
        interval_s=settings.scheduler_interval_s,
        catch_up_s=settings.scheduler_catch_up_s,
        heartbeat=(
            Heartbeat(settings.redis_url, "scheduler", every_s=settings.scheduler_interval_s)
            if settings.redis_url
            else None
        ),
    ).run(stop_on_signals())


def run_runner(settings: Settings, pool: str | None, concurrency: int | None) -> None:
    """`autoops runner`: executes the steps of one pool until SIGTERM/SIGINT."""
    import os

    from runners.worker import Runner, StuckSteps

    require(settings, "kafka_bootstrap")
    runner = Runner(settings, pool, concurrency)
    log.info("runner %s serves pool %s", runner.runner_id, runner.pool)
    try:
        runner.run(stop_on_signals())
    except StuckSteps as exc:
        # Results are sent and the group left; threads stuck in steps would keep the
        # process alive, so it ends here and the supervisor starts a fresh runner.
        log.error("runner: %s; restarting", exc)
        logging.shutdown()
        os._exit(70)
    if runner.busy:
        # Their tasks were handed back; waiting for steps that ignore cancellation would
        # keep the process alive past its grace period.
        log.warning("runner: %d cancelled steps did not return; exiting anyway", runner.busy)
        logging.shutdown()
        os._exit(0)


#: How long a thread may hold the GIL before a waiting one gets it, in the api process.
API_SWITCH_INTERVAL_S = 0.0005


def run_api(settings: Settings) -> None:
    import uvicorn

    from web.app import create_app
    from web.websocket import CoalescingWebSocketProtocol

    require(settings, "database_url", "redis_url")
    # The command writer and the event tails are threads beside a busy event loop: with the
    # default 5 ms switch interval each of their wake-ups waited up to 5 ms for the GIL
    # (measured: command-bus p50 17 → 6-9 ms under the collaboration load at 0.5 ms).
    sys.setswitchinterval(API_SWITCH_INTERVAL_S)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        ws=CoalescingWebSocketProtocol,  # uvicorn's websockets-sansio, writes coalesced
        ws_per_message_deflate=False,  # events are small: compressing them costs CPU, not bytes
        # The heartbeat over every subscription connection: a ping each third of the presence
        # timeout, and a peer that has not answered a third later is gone. Its subscriptions
        # end, so an editor whose network died leaves presence within the timeout.
        ws_ping_interval=settings.presence_timeout_s / 3,
        ws_ping_timeout=settings.presence_timeout_s / 3,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


def run_replay(settings: Settings, projections: list[str]) -> int:
    from projections.replay import replay

    require(settings, "database_url")
    assert settings.database_url
    return replay(settings.database_url, eventsourcing_env_for(settings.database_url), projections)


def run_user_create(
    settings: Settings, email: str, name: str, role: str, workspace: str, password_stdin: bool
) -> int:
    """`autoops user create`: for operators (sign-up may be closed)."""
    import getpass
    import secrets
    import sys

    from command_side.errors import CommandError
    from command_side.identity import IdentityService, IdentityStore

    require(settings, "database_url")
    assert settings.database_url
    generated = False
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password (empty: generate one): ")
        generated = not password
    else:
        generated = True
    if generated:
        password = secrets.token_urlsafe(18)
    service = IdentityService(
        IdentityStore(env=eventsourcing_env_for(settings.database_url)),
        bcrypt_cost=settings.bcrypt_cost,
        refresh_ttl_s=settings.refresh_token_ttl_s,
    )
    try:
        user_id, workspace_id, created = service.create_user(email, password, name, workspace, role)
    except CommandError as exc:
        print(f"autoops: {exc.message}", file=sys.stderr)
        return 2
    finally:
        service.close()
    print(f"user {user_id} is {role} of workspace {workspace_id}")
    if generated and created:
        print(f"generated password (shown once): {password}")
    elif not created:
        print("the account existed already: its password is unchanged")
    return 0
