"""What the engine's link to the run store sends first (services/engine/upstream/executor_link.py): the creates of
new runs go ahead of the appends and deltas queued before them, which keep their order."""

import asyncio
from typing import Any, cast

from agentplatform.runs.internal.v1 import execution_pb2
from services.common.step_delta import StepDelta
from services.engine.upstream.executor_link import ExecutorLink
from services.engine.upstream.runs_client import RunsClient


def _queue_call(link: ExecutorLink, call_id: int, **request: Any) -> None:
    link._pending[call_id] = asyncio.get_running_loop().create_future()
    link._outbox.put_nowait(execution_pb2.ExecutorCall(call_id=call_id, **request))


async def test_creates_go_first_and_the_rest_keep_their_order() -> None:
    link = ExecutorLink(cast(RunsClient, None), "engine-test")
    _queue_call(link, 1, append_steps=execution_pb2.AppendStepsRequest(run_id="r1"))
    link.send_delta(StepDelta(run_id="r2", sequence=2, text="forming"))
    _queue_call(link, 2, append_steps=execution_pb2.AppendStepsRequest(run_id="r2"))
    _queue_call(link, 3, create_run=execution_pb2.CreateRunRequest(user_query="new chat"))
    messages = link._messages()
    assert (await anext(messages)).executor_id == "engine-test"
    sent = [await anext(messages) for _ in range(4)]
    kinds = [m.call.WhichOneof("request") if m.WhichOneof("message") == "call" else m.WhichOneof("message")
             for m in sent]
    assert kinds == ["create_run", "append_steps", "delta", "append_steps"]
    assert [m.call.call_id for m in sent if m.WhichOneof("message") == "call"] == [3, 1, 2]
    await messages.aclose()
