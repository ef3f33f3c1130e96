"""The `agentplatform` command: chat, runs, threads, tools, agents, workflows and approvals, each with `--json`
for scripts; exit codes from the gRPC status of a failed call (output.py); shell completion from Typer
(`agentplatform --install-completion`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import json_format
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from agentplatform_client import errors
from agentplatform_client._proto.agentplatform.runs.v1 import runs_pb2
from agentplatform_client._rpc import ADDRESS_ENV, API_KEY_ENV, DEFAULT_TIMEOUT
from agentplatform_client.cli.output import (
    EXIT_INTERRUPTED,
    EXIT_RUN_NOT_COMPLETED,
    as_dict,
    console,
    error_console,
    exit_code,
    print_json,
    print_json_line,
)
from agentplatform_client.cli.timeline import FINAL, Timeline, run_line, state_name, step_renderable
from agentplatform_client.sync import Client
from agentplatform_client.types import Run, RunEvent, RunState


class _Root(TyperGroup):
    """Turns the SDK's errors into a message on stderr and the status's exit code, in one place."""

    # ctx is Any: the Context type of Typer's vendored Click is not public.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except errors.ApiError as error:
            error_console().print(Text(f"error: {error}", style="red"))
            raise typer.Exit(exit_code(error)) from None
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(cls=_Root, no_args_is_help=True, help="The AI agent platform from the terminal.")
runs_app = typer.Typer(no_args_is_help=True, help="Runs: list, show, watch, cancel, export, import.")
threads_app = typer.Typer(no_args_is_help=True, help="Conversations (threads) and their turns.")
tools_app = typer.Typer(no_args_is_help=True, help="Tools: list, show, enable, disable (admins).")
agents_app = typer.Typer(no_args_is_help=True, help="Saved agents.")
workflows_app = typer.Typer(no_args_is_help=True, help="Saved workflows.")
approvals_app = typer.Typer(no_args_is_help=True, help="Approval requests of WAITING runs.")
for sub, name in ((runs_app, "runs"), (threads_app, "threads"), (tools_app, "tools"), (agents_app, "agents"),
                  (workflows_app, "workflows"), (approvals_app, "approvals")):
    app.add_typer(sub, name=name)

Json = Annotated[bool, typer.Option("--json", help="Print JSON (the proto3 JSON mapping) instead of text.")]
Limit = Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")]


@app.callback()
def _options(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Option(
        envvar=ADDRESS_ENV, help="The gateway, host:port or https://host (default 127.0.0.1:8080).")] = None,
    api_key: Annotated[str | None, typer.Option(
        envvar=API_KEY_ENV, help="An API key (apk_...) or a bearer token.", show_default=False)] = None,
    timeout: Annotated[float, typer.Option(help="Deadline of each call, in seconds.")] = DEFAULT_TIMEOUT,
) -> None:
    ctx.obj = _Connection(address, api_key, timeout)


class _Connection:
    """The client of this invocation, made when a command first needs it, closed when the command ends."""

    def __init__(self, address: str | None, api_key: str | None, timeout: float) -> None:
        self.address, self.api_key, self.timeout = address, api_key, timeout

    def client(self, ctx: Any) -> Client:
        client = Client(self.address, api_key=self.api_key or "", timeout=self.timeout)
        ctx.call_on_close(client.close)
        return client


def _client(ctx: typer.Context) -> Client:
    root = ctx.find_root()
    connection: _Connection = root.obj
    return connection.client(root)


class OnInterrupt(StrEnum):
    CANCEL = "cancel"
    DETACH = "detach"


# --- chat -------------------------------------------------------------------------------------------------


@app.command()
def chat(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="What to ask.")],
    thread: Annotated[str, typer.Option(help="Continue this thread.")] = "",
    agent: Annotated[str, typer.Option(help="Run as this saved agent.")] = "",
    on_interrupt: Annotated[OnInterrupt, typer.Option(
        help="What Ctrl-C does: cancel the run, or leave it running (follow it with `runs watch`).")
    ] = OnInterrupt.CANCEL,
    json_: Json = False,
) -> None:
    """Ask the agent and follow its run live: steps, tool calls and results, the answer as it is written."""
    client = _client(ctx)
    cancel = on_interrupt == OnInterrupt.CANCEL
    started: list[Run] = []
    try:
        if json_:
            for event in client.stream_chat(message, thread_id=thread, agent_id=agent, cancel_on_disconnect=cancel):
                _remember_run(event, started)
                print_json_line(event)
            final = started[-1] if started else None
        else:
            with Timeline(console()) as timeline:
                events = client.stream_chat(
                    message, thread_id=thread, agent_id=agent, cancel_on_disconnect=cancel,
                    on_reattach=timeline.reattached,
                )
                final = timeline.show(_remembering(events, started))
    except KeyboardInterrupt:
        run_id = started[-1].id if started else ""
        if run_id:
            note = f"run {run_id} cancelled" if cancel else f"detached; follow with: agentplatform runs watch {run_id}"
            error_console().print(Text(note, style="yellow"))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    _exit_for(final)


def _remembering(events: Iterable[RunEvent], started: list[Run]) -> Iterator[RunEvent]:
    for event in events:
        _remember_run(event, started)
        yield event


def _remember_run(event: RunEvent, started: list[Run]) -> None:
    if event.HasField("run"):
        started.append(event.run)


def _exit_for(final: Run | None) -> None:
    """Exit 1 unless the run completed."""
    if final is None or final.state != RunState.Value("RUN_STATE_COMPLETED"):
        raise typer.Exit(EXIT_RUN_NOT_COMPLETED)


# --- runs -------------------------------------------------------------------------------------------------

class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_STATE = {
    State.QUEUED: runs_pb2.RUN_STATE_QUEUED, State.RUNNING: runs_pb2.RUN_STATE_RUNNING,
    State.WAITING: runs_pb2.RUN_STATE_WAITING, State.COMPLETED: runs_pb2.RUN_STATE_COMPLETED,
    State.FAILED: runs_pb2.RUN_STATE_FAILED, State.CANCELLED: runs_pb2.RUN_STATE_CANCELLED,
}


@runs_app.command("ls")
def runs_ls(
    ctx: typer.Context,
    state: Annotated[State | None, typer.Option(help="Only runs in this state.")] = None,
    thread: Annotated[str, typer.Option(help="The turns of this thread, in order.")] = "",
    all_users: Annotated[bool, typer.Option("--all-users", help="Everyone's runs (admins).")] = False,
    limit: Limit = 20,
    json_: Json = False,
) -> None:
    """Your runs, newest first."""
    wanted = RUN_STATE[state] if state else runs_pb2.RUN_STATE_UNSPECIFIED
    runs = list(_client(ctx).list_runs(state=wanted, thread_id=thread, all_users=all_users, limit=limit))
    if json_:
        print_json(runs)
        return
    table = _table("id", "state", "created", "steps", "question")
    for run in runs:
        table.add_row(run.id, state_name(run.state), run.create_time.ToJsonString()[:19], str(run.step_count),
                      run.user_query[:60])
    console().print(table)


@runs_app.command("show")
def runs_show(ctx: typer.Context, run_id: str, json_: Json = False) -> None:
    """A run and every step of it."""
    run = _client(ctx).get_run(run_id)
    if json_:
        print_json(run)
        return
    out = console()
    out.print(run_line(run))
    for step in run.steps:
        out.print(step_renderable(step))


@runs_app.command("watch")
def runs_watch(
    ctx: typer.Context,
    run_id: str,
    after: Annotated[int, typer.Option(help="Start after this step (0: the whole run).")] = 0,
    json_: Json = False,
) -> None:
    """Follow a run to its end (re-attaching by itself if the stream breaks); Ctrl-C leaves it running."""
    client = _client(ctx)
    if json_:
        final: Run | None = None
        for event in client.watch(run_id, after_sequence=after):
            if event.HasField("run"):
                final = event.run
            print_json_line(event)
    else:
        with Timeline(console()) as timeline:
            final = timeline.show(client.watch(run_id, after_sequence=after, on_reattach=timeline.reattached))
    _exit_for(final)


@runs_app.command("cancel")
def runs_cancel(ctx: typer.Context, run_id: str, reason: str = "", json_: Json = False) -> None:
    """Ask for a run's end (recorded as cancelled by you)."""
    run = _client(ctx).cancel_run(run_id, reason=reason)
    print_json(run) if json_ else console().print(run_line(run))


@runs_app.command("export")
def runs_export(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="One run as JSON; none: all found, as JSON Lines.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (default stdout).")] = None,
    state: Annotated[State | None, typer.Option(help="Only runs in this state.")] = None,
    text: Annotated[str, typer.Option(help="Only runs whose question or answer has these words.")] = "",
    contains: Annotated[str, typer.Option(help="Only runs whose question or answer contains this string.")] = "",
    all_users: Annotated[bool, typer.Option("--all-users", help="Everyone's runs (admins).")] = False,
    cursor: Annotated[str, typer.Option(help="Resume after the run whose cursor this is (the last line's).")] = "",
) -> None:
    """A run with all its steps as JSON; without a run id, every run found, whole, one JSON object per line
    ({"run": ..., "cursor": ...}), with a progress count on stderr. Always JSON: it is for keeping and for other
    tools (`runs import` reads it back)."""
    client = _client(ctx)
    if run_id is not None:
        document = json.dumps(as_dict(client.get_run(run_id)), indent=2) + "\n"
        if output is None:
            typer.echo(document, nl=False)
        else:
            output.write_text(document)
        return
    search = runs_pb2.ListRunsRequest(
        states=[RUN_STATE[state]] if state else [], text=text, text_contains=contains, all_users=all_users
    )
    sink = output.open("a" if cursor else "w") if output is not None else None
    exported = 0
    try:
        with error_console().status("exporting runs …") as progress:
            for item in client.export_runs(search, cursor=cursor):
                line = json.dumps({"run": as_dict(item.run), "cursor": item.cursor})
                if sink is None:
                    typer.echo(line)
                else:
                    sink.write(line + "\n")
                exported += 1
                progress.update(f"exported {exported} run(s) …")
    finally:
        if sink is not None:
            sink.close()
    error_console().print(f"exported {exported} run(s)")


@runs_app.command("import")
def runs_import(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="A file `runs export` wrote (JSON Lines).")],
) -> None:
    """Store exported runs in this platform (admins): ended runs, whole, with their threads."""
    runs = []
    for number, line in enumerate(source.read_text().splitlines(), 1):
        if line.strip():
            try:
                runs.append(json_format.ParseDict(json.loads(line)["run"], runs_pb2.Run()))
            except (ValueError, KeyError, json_format.ParseError) as error:
                raise typer.BadParameter(f"line {number} is not an exported run: {error}") from None
    stored = _client(ctx).import_runs(runs)
    console().print(f"imported {stored} run(s)")


# --- threads ----------------------------------------------------------------------------------------------


@threads_app.command("ls")
def threads_ls(ctx: typer.Context, limit: Limit = 20, json_: Json = False) -> None:
    """Your conversations, most recent first."""
    threads = list(_client(ctx).list_threads(limit=limit))
    if json_:
        print_json(threads)
        return
    table = _table("id", "turns", "updated", "title")
    for thread in threads:
        table.add_row(thread.id, str(thread.turn_count), thread.update_time.ToJsonString()[:19], thread.title[:60])
    console().print(table)


@threads_app.command("show")
def threads_show(ctx: typer.Context, thread_id: str, json_: Json = False) -> None:
    """A thread and its turns (runs), in order."""
    client = _client(ctx)
    thread = client.get_thread(thread_id)
    turns = list(client.list_runs(thread_id=thread_id))
    if json_:
        print_json({"thread": as_dict(thread), "runs": [as_dict(run) for run in turns]})
        return
    out = console()
    out.print(Text(f"thread {thread.id}: {thread.title}", style="bold"))
    for run in turns:
        out.print(run_line(run), Text(run.user_query[:80]))


# --- tools ------------------------------------------------------------------------------------------------


@tools_app.command("ls")
def tools_ls(
    ctx: typer.Context,
    enabled_only: Annotated[bool, typer.Option("--enabled-only", help="Only enabled tools.")] = False,
    json_: Json = False,
) -> None:
    """Every tool, whether it is enabled and available."""
    tools = list(_client(ctx).list_tools(enabled_only=enabled_only))
    if json_:
        print_json(tools)
        return
    table = _table("id", "enabled", "available", "description")
    for tool in tools:
        table.add_row(tool.id, "yes" if tool.enabled else "no", "yes" if tool.available else "no",
                      tool.description[:70])
    console().print(table)


@tools_app.command("show")
def tools_show(ctx: typer.Context, tool_id: str, json_: Json = False) -> None:
    """A tool with its schema and usage."""
    tool = _client(ctx).get_tool(tool_id)
    if json_:
        print_json(tool)
        return
    console().print_json(json.dumps(as_dict(tool)))


@tools_app.command("enable")
def tools_enable(ctx: typer.Context, tool_id: str, json_: Json = False) -> None:
    """Enable a tool (admins)."""
    tool = _client(ctx).enable_tool(tool_id)
    print_json(tool) if json_ else console().print(f"{tool.id} enabled")


@tools_app.command("disable")
def tools_disable(ctx: typer.Context, tool_id: str, json_: Json = False) -> None:
    """Disable a tool (admins): runs can no longer call it."""
    tool = _client(ctx).disable_tool(tool_id)
    print_json(tool) if json_ else console().print(f"{tool.id} disabled")


# --- agents and workflows ---------------------------------------------------------------------------------


@agents_app.command("ls")
def agents_ls(
    ctx: typer.Context, name: Annotated[str, typer.Option(help="Names containing this.")] = "", limit: Limit = 50,
    json_: Json = False,
) -> None:
    """Your saved agents, by name."""
    agents = list(_client(ctx).list_agents(name_contains=name, limit=limit))
    if json_:
        print_json(agents)
        return
    table = _table("id", "revision", "name", "model", "tools")
    for agent in agents:
        table.add_row(agent.id, str(agent.revision), agent.display_name, agent.model, ", ".join(agent.tools))
    console().print(table)


@agents_app.command("show")
def agents_show(ctx: typer.Context, agent_id: str, revision: int = 0, json_: Json = False) -> None:
    """An agent (its latest revision, or --revision)."""
    agent = _client(ctx).get_agent(agent_id, revision=revision)
    print_json(agent) if json_ else console().print_json(json.dumps(as_dict(agent)))


@workflows_app.command("ls")
def workflows_ls(
    ctx: typer.Context, name: Annotated[str, typer.Option(help="Names containing this.")] = "", limit: Limit = 50,
    json_: Json = False,
) -> None:
    """Your saved workflows, by name."""
    workflows = list(_client(ctx).list_workflows(name_contains=name, limit=limit))
    if json_:
        print_json(workflows)
        return
    table = _table("id", "revision", "name")
    for workflow in workflows:
        table.add_row(workflow.id, str(workflow.revision), workflow.display_name)
    console().print(table)


@workflows_app.command("show")
def workflows_show(ctx: typer.Context, workflow_id: str, revision: int = 0, json_: Json = False) -> None:
    """A workflow (its latest revision, or --revision)."""
    workflow = _client(ctx).get_workflow(workflow_id, revision=revision)
    print_json(workflow) if json_ else console().print_json(json.dumps(as_dict(workflow)))


# --- approvals --------------------------------------------------------------------------------------------


@approvals_app.command("ls")
def approvals_ls(
    ctx: typer.Context,
    all_users: Annotated[bool, typer.Option("--all-users", help="Everyone's (admins).")] = False,
    json_: Json = False,
) -> None:
    """Open approval requests: the WAITING runs and what each waits for."""
    pending = _client(ctx).pending_approvals(all_users=all_users)
    if json_:
        print_json({"approvals": [
            {"runId": item.run_id, "sequence": str(item.sequence), "request": as_dict(item.request)} for item in pending
        ]})
        return
    table = _table("run", "step", "tool", "prompt")
    for item in pending:
        table.add_row(item.run_id, str(item.sequence), item.request.tool_name, item.request.prompt[:70])
    console().print(table)


@approvals_app.command("approve")
def approvals_approve(ctx: typer.Context, run_id: str, sequence: int, comment: str = "", json_: Json = False) -> None:
    """Approve the request at step SEQUENCE of a run: it goes on."""
    run = _client(ctx).approve_step(run_id, sequence, comment=comment)
    print_json(run) if json_ else console().print(run_line(run))


@approvals_app.command("reject")
def approvals_reject(ctx: typer.Context, run_id: str, sequence: int, comment: str = "", json_: Json = False) -> None:
    """Reject the request at step SEQUENCE of a run."""
    run = _client(ctx).reject_step(run_id, sequence, comment=comment)
    print_json(run) if json_ else console().print(run_line(run))


def _table(*columns: str) -> Table:
    """A plain table whose first column (an id, to copy) never wraps."""
    table = Table(box=None)
    for index, column in enumerate(columns):
        table.add_column(column, no_wrap=index == 0)
    return table


def main() -> None:
    app(prog_name="agentplatform")


__all__ = ["FINAL", "app", "main"]
