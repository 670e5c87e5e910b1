"""``modelport redis acl``: an ACL file for the shipped Redis/Valkey (``default`` off, an operator account,
the gateways' user and one narrow user per worker model) with fresh random passwords, and the
``MODELPORT_REDIS_URL`` each process is to use."""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from modelport.protocol import acl, keys
from modelport.protocol.errors import InvalidRequest
from modelport.settings import CommonSettings


def redis_url(base: str, user: str, password: str) -> str:
    """``base`` (scheme, host, port, database, query) with these credentials."""
    parts = urlsplit(base)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def write_acl(_settings: CommonSettings, args: argparse.Namespace) -> None:
    for model in args.worker:
        if not keys.MODEL_NAME_PATTERN.match(model):
            raise InvalidRequest(f"'{model}' is not a model name.", param="worker")
    passwords = {model: secrets.token_urlsafe(32) for model in args.worker}
    gateway, admin = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    output = Path(args.output)
    descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(acl.acl_file(gateway, admin, passwords))
    print(f"wrote {output} (passwords stored as SHA-256); each process's MODELPORT_REDIS_URL, shown once:")
    print(f"gateways, admin app, CLI: {redis_url(args.url, acl.GATEWAY_USER, gateway)}")
    for model, password in passwords.items():
        print(f"worker {model}: {redis_url(args.url, acl.worker_user(model), password)}")
    print(f"operator (redis-cli --user {acl.ADMIN_USER}): {admin}")


def add_redis_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    redis = commands.add_parser("redis", help="Redis settings").add_subparsers(dest="action", required=True)
    acl_parser = redis.add_parser("acl", help="write an ACL file with one user for gateways and one per worker model")
    acl_parser.add_argument("--worker", action="append", default=[], metavar="LLM",
                            help="an LLM whose workers get their own user (repeatable)")
    acl_parser.add_argument("--output", default="users.acl", help="the ACL file to write (mode 0600)")
    acl_parser.add_argument("--url", default="redis://127.0.0.1:6379/0",
                            help="the server's address as processes reach it (rediss://… for TLS)")
    acl_parser.set_defaults(run=write_acl)
