"""The `erpsync` command line: wiring only; every command calls one service-layer function."""
