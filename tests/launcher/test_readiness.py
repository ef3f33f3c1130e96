"""The launcher's wait for a ready platform (services/launcher/readiness.py) with probes the test controls: it
returns once every check has passed, probes a passed check no more, names what it still waits for when a start
takes long, and gives up, saying why, when the supervisor gave up on a process."""

from collections import Counter

from services.launcher.readiness import Check, wait_ready


def probe(calls: Counter[str], name: str, passes_from: int) -> Check:
    """A check that fails until its `passes_from`-th probe (1 for the first), and counts its probes."""

    def answer() -> bool:
        calls[name] += 1
        return calls[name] >= passes_from

    return Check(name, f"127.0.0.1:{len(name)}", answer)


async def test_ready_once_every_check_passed_and_a_passed_check_is_not_probed_again() -> None:
    calls: Counter[str] = Counter()
    said: list[str] = []
    checks = [probe(calls, "runs", 1), probe(calls, "engine", 4), probe(calls, "gateway", 2)]
    ready = await wait_ready(checks, is_down=lambda name: False, say=said.append, poll_seconds=0.001)
    assert ready
    assert calls == {"runs": 1, "engine": 4, "gateway": 2}
    assert said == []


async def test_a_slow_start_is_reported_with_what_it_waits_for() -> None:
    calls: Counter[str] = Counter()
    said: list[str] = []
    checks = [probe(calls, "runs", 1), probe(calls, "agents", 5)]
    assert await wait_ready(checks, is_down=lambda name: False, say=said.append, poll_seconds=0.001, report_after=0)
    assert said and all(line.startswith("still waiting after") for line in said), said
    assert "agents (127.0.0.1:6)" in said[0] and "runs" not in said[0]


async def test_a_process_given_up_ends_the_wait_without_ready() -> None:
    calls: Counter[str] = Counter()
    said: list[str] = []
    checks = [probe(calls, "tools", 10**9), probe(calls, "runs", 1)]
    ready = await wait_ready(checks, is_down=lambda name: name == "tools", say=said.append, poll_seconds=0.001)
    assert not ready
    assert said == ["not ready: tools is down (its lines above say why); the rest keeps serving"]
