"""`make scale-demo`: the platform with every service in several replicas on one PostgreSQL, as real processes on
this machine (cluster.py), and what it does under faults (scenarios.py), figures printed (__main__.py). The tests in
tests/scale/ run the same scenarios and assert on their figures."""
