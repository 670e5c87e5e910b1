"""The CLI's commands for who may use what: users (with bulk import), groups with their memberships and grants,
tokens and limits; the same verbs for each (list, show, add, set, remove, enable/disable)."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from modelport.cli.directory_session import ACTOR, add_verb, emit, in_session, read
from modelport.cli.user_import import read_users
from modelport.db import directory, edits, listing, provisioning
from modelport.db.tables import Group, LimitScope, User, utcnow
from modelport.protocol.errors import NotFound
from modelport.settings import CommonSettings

USER_COLUMNS = ("name", "display_name", "admin", "active", "source", "groups")
GROUP_COLUMNS = ("name", "priority", "permissions", "members", "models")
TOKEN_COLUMNS = ("prefix", "name", "user", "state", "expires_at", "last_used_at")
LIMIT_COLUMNS = ("scope", "subject", "requests_per_minute", "tokens_per_minute", "tokens_per_day",
                 "concurrent_requests")


def password_from(args: argparse.Namespace) -> str | None:
    return sys.stdin.readline().rstrip("\n") if args.password_stdin else None


async def user_list(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, lambda s: listing.users(s, args.group)), USER_COLUMNS,
         "No users yet: `modelport user add NAME` or `modelport user import users.csv`.")


async def user_show(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, lambda s: listing.user(s, args.name)))


async def user_add(settings: CommonSettings, args: argparse.Namespace) -> None:
    if args.if_missing and await read(settings, lambda s: directory.exists(s, User, args.name)):
        print(f"user {args.name} exists; left as it is")
        return
    password = password_from(args)
    await in_session(settings, lambda s: directory.add_user(s, ACTOR, args.name, admin=args.admin, password=password,
                                                            display_name=args.display_name, email=args.email))
    print(f"user {args.name} added")


async def user_set(settings: CommonSettings, args: argparse.Namespace) -> None:
    password = password_from(args)
    await in_session(settings, lambda s: edits.set_user(s, ACTOR, args.name, admin=args.admin,
                                                        display_name=args.display_name, email=args.email,
                                                        password=password))
    print(f"user {args.name} changed")


async def user_enable(settings: CommonSettings, args: argparse.Namespace) -> None:
    enabled = args.action == "enable"
    await in_session(settings, lambda s: edits.set_user_enabled(s, ACTOR, args.name, enabled))
    print(f"user {args.name} {'enabled' if enabled else 'disabled (their tokens and sessions stop working)'}")


async def user_remove(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: edits.remove_user(s, ACTOR, args.name))
    print(f"user {args.name} removed (kept for usage history; tokens revoked; `user enable` restores it)")


async def user_join(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: directory.join(s, ACTOR, args.user, args.group))
    print(f"user {args.user} joined {args.group}")


async def user_leave(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: edits.leave(s, ACTOR, args.user, args.group))
    print(f"user {args.user} left {args.group}")


async def user_import(settings: CommonSettings, args: argparse.Namespace) -> None:
    rows = read_users(args.file)
    done: provisioning.Imported = await in_session(settings, lambda s: provisioning.import_users(s, ACTOR, rows))
    print(f"{len(rows)} users: {done.created} added, {done.existing} existed; {done.memberships} memberships added")


async def group_list(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, listing.groups), GROUP_COLUMNS,
         "No groups yet: `modelport group add NAME`, then `modelport group grant NAME LLM`.")


async def group_show(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, lambda s: listing.group(s, args.name)))


async def group_add(settings: CommonSettings, args: argparse.Namespace) -> None:
    if args.if_missing and await read(settings, lambda s: directory.exists(s, Group, args.name)):
        print(f"group {args.name} exists; left as it is")
        return
    await in_session(settings, lambda s: directory.add_group(s, ACTOR, args.name, args.permission, args.priority))
    print(f"group {args.name} added")


async def group_set(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: edits.set_group(s, ACTOR, args.name, permissions=args.permission,
                                                         priority=args.priority, description=args.description))
    print(f"group {args.name} changed")


async def group_remove(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: edits.remove_group(s, ACTOR, args.name))
    print(f"group {args.name} removed (with its memberships, grants, presets and limits)")


async def group_grant(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: directory.grant(s, ACTOR, args.group, args.llm))
    print(f"group {args.group} may use {args.llm}")


async def group_revoke(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: edits.revoke_grant(s, ACTOR, args.group, args.llm))
    print(f"group {args.group} may no longer use {args.llm}")


async def token_list(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, lambda s: listing.tokens(s, args.user)), TOKEN_COLUMNS,
         "No tokens yet: `modelport token create USER --name NAME`.")


async def token_show(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, lambda s: listing.token(s, args.prefix)))


async def token_create(settings: CommonSettings, args: argparse.Namespace) -> None:
    if args.if_missing:
        mine = await read(settings, lambda s: listing.tokens(s, args.user))
        if any(token["name"] == args.name and token["state"] == "active" for token in mine):
            print(f"{args.user} has an active token named '{args.name}'; none created")
            return
    expires = utcnow() + timedelta(days=args.expires_days) if args.expires_days else None
    token = await in_session(settings, lambda s: directory.create_token(s, ACTOR, args.user, name=args.name,
                                                                        expires_at=expires))
    print(f"token {token.prefix}… created for {args.user}; it is shown once:")
    print(token.secret)


async def token_revoke(settings: CommonSettings, args: argparse.Namespace) -> None:
    token = await in_session(settings, lambda s: directory.revoke_token(s, ACTOR, args.prefix))
    print(f"token {token.prefix}… revoked")


async def limit_list(settings: CommonSettings, args: argparse.Namespace) -> None:
    emit(args, await read(settings, listing.limits), LIMIT_COLUMNS,
         "No limits: every token, user and group is unlimited. `modelport limit set group NAME --rpm 60` sets one.")


async def limit_show(settings: CommonSettings, args: argparse.Namespace) -> None:
    found = [limit for limit in await read(settings, listing.limits) if limit["scope"] == args.scope and (
        limit["subject"] == args.name or (args.scope == "token" and str(limit["subject"]).startswith(args.name)))]
    if len(found) != 1:
        raise NotFound(f"No limits are set for {args.scope} '{args.name}' (it is unlimited).")
    emit(args, found[0])


async def limit_set(settings: CommonSettings, args: argparse.Namespace) -> None:
    values = {field: value for field, value in (
        ("requests_per_minute", args.rpm), ("tokens_per_minute", args.tpm), ("tokens_per_day", args.tpd),
        ("concurrent_requests", args.concurrent), ("budget_day", args.budget_day),
        ("budget_month", args.budget_month), ("budget_total", args.budget_total)) if value is not None}
    limit = await in_session(settings, lambda s: directory.set_limits(s, ACTOR, LimitScope(args.scope), args.name,
                                                                      values))
    currency = settings.currency
    print(f"{args.scope} {args.name}: {limit.requests_per_minute} requests/min, {limit.tokens_per_minute} "
          f"tokens/min, {limit.tokens_per_day} tokens/day, {limit.concurrent_requests} concurrent; budgets "
          f"{limit.budget_day:g} {currency}/day, {limit.budget_month:g} {currency}/month, {limit.budget_total:g} "
          f"{currency} in all (0 = unlimited)")


async def limit_remove(settings: CommonSettings, args: argparse.Namespace) -> None:
    await in_session(settings, lambda s: edits.remove_limits(s, ACTOR, LimitScope(args.scope), args.name))
    print(f"{args.scope} {args.name} is unlimited")


def add_user_parsers(commands: Any) -> None:
    user = commands.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    add_verb(user, "list", user_list, "list users", json_flag=True).add_argument("--group",
                                                                                help="members of this group")
    add_verb(user, "show", user_show, "show a user with their groups and tokens", "name", json_flag=True)
    add = add_verb(user, "add", user_add, "create a local user", "name")
    add.add_argument("--admin", action="store_true")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--display-name", default="")
    add.add_argument("--email")
    add.add_argument("--if-missing", action="store_true", help="succeed, changing nothing, when it exists")
    uset = add_verb(user, "set", user_set, "change a user", "name")
    uset.add_argument("--admin", action=argparse.BooleanOptionalAction)
    uset.add_argument("--password-stdin", action="store_true", help="a new password from standard input")
    uset.add_argument("--display-name")
    uset.add_argument("--email")
    add_verb(user, "remove", user_remove, "remove a user (soft: kept for usage history, tokens revoked)", "name")
    add_verb(user, "enable", user_enable, "let a disabled or removed user in again", "name")
    add_verb(user, "disable", user_enable, "stop a user's tokens and sessions", "name")
    add_verb(user, "join", user_join, "add a user to a group", "user", "group")
    add_verb(user, "leave", user_leave, "take a user out of a group", "user", "group")
    add_verb(user, "import", user_import, "create users from a CSV file (columns: name, and optionally display_name, "
          "email, admin, groups separated by ';', password); existing users only gain the listed groups", "file")


def add_group_parsers(commands: Any) -> None:
    group = commands.add_parser("group", help="manage groups").add_subparsers(dest="action", required=True)
    add_verb(group, "list", group_list, "list groups with members and models", json_flag=True)
    add_verb(group, "show", group_show, "show a group", "name", json_flag=True)
    add = add_verb(group, "add", group_add, "create a group", "name")
    add.add_argument("--permission", action="append", default=[], help="a named permission (repeatable)")
    add.add_argument("--priority", type=int, default=0, help="members' requests are served before lower ones")
    add.add_argument("--if-missing", action="store_true", help="succeed, changing nothing, when it exists")
    gset = add_verb(group, "set", group_set, "change a group", "name")
    gset.add_argument("--permission", action="append", help="the group's permissions, all of them (repeatable)")
    gset.add_argument("--priority", type=int)
    gset.add_argument("--description")
    add_verb(group, "remove", group_remove, "delete a group with its memberships, grants and limits", "name")
    add_verb(group, "grant", group_grant, "let a group use an LLM (or an alias)", "group", "llm")
    add_verb(group, "revoke", group_revoke, "stop a group using an LLM (or an alias)", "group", "llm")


def add_token_parsers(commands: Any) -> None:
    token = commands.add_parser("token", help="manage API tokens").add_subparsers(dest="action", required=True)
    add_verb(token, "list", token_list, "list tokens (never their secrets)", json_flag=True).add_argument(
        "--user", help="this user's tokens")
    add_verb(token, "show", token_show, "show the token with this prefix", "prefix", json_flag=True)
    create = add_verb(token, "create", token_create, "create a token; printed once, on the last line", "user")
    create.add_argument("--name", default="")
    create.add_argument("--expires-days", type=float)
    create.add_argument("--if-missing", action="store_true", help="create none when the user has an active token "
                        "of this --name")
    for verb in ("revoke", "remove"):
        add_verb(token, verb, token_revoke, "revoke the token with this prefix", "prefix")


def add_limit_parsers(commands: Any) -> None:
    limit = commands.add_parser("limit", help="rate limits").add_subparsers(dest="action", required=True)
    scopes = [scope.value for scope in LimitScope]
    add_verb(limit, "list", limit_list, "list every limit set", json_flag=True)
    show = add_verb(limit, "show", limit_show, "show the limits of a token, user or group", json_flag=True)
    lset = add_verb(limit, "set", limit_set, "set the limits of a token (by prefix), a user or a group; 0 = unlimited")
    lremove = add_verb(limit, "remove", limit_remove, "lift every limit of a token, user or group")
    for parser in (show, lset, lremove):
        parser.add_argument("scope", choices=scopes)
        parser.add_argument("name")
    lset.add_argument("--rpm", type=int, help="requests per minute")
    lset.add_argument("--tpm", type=int, help="tokens per minute (prompt estimate + max tokens, then settled)")
    lset.add_argument("--tpd", type=int, help="tokens per day (UTC)")
    lset.add_argument("--concurrent", type=int, help="requests in flight at once")
    lset.add_argument("--budget-day", type=float, help="most spent per day (installation time zone, currency)")
    lset.add_argument("--budget-month", type=float, help="most spent per calendar month")
    lset.add_argument("--budget-total", type=float, help="most spent in all (a hard total)")
