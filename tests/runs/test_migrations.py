"""The runs schema is the migrations': they build exactly the tables the models describe, on SQLite and
PostgreSQL, and a database made before migrations existed is adopted and upgraded with its runs intact."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.common.db.database import Database
from services.runs.app import start_runs
from services.runs.full_text import UNMODELLED
from services.runs.models import MIGRATIONS, Base
from services.runs.records import APPROVED, NewStep
from services.runs.search import NumberRange, RunFilter
from services.runs.signals import RunSignals
from services.runs.store import RunStore
from tests.runs.helpers import EXECUTOR, new_run, sqlite_url
from tests.support.platform import runs_settings

BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = sqlite_url(tmp_path / "runs.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(url)
    async with db.engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    yield db
    await db.dispose()


async def test_migrations_build_what_the_models_describe(empty_database: Database) -> None:
    await empty_database.migrate(MIGRATIONS)

    def differences(connection: Connection) -> list:
        # The full-text and metadata indexes are DDL of their own (services/runs/full_text.py), not models.
        options = {"include_name": lambda name, kind, parent: name not in UNMODELLED}
        return compare_metadata(MigrationContext.configure(connection, opts=options), Base.metadata)

    async with empty_database.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_a_database_from_before_migrations_is_adopted_and_its_running_runs_are_ended(
    empty_database: Database, tmp_path: Path
) -> None:
    # The foundation's schema, as create_all made it: revision 0001's tables without Alembic's version table.
    def foundation(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(text(
            "INSERT INTO runs (id, user_query, state, model, created_at, error_message, prompt_tokens, "
            "completion_tokens, total_tokens, metadata, step_count) VALUES "
            "('11111111-1111-1111-1111-111111111111', 'old and stuck', 'running', 'demo', "
            "'2026-01-01 00:00:00', '', 0, 0, 0, '{}', 1)"
        ))
        connection.execute(text(
            "INSERT INTO run_steps (run_id, sequence, type, content, created_at) VALUES "
            "('11111111-1111-1111-1111-111111111111', 1, 'user-request', '{\"text\": \"old and stuck\"}', "
            "'2026-01-01 00:00:00')"
        ))

    async with empty_database.engine.begin() as connection:
        await connection.run_sync(foundation)

    url = empty_database.engine.url.render_as_string(hide_password=False)
    app = await start_runs(runs_settings(tmp_path, DATABASE_URL=url, RUNS_REAPER_INTERVAL_SECONDS=0.1))
    try:
        # The reaper orphans the run the foundation left RUNNING (it has no lease), keeping its steps: the first
        # engine to connect is offered it to resume (0010 counts the attempt).
        for _ in range(50):
            run = await app.store.get_run("11111111-1111-1111-1111-111111111111")
            if run.attempts:
                break
            await asyncio.sleep(0.1)
        assert (run.state, run.executor_id, run.attempts) == ("running", "", 1)
        assert [step.type for step in run.steps] == ["user-request"]
        assert run.steps[0].content == {"text": "old and stuck"}
        # A run from before threads is the single turn of a thread of its own (0006).
        assert (run.thread_id, run.thread_turn) == (run.id, 1)
        thread = await app.store.get_thread(run.thread_id)
        assert (thread.title, thread.owner, thread.turn_count) == ("old and stuck", "local", 1)
    finally:
        await app.stop()


async def test_the_migrated_schema_takes_waiting_runs_and_approval_steps(empty_database: Database) -> None:
    # The check constraints on a run's state and a step's type are rewritten by 0007 (a table copy on SQLite).
    await empty_database.migrate(MIGRATIONS)
    store = RunStore(empty_database, RunSignals())
    try:
        run = await store.create_run(new_run("q"))
        step = NewStep("approval-request", {"prompt": "ok?"})
        assert (await store.await_approval(run.id, EXECUTOR, step, None)).state == "waiting"
        await store.decide_approval(run.id, 1, APPROVED)
        assert [s.type for s in (await store.get_run(run.id)).steps] == ["approval-request", "approval-decision"]
    finally:
        await store.close()


async def test_a_run_from_before_lease_epochs_is_at_epoch_zero_and_its_engine_writes_on(
    empty_database: Database,
) -> None:
    # A run RUNNING under an engine of the previous version when the store is upgraded (0009 adds its epoch).
    def before_epochs(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        config.attributes["connection"] = connection
        command.upgrade(config, "0008")
        connection.execute(text(
            "INSERT INTO runs (id, owner, user_query, state, model, created_at, error_message, prompt_tokens, "
            "completion_tokens, total_tokens, metadata, step_count, executor_id, lease_seconds, "
            "lease_expires_at) VALUES ('22222222-2222-2222-2222-222222222222', 'local', 'during the upgrade', "
            "'running', 'demo', '2026-01-01 00:00:00', '', 0, 0, 0, '{}', 0, 'engine-old', 60, "
            "'2099-01-01 00:00:00')"
        ))

    async with empty_database.engine.begin() as connection:
        await connection.run_sync(before_epochs)
    await empty_database.migrate(MIGRATIONS)
    store = RunStore(empty_database, RunSignals())
    try:
        run_id = "22222222-2222-2222-2222-222222222222"
        assert (await store.get_run(run_id)).lease_epoch == 0
        # Its engine sends no epoch: its writes keep the checks from before epochs.
        assert (await store.renew_leases("engine-old", [run_id])).lost_run_ids == []
        await store.append_steps(run_id, [NewStep("agent-response", {"text": "a"})])
        assert (await store.finish_run(run_id, "completed")).state == "completed"
    finally:
        await store.close()


async def test_runs_ended_before_search_are_backfilled_and_found(empty_database: Database) -> None:
    # A run that ended before search (0017): its final answer, tools and duration come from its steps and times.
    run_id = "33333333-3333-3333-3333-333333333333"

    def before_search(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        config.attributes["connection"] = connection
        command.upgrade(config, "0012")
        connection.execute(text(
            "INSERT INTO runs (id, owner, user_query, state, model, created_at, completed_at, error_message, "
            "prompt_tokens, completion_tokens, total_tokens, metadata, step_count, executor_id, lease_seconds) "
            f"VALUES ('{run_id}', 'local', 'how much is the invoice?', 'completed', 'demo', "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:02.500000', '', 0, 0, 0, '{}', 3, '', 60)"
        ))
        for sequence, kind, content in (
            (1, "tool-call", '{"tool_name": "calculator", "tool_call_id": "c1"}'),
            (2, "agent-response", '{"text": "a first draft"}'),
            (3, "agent-response", '{"text": "It is 42 euros."}'),
        ):
            connection.execute(text(
                "INSERT INTO run_steps (run_id, sequence, type, content, created_at, node_id) VALUES "
                f"('{run_id}', {sequence}, '{kind}', '{content}', '2026-01-01 00:00:01', '')"
            ))

    async with empty_database.engine.begin() as connection:
        await connection.run_sync(before_search)
    await empty_database.migrate(MIGRATIONS)
    store = RunStore(empty_database, RunSignals())
    try:
        for search in (
            RunFilter(text="euros invoice"),
            RunFilter(tool="calculator"),
            RunFilter(duration_ms=NumberRange(2500, 2500)),
        ):
            assert [run.id for run in (await store.list_runs(search=search))[0]] == [run_id], search
        assert (await store.list_runs(search=RunFilter(text="draft")))[0] == []
        # Runs created after the upgrade are indexed by the triggers (SQLite) or the expression index.
        new = await store.create_run(new_run("a brand new invoice"))
        found = [run.id for run in (await store.list_runs(search=RunFilter(text="invoice")))[0]]
        assert found == [new.id, run_id]
    finally:
        await store.close()


async def test_runs_searchable_before_the_words_table_are_found_after_it_and_new_ones_too(
    empty_database: Database,
) -> None:
    # 0019 moved PostgreSQL's words off the runs row: a database at 0018 (the GIN index over runs, as 0019's
    # downgrade leaves it) has its runs' words copied to run_texts, which the triggers keep from then on.
    def to_revision(connection: Connection, revision: str, down: bool = False) -> None:
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    await empty_database.migrate(MIGRATIONS)
    async with empty_database.engine.begin() as connection:
        await connection.run_sync(to_revision, "0018", True)
    store = RunStore(empty_database, RunSignals())
    try:
        old = await store.create_run(new_run("an invoice from before"))
        await store.append_steps(old.id, [NewStep("agent-response", {"text": "It is 42 euros."})])
        await store.finish_run(old.id, "completed")
    finally:
        await store.close()
    await empty_database.migrate(MIGRATIONS)
    store = RunStore(empty_database, RunSignals())
    try:
        assert [run.id for run in (await store.list_runs(search=RunFilter(text="euros invoice")))[0]] == [old.id]
        new = await store.create_run(new_run("a brand new invoice"))
        found = [run.id for run in (await store.list_runs(search=RunFilter(text="invoice")))[0]]
        assert found == [new.id, old.id]
        await store.append_steps(new.id, [NewStep("agent-response", {"text": "Paid in yen."})])
        await store.finish_run(new.id, "completed")  # the final answer is written: its words too
        assert [run.id for run in (await store.list_runs(search=RunFilter(text="yen invoice")))[0]] == [new.id]
    finally:
        await store.close()
