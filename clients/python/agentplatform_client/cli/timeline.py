"""The live timeline of a run in the terminal (`agentplatform chat`, `runs watch`, `runs show`): each step as it
is stored (tool calls and results as panels), the step the model is writing as its deltas arrive, and a spinner
while the model thinks."""

from __future__ import annotations

import json
from collections.abc import Iterable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.spinner import Spinner
from rich.text import Text

from agentplatform_client.cli.output import as_dict
from agentplatform_client.follow import Reattach
from agentplatform_client.types import Run, RunEvent, RunState, Step

FINAL = {RunState.Value(name) for name in ("RUN_STATE_COMPLETED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED")}
STATE_STYLE = {"COMPLETED": "green", "FAILED": "red", "CANCELLED": "yellow", "WAITING": "magenta"}


def state_name(state: RunState) -> str:
    return RunState.Name(state).removeprefix("RUN_STATE_")


def step_renderable(step: Step) -> RenderableType:
    """One stored step."""
    kind = step.WhichOneof("content")
    number = f"[dim]{step.sequence:>3}[/dim] "
    if kind == "user_request":
        return Text.from_markup(number + "[bold cyan]you[/bold cyan]  ") + Text(step.user_request.text)
    if kind == "agent_thought":
        return Text.from_markup(number + "[dim]thinks[/dim] ") + Text(step.agent_thought.text, style="dim")
    if kind == "tool_call":
        call = step.tool_call
        params = json.dumps(as_dict(call.params) if call.HasField("params") else {}, indent=2)
        return Panel(Text(params), title=f"{step.sequence} tool call: {call.tool_name}", title_align="left",
                     border_style="blue")
    if kind == "tool_result":
        result = step.tool_result
        if result.error:
            return Panel(Text(result.error, style="red"), title=f"{step.sequence} {result.tool_name} failed",
                         title_align="left", border_style="red")
        return Panel(Text(result.text), title=f"{step.sequence} result: {result.tool_name}", title_align="left",
                     border_style="green")
    if kind == "agent_response":
        return Text.from_markup(number + "[bold green]agent[/bold green] ") + Text(step.agent_response.text)
    if kind == "error":
        return Text.from_markup(number + "[bold red]error[/bold red] ") + Text(
            f"{step.error.code}: {step.error.message}", style="red"
        )
    if kind == "approval_request":
        request = step.approval_request
        hint = f"agentplatform approvals approve {step.run_id} {step.sequence}   (or reject)"
        return Panel(Text(f"{request.prompt}\n\n{hint}"), title=f"{step.sequence} approval needed",
                     title_align="left", border_style="magenta")
    if kind == "approval_decision":
        decision = step.approval_decision
        return Text.from_markup(number + "[magenta]decision[/magenta] ") + Text(
            f"{decision.decided_by} {decision.comment}".strip()
        )
    if kind == "resumed":
        return Text.from_markup(number + f"[yellow]resumed[/yellow] by engine {step.resumed.executor_id}")
    return Text.from_markup(number + f"[dim]{kind}[/dim]")


def run_line(run: Run) -> Text:
    state = state_name(run.state)
    line = Text.from_markup(f"[bold]run {run.id}[/bold] ")
    line.append(state, style=STATE_STYLE.get(state, "cyan"))
    if run.error_message:
        line.append(f"  {run.error_code}: {run.error_message}", style="red")
    return line


class Timeline:
    """Renders a run's events as they come: finished steps printed above, the forming step and a spinner live."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.run: Run | None = None
        self._forming_sequence = 0
        self._forming = ""
        self._live = Live(self._render(), console=console, transient=True, refresh_per_second=12)

    def __enter__(self) -> Timeline:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def show(self, events: Iterable[RunEvent]) -> Run | None:
        """Render every event; the run as last seen."""
        for event in events:
            self.add(event)
        return self.run

    def add(self, event: RunEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "run":
            first = self.run is None
            changed = first or self.run is None or self.run.state != event.run.state
            self.run = event.run
            if changed:
                self._live.console.print(run_line(event.run))
        elif kind == "step":
            if event.step.sequence == self._forming_sequence:
                self._forming, self._forming_sequence = "", 0
            self._live.console.print(step_renderable(event.step))
        elif kind == "delta":
            delta = event.delta
            piece = delta.text if delta.HasField("text") else delta.tool_call.arguments
            if delta.replace or delta.sequence != self._forming_sequence:
                self._forming = ""
            self._forming_sequence = delta.sequence
            self._forming += piece
        self._live.update(self._render())

    def reattached(self, reattach: Reattach) -> None:
        """Told by the follow: the stream broke and is being re-attached."""
        self._live.console.print(Text(
            f"stream broken ({reattach.error or 'ended early'}); re-attaching after step {reattach.after_sequence}"
            f" in {reattach.delay:.1f}s", style="yellow",
        ))

    def _render(self) -> RenderableType:
        if self.run is not None and self.run.state in FINAL:
            return Text("")
        spinner = Spinner("dots", text=Text(" thinking…" if not self._forming else " writing…", style="dim"))
        if self._forming:
            return Group(Text(self._forming), spinner)
        return spinner
