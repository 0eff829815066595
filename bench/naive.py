"""The naive baseline: what a simple script keeping MM in step with VISUAL would do each cycle.

Every cycle it reads the open labor tickets with one SQL query, then sends one start per open
ticket, one at a time, with httpx (keep-alive). It keeps no state: MM answers an identical repeated
start with 200 and changes nothing, so this is the cheapest loop that keeps MM right without memory
of its own (a GET-before-start script would make two calls per new run and be slower). Its run ids
are `naive:LT<n>`, so against a shared simulator it would not collide with erpsync's `erp:LT<n>`;
the campaign still gives it its own simulator, because MM keeps one open run per machine.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import create_engine, text

OPEN_TICKETS = text(
    'SELECT lt."TRANSACTION_ID" AS tid, lt."CLOCK_IN" AS clock_in, lt."TYPE" AS ticket_type, '
    'op."RESOURCE_ID" AS machine, lt."WORKORDER_BASE_ID" AS base, lt."WORKORDER_LOT_ID" AS lot, '
    'lt."OPERATION_SEQ_NO" AS seq '
    'FROM "LABOR_TICKET" lt JOIN "OPERATION" op ON op."WORKORDER_TYPE" = lt."WORKORDER_TYPE" '
    'AND op."WORKORDER_BASE_ID" = lt."WORKORDER_BASE_ID" AND op."WORKORDER_LOT_ID" = lt."WORKORDER_LOT_ID" '
    'AND op."WORKORDER_SPLIT_ID" = lt."WORKORDER_SPLIT_ID" AND op."WORKORDER_SUB_ID" = lt."WORKORDER_SUB_ID" '
    'AND op."SEQUENCE_NO" = lt."OPERATION_SEQ_NO" '
    'WHERE lt."CLOCK_OUT" IS NULL ORDER BY lt."TRANSACTION_ID"'
)


@dataclass(frozen=True)
class NaiveCycle:
    """One baseline cycle: calls sent, non-2xx answers, wall seconds."""

    calls: int
    failures: int
    wall: float


def read_open_tickets(erp_url: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The open tickets as plain dicts (the script's whole ERP read)."""
    engine = create_engine(erp_url)
    try:
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(OPEN_TICKETS)]
    finally:
        engine.dispose()
    return rows[:limit] if limit is not None else rows


def start_body(row: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    clock_in: datetime = row["clock_in"]
    return {
        "erpJobOperationRunId": f"naive:LT{row['tid']}",
        "erpMachineId": str(row["machine"]).strip(),
        "jobName": f"{str(row['base']).strip()}/{str(row['lot']).strip()}",
        "operationName": str(row["seq"]),
        "startInSetup": str(row["ticket_type"]).strip() == "S",
        "startAt": clock_in.replace(tzinfo=zone).isoformat(),
    }


def naive_cycle(
    erp_url: str, base_url: str, api_key: str, zone: str, *, limit: int | None = None, workers: int = 1
) -> NaiveCycle:
    """Read the ERP, then start every open ticket in MM; `workers` > 1 only to seed quickly."""
    began = time.perf_counter()
    tz = ZoneInfo(zone)
    rows = read_open_tickets(erp_url, limit)
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:

        def send(row: dict[str, Any]) -> bool:
            response = client.post("/erp/jobdispatch/start", json=start_body(row, tz))
            return response.is_success

        if workers == 1:
            results = [send(row) for row in rows]
        else:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(send, rows))
    return NaiveCycle(calls=len(rows), failures=results.count(False), wall=time.perf_counter() - began)
