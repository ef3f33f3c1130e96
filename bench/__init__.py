"""Benchmarks of the platform as users run it: `make bench` (the whole stack, `python -m bench`) and
`make bench-runs` (the run store alone, `python -m bench.store`). They print figures beside baselines measured
in the same run; nothing here asserts a time."""
