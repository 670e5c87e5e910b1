"""``modelport usage report``: a month's requests, tokens and cost per group, user and model (the chargeback
lines), as a table or CSV."""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, datetime
from typing import Any

from modelport.cli.directory_session import add_verb, print_table, read
from modelport.db import spend_reads
from modelport.protocol.errors import InvalidRequest
from modelport.protocol.spend import month_span, periods
from modelport.settings import CommonSettings


async def report(settings: CommonSettings, args: argparse.Namespace) -> None:
    zone = settings.zone()
    month = args.month or periods(datetime.now(UTC), zone).month
    try:
        start, end = month_span(month, zone)
    except ValueError:
        raise InvalidRequest(f"--month is a month like 2026-11, not '{month}'.", param="month") from None
    found: spend_reads.Spend = await read(settings, lambda s: spend_reads.spend(s, start, end, zone, group=args.group))
    lines = spend_reads.chargeback(found, month, settings.currency)
    if args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=spend_reads.CHARGEBACK_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(lines)
        return
    print_table(lines, ("group", "user", "model", "requests", "tokens", "cost"), f"No usage in {month}.")
    if lines:
        print(f"\n{month}: {found.total.requests} requests, {found.total.tokens} tokens, "
              f"{found.total.cost:.6f} {settings.currency} in all")


def add_usage_parser(commands: Any) -> None:
    usage = commands.add_parser("usage", help="spend reports").add_subparsers(dest="action", required=True)
    parser = add_verb(usage, "report", report, "a month's requests, tokens and cost per group, user and model")
    parser.add_argument("--month", help="YYYY-MM in MODELPORT_TIMEZONE (default: this month)")
    parser.add_argument("--group", help="only what is charged to this group")
    parser.add_argument("--csv", action="store_true", help="CSV on standard output (the chargeback file)")
