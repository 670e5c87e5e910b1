"""The ``modelport`` command: one entry point, a subcommand per job (db, user, group, llm, preset, token, limit,
status, usage, redis, gateway, worker, admin, up)."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from modelport.admin.settings import AdminSettings
from modelport.cli.account_commands import add_group_parsers, add_limit_parsers, add_token_parsers, add_user_parsers
from modelport.cli.model_commands import add_llm_parsers, add_preset_parsers
from modelport.cli.redis_acl import add_redis_parsers
from modelport.cli.status_command import add_status_parser
from modelport.cli.up import run_up
from modelport.cli.usage_command import add_usage_parser
from modelport.db.migrate import upgrade
from modelport.gateway.settings import GatewaySettings
from modelport.logs import configure_logging
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.errors import ModelPortError
from modelport.protocol.registrations import NotRegistered
from modelport.settings import CommonSettings
from modelport.workers.settings import WorkerSettings


def build_parser() -> argparse.ArgumentParser:
    """Each subcommand names its handler (``run``, called with the settings and the arguments, awaited when
    it is a coroutine function), its settings class and the arguments that override settings fields (their
    ``dest`` is the field's name)."""
    parser = argparse.ArgumentParser(prog="modelport", description=__doc__)
    parser.set_defaults(settings=CommonSettings, overrides=())
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply all migrations").set_defaults(run=db_upgrade)
    for add_parsers in (add_user_parsers, add_group_parsers, add_llm_parsers, add_preset_parsers, add_token_parsers,
                        add_limit_parsers, add_status_parser, add_usage_parser):
        add_parsers(commands)
    add_redis_parsers(commands)
    gateway = commands.add_parser("gateway", help="serve the OpenAI-compatible API")
    gateway.add_argument("--host")
    gateway.add_argument("--port", type=int)
    gateway.add_argument("--workers", type=int, help="gateway processes sharing the port")
    gateway.set_defaults(run=serve_gateway, settings=GatewaySettings, overrides=("host", "port", "workers"))
    worker = commands.add_parser("worker", help="serve one registered LLM from the queue")
    worker.add_argument("llm")
    worker.add_argument("--deployment", default="default", help="which of the LLM's deployments to serve")
    worker.set_defaults(run=serve_worker, settings=WorkerSettings)
    admin = commands.add_parser("admin", help="serve the admin app (users, groups, models, tokens, usage)")
    admin.add_argument("--host", dest="admin_host")
    admin.add_argument("--port", dest="admin_port", type=int)
    admin.set_defaults(run=serve_admin, settings=AdminSettings, overrides=("admin_host", "admin_port"))
    up = commands.add_parser("up", help="everything on embedded defaults, for a first try")
    up.add_argument("--port", type=int, default=8000, help="the API's port")
    up.add_argument("--admin-port", type=int, default=8100, help="the admin app's port")
    loudness = up.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", dest="output", action="store_const", const="quiet",
                          help="print nothing but the banner")
    loudness.add_argument("--verbose", dest="output", action="store_const", const="verbose",
                          help="show every process's log on the terminal too")
    up.set_defaults(output="normal", run=lambda settings, args: run_up(settings, args.port, args.admin_port,
                                                                       args.output))
    return parser


def db_upgrade(settings: CommonSettings, _args: argparse.Namespace) -> None:
    upgrade(settings.database_url)
    print("database schema is up to date")


def serve_gateway(settings: GatewaySettings, _args: argparse.Namespace) -> None:
    import os
    import tempfile

    import uvicorn

    if settings.workers > 1:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="modelport-metrics-"))
    uvicorn.run("modelport.gateway.app:app_from_environment", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, loop="uvloop", http="httptools", log_level=settings.log_level.lower(),
                access_log=False, proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips,
                timeout_graceful_shutdown=round(settings.gateway_drain_s))


def serve_admin(settings: AdminSettings, _args: argparse.Namespace) -> None:
    import uvicorn

    from modelport.admin.app import create_admin_app

    uvicorn.run(create_admin_app(settings), host=settings.admin_host, port=settings.admin_port, loop="uvloop",
                http="httptools", log_level=settings.log_level.lower(), proxy_headers=True)


def serve_worker(settings: WorkerSettings, args: argparse.Namespace) -> None:
    import uvloop

    from modelport.workers.launch import run_worker

    uvloop.run(run_worker(settings, args.llm, args.deployment))


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = args.settings(**{field: getattr(args, field) for field in args.overrides
                                    if getattr(args, field) is not None})
    except ValidationError as exc:
        print(f"modelport: invalid settings: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level)
    try:
        if inspect.iscoroutinefunction(args.run):
            asyncio.run(args.run(settings, args))
        else:
            args.run(settings, args)
    except ModelPortError as exc:
        print(f"modelport: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except NotRegistered as exc:
        print(f"modelport: {exc}", file=sys.stderr)
        sys.exit(1)
    except SQLAlchemyError as exc:
        print(f"modelport: the database refused or could not be reached: {str(exc).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    except QUEUE_ERRORS as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"modelport: Redis (or the network) failed: {reason}", file=sys.stderr)
        sys.exit(1)
    except json.JSONDecodeError as exc:
        print(f"modelport: --config is not valid JSON: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
