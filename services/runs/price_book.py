"""Model prices and what model calls cost (no gRPC here): the prices' type and checks, the built-in snapshot, and
the `PriceBook` a store applies when it stores a model call (services/runs/appends.py). Admins change prices
through the store's `prices.RunPrices`.

Each model call a run records is priced when its step is stored (services/runs/appends.py), by its model's price
at that moment: the step keeps its cost, and the run the sum. A model with no price leaves its calls unpriced:
their cost is unknown, not zero, and the run counts them (`unpriced_calls`).

Prices are integers of pico-USD (1e-12) per token, and costs of nano-USD (1e-9), so sums are exact. They come
from the built-in snapshot below (OpenAI's published API prices of a date, for a few well-known models, and the
offline demo model at zero) unless an admin set one (`SetModelPrice`, table model_prices), which wins.

A store reads the table at most every PRICE_REFRESH_SECONDS (`PriceBook`), so a price an admin sets through
another runs replica applies here within that time; through this one at once.
"""

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from services.common.db.database import utcnow
from services.common.errors import InvalidArgument
from services.runs.models import ModelPriceRow

PRICES = ModelPriceRow.__table__

#: When the built-in prices were taken from OpenAI's published API pricing.
SNAPSHOT = "OpenAI's published API prices, snapshot of 2025-06"
#: US dollars per million tokens: (input, cached input, output).
BUILTIN_USD_PER_MILLION: dict[str, tuple[float, float, float]] = {
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4.1": (2.00, 0.50, 8.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "o3-mini": (1.10, 0.55, 4.40),
    # The offline demo model (services/demo_model) costs nothing.
    "demo": (0.0, 0.0, 0.0),
}
#: The highest price accepted, US dollars per million tokens (far above any model's).
MAX_USD_PER_MILLION = 10_000.0
CURRENCY = "USD"
PRICE_REFRESH_SECONDS = 10.0
_MODEL = re.compile(r"^[\x21-\x7e]{1,200}$")


def picos_per_token(usd_per_million: float) -> int:
    """US dollars per million tokens as pico-USD per token (1 USD/M = 1,000,000 pUSD per token)."""
    return round(usd_per_million * 1_000_000)


def usd_per_million(picos: int) -> float:
    return picos / 1_000_000


@dataclass(frozen=True)
class ModelPrice:
    """A model's price per token in pico-USD; `builtin` for the snapshot's, else who set it and when."""

    model: str
    input_picos: int
    cached_input_picos: int
    output_picos: int
    builtin: bool = False
    updated_by: str = ""
    updated_at: datetime | None = None

    def cost_nanos(self, prompt_tokens: int, cached_prompt_tokens: int, completion_tokens: int) -> int:
        """What a call cost, in nano-USD, rounded to the nearest: its prompt tokens at the input price (those
        served from cache at the cached price) and its generated tokens at the output price."""
        cached = min(max(cached_prompt_tokens, 0), prompt_tokens)
        picos = (
            (prompt_tokens - cached) * self.input_picos
            + cached * self.cached_input_picos
            + completion_tokens * self.output_picos
        )
        return (picos + 500) // 1000


BUILTIN_PRICES: dict[str, ModelPrice] = {
    model: ModelPrice(
        model, picos_per_token(input_usd), picos_per_token(cached_usd), picos_per_token(output_usd), builtin=True
    )
    for model, (input_usd, cached_usd, output_usd) in BUILTIN_USD_PER_MILLION.items()
}


def checked_price(
    model: str, currency: str, input_usd: float, cached_input_usd: float, output_usd: float, by: str
) -> ModelPrice:
    """The price an admin asks to set, each bad field an InvalidArgument naming it."""
    if not _MODEL.match(model):
        raise InvalidArgument(f"price.model must be 1 to 200 printable characters without spaces, got {model!r}")
    if currency not in ("", CURRENCY):
        raise InvalidArgument(f"price.currency must be {CURRENCY} (the only currency), got {currency[:20]!r}")
    for field, usd in [("input_per_million", input_usd), ("cached_input_per_million", cached_input_usd),
                       ("output_per_million", output_usd)]:
        if not (math.isfinite(usd) and 0 <= usd <= MAX_USD_PER_MILLION):
            raise InvalidArgument(
                f"price.{field} must be a number of US dollars from 0 to {MAX_USD_PER_MILLION:,.0f}, got {usd}"
            )
    return ModelPrice(
        model, picos_per_token(input_usd), picos_per_token(cached_input_usd), picos_per_token(output_usd),
        updated_by=by, updated_at=utcnow(),
    )


class PriceBook:
    """The prices a store applies: the built-in ones, overridden by the table's, read again at most every
    PRICE_REFRESH_SECONDS (`current`), and at once after this store changes one (`forget`)."""

    def __init__(self) -> None:
        self._prices: Mapping[str, ModelPrice] = BUILTIN_PRICES
        self._read_at = -math.inf

    def current(self, connection: Connection) -> Mapping[str, ModelPrice]:
        if time.monotonic() - self._read_at >= PRICE_REFRESH_SECONDS:
            rows = connection.execute(select(PRICES)).mappings()
            set_by_admins = {row["model"]: price_of_row(row) for row in rows}
            self._prices = {**BUILTIN_PRICES, **set_by_admins}
            self._read_at = time.monotonic()
        return self._prices

    def forget(self) -> None:
        self._read_at = -math.inf


def price_of_row(row: Any) -> ModelPrice:
    """The price a model_prices row holds."""
    return ModelPrice(
        row["model"], row["input_picos"], row["cached_input_picos"], row["output_picos"],
        updated_by=row["updated_by"], updated_at=row["updated_at"],
    )
