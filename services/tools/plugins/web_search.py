"""web_search: search the web for pages about a query.

The default backend is an OFFLINE DEMO CORPUS — this machine has no internet. It is a small JSON file of pages
(web_search_corpus.json beside this file, or TOOLS_WEB_SEARCH_CORPUS) ranked by keyword overlap with the query. A
real search backend drops in later by implementing `SearchBackend`.
"""

import asyncio
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from services.common.errors import FailedPrecondition
from services.tools.base import BaseTool, ToolContext, ToolOutput

_WORD = re.compile(r"[a-z0-9]+")
#: Words too common to say what a query is about.
_STOPWORDS = frozenset(
    "a an and are as at be by for from how in is it of on or the to what when where which who why with".split()
)


@dataclass(frozen=True)
class SearchHit:
    """One search result."""

    title: str
    url: str
    snippet: str


class SearchBackend(Protocol):
    """Where web_search looks things up."""

    #: Reported in each result, so the caller knows what was searched.
    name: str

    async def search(self, query: str, max_results: int) -> list[SearchHit]:
        """The best `max_results` hits for `query`, best first (empty when nothing matches)."""
        ...


def _keywords(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS]


class OfflineCorpusBackend:
    """Keyword-overlap search over a small JSON list of {title, url, snippet} pages."""

    name = "offline-corpus"

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


class WebSearchTool(BaseTool):
    """Web search, answered by an offline demo corpus until a real backend is configured."""

    name = "web_search"
    display_name = "Web Search"
    description = (
        "Searches the web for pages about a query and returns titles, URLs and snippets. Note: the default "
        "backend is an offline demo corpus of a few pages (Python, gRPC, Envoy, databases, the OpenAI API), "
        "not the live web."
    )
    icon = "IconWorldSearch"
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
        self._backends: dict[Path, SearchBackend] = {}

    def backend_for(self, context: ToolContext) -> SearchBackend:
        """The search backend (one per corpus file, so the corpus is read once)."""
        backend = self._backends.get(context.web_search_corpus)
        if backend is None:
            backend = self._backends[context.web_search_corpus] = OfflineCorpusBackend(context.web_search_corpus)
        return backend

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
        """Search and list the hits; no hits is an empty result, not an error."""
        query = arguments["query"]
        # From protobuf every number is a float; the schema already checked it is integral.
        max_results = int(arguments.get("max_results", 5))
        backend = self.backend_for(context)
        hits = await backend.search(query, max_results)
        result = {"query": query, "results": [asdict(hit) for hit in hits], "backend": backend.name}
        if not hits:
            return ToolOutput(result, f"No results found for '{query}' ({backend.name}).")
        lines = [f"{n}. {hit.title} — {hit.url}\n   {hit.snippet}" for n, hit in enumerate(hits, start=1)]
        return ToolOutput(result, f"Results for '{query}' ({backend.name}):\n" + "\n".join(lines))
