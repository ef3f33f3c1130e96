"""The run store's model prices: list, set, delete (no gRPC here). Part of `RunStore`; what a price is, the
built-in snapshot and how a call is priced are in services/runs/price_book.py."""

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from services.common.db.database import runs_to_completion
from services.common.errors import NotFound
from services.runs.parts import StoreParts
from services.runs.price_book import BUILTIN_PRICES, PRICES, ModelPrice, price_of_row


class RunPrices(StoreParts):
    """The run store's price methods: list, set, delete."""

    @runs_to_completion
    async def list_model_prices(self) -> list[ModelPrice]:
        """Every priced model, by name: the built-in snapshot, overridden by what admins set."""
        async with self.database.read() as session:
            rows = (await session.execute(select(PRICES))).mappings().all()
        prices = {**BUILTIN_PRICES, **{row["model"]: price_of_row(row) for row in rows}}
        return [prices[model] for model in sorted(prices)]

    async def set_model_price(self, price: ModelPrice) -> ModelPrice:
        """Store `price` (from `checked_price`) for the calls recorded from now on."""
        values = {
            "model": price.model, "input_picos": price.input_picos, "cached_input_picos": price.cached_input_picos,
            "output_picos": price.output_picos, "updated_at": price.updated_at, "updated_by": price.updated_by,
        }

        def upsert(connection: Connection) -> None:
            insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(PRICES)
            connection.execute(insert.values(values).on_conflict_do_update(
                index_elements=[PRICES.c.model], set_={k: v for k, v in values.items() if k != "model"}
            ))

        await self._writer.write(upsert)
        self.price_book.forget()
        return price

    async def delete_model_price(self, model: str) -> None:
        """Remove the price an admin set for `model` (the built-in one applies again); NotFound if none."""

        def delete_(connection: Connection) -> None:
            if connection.execute(delete(PRICES).where(PRICES.c.model == model)).rowcount == 0:
                raise NotFound(f"no price was set for model {model[:200]!r}")

        await self._writer.write(delete_)
        self.price_book.forget()
