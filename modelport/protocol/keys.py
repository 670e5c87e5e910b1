"""Every Redis key and channel name ModelPort uses.

Keys of one model share the hash tag ``{model}``, so each Lua script and each command touches one
cluster slot; a gateway's inbox is a single key of its own.
"""

from __future__ import annotations

import re

PREFIX = "mp"
WORKER_GROUP = "workers"
INVALIDATE_CHANNEL = f"{PREFIX}:invalidate"
CANCEL_CHANNEL = f"{PREFIX}:cancel"
REGISTRATIONS = f"{PREFIX}:registrations"  # hash: LLM name -> its registration (JSON), for workers
GATEWAYS = f"{PREFIX}:gateways"  # sorted set: gateway process id -> its last heartbeat (Redis server ms)
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


def stored_response(response_id: str) -> str:
    """A stored Responses API response with its conversation and owner (JSON), expiring on its own."""
    return f"{PREFIX}:response:{response_id}"


def jobs(model: str) -> str:
    """Stream of the model's outstanding jobs (queued and running), read by its workers' group."""
    return f"{PREFIX}:{{{model}}}:jobs"


def of_model(model: str) -> str:
    """Glob matching every key of one model (for its worker's Redis ACL user)."""
    return f"{PREFIX}:{{{model}}}:*"


def workers(model: str) -> str:
    """Sorted set of the model's live workers, scored by heartbeat expiry (Redis server ms)."""
    return f"{PREFIX}:{{{model}}}:workers"


def heartbeats(model: str) -> str:
    """Hash of the model's live workers' last heartbeats (Redis server ms), for status views."""
    return f"{PREFIX}:{{{model}}}:heartbeats"


def free_slots(model: str) -> str:
    """Hash of the model's workers' free slots as each said when it last asked for jobs (0 while it takes none):
    SUBMIT sends a job straight to the stream while that holds fewer undelivered jobs than live workers take."""
    return f"{PREFIX}:{{{model}}}:free-slots"


def waiting_since(model: str) -> str:
    """Sorted set of the jobs waiting in the model's fair queue, scored by when they began waiting (server ms)."""
    return f"{PREFIX}:{{{model}}}:waiting-since"


def fair_queue(model: str) -> list[str]:
    """The model's fair-queue keys: rotation, waiting jobs, job bodies, turn counter, waiting count."""
    return [f"{PREFIX}:{{{model}}}:{part}" for part in ("rotation", "waiting-jobs", "bodies", "turn", "waiting")]


def user_jobs(model: str, user_id: int) -> str:
    """Sorted set of one user's unfinished jobs of the model (their share of its queue), scored by the expiry
    of their lease (see scripts.HOLD)."""
    return f"{PREFIX}:{{{model}}}:user:{user_id}"


def group_jobs(model: str, group_id: int) -> str:
    """Sorted set of one group's unfinished jobs of the model (the group's share of its queue), as user_jobs."""
    return f"{PREFIX}:{{{model}}}:group:{group_id}"


def started(model: str) -> str:
    """Hash of the model's job ids whose first delta has been published (never re-run)."""
    return f"{PREFIX}:{{{model}}}:started"


def inbox(gateway_id: str) -> str:
    """Stream of events for every job one gateway process submitted."""
    return f"{PREFIX}:inbox:{gateway_id}"


def cancelled(job_id: str) -> str:
    """Flag set when a job is cancelled, for a worker that claims it later."""
    return f"{PREFIX}:cancelled:{job_id}"


def limit_keys(subject: str) -> list[str]:
    """One limited subject's request window, token window, day counter, running set and spend (one slot)."""
    return [f"{PREFIX}:{{lim:{subject}}}:{part}" for part in ("requests", "tokens", "day", "running", "spend")]


def in_flight(user_id: int) -> str:
    """Sorted set of a user's unfinished job ids, for aborting them all, scored by lease expiry (scripts.HOLD)."""
    return f"{PREFIX}:{{user:{user_id}}}:in-flight"


def login_failures(subject: str) -> str:
    """Count of recent failed admin logins for a user name or a client address."""
    return f"{PREFIX}:login-failures:{subject}"
