"""Failures of the model endpoint that a retry may cure are retried by the openai SDK (LLM_MAX_RETRIES), with
Retry-After honoured; what still fails ends the run FAILED with a stable code."""

from pathlib import Path

from prometheus_client import REGISTRY

from agentplatform.runs.v1 import runs_pb2
from tests.engine.run_helpers import kinds, start_run, wait_final
from tests.support.platform import start_platform
from tests.support.scripted_llm import HttpError, ScriptedLLM, http_error, text_reply


async def test_a_503_then_a_good_reply_completes_the_run(tmp_path: Path) -> None:
    async with ScriptedLLM(HttpError(503, "warming up"), text_reply("Ready now.")) as llm, \
            start_platform(tmp_path, llm.base_url, LLM_MAX_RETRIES=2) as platform:
        final = await wait_final(platform, (await start_run(platform, "hello")).id)

        assert final.state == runs_pb2.RUN_STATE_COMPLETED
        assert kinds(final.steps) == ["user_request", "agent_response"]
        assert final.steps[-1].agent_response.text == "Ready now."
        assert len(llm.requests) == 2
        assert llm.requests[0]["messages"] == llm.requests[1]["messages"], "the retry sends the same request"


def endpoint_responses(code: str) -> float:
    return REGISTRY.get_sample_value("agentplatform_model_endpoint_responses_total", {"code": code}) or 0.0


async def test_429_on_every_attempt_fails_the_run_rate_limited(tmp_path: Path) -> None:
    # retry-after-ms keeps the SDK's waits short; three answers for the first try and LLM_MAX_RETRIES=2.
    limited = [http_error(429, "slow down", headers={"retry-after-ms": "20"}) for _ in range(3)]
    refusals = endpoint_responses("429")
    async with ScriptedLLM(*limited, text_reply("not reached")) as llm, \
            start_platform(tmp_path, llm.base_url, LLM_MAX_RETRIES=2) as platform:
        final = await wait_final(platform, (await start_run(platform, "hello")).id)
        # The metrics see each attempt the SDK made inside the one model call.
        assert endpoint_responses("429") == refusals + 3

        assert final.state == runs_pb2.RUN_STATE_FAILED
        assert final.error_code == final.steps[-1].error.code == "rate_limited"
        assert "HTTP 429" in final.error_message and "slow down" in final.error_message
        assert len(llm.requests) == 3
        assert llm.remaining == 1


async def test_a_429_with_retry_after_zero_is_retried(tmp_path: Path) -> None:
    script = [http_error(429, "slow down", headers={"retry-after": "0"}), text_reply("Thanks for waiting.")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url, LLM_MAX_RETRIES=2) as platform:
        final = await wait_final(platform, (await start_run(platform, "hello")).id)

        assert final.state == runs_pb2.RUN_STATE_COMPLETED
        assert final.steps[-1].agent_response.text == "Thanks for waiting."
        assert len(llm.requests) == 2


async def test_a_429_asking_for_a_wait_past_the_sdks_bound_is_not_retried(tmp_path: Path) -> None:
    # The SDK does not wait more than two minutes on a Retry-After: it gives up at once, and the run fails.
    script = [http_error(429, "come back tomorrow", headers={"retry-after": "86400"}), text_reply("not reached")]
    async with ScriptedLLM(*script) as llm, start_platform(tmp_path, llm.base_url, LLM_MAX_RETRIES=2) as platform:
        final = await wait_final(platform, (await start_run(platform, "hello")).id)

        assert final.state == runs_pb2.RUN_STATE_FAILED
        assert final.error_code == "rate_limited"
        assert len(llm.requests) == 1
