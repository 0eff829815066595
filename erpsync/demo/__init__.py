"""`erpsync demo`: a one-minute tour of the real service on a demo ERP and a simulated MachineMetrics.

Nothing here is product logic: the demo only wires existing pieces (the VISUAL schema and fixture,
the MM simulator, `bootstrap.build_service`) and watches them. Modules:

- `erp`: the demo VISUAL shop (SQLite) and the operators' clock-ins and clock-outs on it;
- `script`: when which operator does what during the demo;
- `workspace`: the demo folder, the demo's configuration, and the erpsync.toml left behind;
- `observe`: reads the ERP, the simulator and erpsync's state into one picture;
- `view`: that picture as a rich live view, or as plain lines without a terminal;
- `summary`: the last screen, with the exact commands and SQL to look around afterwards;
- `app`: runs it all for N seconds.
"""

DEFAULT_SECONDS = 22.0  # service time; start-up, shut-down and the summary add ~5-10 s
MIN_SECONDS = 10.0  # below this the operators' steps come faster than the sync cycle
