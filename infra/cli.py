"""The `autoops` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from infra.errors import ConfigError, InfraError
from infra.settings import RUNNER_POOLS, get_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoops", description="AutoOps workflow automation")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start everything (embedded services where no URL is set)")
    sub.add_parser("api", help="run the GraphQL/HTTP api")
    sub.add_parser("relay", help="publish the event store to Kafka")
    sub.add_parser("projector", help="fold Kafka events into the read models")
    sub.add_parser("orchestrator", help="move executions forward (decide, time, retry)")
    sub.add_parser("scheduler", help="start executions of cron triggers when they are due")
    runner = sub.add_parser("runner", help="execute the workflow steps of one pool")
    runner.add_argument(
        "--pool",
        default=None,
        choices=RUNNER_POOLS,
        help="pool whose tasks to run (default: AUTOOPS_RUNNER_POOL)",
    )
    runner.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="steps run at once (default: AUTOOPS_RUNNER_CONCURRENCY)",
    )
    replay = sub.add_parser("replay", help="drop and rebuild read models from the event store")
    replay.add_argument(
        "--projection",
        action="append",
        default=[],
        metavar="NAME",
        help="rebuild only this projection (repeatable); default: all",
    )
    sub.add_parser("schemas", help="print the JSON Schema of every public event type")
    sub.add_parser("node-types", help="print the node type reference (docs/node-types.md)")
    user = sub.add_parser("user", help="manage accounts").add_subparsers(
        dest="user_command", required=True
    )
    create = user.add_parser(
        "create", help="create an account (or take an existing one) into a workspace"
    )
    create.add_argument("--email", required=True)
    create.add_argument("--name", default="", help="display name (default: from the email)")
    create.add_argument(
        "--role", required=True, choices=("owner", "admin", "editor", "viewer"), help="its role"
    )
    create.add_argument(
        "--workspace",
        required=True,
        help="a workspace id, or the name of a new workspace (then --role owner)",
    )
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (default: prompt, or generate one)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schemas":  # documentation: no settings, no services
        from command_side.contracts.schemas import EVENT_TYPES, schema_for

        json.dump({t: schema_for(t) for t in EVENT_TYPES}, sys.stdout, indent=2)
        print()
        return 0
    if args.command == "node-types":
        from command_side.workflow.node_reference import reference

        sys.stdout.write(reference())
        return 0
    try:
        settings = get_settings()
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("kafka", "aiokafka", "faust", "mode"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))
        from infra import bootstrap

        if args.command == "up":
            from infra.supervisor import run_up

            return run_up(settings)
        if args.command == "api":
            bootstrap.run_api(settings)
        elif args.command == "relay":
            bootstrap.run_relay(settings)
        elif args.command == "projector":
            bootstrap.run_projector(settings)
        elif args.command == "orchestrator":
            bootstrap.run_orchestrator(settings)
        elif args.command == "scheduler":
            bootstrap.run_scheduler(settings)
        elif args.command == "runner":
            if args.concurrency is not None and args.concurrency <= 0:
                raise ConfigError("--concurrency must be positive")
            bootstrap.run_runner(settings, args.pool, args.concurrency)
        elif args.command == "replay":
            return bootstrap.run_replay(settings, args.projection)
        elif args.command == "user":
            return bootstrap.run_user_create(
                settings, args.email, args.name, args.role, args.workspace, args.password_stdin
            )
    except (ConfigError, InfraError) as exc:
        print(f"autoops: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
