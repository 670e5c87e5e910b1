"""The Redis ACL users ModelPort's processes connect as, derived from the key names in ``keys``.

- ``modelport`` (gateways, admin app, CLI): every ModelPort key and channel, the data commands they use,
  nothing dangerous (no CONFIG, KEYS, FLUSH*, ACL, MONITOR, DEBUG, ...).
- ``worker-MODEL`` (one per LLM): its own model's keys; LLM registrations and cancel flags read-only;
  gateway inboxes write-only (it publishes events there); the announcement and cancel channels; only the
  commands a worker issues (scripts included: Redis checks the commands they call too).
- ``default`` is switched off; ``admin`` is the operator's own account, with every right.
"""

from __future__ import annotations

import hashlib

from modelport.protocol import keys

GATEWAY_USER = "modelport"
ADMIN_USER = "admin"

# What a cluster client asks a node when it starts and after a failover: the slots' owners, and the key
# positions of commands (read-only; on a single node they are allowed and unused).
CLUSTER_TOPOLOGY = ("+cluster|slots", "+cluster|shards", "+command")
GATEWAY_RULES = (
    f"~{keys.PREFIX}:*", f"&{keys.PREFIX}:*",
    "-@all", "+@read", "+@write", "+@stream", "+@pubsub", "+@connection", "+@transaction",
    "+eval", "+evalsha", "+script|load", "+script|exists", "+time", "-@dangerous", *CLUSTER_TOPOLOGY,
)
WORKER_COMMANDS = (
    "+ping", "+select", "+hello", "+client|setname", "+client|id", "+time",
    "+eval", "+evalsha", "+script|load", "+subscribe", "+unsubscribe",
    "+xreadgroup", "+xclaim", "+xautoclaim", "+xpending", "+xack", "+xdel", "+xadd", "+xlen",
    "+xgroup|create", "+xgroup|delconsumer", "+xinfo|consumers",
    "+hset", "+hdel", "+hget", "+hexists", "+exists",
    "+zadd", "+zrem", "+zpopmin", "+zrangebylex", "+zrangebyscore", "+zremrangebyscore", "+zcard", "+pexpire",
    "+incr", "+decr", *CLUSTER_TOPOLOGY,
)


def worker_user(model: str) -> str:
    return f"worker-{model}"


def worker_rules(model: str) -> tuple[str, ...]:
    """What a worker of ``model`` may touch (model names hold no glob characters: see MODEL_NAME_PATTERN)."""
    return (f"~{keys.of_model(model)}", f"%R~{keys.REGISTRATIONS}", f"%R~{keys.cancelled('*')}",
            f"%W~{keys.inbox('*')}", f"&{keys.CANCEL_CHANNEL}", f"&{keys.INVALIDATE_CHANNEL}",
            "-@all", *WORKER_COMMANDS)


def user_line(name: str, password: str, rules: tuple[str, ...]) -> str:
    """One line of an ACL file; the password is stored as its SHA-256, never in clear."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return " ".join(("user", name, "on", f"#{digest}", "resetkeys", "resetchannels", *rules))


def setuser_args(password: str, rules: tuple[str, ...]) -> list[str]:
    """The same user as arguments of ``ACL SETUSER NAME ...`` (for a running server)."""
    return ["reset", "on", f">{password}", *rules]


def acl_file(gateway_password: str, admin_password: str, workers: dict[str, str], *,
             default_may_ping: bool = False) -> str:
    """A whole ACL file: ``default`` off (or allowed PING alone, for a readiness probe without credentials),
    the operator's admin, the gateways' user and one user per worker."""
    default = "on nopass -@all +ping" if default_may_ping else "off -@all"
    lines = [f"user default {default} resetkeys resetchannels",
             user_line(ADMIN_USER, admin_password, ("~*", "&*", "+@all")),
             user_line(GATEWAY_USER, gateway_password, GATEWAY_RULES)]
    lines += [user_line(worker_user(model), password, worker_rules(model)) for model, password in workers.items()]
    return "\n".join(lines) + "\n"
