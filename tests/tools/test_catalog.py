"""The catalog: listing with paging and filters, update masks and description overrides."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text

from services.common.db.database import Database
from services.common.errors import InvalidArgument, NotFound
from services.tools.catalog import MAX_DESCRIPTION_LENGTH, ToolCatalog
from services.tools.registry import ToolRegistry
from services.tools.tool_settings import ToolSettingsStore


@pytest_asyncio.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[ToolCatalog]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}")
    store = ToolSettingsStore(database)
    await store.migrate()
    yield ToolCatalog(ToolRegistry(), store)
    await database.dispose()


async def test_pages_walk_every_tool_once_in_id_order(catalog: ToolCatalog) -> None:
    seen: list[str] = []
    token = ""
    for _ in range(5):
        page = await catalog.list_tools(page_size=2, page_token=token)
        seen += [tool.id for tool in page.tools]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["calculator", "file_io", "web_search"]


async def test_page_size_zero_means_the_default_page(catalog: ToolCatalog) -> None:
    page = await catalog.list_tools(page_size=0)
    assert [tool.id for tool in page.tools] == ["calculator", "file_io", "web_search"]
    assert page.next_page_token == ""


async def test_negative_page_size_is_invalid(catalog: ToolCatalog) -> None:
    with pytest.raises(InvalidArgument, match="page_size must be >= 0"):
        await catalog.list_tools(page_size=-3)


@pytest.mark.parametrize("token", ["garbage!", "bm90IGpzb24=", "eyJ4IjogMX0="])
async def test_a_bad_page_token_is_invalid(catalog: ToolCatalog, token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token is not valid"):
        await catalog.list_tools(page_token=token)


async def test_enabled_only_omits_disabled_tools(catalog: ToolCatalog) -> None:
    await catalog.update_tool("file_io", ["enabled"], enabled=False)
    page = await catalog.list_tools(enabled_only=True)
    assert [tool.id for tool in page.tools] == ["calculator", "web_search"]


async def test_update_changes_only_the_masked_fields(catalog: ToolCatalog) -> None:
    await catalog.update_tool("calculator", ["description"], description="Adds things")
    view = await catalog.update_tool("calculator", ["enabled"], enabled=False, description="ignored")
    assert view.enabled is False
    assert view.description == "Adds things"
    assert view.default_description == "Performs basic arithmetic operations"
    assert view.schema["function"]["description"] == "Adds things"


async def test_an_empty_description_removes_the_override(catalog: ToolCatalog) -> None:
    await catalog.update_tool("calculator", ["description"], description="Adds things")
    view = await catalog.update_tool("calculator", ["description"], description="")
    assert view.description == "Performs basic arithmetic operations"
    assert view.schema["function"]["description"] == "Performs basic arithmetic operations"


async def test_an_overlong_description_is_invalid(catalog: ToolCatalog) -> None:
    with pytest.raises(InvalidArgument, match=f"the limit is {MAX_DESCRIPTION_LENGTH}"):
        await catalog.update_tool("calculator", ["description"], description="x" * (MAX_DESCRIPTION_LENGTH + 1))


async def test_update_mask_is_required_and_checked(catalog: ToolCatalog) -> None:
    with pytest.raises(InvalidArgument, match="update_mask is required; set it to 'enabled', 'description' and/or"):
        await catalog.update_tool("calculator", [])
    with pytest.raises(InvalidArgument, match="'icon' cannot be updated; allowed: 'enabled', 'description'"):
        await catalog.update_tool("calculator", ["icon"])


async def test_approval_is_the_tools_default_until_an_admin_sets_it(catalog: ToolCatalog) -> None:
    assert not (await catalog.get_tool("file_io")).requires_approval
    marked = await catalog.update_tool("file_io", ["requires_approval"], requires_approval=True)
    assert marked.requires_approval and marked.enabled  # only the masked field changed
    assert (await catalog.get_tool("file_io")).requires_approval
    await catalog.update_tool("file_io", ["enabled"], enabled=False)
    assert (await catalog.get_tool("file_io")).requires_approval  # an update of another field keeps it


async def test_a_settings_table_from_before_migrations_is_adopted_with_its_rows(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:
        async with database.engine.begin() as connection:
            # The table as the service created it before it had migrations, with a tool switched off.
            await connection.execute(text(
                "CREATE TABLE tool_settings (tool_id VARCHAR(64) NOT NULL, enabled BOOLEAN NOT NULL, "
                "description_override TEXT, updated_at DATETIME NOT NULL, CONSTRAINT pk_tool_settings "
                "PRIMARY KEY (tool_id))"
            ))
            await connection.execute(text(
                "INSERT INTO tool_settings VALUES ('web_search', 0, NULL, '2026-01-01 00:00:00')"
            ))
        store = ToolSettingsStore(database)
        await store.migrate()
        setting = await store.get("web_search")
        assert (setting.enabled, setting.requires_approval) == (False, None)
        assert (await store.update("web_search", requires_approval=True)).requires_approval is True
    finally:
        await database.dispose()


async def test_updating_an_unknown_tool_is_not_found(catalog: ToolCatalog) -> None:
    with pytest.raises(NotFound, match="tool 'nope' not found"):
        await catalog.update_tool("nope", ["enabled"], enabled=False)
