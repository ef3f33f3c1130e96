"""`python -m services.migrate`: migrate every service's schema to head, one after the other; exit 0 when all
are at head, 1 (with a message naming the schema, its database without the password, and the cause) when one
could not be migrated. Running it again changes nothing."""

import asyncio
import logging
import sys

from sqlalchemy.engine import make_url

from services.common.logs import configure_logging
from services.common.settings import load_settings
from services.migrate.schemas import SCHEMAS, MigrationFailed, migrate_schema
from services.migrate.settings import MigrateSettings

log = logging.getLogger("services.migrate")


async def migrate_all(settings: MigrateSettings) -> None:
    for schema in SCHEMAS:
        url = schema.url(settings)
        await migrate_schema(schema, url)
        shown = make_url(url).render_as_string(hide_password=True)
        log.info("%s schema at %s (%s)", schema.name, schema.head(), shown)


def main() -> int:
    settings = load_settings(MigrateSettings)
    configure_logging(settings.log_level, settings.log_format, "migrate")
    try:
        asyncio.run(migrate_all(settings))
    except MigrationFailed as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    log.info("every schema is at its newest revision")
    return 0


if __name__ == "__main__":
    sys.exit(main())
