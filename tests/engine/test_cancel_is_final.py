"""A cancel is final (issue 17): when the store turns the engine's COMPLETED finish into CANCELLED (the cancel was
recorded through another replica while the engine wrote its answer), the engine reports the run cancelled, as
Chat's caller and the run's followers then see it, not as answered."""

from services.engine.journal import Run
from services.engine.loop.steps import completed


def test_a_completion_the_store_overruled_with_a_cancel_is_a_cancelled_outcome() -> None:
    cancelled = completed(Run("r1", "cancelled", error_code="cancelled", error_message="cancelled: by alice"), "42")
    assert cancelled.answer == "" and cancelled.failure is not None
    assert (cancelled.failure.code, str(cancelled.failure)) == ("cancelled", "cancelled: by alice")


def test_a_completion_the_store_kept_carries_the_answer() -> None:
    answered = completed(Run("r1", "completed"), "42")
    assert (answered.answer, answered.failure) == ("42", None)
