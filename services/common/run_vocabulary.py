"""The runs' vocabulary the engine and the runs service share, as plain Python (no protos, no database).

The runs service stores and checks these values; the engine decides with them. Each is mapped to and from the
runs API's enums in one place, services/common/rpc/protoconv.py, which the servicers and the engine's clients use.
It lives in services/common because the engine does not import services/runs (a separate service, deployed on its
own): this module is the vocabulary both speak, nothing else of the run store.
"""

from enum import StrEnum

#: A run's lifecycle states, as stored (and as the runs API's RunState, lower case, without its prefix).
QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
WAITING = "waiting"
RUN_STATES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED, WAITING)
#: States a run can be in while an engine holds its lease.
LIVE_STATES = (QUEUED, RUNNING)
#: States of a run that has not ended: held by an engine, or WAITING for a person (held by none).
ACTIVE_STATES = (QUEUED, RUNNING, WAITING)
#: States of a run that has ended. (A WAITING run has not: it waits for a person, held by no engine.)
FINAL_STATES = (COMPLETED, FAILED, CANCELLED)


class MultitaskStrategy(StrEnum):
    """What creating a run on a thread that has a run in progress does (runs.v1 MultitaskStrategy)."""

    #: Refuse the new run (FailedPrecondition naming the run in progress): the default.
    REJECT = "reject"
    #: Queue the new run after the one in progress.
    ENQUEUE = "enqueue"
    #: Cancel the run in progress, then run the new one.
    INTERRUPT = "interrupt"
