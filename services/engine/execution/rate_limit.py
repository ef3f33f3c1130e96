"""Per-user rate limit on runs started: a token bucket per user (no gRPC here).

Each user's bucket holds up to `burst` runs and refills at `per_second`; starting a run takes one. An empty
bucket answers ResourceExhausted with the time until the next token, which the interceptor sends as a standard
RetryInfo. The buckets live in this engine process: with several engine replicas each allows the rate, so a
deployment divides the rate it wants by its replicas (the launcher does, services.launcher.stack.shared_start_rate;
the gateway's global limit caps the sum).
"""

import time
from collections import OrderedDict
from collections.abc import Callable

from services.common import errors
from services.engine import metrics

#: Buckets kept at most; the least recently used goes first (a full bucket forgets nothing by being dropped).
MAX_TRACKED_USERS = 100_000


class RunRateLimiter:
    """Token buckets of runs started, one per user. `per_second` 0 turns the limit off."""

    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._per_second = per_second
        self._burst = burst
        self._clock = clock
        #: user -> (tokens, when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, user: str) -> None:
        """Take a token from `user`'s bucket, or raise ResourceExhausted saying when to retry."""
        if self._per_second <= 0:
            return
        now = self._clock()
        tokens, counted = self._buckets.pop(user, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - counted) * self._per_second)
        if tokens < 1:
            self._buckets[user] = (tokens, now)
            wait = (1 - tokens) / self._per_second
            metrics.RATE_LIMITED.labels("user_runs").inc()
            raise errors.ResourceExhausted(
                f"too many runs started: the limit is {self._burst} at once and {self._per_second:g} per second per "
                f"user (ENGINE_USER_RUN_BURST, ENGINE_USER_RUNS_PER_SECOND); retry in {wait:.1f} s",
                retry_after=wait,
            )
        self._buckets[user] = (tokens - 1, now)
        while len(self._buckets) > MAX_TRACKED_USERS:
            self._buckets.popitem(last=False)
