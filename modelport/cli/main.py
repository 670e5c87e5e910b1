"""The ``modelport`` command: one entry point, a subcommand per job (db, user, group, llm, token,
gateway, worker, up)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from modelport.cli.directory_commands import add_directory_parsers
from modelport.cli.redis_acl import add_redis_parsers
from modelport.cli.up import run_up
from modelport.db.migrate import upgrade
from modelport.gateway.settings import GatewaySettings
from modelport.logs import configure_logging
from modelport.protocol.errors import ModelPortError
from modelport.protocol.registrations import NotRegistered
from modelport.settings import CommonSettings
from modelport.workers.settings import WorkerSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelport", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="apply all migrations").set_defaults(run=None, sync=db_upgrade)
    add_directory_parsers(commands)
    add_redis_parsers(commands)
    gateway = commands.add_parser("gateway", help="serve the OpenAI-compatible API")
    gateway.add_argument("--host")
    gateway.add_argument("--port", type=int)
    gateway.add_argument("--workers", type=int, help="gateway processes sharing the port")
    gateway.set_defaults(run=None, sync=serve_gateway)
    worker = commands.add_parser("worker", help="serve one registered LLM from the queue")
    worker.add_argument("llm")
    worker.set_defaults(run=None, sync=serve_worker)
    admin = commands.add_parser("admin", help="serve the admin app (users, groups, models, tokens, usage)")
    admin.add_argument("--host")
    admin.add_argument("--port", type=int)
    admin.set_defaults(run=None, sync=serve_admin)
    up = commands.add_parser("up", help="everything on embedded defaults, for a first try")
    up.add_argument("--port", type=int, default=8000, help="the API's port")
    up.add_argument("--admin-port", type=int, default=8100, help="the admin app's port")
    up.set_defaults(run=None, sync=lambda args: run_up(args.port, args.admin_port))
    return parser


def db_upgrade(_args: argparse.Namespace) -> None:
    upgrade(CommonSettings().database_url)
    print("database schema is up to date")


def serve_gateway(args: argparse.Namespace) -> None:
    import os
    import tempfile

    import uvicorn

    overrides = {key: value for key, value in (("host", args.host), ("port", args.port), ("workers", args.workers))
                 if value is not None}
    settings = GatewaySettings(**overrides)
    if settings.workers > 1:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="modelport-metrics-"))
    uvicorn.run("modelport.gateway.app:app_from_environment", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, loop="uvloop", http="httptools", log_level=settings.log_level.lower(),
                access_log=False, proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips,
                timeout_graceful_shutdown=10)


def serve_admin(args: argparse.Namespace) -> None:
    import uvicorn

    from modelport.admin.app import create_admin_app
    from modelport.admin.settings import AdminSettings

    overrides = {key: value for key, value in (("admin_host", args.host), ("admin_port", args.port))
                 if value is not None}
    settings = AdminSettings(**overrides)
    uvicorn.run(create_admin_app(settings), host=settings.admin_host, port=settings.admin_port, loop="uvloop",
                http="httptools", log_level=settings.log_level.lower(), proxy_headers=True)


def serve_worker(args: argparse.Namespace) -> None:
    import uvloop

    from modelport.workers.launch import run_worker

    uvloop.run(run_worker(WorkerSettings(), args.llm))


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(CommonSettings().log_level)
    try:
        if args.run is not None:
            asyncio.run(args.run(CommonSettings(), args))
        else:
            args.sync(args)
    except ModelPortError as exc:
        print(f"modelport: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except NotRegistered as exc:
        print(f"modelport: {exc}", file=sys.stderr)
        sys.exit(1)
    except json.JSONDecodeError as exc:
        print(f"modelport: --config is not valid JSON: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
