"""The run store benchmark (`make bench-runs`, `python -m bench.store`): RunStore alone, in-process, on SQLite
and PostgreSQL; concurrent appends beside the driver's ceiling, ListRuns over a million runs, GetRun of a long
run. `suite.bench_database` runs every case on one database; `__main__` picks the databases and prints."""
