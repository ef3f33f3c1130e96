"""A run on a thread begins once the thread's earlier turns have ended: it reads them (the model's context) and,
while one is still in progress (a run enqueued behind it, or interrupting it), follows it in the store until it
ends."""

import asyncio
import contextlib
import logging

from services.common import errors
from services.common.identity import Caller
from services.common.run_vocabulary import FINAL_STATES
from services.engine.journal import ThreadHistory
from services.engine.upstream.runs_client import RunsClient

log = logging.getLogger(__name__)


async def earlier_turns(runs: RunsClient, run_id: str, owner: Caller, max_turns: int) -> ThreadHistory:
    """The earlier turns of the run's thread, once none of them is in progress, each followed in the store on
    behalf of the run's `owner`; at most `max_turns` of them, with their steps."""
    while True:
        history = await runs.thread_history(run_id, max_turns)
        live = [turn for turn in history.turns if turn.state not in FINAL_STATES]
        if not live:
            return history
        for turn in live:
            log.info("run %s waits for run %s, an earlier turn of its thread", run_id, turn.id)
            try:
                async with contextlib.aclosing(runs.watch(turn.id, owner, turn.step_count)) as events:
                    async for _ in events:
                        pass
            except errors.NotFound:
                pass  # deleted meanwhile: nothing to wait for
            except errors.Unavailable:
                await asyncio.sleep(1.0)  # the store restarting: look again
