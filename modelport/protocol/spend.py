"""Money: an LLM's prices, what a request costs (and may cost at most), amounts as integer micro-units for
Redis, and the budget periods (the day and the calendar month in the installation's time zone)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

PER_TOKENS = 1_000_000  # prices are per million tokens
MICROS = 1_000_000  # Redis counts money in millionths of the currency unit: integers, exact


@dataclass(frozen=True)
class Price:
    """Per million tokens, in the installation's currency."""

    input: float = 0.0
    output: float = 0.0

    @property
    def free(self) -> bool:
        return self.input == 0 and self.output == 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / PER_TOKENS


FREE = Price()


def micros(amount: float) -> int:
    return round(amount * MICROS)


def money(amount_micros: int | float, currency: str) -> str:
    return f"{amount_micros / MICROS:.4f} {currency}"


@dataclass(frozen=True)
class Periods:
    """The budget periods a moment falls in, and when each ends."""

    day: str  # 2026-12-03
    month: str  # 2026-12
    day_ends: datetime
    month_ends: datetime

    def reset_ms(self, now: datetime) -> tuple[int, int]:
        return (round((self.day_ends - now).total_seconds() * 1000),
                round((self.month_ends - now).total_seconds() * 1000))


def periods(now: datetime, zone: ZoneInfo) -> Periods:
    """The day and month of ``now`` in ``zone`` (ending at the next local midnight and first of the month)."""
    local = now.astimezone(zone)
    next_day = datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=zone)
    first = local.date().replace(day=1)
    next_month = (first + timedelta(days=32)).replace(day=1)
    return Periods(day=local.date().isoformat(), month=first.isoformat()[:7], day_ends=next_day,
                   month_ends=datetime.combine(next_month, time(), tzinfo=zone))


def month_span(month: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """When a calendar month (``2026-11``) begins and ends in ``zone``; ValueError for anything else."""
    first = datetime.strptime(month, "%Y-%m").date()
    following = (first + timedelta(days=32)).replace(day=1)
    return datetime.combine(first, time(), tzinfo=zone), datetime.combine(following, time(), tzinfo=zone)


def current_span(period: str, now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The day or month (``period``) that ``now`` falls in, in ``zone``."""
    current = periods(now, zone)
    if period == "day":
        return current.day_ends - timedelta(days=1), current.day_ends
    return month_span(current.month, zone)
