"""The two log formats (services/common/logs.py): the readable line `make run` shows and the JSON object a
collector reads, each with the request and run ids in context and nothing of another task's."""

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.common import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def configure(log_format: logs.LogFormat, stream: io.StringIO) -> None:
    logs.configure_logging("INFO", log_format, "engine")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


async def log_in_two_runs() -> None:
    async def run(run_id: str) -> None:
        logs.request_id.set(f"req-{run_id}")
        logs.run_id.set(run_id)
        await asyncio.sleep(0)
        logging.getLogger("services.engine.test").info("step of %s", run_id)

    await asyncio.gather(asyncio.create_task(run("r1")), asyncio.create_task(run("r2")))
    logging.getLogger("services.engine.test").warning("outside any run")


def test_json_lines_name_the_service_and_each_task_its_own_request_and_run(captured: io.StringIO) -> None:
    configure("json", captured)
    asyncio.run(log_in_two_runs())
    records = [json.loads(line) for line in captured.getvalue().splitlines()]
    by_message = {record["message"]: record for record in records}
    assert by_message["step of r1"]["run_id"] == "r1" and by_message["step of r1"]["request_id"] == "req-r1"
    assert by_message["step of r2"]["run_id"] == "r2" and by_message["step of r2"]["request_id"] == "req-r2"
    outside = by_message["outside any run"]
    assert "run_id" not in outside and "request_id" not in outside
    assert outside["level"] == "WARNING" and outside["service"] == "engine"
    assert outside["logger"] == "services.engine.test" and outside["time"].endswith("+00:00")


def test_a_failure_is_logged_with_its_traceback_in_one_json_object(captured: io.StringIO) -> None:
    configure("json", captured)
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("x").exception("it failed")
    (line,) = captured.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "it failed" and "ValueError: broken" in record["exc_info"]


def test_text_lines_show_the_request_and_the_run_when_there_is_one(captured: io.StringIO) -> None:
    configure("text", captured)
    asyncio.run(log_in_two_runs())
    lines = captured.getvalue().splitlines()
    assert any("[req=req-r1 run=r1] step of r1" in line for line in lines)
    assert any(line.endswith("WARNING services.engine.test [req=-] outside any run") for line in lines)
