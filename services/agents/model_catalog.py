"""The models the model endpoint serves, as its `GET /models` lists them (openai SDK), for checking an agent's
model. An endpoint that offers no list (404, an error, no answer) leaves models unchecked: not every
OpenAI-compatible server implements it, and the engine reports a model it cannot use when a run starts.

The offline demo model lists one model, "demo", though it answers to any name: against it, an agent's model
is "demo" or empty (the engine's default), as against any endpoint that lists its models.
"""

import asyncio
import logging

import openai

log = logging.getLogger(__name__)


class ModelCatalog:
    """The endpoint's model ids, listed at most once per `cache_seconds` (one listing shared by concurrent
    callers); None when the endpoint does not list them."""

    def __init__(self, base_url: str, api_key: str, cache_seconds: float, timeout: float) -> None:
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self._cache_seconds = cache_seconds
        self._listing: asyncio.Future[list[str] | None] | None = None
        self._listed_at = 0.0

    async def served_models(self) -> list[str] | None:
        """The ids the endpoint lists, sorted; None when it offers no list."""
        loop = asyncio.get_running_loop()
        listing = self._listing
        stale = listing is None or (
            listing.done()
            and (listing.cancelled() or listing.exception() is not None
                 or loop.time() - self._listed_at >= self._cache_seconds)
        )
        if stale:
            listing = self._listing = asyncio.ensure_future(self._list())
            self._listed_at = loop.time()
        # Shielded: one caller going away must not cancel the listing others wait for.
        assert listing is not None
        return await asyncio.shield(listing)

    async def _list(self) -> list[str] | None:
        try:
            return sorted({model.id async for model in self._client.models.list()})
        except openai.NotFoundError:
            log.info("the model endpoint %s does not list its models (404): agents' models are not checked",
                     self.base_url)
        except openai.APIConnectionError as exc:  # APITimeoutError is one
            log.info("the model endpoint %s could not be asked for its models (%s): agents' models are not checked",
                     self.base_url, exc)
        except openai.APIError as exc:
            log.warning("the model endpoint %s refused to list its models (%s): agents' models are not checked",
                        self.base_url, exc)
        return None

    async def close(self) -> None:
        if self._listing is not None and not self._listing.done():
            self._listing.cancel()
        await self._client.close()
