"""web_search: search the web for pages about a query.

TOOLS_WEB_SEARCH_BACKEND picks who answers:

* `demo` (the default): an OFFLINE DEMO CORPUS, so `make run` works without network. It is a small JSON file of
  pages (web_search_corpus.json beside this file, or TOOLS_WEB_SEARCH_CORPUS) ranked by keyword overlap with the
  query, and every answer says it comes from that corpus, not the live web;
* `searxng`: a self-hosted SearXNG instance's JSON API (GET {TOOLS_WEB_SEARCH_URL}/search?q=...&format=json);
* `brave`: the Brave Search API (GET https://api.search.brave.com/res/v1/web/search, key in X-Subscription-Token);
* `none` (or empty): no backend. The tool is then unavailable: ListTools says why, the model is not offered it, and
  executing it is UNAVAILABLE.

Every backend answers a list of {title, url, snippet}. A backend that fails raises a domain error the model can
read: Unavailable when it is down, slow, overloaded or answers garbage (retrying may help), FailedPrecondition when
it is not configured or refuses the configuration (a bad key). No message ever contains the API key.
"""

import asyncio
import html
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

import httpx

from services.common.errors import DomainError, FailedPrecondition, ResourceExhausted, Unavailable
from services.common.json_values import parse_json
from services.tools.base import BaseTool, ToolContext, ToolHints, ToolOutput

_WORD = re.compile(r"[a-z0-9]+")
#: Words too common to say what a query is about.
_STOPWORDS = frozenset(
    "a an and are as at be by for from how in is it of on or the to what when where which who why with".split()
)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")

BRAVE_SEARCH_URL = "https://api.search.brave.com/res/v1/web/search"
#: The most of a backend's answer that is read; a search result page is a few tens of KiB.
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
#: Longest title and snippet kept per hit, so one odd page cannot fill the model's context.
MAX_TITLE_CHARS = 300
MAX_SNIPPET_CHARS = 600


@dataclass(frozen=True)
class SearchHit:
    """One search result."""

    title: str
    url: str
    snippet: str


class SearchBackend(Protocol):
    """Where web_search looks things up."""

    #: Reported in each result (the TOOLS_WEB_SEARCH_BACKEND value), so the caller knows what was searched.
    name: str
    #: Said in the text the model reads, after "Results for '...'".
    label: str

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """The best `max_results` hits for `query`, best first (empty when nothing matches)."""
        ...


def _keywords(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS]


class OfflineCorpusBackend:
    """Keyword-overlap search over a small JSON list of {title, url, snippet} pages."""

    name = "demo"
    label = "from the offline demo corpus, not the live web"

    def __init__(self, corpus_path: Path) -> None:
        self._corpus_path = corpus_path
        self._pages: list[SearchHit] | None = None

    def _load(self) -> list[SearchHit]:
        if self._pages is None:
            try:
                entries = json.loads(self._corpus_path.read_text(encoding="utf-8"))
                self._pages = [SearchHit(e["title"], e["url"], e["snippet"]) for e in entries]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise FailedPrecondition(
                    f"the web search corpus {self._corpus_path} cannot be read ({exc}); check TOOLS_WEB_SEARCH_CORPUS"
                ) from None
        return self._pages

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """Pages sharing the most query keywords (a title match counts double), ties in corpus order."""
        pages = await asyncio.to_thread(self._load)
        wanted = set(_keywords(query))
        scored: list[tuple[int, int, SearchHit]] = []
        for position, page in enumerate(pages):
            title, body = set(_keywords(page.title)), set(_keywords(page.snippet))
            score = sum(2 * (word in title) + (word in body) for word in wanted)
            if score:
                scored.append((-score, position, page))
        return [page for _, _, page in sorted(scored)[:max_results]]


def _clean(value: object, limit: int) -> str:
    """A backend's title or snippet as plain text: tags dropped (Brave marks matches with <strong>), entities
    decoded, whitespace folded, cut at `limit` characters."""
    if not isinstance(value, str):
        return ""
    text = _SPACE.sub(" ", html.unescape(_TAG.sub("", value))).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _hit(title: object, url: object, snippet: object) -> SearchHit | None:
    """A normalised hit, or None for an entry without an http(s) URL (nothing the model could cite)."""
    if not isinstance(url, str) or urlsplit(url.strip()).scheme not in ("http", "https"):
        return None
    url = url.strip()
    return SearchHit(_clean(title, MAX_TITLE_CHARS) or url, url, _clean(snippet, MAX_SNIPPET_CHARS))


def _where(url: str) -> str:
    """The backend's address for messages: scheme, host and port only (no credentials, path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"


class HttpSearchBackend:
    """A search API over HTTP: one GET, a JSON answer. Subclasses say what to send and how to read the answer."""

    name: str
    label: str

    def __init__(self, url: str, api_key: str, timeout_seconds: float) -> None:
        self._url = url
        self._api_key = api_key
        self._timeout = timeout_seconds

    def request(self, query: str, max_results: int) -> tuple[str, dict[str, str], dict[str, str]]:
        """The URL, query parameters and headers of the search request."""
        raise NotImplementedError

    def read(self, answer: Any) -> list[Any]:
        """The raw result entries of a JSON answer; raise ValueError when it has the wrong shape."""
        raise NotImplementedError

    def normalise(self, entry: Any) -> SearchHit | None:
        """One raw result entry as a hit (None to skip it)."""
        raise NotImplementedError

    def refused(self, status: int) -> str:
        """What to tell the caller when the backend answers 401 or 403."""
        return f"it refused the request (HTTP {status}); check TOOLS_WEB_SEARCH_API_KEY"

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """GET the backend and normalise its answer, mapping every failure to a domain error."""
        try:
            return await self._search(query, max_results)
        except DomainError as exc:
            # Belt and braces: whatever went into a message, the key does not go out.
            if self._api_key and self._api_key in str(exc):
                raise type(exc)(str(exc).replace(self._api_key, "***")) from None
            raise

    async def _search(self, query: str, max_results: int) -> list[SearchHit]:
        url, params, headers = self.request(query, max_results)
        where = f"the {self.name} web search backend at {_where(url)}"
        try:
            # A client per search: the tool may run on several event loops (tests, worker processes), and a
            # search a few seconds long gains little from a kept-alive connection. httpx's timeout bounds each
            # read; asyncio.timeout bounds the whole exchange, so a backend that trickles bytes is cut off too.
            async with (
                asyncio.timeout(self._timeout),
                httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client,
                client.stream("GET", url, params=params, headers=headers) as response,
            ):
                status, content_type = response.status_code, response.headers.get("content-type", "")
                retry_after = response.headers.get("retry-after")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise Unavailable(f"{where} answered more than {MAX_RESPONSE_BYTES // 1024} KiB; not a search "
                                          "result")
        except (httpx.TimeoutException, TimeoutError):
            raise Unavailable(f"{where} did not answer within {self._timeout:g} s; try again later") from None
        except httpx.HTTPError as exc:
            # The exception's own text may quote the request URL, so only its kind is told.
            raise Unavailable(f"{where} cannot be reached ({type(exc).__name__}); is it running?") from None
        if status in (401, 403):
            raise FailedPrecondition(f"{where}: {self.refused(status)}")
        if status == 429:
            seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise ResourceExhausted(f"{where} is rate-limiting searches (HTTP 429); try again later", seconds)
        if status >= 500:
            raise Unavailable(f"{where} failed (HTTP {status}); try again later")
        if status >= 300:
            raise FailedPrecondition(f"{where} answered HTTP {status}; check TOOLS_WEB_SEARCH_URL")
        try:
            # The backend is someone else's: its JSON is parsed with a depth bound (a JsonInputError is a ValueError).
            entries = self.read(parse_json(bytes(body)))
        except ValueError:
            kind = content_type.split(";")[0].strip() or "no content type"
            raise Unavailable(
                f"{where} did not answer a {self.name} JSON search result ({kind}); check TOOLS_WEB_SEARCH_URL"
            ) from None
        hits = [hit for hit in map(self.normalise, entries) if hit is not None]
        return hits[:max_results]


class SearxngBackend(HttpSearchBackend):
    """A self-hosted SearXNG: GET /search?q=...&format=json answers {"results": [{title, url, content}, ...]}."""

    name = "searxng"
    label = "SearXNG"

    def request(self, query: str, max_results: int) -> tuple[str, dict[str, str], dict[str, str]]:
        # SearXNG has no result count parameter: its first page is cut to max_results afterwards.
        return self._url.rstrip("/") + "/search", {"q": query, "format": "json"}, {"Accept": "application/json"}

    def read(self, answer: Any) -> list[Any]:
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise ValueError("no results list")
        return results

    def normalise(self, entry: Any) -> SearchHit | None:
        if not isinstance(entry, dict):
            return None
        return _hit(entry.get("title"), entry.get("url"), entry.get("content"))

    def refused(self, status: int) -> str:
        # SearXNG answers 403 to format=json unless its settings.yml lists json under search.formats.
        return f"it refused the request (HTTP {status}); enable the json format in its settings.yml (search.formats)"


class BraveBackend(HttpSearchBackend):
    """The Brave Search API: {"web": {"results": [{title, url, description}, ...]}} ("web" absent: no hits)."""

    name = "brave"
    label = "Brave Search"

    def request(self, query: str, max_results: int) -> tuple[str, dict[str, str], dict[str, str]]:
        headers = {"Accept": "application/json", "X-Subscription-Token": self._api_key}
        return self._url or BRAVE_SEARCH_URL, {"q": query, "count": str(max_results)}, headers

    def read(self, answer: Any) -> list[Any]:
        if not isinstance(answer, dict):
            raise ValueError("not an object")
        web = answer.get("web", {"results": []})
        results = web.get("results", []) if isinstance(web, dict) else None
        if not isinstance(results, list):
            raise ValueError("no web.results list")
        return results

    def normalise(self, entry: Any) -> SearchHit | None:
        if not isinstance(entry, dict):
            return None
        return _hit(entry.get("title"), entry.get("url"), entry.get("description"))


class WebSearchTool(BaseTool):
    """Web search through the configured backend (the offline demo corpus unless one is configured)."""

    name = "web_search"
    display_name = "Web Search"
    description = (
        "Searches the web for pages about a query and returns titles, URLs and snippets. Note: unless a search "
        "backend is configured, answers come from an offline demo corpus of a few pages (Python, gRPC, Envoy, "
        "databases, the OpenAI API), not the live web; each answer says which."
    )
    icon = "IconWorldSearch"
    hints = ToolHints(read_only=True, destructive=False, idempotent=True, open_world=True)
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "description": "What to search for"},
            "max_results": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10,
                "default": 5,
                "description": "How many results to return at most",
            },
        },
        "required": ["query"],
    }

    def __init__(self) -> None:
        # The corpus backends are kept, so each corpus file is read once; HTTP backends are cheap to make.
        self._corpora: dict[Path, OfflineCorpusBackend] = {}

    def unavailable_reason(self, context: ToolContext | None) -> str | None:
        """Unavailable when no backend is configured (TOOLS_WEB_SEARCH_BACKEND=none or empty)."""
        if context is not None and context.web_search_backend.strip() in ("", "none"):
            return (
                "no web search backend is configured (TOOLS_WEB_SEARCH_BACKEND=none); set it to demo, searxng or brave"
            )
        return None

    def backend_for(self, context: ToolContext) -> SearchBackend:
        """The backend the context configures; FailedPrecondition naming the setting when it cannot answer."""
        kind = context.web_search_backend
        if kind == "demo":
            backend = self._corpora.get(context.web_search_corpus)
            if backend is None:
                backend = self._corpora[context.web_search_corpus] = OfflineCorpusBackend(context.web_search_corpus)
            return backend
        reason = self.unavailable_reason(context)
        if reason is not None:
            raise Unavailable(f"web_search is unavailable: {reason}")
        url, key = context.web_search_url.strip(), context.web_search_api_key.strip()
        timeout = context.web_search_timeout_seconds
        if kind == "searxng":
            if not url:
                raise FailedPrecondition(
                    "web_search is not configured: set TOOLS_WEB_SEARCH_URL to the SearXNG instance's root URL"
                )
            return SearxngBackend(url, key, timeout)
        if kind == "brave":
            if not key:
                raise FailedPrecondition("web_search is not configured: set TOOLS_WEB_SEARCH_API_KEY (Brave Search)")
            return BraveBackend(url, key, timeout)
        raise FailedPrecondition(
            f"web_search is not configured: TOOLS_WEB_SEARCH_BACKEND={kind!r} is not one of demo, searxng, brave"
        )

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
        """Search and list the hits; no hits is an empty result, not an error."""
        query = arguments["query"]
        # From protobuf every number is a float; the schema already checked it is integral.
        max_results = int(arguments.get("max_results", 5))
        backend = self.backend_for(context)
        hits = await backend.search(query, max_results)
        result = {"query": query, "results": [asdict(hit) for hit in hits], "backend": backend.name}
        if not hits:
            return ToolOutput(result, f"No results found for '{query}' ({backend.label}).")
        lines = [f"{n}. {hit.title} — {hit.url}\n   {hit.snippet}" for n, hit in enumerate(hits, start=1)]
        return ToolOutput(result, f"Results for '{query}' ({backend.label}):\n" + "\n".join(lines))
