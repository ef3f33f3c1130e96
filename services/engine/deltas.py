"""Joining the deltas of a forming step: a model streams many small pieces, and where several wait to be sent at
once (on the link to the store, to a StreamChat client) they go as one message per step."""

from agentplatform.runs.v1 import runs_pb2


def joined(into: runs_pb2.StepDelta, piece: runs_pb2.StepDelta) -> runs_pb2.StepDelta | None:
    """`into` with `piece` appended, as a new delta, when both are pieces of the same step's text or of the same
    tool call; None when they cannot be joined."""
    kind = into.WhichOneof("part")
    if (piece.run_id, piece.sequence) != (into.run_id, into.sequence) or piece.WhichOneof("part") != kind:
        return None
    if piece.replace:
        return None
    result = runs_pb2.StepDelta()
    result.CopyFrom(into)
    if kind == "tool_call":
        result.tool_call.tool_call_id = piece.tool_call.tool_call_id or into.tool_call.tool_call_id
        result.tool_call.tool_name += piece.tool_call.tool_name
        result.tool_call.arguments += piece.tool_call.arguments
    else:
        result.text += piece.text
    return result


def coalesced(deltas: list[runs_pb2.StepDelta]) -> list[runs_pb2.StepDelta]:
    """The deltas of several steps (of several runs) one per step, each step's pieces joined in order; the steps
    in the order their first piece came."""
    if len(deltas) == 1:
        return deltas
    merged: dict[tuple[str, int, str], runs_pb2.StepDelta] = {}
    for delta in deltas:
        key = (delta.run_id, delta.sequence, delta.WhichOneof("part") or "")
        into = merged.get(key)
        merged[key] = delta if into is None else joined(into, delta) or delta
    return list(merged.values())
