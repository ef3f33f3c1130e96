"""Feedback scores (issue 21): on a run or a step, by a person, an API client or an evaluator; listed with the
run, summed up per agent revision, deleted with the run; each bad input an InvalidArgument naming its field with
nothing stored. The store on SQLite and PostgreSQL alike, then the RPCs over real gRPC with API keys."""

import math
from datetime import timedelta
from typing import Any

import grpc
import pytest

from agentplatform.runs.v1 import runs_pb2
from services.common.db.database import utcnow
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runs import scores
from services.runs.records import NewScore, NewStep
from services.runs.store import RunStore
from tests.runs.helpers import new_run
from tests.runs.service_helpers import ADMIN, ALICE, BOB, as_, create_for, status_of

pytestmark = pytest.mark.asyncio


async def _run(store: RunStore, owner: str = "alice", **fields: Any) -> str:
    run = await store.create_run(new_run("q", owner=owner, steps=(NewStep("user-request", {"text": "q"}),), **fields))
    await store.append_steps(run.id, [NewStep("agent-response", {"text": "a"})])
    await store.finish_run(run.id, "completed")
    return run.id


async def test_scores_of_every_kind_are_listed_with_the_run_oldest_first(store: RunStore) -> None:
    run_id = await _run(store)
    thumbs = await store.create_score(
        NewScore(run_id, "thumbs", True, source="person"), author="alice", owner="alice"
    )
    rating = await store.create_score(
        NewScore(run_id, "helpfulness", 0.75, step_sequence=2, comment="clear", source="evaluator"),
        author="judge", owner=None,
    )
    label = await store.create_score(NewScore(run_id, "topic", "billing"), author="alice", owner="alice")
    listed = await store.list_scores(run_id, owner="alice")
    assert listed == [thumbs, rating, label]
    assert [(s.name, s.value, s.step_sequence, s.source, s.author) for s in listed] == [
        ("thumbs", True, 0, "person", "alice"),
        ("helpfulness", 0.75, 2, "evaluator", "judge"),
        ("topic", "billing", 0, "api", "alice"),
    ]
    assert type(listed[0].value) is bool
    assert (await store.get_run(run_id, with_scores=True)).scores == listed
    assert (await store.get_run(run_id)).scores == []


@pytest.mark.parametrize(
    ("score", "field"),
    [
        (NewScore("", "", 1.0), "score.name"),
        (NewScore("", "has space", 1.0), "score.name"),
        (NewScore("", "x" * 65, 1.0), "score.name"),
        (NewScore("", "n", math.nan), "score.number_value"),
        (NewScore("", "n", math.inf), "score.number_value"),
        (NewScore("", "n", 1e10), "score.number_value"),
        (NewScore("", "n", ""), "score.category_value"),
        (NewScore("", "n", "c" * 101), "score.category_value"),
        (NewScore("", "n", 1.0, comment="c" * 4001), "score.comment"),
        (NewScore("", "n", 1.0, source="robot"), "score.source"),
        (NewScore("", "n", 1.0, step_sequence=-1), "score.step_sequence"),
        (NewScore("", "n", 1.0, step_sequence=3), "score.step_sequence"),
    ],
)
async def test_a_bad_score_names_its_field_and_nothing_is_stored(store: RunStore, score: NewScore, field: str) -> None:
    run_id = await _run(store)
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        await store.create_score(NewScore(**{**score.__dict__, "run_id": run_id}), author="alice", owner="alice")
    assert await store.list_scores(run_id) == []


async def test_another_users_run_cannot_be_scored_or_read_and_a_score_is_deleted_by_whom_it_concerns(
    store: RunStore,
) -> None:
    run_id = await _run(store, owner="alice")
    with pytest.raises(NotFound):
        await store.create_score(NewScore(run_id, "thumbs", False), author="bob", owner="bob")
    with pytest.raises(NotFound):
        await store.list_scores(run_id, owner="bob")
    by_judge = await store.create_score(NewScore(run_id, "ok", True), author="judge", owner=None)
    by_alice = await store.create_score(NewScore(run_id, "ok", False), author="alice", owner="alice")
    with pytest.raises(NotFound):
        await store.delete_score(by_judge.id, caller="bob", admin=False)
    await store.delete_score(by_judge.id, caller="alice", admin=False)  # the run's owner
    await store.delete_score(by_alice.id, caller="root", admin=True)
    assert await store.list_scores(run_id) == []
    with pytest.raises(NotFound):
        await store.delete_score(by_alice.id, caller="root", admin=True)


async def test_a_run_holds_a_bounded_number_of_scores(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scores, "MAX_SCORES_PER_RUN", 2)
    run_id = await _run(store)
    for value in (1.0, 2.0):
        await store.create_score(NewScore(run_id, "n", value), author="alice")
    with pytest.raises(FailedPrecondition, match="2 scores"):
        await store.create_score(NewScore(run_id, "n", 3.0), author="alice")
    assert [score.value for score in await store.list_scores(run_id)] == [1.0, 2.0]


async def test_scores_go_with_their_run(store: RunStore) -> None:
    run_id = await _run(store)
    score = await store.create_score(NewScore(run_id, "n", 1.0), author="alice")
    await store.delete_run(run_id)
    with pytest.raises(NotFound):
        await store.delete_score(score.id, caller="root", admin=True)


async def test_summaries_per_agent_revision_and_name(store: RunStore) -> None:
    agent = "7f0e6a62-3c4b-4d7a-9f52-1d2c3b4a5e6f"
    first = [await _run(store, agent_id=agent, agent_revision=1) for _ in range(2)]
    second = await _run(store, agent_id=agent, agent_revision=2)
    bobs = await _run(store, owner="bob", agent_id=agent, agent_revision=2)
    other_agent = await _run(store)
    for run_id, value in zip(first, (1.0, 4.0), strict=True):
        await store.create_score(NewScore(run_id, "rating", value), author="alice")
    await store.create_score(NewScore(first[0], "thumbs", True), author="alice")
    await store.create_score(NewScore(first[1], "thumbs", False), author="alice")
    await store.create_score(NewScore(first[1], "thumbs", True), author="alice")
    for category in ("billing", "billing", "refund"):
        await store.create_score(NewScore(second, "topic", category), author="alice")
    await store.create_score(NewScore(bobs, "rating", 5.0), author="bob")
    await store.create_score(NewScore(other_agent, "rating", 2.0), author="alice")

    summaries = await store.summarize_scores(agent, owner="alice")
    assert [(s.agent_revision, s.name, s.kind, s.count) for s in summaries] == [
        (1, "rating", "number", 2), (1, "thumbs", "boolean", 3), (2, "topic", "category", 3),
    ]
    rating, thumbs, topic = summaries
    assert (rating.mean, rating.least, rating.greatest) == (2.5, 1.0, 4.0)
    assert thumbs.mean == pytest.approx(2 / 3)
    assert topic.categories == (("billing", 2), ("refund", 1))
    # An admin's view of every user adds bob's; a time range before the runs has none.
    everyone = await store.summarize_scores(agent, owner=None)
    assert [(s.agent_revision, s.name, s.count) for s in everyone if s.name == "rating"] == [
        (1, "rating", 2), (2, "rating", 1),
    ]
    now = utcnow()
    assert await store.summarize_scores(agent, owner=None, end=now - timedelta(hours=1)) == []
    with pytest.raises(InvalidArgument, match="end_time"):
        await store.summarize_scores(agent, owner=None, start=now, end=now)


# --- over gRPC, with API keys ---------------------------------------------------------------------------------


async def test_the_score_rpcs_as_users_see_them(keyed_stub: Any) -> None:
    stub = keyed_stub
    run = await create_for(stub, "alice")
    created = await stub.CreateScore(runs_pb2.CreateScoreRequest(run_id=run.id, score=runs_pb2.Score(
        name="thumbs", boolean_value=True, comment="good", source=runs_pb2.SCORE_SOURCE_PERSON,
    )), metadata=as_(ALICE))
    assert (created.author, created.run_id, created.WhichOneof("value"), created.boolean_value) == (
        "alice", run.id, "boolean_value", True
    )
    got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id), metadata=as_(ALICE))
    assert list(got.scores) == [created]
    listed = await stub.ListScores(runs_pb2.ListScoresRequest(run_id=run.id), metadata=as_(ADMIN))
    assert list(listed.scores) == [created]

    for request, code in [
        (runs_pb2.CreateScoreRequest(run_id=run.id, score=runs_pb2.Score(name="thumbs")),
         grpc.StatusCode.INVALID_ARGUMENT),
        (runs_pb2.CreateScoreRequest(run_id=run.id, score=runs_pb2.Score(name="x", number_value=math.nan)),
         grpc.StatusCode.INVALID_ARGUMENT),
        (runs_pb2.CreateScoreRequest(run_id=run.id, score=runs_pb2.Score(name="x", number_value=1, source=9)),
         grpc.StatusCode.INVALID_ARGUMENT),
        (runs_pb2.CreateScoreRequest(run_id="nope", score=runs_pb2.Score(name="x", number_value=1)),
         grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        assert await status_of(stub.CreateScore(request, metadata=as_(ALICE))) == code, request
    # Bob can neither score nor read alice's run, nor delete her score, nor sum up everyone's.
    bobs_try = runs_pb2.CreateScoreRequest(run_id=run.id, score=runs_pb2.Score(name="x", number_value=1))
    assert await status_of(stub.CreateScore(bobs_try, metadata=as_(BOB))) == grpc.StatusCode.NOT_FOUND
    assert await status_of(
        stub.DeleteScore(runs_pb2.DeleteScoreRequest(score_id=created.id), metadata=as_(BOB))
    ) == grpc.StatusCode.NOT_FOUND
    assert await status_of(
        stub.SummarizeScores(runs_pb2.SummarizeScoresRequest(all_users=True), metadata=as_(BOB))
    ) == grpc.StatusCode.PERMISSION_DENIED
    summary = await stub.SummarizeScores(runs_pb2.SummarizeScoresRequest(), metadata=as_(ALICE))
    assert [(s.name, s.kind, s.count, s.mean) for s in summary.summaries] == [("thumbs", "boolean", 1, 1.0)]
    await stub.DeleteScore(runs_pb2.DeleteScoreRequest(score_id=created.id), metadata=as_(ALICE))
    got = await stub.GetRun(runs_pb2.GetRunRequest(run_id=run.id), metadata=as_(ALICE))
    assert list(got.scores) == []
