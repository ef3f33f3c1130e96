"""`python -m bench.scale.notify`: how many fan-out messages one PostgreSQL carries from one process to another, and
the CPU it costs the Python side per message (sent and received), with the runs fan-out's own payload (a delta).
The figure behind the capacity model's fan-out line (docs/operations.md)."""

import asyncio
import json
import sys
import time

from services.common.db.notifications import PostgresNotifications
from tests.support.postgres import postgres_server

MESSAGES = 50_000
CHANNEL = "agentplatform_bench"
#: A delta as services/runs/fanout.py sends it: a few words of a forming step.
PAYLOAD = json.dumps(["d", "6765d519-304f-4fc6-a690-32781df22a6e", 3, "some words here ", False])


async def measure(url: str) -> None:
    sender, receiver = PostgresNotifications(url), PostgresNotifications(url)
    received = 0
    all_in = asyncio.Event()

    def take(_payload: str) -> None:
        nonlocal received
        received += 1
        if received == MESSAGES:
            all_in.set()

    receiver.subscribe(CHANNEL, take, lambda: None)
    await sender.start()
    await receiver.start()
    try:
        began, cpu = time.monotonic(), time.process_time()
        for number in range(MESSAGES):
            sender.publish(CHANNEL, PAYLOAD)
            if number % 500 == 0:
                await asyncio.sleep(0)  # let batches go, as a busy replica's event loop does
        await asyncio.wait_for(all_in.wait(), 120)
        wall, cpu = time.monotonic() - began, time.process_time() - cpu
        print(f"{MESSAGES} messages in {wall:.2f} s: {MESSAGES / wall:,.0f} messages/s; "
              f"{cpu / MESSAGES * 1e6:.1f} us of this process's CPU per message sent and received")
    finally:
        await sender.close()
        await receiver.close()


def main() -> int:
    with postgres_server() as url:
        asyncio.run(measure(url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
