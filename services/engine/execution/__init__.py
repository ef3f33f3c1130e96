"""Where a run is admitted and held: scheduler.py (start, queue, slots, resume, cancel, shutdown), leases.py (one
RenewLeases call for every run held, lost runs and cancels from its answer), active_run.py (what the engine holds
of each run), run_feed.py (a run's live events for the StreamChat that started it), rate_limit.py (runs per
user). It works on the engine's journal types; the clients it calls are in upstream/."""
