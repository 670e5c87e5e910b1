"""The CLI's directory commands: users, groups, grants, LLMs, aliases, presets and tokens, with the change
announced."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from modelport.broker.announcements import announce_change
from modelport.db import directory, queries, serving, virtual_models
from modelport.db.engine import create_engine, session_factory
from modelport.db.tables import LimitScope, PresetVisibility, utcnow
from modelport.protocol.connection import QUEUE_ERRORS
from modelport.protocol.presets import PresetSettings
from modelport.settings import CommonSettings
from modelport.workers.backends.registry import validate_config

log = logging.getLogger(__name__)
ACTOR = "cli"


async def in_session(settings: CommonSettings, action: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
    """Run one directory change and announce it (gateways drop their caches, workers' registrations are
    mirrored)."""
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            result = await action(session)
            registered = await queries.registrations(session)
    finally:
        await engine.dispose()
    try:
        await announce_change(settings.redis_url, registered)
    except QUEUE_ERRORS:
        log.warning("could not reach Redis to announce the change; gateways will see it within their cache TTL")
    return result


async def user_add(settings: CommonSettings, args: argparse.Namespace) -> None:
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    await in_session(settings, lambda s: directory.add_user(s, ACTOR, args.name, admin=args.admin,
                                                            password=password))
    print(f"user {args.name} added")


async def user_join(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: directory.join(s, ACTOR, args.user, args.group))
    print(f"user {args.user} joined {args.group}")


async def group_add(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: directory.add_group(s, ACTOR, args.name, args.permission, args.priority))
    print(f"group {args.name} added")


async def group_grant(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: directory.grant(s, ACTOR, args.group, args.llm))
    print(f"group {args.group} may use {args.llm}")


def llm_config(settings: CommonSettings, args: argparse.Namespace) -> dict[str, Any]:
    """The backend config from the command's flags (and ``--config`` JSON), validated for the backend."""
    config: dict[str, Any] = json.loads(args.config) if args.config else {}
    flags = {"base_url": args.base_url, "upstream_model": args.upstream_model, "api_key_env": args.api_key_env,
             "reply": args.reply, "delay_ms": args.delay_ms, "chunks": args.chunks,
             "concurrency": args.concurrency, "model_path": args.model_path, "n_ctx": args.n_ctx,
             "n_threads": args.n_threads, "n_gpu_layers": args.n_gpu_layers, "extra_params": args.extra_param}
    config.update({key: value for key, value in flags.items() if value is not None})
    return validate_config(args.backend, config, settings.upstream_policy())


async def llm_add(settings: CommonSettings, args: argparse.Namespace) -> None:
    config = llm_config(settings, args)
    await in_session(settings, lambda s: directory.add_llm(s, ACTOR, args.name, args.backend, config,
                                                           max_queue=args.max_queue))
    print(f"llm {args.name} registered ({args.backend})")


async def llm_deploy(settings: CommonSettings, args: argparse.Namespace) -> None:
    config = llm_config(settings, args)
    await in_session(settings, lambda s: serving.add_deployment(s, ACTOR, args.llm, args.name, args.backend,
                                                                  config))
    print(f"llm {args.llm} has a deployment {args.name} ({args.backend}); serve it with "
          f"`modelport worker {args.llm} --deployment {args.name}`")


async def llm_remove(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: serving.remove_llm(s, ACTOR, args.name))
    print(f"llm {args.name} removed (with its grants, aliases and presets)")


async def llm_set(settings: CommonSettings, args: argparse.Namespace) -> None:
    fallbacks = [name.strip() for name in args.fallbacks.split(",") if name.strip()]
    await in_session(settings, lambda s: serving.set_fallbacks(s, ACTOR, args.name, fallbacks))
    print(f"llm {args.name} falls back to {', '.join(fallbacks) or 'nothing'}")


async def llm_alias(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: virtual_models.add_alias(s, ACTOR, args.alias, args.llm))
    print(f"{args.alias} is an alias of {args.llm}")


async def preset_add(settings: CommonSettings, args: argparse.Namespace) -> None:
    preset = PresetSettings.checked({
        "system_prompt": args.system, "before_prompt": args.before_prompt, "after_prompt": args.after_prompt,
        "client_system": not args.no_client_system, "temperature": args.temperature, "top_p": args.top_p,
        "max_tokens": args.max_tokens, "stop": args.stop})
    visibility = (PresetVisibility.GROUP if args.group else
                  PresetVisibility.PRIVATE if args.owner else PresetVisibility.PUBLIC)
    await in_session(settings, lambda s: virtual_models.add_preset(
        s, ACTOR, args.name, args.llm, preset, visibility=visibility, group_name=args.group, owner_name=args.owner,
        description=args.description))
    print(f"preset {args.name} of {args.llm} added ({visibility.value})")


async def preset_remove(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: virtual_models.remove_preset(s, ACTOR, args.name))
    print(f"preset {args.name} removed")


async def token_create(settings: CommonSettings, args: argparse.Namespace) -> None:
    expires = utcnow() + timedelta(days=args.expires_days) if args.expires_days else None
    token = await in_session(settings, lambda s: directory.create_token(s, ACTOR, args.user, name=args.name,
                                                                        expires_at=expires))
    print(f"token {token.prefix}… created for {args.user}; it is shown once:")
    print(token.secret)


async def token_revoke(settings: CommonSettings, args: argparse.Namespace) -> None:
    token = await in_session(settings, lambda s: directory.revoke_token(s, ACTOR, args.prefix))
    print(f"token {token.prefix}… revoked")


async def limit_set(settings: CommonSettings, args: argparse.Namespace) -> None:
    values = {field: value for field, value in (
        ("requests_per_minute", args.rpm), ("tokens_per_minute", args.tpm), ("tokens_per_day", args.tpd),
        ("concurrent_requests", args.concurrent)) if value is not None}
    limit = await in_session(settings, lambda s: directory.set_limits(s, ACTOR, LimitScope(args.scope), args.name,
                                                                      values))
    print(f"{args.scope} {args.name}: {limit.requests_per_minute} requests/min, {limit.tokens_per_minute} "
          f"tokens/min, {limit.tokens_per_day} tokens/day, {limit.concurrent_requests} concurrent (0 = unlimited)")


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that make a backend config (``llm add`` and ``llm deploy``)."""
    parser.add_argument("--backend", required=True)
    parser.add_argument("--config", help="backend config as a JSON object")
    parser.add_argument("--base-url")
    parser.add_argument("--upstream-model")
    parser.add_argument("--api-key-env", help="name of the worker's environment variable holding the key "
                        "(one MODELPORT_UPSTREAM_KEY_ENVS allows)")
    parser.add_argument("--extra-param", action="append", help="openai_compat backend: a request field beyond "
                        "OpenAI's that clients may pass to the upstream (repeatable)")
    parser.add_argument("--model-path", help="llamacpp backend: a GGUF file (default: the bundled Gemma 3 270M)")
    parser.add_argument("--n-ctx", type=int, help="llamacpp backend: context window in tokens")
    parser.add_argument("--n-threads", type=int, help="llamacpp backend: CPU threads")
    parser.add_argument("--n-gpu-layers", type=int, help="llamacpp backend: layers offloaded to the GPU")
    parser.add_argument("--reply", help="fake backend: the reply text")
    parser.add_argument("--delay-ms", type=float, help="fake backend: delay between chunks")
    parser.add_argument("--chunks", type=int, help="fake backend: number of chunks")
    parser.add_argument("--concurrency", type=int, help="jobs one worker runs at once")


def add_directory_parsers(commands: Any) -> None:
    user = commands.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help="create a local user")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(run=user_add)
    joins = user.add_parser("join", help="add a user to a group")
    joins.add_argument("user")
    joins.add_argument("group")
    joins.set_defaults(run=user_join)

    group = commands.add_parser("group", help="manage groups").add_subparsers(dest="action", required=True)
    gadd = group.add_parser("add", help="create a group")
    gadd.add_argument("name")
    gadd.add_argument("--permission", action="append", default=[], help="a named permission (repeatable)")
    gadd.add_argument("--priority", type=int, default=0, help="members' requests are served before lower ones")
    gadd.set_defaults(run=group_add)
    grant = group.add_parser("grant", help="let a group use an LLM")
    grant.add_argument("group")
    grant.add_argument("llm")
    grant.set_defaults(run=group_grant)

    llm = commands.add_parser("llm", help="register models").add_subparsers(dest="action", required=True)
    ladd = llm.add_parser("add", help="register an LLM")
    ladd.add_argument("name")
    add_backend_flags(ladd)
    ladd.add_argument("--max-queue", type=int, default=256, help="outstanding jobs before 429")
    ladd.set_defaults(run=llm_add)
    deploy = llm.add_parser("deploy", help="one more deployment of an LLM (its own backend and config); its "
                            "workers, started with --deployment NAME, take jobs from the LLM's queue")
    deploy.add_argument("llm")
    deploy.add_argument("name")
    add_backend_flags(deploy)
    deploy.set_defaults(run=llm_deploy)
    lremove = llm.add_parser("remove", help="unregister an LLM with its grants, aliases and presets (renaming: "
                             "add the new name, remove the old, alias the old name to the new)")
    lremove.add_argument("name")
    lremove.set_defaults(run=llm_remove)
    lset = llm.add_parser("set", help="change an LLM")
    lset.add_argument("name")
    lset.add_argument("--fallbacks", required=True, help="LLMs tried in order when this one cannot serve a request "
                      "before its first delta (comma-separated; empty: none)")
    lset.set_defaults(run=llm_set)
    alias = llm.add_parser("alias", help="another name for an LLM (grants on the LLM cover it; it may have its own)")
    alias.add_argument("alias")
    alias.add_argument("llm")
    alias.set_defaults(run=llm_alias)

    preset = commands.add_parser("preset", help="presets (Kuwa's bots): an LLM with a system prompt and "
                                 "settings").add_subparsers(dest="action", required=True)
    padd = preset.add_parser("add", help="add a preset; without --owner or --group everyone who may use the LLM "
                             "may use it")
    padd.add_argument("name")
    padd.add_argument("--llm", required=True)
    padd.add_argument("--system", default="", help="system prompt, sent before the client's messages")
    padd.add_argument("--before-prompt", default="", help="text put before the user's last prompt")
    padd.add_argument("--after-prompt", default="", help="text put after the user's last prompt")
    padd.add_argument("--no-client-system", action="store_true", help="refuse requests with system messages")
    padd.add_argument("--temperature", type=float, help="default temperature")
    padd.add_argument("--top-p", type=float, help="default top_p")
    padd.add_argument("--max-tokens", type=int, help="default and most completion tokens a client may ask for")
    padd.add_argument("--stop", action="append", default=[], help="default stop sequence (repeatable)")
    padd.add_argument("--owner", help="the user who manages it; without --group, only they may use it")
    padd.add_argument("--group", help="only this group's members may use it")
    padd.add_argument("--description", default="")
    padd.set_defaults(run=preset_add)
    premove = preset.add_parser("remove", help="remove a preset")
    premove.add_argument("name")
    premove.set_defaults(run=preset_remove)

    token = commands.add_parser("token", help="manage API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="create a token; printed once, on the last line")
    create.add_argument("user")
    create.add_argument("--name", default="")
    create.add_argument("--expires-days", type=float)
    create.set_defaults(run=token_create)
    revoke = token.add_parser("revoke", help="revoke the token with this prefix")
    revoke.add_argument("prefix")
    revoke.set_defaults(run=token_revoke)

    limit = commands.add_parser("limit", help="rate limits").add_subparsers(dest="action", required=True)
    lset = limit.add_parser("set", help="set the limits of a token (by prefix), a user or a group; 0 = unlimited")
    lset.add_argument("scope", choices=[scope.value for scope in LimitScope])
    lset.add_argument("name")
    lset.add_argument("--rpm", type=int, help="requests per minute")
    lset.add_argument("--tpm", type=int, help="tokens per minute (prompt estimate + max tokens, then settled)")
    lset.add_argument("--tpd", type=int, help="tokens per day (UTC)")
    lset.add_argument("--concurrent", type=int, help="requests in flight at once")
    lset.set_defaults(run=limit_set)
