"""AgentService over gRPC: converts requests to ChatInput and hands them to the agent loop."""

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from agentplatform.engine.v1 import engine_pb2, engine_pb2_grpc
from services.engine.agent_loop import AgentLoop, ChatInput


def _chat_input(request: engine_pb2.StreamChatRequest | engine_pb2.ChatRequest) -> ChatInput:
    return ChatInput(message=request.message, model=request.model, metadata=dict(request.metadata))


class AgentServicer(engine_pb2_grpc.AgentServiceServicer):
    def __init__(self, loop: AgentLoop) -> None:
        self._loop = loop

    async def StreamChat(
        self, request: engine_pb2.StreamChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[engine_pb2.StreamChatResponse]:
        # aclosing: when the caller disconnects, the loop's stream is closed at once, which interrupts the run
        # so that it is recorded as FAILED rather than left RUNNING.
        async with aclosing(self._loop.stream(_chat_input(request))) as events:
            async for event in events:
                yield event

    async def Chat(self, request: engine_pb2.ChatRequest, context: grpc.aio.ServicerContext) -> engine_pb2.ChatResponse:
        outcome = await self._loop.chat(_chat_input(request))
        return engine_pb2.ChatResponse(response=outcome.answer, run_id=outcome.run.id)
