"""The SQL dialects the staging table's DDL can be printed for (`erp install-staging --print-sql`).

Its own module, without SQLAlchemy, so the command line can show them in `--help` without
importing the sink.
"""

DDL_DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite", "mssql", "oracle")
