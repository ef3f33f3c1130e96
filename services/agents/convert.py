"""Conversions between the agents protos and the domain records of `services.agents.records`."""

from agentplatform.agents.v1 import agents_pb2
from services.agents.records import AgentRecord, AgentSpec, ModelParameters
from services.common.rpc.protoconv import limits_from_proto, limits_to_proto, timestamp_from_datetime


def spec_from_proto(agent: agents_pb2.Agent) -> AgentSpec:
    """What a client set of an agent; the fields the server sets (id, revision, owner, times) are ignored."""
    parameters = agent.model_parameters
    return AgentSpec(
        display_name=agent.display_name,
        description=agent.description,
        instructions=agent.instructions,
        model=agent.model,
        model_parameters=ModelParameters(
            temperature=parameters.temperature if parameters.HasField("temperature") else None,
            top_p=parameters.top_p if parameters.HasField("top_p") else None,
            max_output_tokens=parameters.max_output_tokens if parameters.HasField("max_output_tokens") else None,
        ),
        tools=tuple(agent.tools),
        limits=limits_from_proto(agent.limits, "agent.limits"),
        metadata=dict(agent.metadata),
    )


def model_parameters_to_proto(parameters: ModelParameters) -> agents_pb2.ModelParameters:
    message = agents_pb2.ModelParameters()
    if parameters.temperature is not None:
        message.temperature = parameters.temperature
    if parameters.top_p is not None:
        message.top_p = parameters.top_p
    if parameters.max_output_tokens is not None:
        message.max_output_tokens = parameters.max_output_tokens
    return message


def agent_to_proto(record: AgentRecord) -> agents_pb2.Agent:
    spec = record.spec
    return agents_pb2.Agent(
        id=record.id,
        revision=record.revision,
        display_name=spec.display_name,
        description=spec.description,
        instructions=spec.instructions,
        model=spec.model,
        model_parameters=model_parameters_to_proto(spec.model_parameters),
        tools=list(spec.tools),
        limits=limits_to_proto(spec.limits),
        metadata=spec.metadata,
        owner=record.owner,
        create_time=timestamp_from_datetime(record.created_at),
        revision_create_time=timestamp_from_datetime(record.revision_created_at),
    )
