"""The web_search plugin over its offline demo corpus."""

import json
from pathlib import Path

import pytest

from services.common.errors import FailedPrecondition
from services.tools.base import ToolContext
from services.tools.plugins.web_search import WebSearchTool


async def test_finds_pages_by_keyword(context: ToolContext) -> None:
    output = await WebSearchTool().run({"query": "What is Envoy?", "max_results": 3.0}, context)
    assert output.result["backend"] == "offline-corpus"
    assert output.result["query"] == "What is Envoy?"
    results = output.result["results"]
    assert 1 <= len(results) <= 3
    assert results[0]["title"] == "Envoy proxy"
    assert set(results[0]) == {"title", "url", "snippet"}
    assert "Envoy proxy" in output.text


async def test_max_results_limits_the_hits(context: ToolContext) -> None:
    output = await WebSearchTool().run({"query": "grpc", "max_results": 1}, context)
    assert len(output.result["results"]) == 1


async def test_no_hits_is_an_empty_result_not_an_error(context: ToolContext) -> None:
    output = await WebSearchTool().run({"query": "zebra marmalade"}, context)
    assert output.result["results"] == []
    assert "No results found for 'zebra marmalade'" in output.text


async def test_description_says_the_backend_is_an_offline_demo() -> None:
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
