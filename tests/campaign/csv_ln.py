"""The Infor LN side of the CSV trials: the same shop's rows as a production-order operation export.

LN exports are matched by alias (docs/sources.md): table.field headers (`tisfc010.pdno`, ...) from
an English session, Dutch ones (`ordernummer`, `bewerking`, `werkplek`, ...) from a Dutch one,
with the status words of that language. A row's state: `Released`/`vrijgegeven` (not started, or
setup once it has an actual start), `Active`/`actief` (production), `Completed`/`gereed` (ended).
Times carry no unit in LN: the source is configured with `run_time_unit = "MIN/PC"` and
`setup_time_unit = "hours"`.
"""

from __future__ import annotations

from tests.campaign.csv_render import Format
from tests.campaign.csv_shop import Op, fmt_date

FIELDS = (
    "order", "operation", "machine", "work_center", "item", "description", "planned_qty", "completed_qty",
    "run_time", "setup_time", "op_status", "order_status", "started_at", "closed_at", "due_at",
)  # fmt: skip
ENGLISH = (
    "tisfc010.pdno", "tisfc010.opno", "tisfc010.mcno", "tisfc010.cwoc", "tisfc001.mitm", "tisfc010.dsca",
    "tisfc010.qplo", "tisfc010.qcmp", "tisfc010.prtm", "tisfc010.sutm", "tisfc010.opst", "tisfc001.osta",
    "actual start", "tisfc010.cmdt", "tisfc001.pldt",
)  # fmt: skip
DUTCH = (
    "ordernummer", "bewerking", "machine", "werkplek", "artikel", "omschrijving", "gepland aantal",
    "aantal gereed", "productietijd", "insteltijd", "bewerkingsstatus", "orderstatus", "werkelijke start",
    "gereedmelddatum", "leverdatum",
)  # fmt: skip
STATUS = {  # (English, Dutch)
    "not_started": ("Released", "vrijgegeven"),
    "setup": ("Released", "vrijgegeven"),  # with an actual start: setup
    "production": ("Active", "actief"),
    "ended": ("Completed", "gereed"),
}
SETTINGS = {"run_time_unit": "MIN/PC", "setup_time_unit": "hours"}
INDEX = {name: i for i, name in enumerate(FIELDS)}
# kind -> (cells to change, the field the entry must name (None: the line, `row`), key readable)
POISON: dict[str, tuple[dict[str, str], str | None, bool]] = {
    "LN empty order": ({"order": ""}, "order", False),
    "LN operation not a number": ({"operation": "abc"}, "operation", False),
    "LN no machine nor work center": ({"machine": "", "work_center": ""}, "machine", True),
    "LN planned quantity not a number": ({"planned_qty": "many"}, "planned_qty", True),
    "LN production time not a number": ({"run_time": "slow"}, "run_time", True),
    "LN unknown operation status": ({"op_status": "Bogus"}, "op_status", True),
    "LN unknown order status": ({"order_status": "Weird"}, "order_status", True),
    "LN impossible completion date": ({"closed_at": "2024-13-45"}, "closed_at", True),
    "LN start date year 9999": ({"started_at": "9999-12-31 23:59"}, "started_at", True),
}


def header(fmt: Format) -> list[str]:
    return list(DUTCH if fmt.dutch else ENGLISH)


def cells(op: Op, fmt: Format) -> list[str]:
    """The row in FIELDS order, numbers and dates in the file's style."""
    language = 1 if fmt.dutch else 0
    started = op.state != "not_started" and op.show_start
    minutes = f"{op.standard[2] / 60_000:g}"
    row = {
        "order": op.base, "operation": str(op.seq), "machine": op.machine, "work_center": "WC-1",
        "item": op.part[0], "description": op.part[1], "planned_qty": str(op.qty),
        "completed_qty": str(op.good), "run_time": minutes, "setup_time": op.setup_hrs,
        "op_status": STATUS[op.state][language], "order_status": STATUS["production"][language],
        "started_at": fmt_date(op.start if started else None, fmt.dates),
        "closed_at": fmt_date(op.close if op.state == "ended" and op.show_close else None, fmt.dates),
        "due_at": fmt_date(op.due, fmt.dates),
    }  # fmt: skip
    if fmt.decimal == ",":
        for name in ("planned_qty", "completed_qty", "run_time", "setup_time"):
            row[name] = row[name].replace(".", ",")
    return [row[f] for f in FIELDS]
