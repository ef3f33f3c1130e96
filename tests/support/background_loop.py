"""An asyncio event loop in a thread of its own, for synchronous tests that drive processes with real signals
(tests/e2e/) and still need the in-process test servers written for asyncio: the scripted model
(scripted_llm.py) and the counting HTTP endpoint (tests/tools/http_endpoint.py). The servers keep answering while
the test blocks in `time.sleep` or a gRPC call.

    with background_loop() as loop, loop.entered(ScriptedLLM(pick=...)) as llm:
        ... start processes pointed at llm.base_url; read llm.requests from the test's thread ...
"""

import asyncio
import threading
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import TypeVar

T = TypeVar("T")
#: How long entering or leaving a server may take before the test fails rather than hangs.
SERVER_TIMEOUT_SECONDS = 30.0


class BackgroundLoop:
    """A running event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-servers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(SERVER_TIMEOUT_SECONDS)
        self.loop.close()

    @contextmanager
    def entered(self, manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
        """`async with manager` run in the loop, its value handed to the test's thread for the block."""
        value = asyncio.run_coroutine_threadsafe(manager.__aenter__(), self.loop).result(SERVER_TIMEOUT_SECONDS)
        try:
            yield value
        finally:
            asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), self.loop).result(
                SERVER_TIMEOUT_SECONDS
            )


@contextmanager
def background_loop() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    loop.start()
    try:
        yield loop
    finally:
        loop.stop()
