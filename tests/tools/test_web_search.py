"""The web_search plugin: its offline demo corpus, and SearXNG and Brave against a local HTTP server."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest

from services.common.errors import FailedPrecondition, ResourceExhausted, Unavailable
from services.common.settings import SettingsError, load_settings
from services.tools.app import start_tools
from services.tools.base import ToolContext
from services.tools.plugins.web_search import WebSearchTool
from services.tools.settings import ToolsSettings
from tests.support.stubs import tools_stubs
from tests.tools.conftest import SettingsFactory, execute_request

API_KEY = "brave-key-0123456789abcdef"


# --- the offline demo corpus ------------------------------------------------------------------------------------


async def test_finds_pages_by_keyword(context: ToolContext) -> None:
    output = await WebSearchTool().run({"query": "What is Envoy?", "max_results": 3.0}, context)
    assert output.result["backend"] == "demo"
    assert output.result["query"] == "What is Envoy?"
    results = output.result["results"]
    assert 1 <= len(results) <= 3
    assert results[0]["title"] == "Envoy proxy"
    assert set(results[0]) == {"title", "url", "snippet"}
    assert "Envoy proxy" in output.text


async def test_demo_answers_say_they_come_from_the_offline_corpus(context: ToolContext) -> None:
    found = await WebSearchTool().run({"query": "grpc"}, context)
    assert found.text.startswith("Results for 'grpc' (from the offline demo corpus, not the live web):\n")
    missing = await WebSearchTool().run({"query": "zebra marmalade"}, context)
    assert "offline demo corpus, not the live web" in missing.text


async def test_max_results_limits_the_hits(context: ToolContext) -> None:
    output = await WebSearchTool().run({"query": "grpc", "max_results": 1}, context)
    assert len(output.result["results"]) == 1


async def test_no_hits_is_an_empty_result_not_an_error(context: ToolContext) -> None:
    output = await WebSearchTool().run({"query": "zebra marmalade"}, context)
    assert output.result["results"] == []
    assert "No results found for 'zebra marmalade'" in output.text


async def test_description_says_the_default_backend_is_an_offline_demo() -> None:
    assert "offline demo corpus" in WebSearchTool.description


async def test_a_custom_corpus_file_is_used(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps([{"title": "Zebras", "url": "https://z.example", "snippet": "striped"}]))
    context = ToolContext(workspace=tmp_path, web_search_corpus=corpus)
    output = await WebSearchTool().run({"query": "zebras"}, context)
    assert output.result["results"] == [{"title": "Zebras", "url": "https://z.example", "snippet": "striped"}]


async def test_an_unreadable_corpus_names_the_setting(tmp_path: Path) -> None:
    context = ToolContext(workspace=tmp_path, web_search_corpus=tmp_path / "missing.json")
    with pytest.raises(FailedPrecondition, match="TOOLS_WEB_SEARCH_CORPUS"):
        await WebSearchTool().run({"query": "python"}, context)


# --- a local search backend -------------------------------------------------------------------------------------


@dataclass
class FakeBackend:
    """A search backend on 127.0.0.1: records each request and answers what the test set."""

    url: str = ""
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0
    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)

    def answer_json(self, value: Any, status: int = 200) -> None:
        self.status, self.body, self.content_type = status, json.dumps(value).encode(), "application/json"


@pytest.fixture
def backend() -> Iterator[FakeBackend]:
    fake = FakeBackend()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            fake.requests.append((parts.path, parse_qs(parts.query), dict(self.headers)))
            time.sleep(fake.delay)
            try:
                self.send_response(fake.status)
                self.send_header("Content-Type", fake.content_type)
                self.send_header("Content-Length", str(len(fake.body)))
                self.end_headers()
                self.wfile.write(fake.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout test)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def searxng(context: ToolContext, url: str, timeout: float = 5.0) -> ToolContext:
    return replace(context, web_search_backend="searxng", web_search_url=url, web_search_timeout_seconds=timeout)


def brave(context: ToolContext, url: str, key: str = API_KEY) -> ToolContext:
    return replace(context, web_search_backend="brave", web_search_url=url, web_search_api_key=key)


def searxng_result(n: int) -> dict[str, Any]:
    return {
        "url": f"https://example.org/{n}",
        "title": f"Page {n}",
        "content": f"About page {n}.",
        "engine": "duckduckgo",
        "score": 1.0 / n,
    }


async def test_searxng_gets_the_query_and_its_results_are_normalised(
    context: ToolContext, backend: FakeBackend
) -> None:
    backend.answer_json({
        "query": "envoy proxy",
        "number_of_results": 2,
        "results": [
            {"url": "https://www.envoyproxy.io/", "title": " Envoy  proxy ", "content": "An &amp; <b>edge</b> proxy",
             "engine": "bing"},
            {"url": "javascript:alert(1)", "title": "not a page"},
            "junk",
            {"url": "https://example.org/no-title"},
        ],
        "answers": [],
        "suggestions": [],
        "unresponsive_engines": [],
    })
    output = await WebSearchTool().run({"query": "envoy proxy"}, searxng(context, backend.url + "/"))
    [(path, params, _)] = backend.requests
    assert path == "/search"
    assert params == {"q": ["envoy proxy"], "format": ["json"]}
    assert output.result == {
        "query": "envoy proxy",
        "backend": "searxng",
        "results": [
            {"title": "Envoy proxy", "url": "https://www.envoyproxy.io/", "snippet": "An & edge proxy"},
            {"title": "https://example.org/no-title", "url": "https://example.org/no-title", "snippet": ""},
        ],
    }
    assert output.text.startswith("Results for 'envoy proxy' (SearXNG):\n1. Envoy proxy — https://www.envoyproxy.io/")
    assert "offline" not in output.text


async def test_searxng_results_are_cut_to_max_results(context: ToolContext, backend: FakeBackend) -> None:
    backend.answer_json({"results": [searxng_result(n) for n in range(1, 21)]})
    output = await WebSearchTool().run({"query": "pages", "max_results": 3.0}, searxng(context, backend.url))
    assert [hit["title"] for hit in output.result["results"]] == ["Page 1", "Page 2", "Page 3"]
    default = await WebSearchTool().run({"query": "pages"}, searxng(context, backend.url))
    assert len(default.result["results"]) == 5


async def test_searxng_with_no_results_is_an_empty_result(context: ToolContext, backend: FakeBackend) -> None:
    backend.answer_json({"query": "zzz", "results": []})
    output = await WebSearchTool().run({"query": "zzz"}, searxng(context, backend.url))
    assert output.result["results"] == []
    assert output.text == "No results found for 'zzz' (SearXNG)."


async def test_brave_sends_the_key_and_count_and_is_normalised(context: ToolContext, backend: FakeBackend) -> None:
    backend.answer_json({
        "type": "search",
        "query": {"original": "grpc"},
        "web": {"type": "search", "results": [
            {"title": "gRPC", "url": "https://grpc.io/", "description": "A high performance <strong>RPC</strong> "
             "framework", "age": "2 days ago"},
            {"title": "gRPC on GitHub", "url": "https://github.com/grpc/grpc", "description": "The C core"},
        ]},
    })
    output = await WebSearchTool().run({"query": "grpc", "max_results": 1}, brave(context, backend.url + "/web"))
    [(path, params, headers)] = backend.requests
    assert path == "/web"
    assert params == {"q": ["grpc"], "count": ["1"]}
    assert headers["X-Subscription-Token"] == API_KEY
    assert output.result["backend"] == "brave"
    assert output.result["results"] == [
        {"title": "gRPC", "url": "https://grpc.io/", "snippet": "A high performance RPC framework"}
    ]
    assert "(Brave Search)" in output.text


async def test_brave_without_web_results_is_an_empty_result(context: ToolContext, backend: FakeBackend) -> None:
    backend.answer_json({"type": "search", "query": {"original": "zzz"}})
    output = await WebSearchTool().run({"query": "zzz"}, brave(context, backend.url))
    assert output.result["results"] == []


# --- failures ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_backend_that_is_down_is_unavailable(context: ToolContext) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unavailable, match=r"searxng web search backend at http://127\.0\.0\.1:\d+ cannot be reached"):
        await WebSearchTool().run({"query": "x"}, searxng(context, url))


async def test_a_backend_slower_than_the_timeout_is_unavailable(context: ToolContext, backend: FakeBackend) -> None:
    backend.answer_json({"results": []})
    backend.delay = 2.0
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"did not answer within 0\.2 s"):
        await WebSearchTool().run({"query": "x"}, searxng(context, backend.url, timeout=0.2))
    assert time.monotonic() - started < 1.5


async def test_a_500_is_unavailable(context: ToolContext, backend: FakeBackend) -> None:
    backend.answer_json({"error": "boom"}, status=500)
    with pytest.raises(Unavailable, match=r"failed \(HTTP 500\); try again later"):
        await WebSearchTool().run({"query": "x"}, searxng(context, backend.url))


async def test_an_html_page_is_unavailable_and_says_what_came(context: ToolContext, backend: FakeBackend) -> None:
    backend.status, backend.body, backend.content_type = 200, b"<html><body>SearXNG</body></html>", "text/html"
    with pytest.raises(Unavailable, match=r"did not answer a searxng JSON search result \(text/html\)"):
        await WebSearchTool().run({"query": "x"}, searxng(context, backend.url))


@pytest.mark.parametrize("answer", [[], {"results": "none"}, {"query": "x"}, "results", None])
async def test_json_of_the_wrong_shape_is_unavailable(context: ToolContext, backend: FakeBackend, answer: Any) -> None:
    backend.answer_json(answer)
    with pytest.raises(Unavailable, match="did not answer a searxng JSON search result"):
        await WebSearchTool().run({"query": "x"}, searxng(context, backend.url))


async def test_brave_json_of_the_wrong_shape_is_unavailable(context: ToolContext, backend: FakeBackend) -> None:
    backend.answer_json({"web": {"results": {"not": "a list"}}})
    with pytest.raises(Unavailable, match="did not answer a brave JSON search result"):
        await WebSearchTool().run({"query": "x"}, brave(context, backend.url))


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_is_a_failed_precondition_without_the_key(
    context: ToolContext, backend: FakeBackend, status: int
) -> None:
    # A backend that echoes the key back must not get it into the message either.
    backend.answer_json({"error": f"bad token {API_KEY}"}, status=status)
    with pytest.raises(FailedPrecondition, match=rf"refused the request \(HTTP {status}\); check "
                       "TOOLS_WEB_SEARCH_API_KEY") as caught:
        await WebSearchTool().run({"query": "x"}, brave(context, backend.url))
    assert API_KEY not in str(caught.value)


async def test_searxng_403_says_to_enable_the_json_format(context: ToolContext, backend: FakeBackend) -> None:
    backend.status, backend.body, backend.content_type = 403, b"Forbidden", "text/plain"
    with pytest.raises(FailedPrecondition, match=r"enable the json format in its settings\.yml"):
        await WebSearchTool().run({"query": "x"}, searxng(context, backend.url))


async def test_a_wrong_path_is_a_failed_precondition(context: ToolContext, backend: FakeBackend) -> None:
    backend.status, backend.body, backend.content_type = 404, b"Not Found", "text/plain"
    with pytest.raises(FailedPrecondition, match=r"HTTP 404; check TOOLS_WEB_SEARCH_URL"):
        await WebSearchTool().run({"query": "x"}, searxng(context, backend.url))


async def test_rate_limiting_is_resource_exhausted(context: ToolContext, backend: FakeBackend) -> None:
    backend.answer_json({"error": "slow down"}, status=429)
    with pytest.raises(ResourceExhausted, match="rate-limiting"):
        await WebSearchTool().run({"query": "x"}, brave(context, backend.url))


async def test_no_error_ever_shows_the_key(context: ToolContext, backend: FakeBackend) -> None:
    """Down, slow, 500, HTML, wrong JSON: the Brave key (sent on every request) never reaches a message."""
    down = brave(context, f"http://127.0.0.1:{free_port()}/?token={API_KEY}")
    messages = []
    for setup, ctx in [
        (lambda: None, down),
        (lambda: backend.answer_json({"e": API_KEY}, status=500), brave(context, backend.url)),
        (lambda: backend.answer_json({"web": API_KEY}), brave(context, backend.url)),
    ]:
        setup()
        with pytest.raises((Unavailable, FailedPrecondition)) as caught:
            await WebSearchTool().run({"query": "x"}, ctx)
        messages.append(str(caught.value))
    assert messages and all(API_KEY not in message for message in messages)
    assert API_KEY not in repr(brave(context, backend.url))  # repr=False on the context's key


# --- configuration ----------------------------------------------------------------------------------------------


async def test_searxng_without_a_url_is_not_configured(context: ToolContext) -> None:
    with pytest.raises(FailedPrecondition, match="web_search is not configured: set TOOLS_WEB_SEARCH_URL"):
        await WebSearchTool().run({"query": "x"}, searxng(context, ""))


async def test_brave_without_a_key_is_not_configured(context: ToolContext) -> None:
    with pytest.raises(FailedPrecondition, match="web_search is not configured: set TOOLS_WEB_SEARCH_API_KEY"):
        await WebSearchTool().run({"query": "x"}, brave(context, "", key=""))


WEB_SEARCH_VARIABLES = ("TOOLS_WEB_SEARCH_BACKEND", "TOOLS_WEB_SEARCH_URL", "TOOLS_WEB_SEARCH_API_KEY",
                        "TOOLS_WEB_SEARCH_TIMEOUT_SECONDS")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in WEB_SEARCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_default_to_the_demo_backend(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(ToolsSettings, _env_file=None)
    assert settings.web_search_backend == "demo"
    assert (settings.web_search_url, settings.web_search_api_key.get_secret_value()) == ("", "")
    assert settings.web_search_timeout_seconds == 10


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TOOLS_WEB_SEARCH_BACKEND": "searxng"}, "TOOLS_WEB_SEARCH_URL is required"),
        ({"TOOLS_WEB_SEARCH_BACKEND": "brave"}, "TOOLS_WEB_SEARCH_API_KEY is required"),
        ({"TOOLS_WEB_SEARCH_BACKEND": "searxng", "TOOLS_WEB_SEARCH_URL": "searxng:8080"}, "TOOLS_WEB_SEARCH_URL must"),
        ({"TOOLS_WEB_SEARCH_BACKEND": "google"}, "TOOLS_WEB_SEARCH_BACKEND"),
        ({"TOOLS_WEB_SEARCH_TIMEOUT_SECONDS": "0"}, "TOOLS_WEB_SEARCH_TIMEOUT_SECONDS"),
    ],
)
def test_unusable_settings_are_refused_at_start_naming_the_variable(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        load_settings(ToolsSettings, _env_file=None)


def test_a_settings_error_never_shows_the_key(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TOOLS_WEB_SEARCH_API_KEY", API_KEY)
    clean_env.setenv("TOOLS_WEB_SEARCH_BACKEND", "bing")
    with pytest.raises(SettingsError) as caught:
        load_settings(ToolsSettings, _env_file=None)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in repr(load_settings(ToolsSettings, _env_file=None, TOOLS_WEB_SEARCH_BACKEND="brave"))


async def test_the_service_passes_its_settings_to_the_tool(
    make_settings: SettingsFactory, backend: FakeBackend
) -> None:
    """From TOOLS_WEB_SEARCH_* through the running service: a hit, then a refused key as FAILED_PRECONDITION."""
    backend.answer_json({"web": {"results": [{"title": "gRPC", "url": "https://grpc.io/", "description": "RPC"}]}})
    app = await start_tools(make_settings(
        TOOLS_WEB_SEARCH_BACKEND="brave", TOOLS_WEB_SEARCH_URL=backend.url, TOOLS_WEB_SEARCH_API_KEY=API_KEY,
        TOOLS_WEB_SEARCH_TIMEOUT_SECONDS=2,
    ))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = tools_stubs(channel)
            response = await stub.ExecuteTool(execute_request("web_search", query="grpc"))
            assert response.text == "Results for 'grpc' (Brave Search):\n1. gRPC — https://grpc.io/\n   RPC"
            assert backend.requests[0][2]["X-Subscription-Token"] == API_KEY
            backend.answer_json({"error": "bad key"}, status=401)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ExecuteTool(execute_request("web_search", query="grpc"))
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "check TOOLS_WEB_SEARCH_API_KEY" in (caught.value.details() or "")
            assert API_KEY not in (caught.value.details() or "")
    finally:
        await app.stop()
