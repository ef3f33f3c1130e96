"""Joining the deltas of a forming step: a model streams many small pieces, and where several wait to be sent at
once (on the link to the store, to a StreamChat client) they go as one delta per step."""

from dataclasses import replace

from services.common.step_delta import StepDelta, ToolCallDelta


def _part(delta: StepDelta) -> str:
    return "tool_call" if delta.tool_call is not None else "text" if delta.text is not None else ""


def joined(into: StepDelta, piece: StepDelta) -> StepDelta | None:
    """`into` with `piece` appended, as a new delta, when both are pieces of the same step's text or of the same
    tool call; None when they cannot be joined."""
    kind = _part(into)
    if (piece.run_id, piece.sequence) != (into.run_id, into.sequence) or _part(piece) != kind:
        return None
    if piece.replace:
        return None
    if into.tool_call is not None and piece.tool_call is not None:
        call = ToolCallDelta(
            tool_call_id=piece.tool_call.tool_call_id or into.tool_call.tool_call_id,
            tool_name=into.tool_call.tool_name + piece.tool_call.tool_name,
            arguments=into.tool_call.arguments + piece.tool_call.arguments,
        )
        return replace(into, tool_call=call)
    return replace(into, text=(into.text or "") + (piece.text or ""))


def coalesced(deltas: list[StepDelta]) -> list[StepDelta]:
    """The deltas of several steps (of several runs) one per step, each step's pieces joined in order; the steps
    in the order their first piece came."""
    if len(deltas) == 1:
        return deltas
    merged: dict[tuple[str, int, str], StepDelta] = {}
    for delta in deltas:
        key = (delta.run_id, delta.sequence, _part(delta))
        into = merged.get(key)
        merged[key] = delta if into is None else joined(into, delta) or delta
    return list(merged.values())
