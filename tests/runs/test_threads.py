"""Conversation threads in the run store (SQLite and PostgreSQL): a run's place in its thread, the multitask
strategies when a thread is busy, reading a thread's turns and history, and deleting a thread with its runs."""

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runs.records import NewStep, RunRecord
from services.runs.search import RunFilter
from services.runs.store import RunStore
from tests.runs.helpers import EXECUTOR, new_run

UNKNOWN_THREAD = "00000000-0000-4000-8000-000000000000"
REQUEST_ID = "3a0d9c55-0f3e-4b7e-9d2a-6a8f5e1b7c21"


def request(text: str) -> NewStep:
    return NewStep("user-request", {"text": text})


def answer(text: str) -> NewStep:
    return NewStep("agent-response", {"text": text})


async def finished_turn(store: RunStore, query: str, reply: str, thread_id: str = "") -> RunRecord:
    """A completed turn: the user's request and the agent's answer."""
    run = await store.create_run(new_run(query, thread_id=thread_id, steps=(request(query),)))
    await store.append_steps(run.id, [answer(reply)])
    return await store.finish_run(run.id, "completed")


async def test_a_run_without_a_thread_starts_one_and_the_next_continues_it(store: RunStore) -> None:
    first = await finished_turn(store, "What is 5 + 10?", "15")
    assert first.thread_id and first.thread_turn == 1
    second = await store.create_run(new_run("Multiply that by 3", thread_id=first.thread_id))
    assert (second.thread_id, second.thread_turn, second.state) == (first.thread_id, 2, "running")

    thread = await store.get_thread(first.thread_id)
    assert (thread.title, thread.turn_count, thread.owner) == ("What is 5 + 10?", 2, first.owner)
    assert thread.updated_at >= thread.created_at
    # The thread's runs, in turn order (ListRuns proper is newest first).
    runs, token = await store.list_runs(thread_id=first.thread_id)
    assert [run.id for run in runs] == [first.id, second.id] and token == ""


async def test_a_long_first_message_makes_a_title_of_200_characters(store: RunStore) -> None:
    run = await store.create_run(new_run("x" * 5000))
    assert (await store.get_thread(run.thread_id)).title == "x" * 200


async def test_another_users_thread_is_not_found_everywhere(store: RunStore) -> None:
    mine = await finished_turn(store, "mine", "ok")
    with pytest.raises(NotFound, match=f"thread '{mine.thread_id}' not found"):
        await store.create_run(new_run("sneaky", owner="mallory", thread_id=mine.thread_id))
    with pytest.raises(NotFound, match="not found"):
        await store.get_thread(mine.thread_id, owner="mallory")
    with pytest.raises(NotFound, match="not found"):
        await store.list_runs(thread_id=mine.thread_id, owner="mallory")
    with pytest.raises(NotFound, match="not found"):
        await store.delete_thread(mine.thread_id, owner="mallory")
    assert (await store.get_thread(mine.thread_id)).turn_count == 1  # the refused create took no turn
    with pytest.raises(NotFound, match=f"thread '{UNKNOWN_THREAD}' not found"):
        await store.create_run(new_run("q", thread_id=UNKNOWN_THREAD))
    with pytest.raises(InvalidArgument, match="thread_id 'nope' is not a valid thread id"):
        await store.create_run(new_run("q", thread_id="nope"))
    with pytest.raises(InvalidArgument, match="unknown multitask strategy 'later'"):
        await store.create_run(new_run("q", multitask="later"))


# --- a busy thread -------------------------------------------------------------------------------------------


async def test_reject_refuses_a_second_run_while_one_is_in_progress(store: RunStore) -> None:
    first = await store.create_run(new_run("first", steps=(request("first"),)))
    with pytest.raises(FailedPrecondition, match=f"has a run in progress \\(run '{first.id}', running\\)"):
        await store.create_run(new_run("second", thread_id=first.thread_id))
    assert (await store.get_thread(first.thread_id)).turn_count == 1
    await store.finish_run(first.id, "completed")
    second = await store.create_run(new_run("second", thread_id=first.thread_id))
    assert (second.thread_turn, second.state) == (2, "running")


async def test_enqueue_creates_the_run_queued_and_it_begins_only_after_the_earlier_turn(store: RunStore) -> None:
    first = await store.create_run(new_run("first", steps=(request("first"),)))
    second = await store.create_run(
        new_run("second", thread_id=first.thread_id, multitask="enqueue", steps=(request("second"),))
    )
    # Asked RUNNING with its first step; it waits for the earlier turn, so it has neither.
    assert (second.state, second.step_count, second.steps, second.thread_turn) == ("queued", 0, [], 2)
    with pytest.raises(FailedPrecondition, match=f"cannot begin before run '{first.id}'"):
        await store.begin_run(second.id, EXECUTOR)
    assert (await store.get_run(first.id)).cancel_requested is False  # enqueue leaves the earlier run alone
    await store.finish_run(first.id, "completed")
    assert (await store.begin_run(second.id, EXECUTOR)).state == "running"


async def test_interrupt_cancels_the_runs_in_progress_in_the_same_write(store: RunStore) -> None:
    running = await store.create_run(new_run("first", steps=(request("first"),)))
    queued = await store.create_run(new_run("second", thread_id=running.thread_id, multitask="enqueue"))
    with store.notices.connect(EXECUTOR) as notices:
        third = await store.create_run(new_run("third", thread_id=running.thread_id, multitask="interrupt"))
    assert (third.state, third.thread_turn) == ("queued", 3)

    # The running one is asked to stop (its engine ends it) and told so; the queued one ends here and now.
    stopped = await store.get_run(running.id)
    assert stopped.state == "running" and stopped.cancel_requested
    notice = notices.get_nowait()
    assert notice.run_id == running.id and f"interrupted by run {third.id}" in notice.reason
    ended = await store.get_run(queued.id)
    assert (ended.state, ended.error_code) == ("cancelled", "cancelled")
    assert f"interrupted by run {third.id} on its thread" in ended.steps[-1].content["message"]

    with pytest.raises(FailedPrecondition, match="cannot begin before"):
        await store.begin_run(third.id, EXECUTOR)
    await store.finish_run(running.id, "cancelled", "cancelled", "interrupted")
    assert (await store.begin_run(third.id, EXECUTOR)).state == "running"


async def test_a_retried_create_on_a_thread_returns_the_first_run(store: RunStore) -> None:
    first = await finished_turn(store, "hello", "hi")
    again = new_run("more", thread_id=first.thread_id, request_id=REQUEST_ID)
    created = await store.create_run(again)
    retried = await store.create_run(again)
    assert retried.id == created.id and retried.thread_turn == 2
    assert (await store.get_thread(first.thread_id)).turn_count == 2


# --- reading ---------------------------------------------------------------------------------------------------


async def test_thread_history_gives_the_earlier_turns_oldest_first_with_their_steps(store: RunStore) -> None:
    one = await finished_turn(store, "one", "1")
    two = await finished_turn(store, "two", "2", one.thread_id)
    three = await store.create_run(new_run("three", thread_id=one.thread_id))

    history = await store.thread_history(three.id)
    assert [turn.id for turn in history.turns] == [one.id, two.id] and history.omitted == 0
    assert [[step.content["text"] for step in turn.steps] for turn in history.turns] == [["one", "1"], ["two", "2"]]

    latest = await store.thread_history(three.id, max_turns=1)
    assert [turn.id for turn in latest.turns] == [two.id] and latest.omitted == 1
    assert (await store.thread_history(one.id)).turns == []  # the first turn has no history
    with pytest.raises(InvalidArgument, match="max_turns must be 0"):
        await store.thread_history(three.id, max_turns=-1)


async def test_list_threads_is_the_users_most_recently_active_first_in_pages(store: RunStore) -> None:
    a = await finished_turn(store, "a", "1")
    b = await finished_turn(store, "b", "2")
    await store.create_run(new_run("theirs", owner="bob"))
    await finished_turn(store, "a again", "3", a.thread_id)  # a is now the most recent

    page, token = await store.list_threads(page_size=1, owner=a.owner)
    assert [thread.id for thread in page] == [a.thread_id] and token
    page, token = await store.list_threads(page_size=1, page_token=token, owner=a.owner)
    assert [thread.id for thread in page] == [b.thread_id] and token == ""
    everyone, _ = await store.list_threads()
    assert len(everyone) == 3
    with pytest.raises(InvalidArgument, match="page_token is not valid"):
        await store.list_threads(page_token="garbage")


async def test_runs_of_a_thread_come_in_pages_in_turn_order(store: RunStore) -> None:
    first = await finished_turn(store, "t1", "r1")
    ids = [first.id]
    for n in range(2, 5):
        ids.append((await finished_turn(store, f"t{n}", f"r{n}", first.thread_id)).id)
    seen, token = [], ""
    while True:
        page, token = await store.list_runs(page_size=3, page_token=token, thread_id=first.thread_id)
        seen += [run.id for run in page]
        if not token:
            break
    assert seen == ids
    # A token of one thread's listing means nothing in another listing.
    _, token = await store.list_runs(page_size=1, thread_id=first.thread_id)
    with pytest.raises(InvalidArgument, match="page_token is not valid"):
        await store.list_runs(page_token=token, thread_id=first.thread_id, search=RunFilter(states=("failed",)))


async def test_deleting_a_thread_deletes_its_runs_and_their_steps(store: RunStore) -> None:
    first = await finished_turn(store, "one", "1")
    second = await finished_turn(store, "two", "2", first.thread_id)
    other = await finished_turn(store, "elsewhere", "3")

    await store.delete_thread(first.thread_id)
    for run in (first, second):
        with pytest.raises(NotFound):
            await store.get_run(run.id)
    with pytest.raises(NotFound):
        await store.get_thread(first.thread_id)
    assert (await store.get_run(other.id)).steps  # another thread is untouched
