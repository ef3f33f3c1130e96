"""The tools service's stored secrets as a whole: checked and completed at every start, rotated on demand.

    python -m services.tools.secrets new-key    # print a new key for TOOLS_SECRET_KEYS
    python -m services.tools.secrets rotate     # encrypt every stored secret with the first key

At start (`seal_stored_secrets`), every secret column (services.tools.tables.SealedSecrets) is read as stored:
- a JSON object is a row an earlier version kept in plain text: it is encrypted now. This is done here rather than
  in an Alembic migration because it needs the key, which belongs to the service's settings, not to the schema
  (migrations also run offline, as SQL, where no key is); and because a replica of the earlier version still
  running during a rolling upgrade may write such a row after the migration ran: the next start, or `rotate`,
  encrypts it.
- an encrypted value must decrypt with a configured key, or the service refuses to start, naming the rows (never
  their values) and saying which key is missing. Better than a service that is up with tools it cannot call.

Rotation re-encrypts with the newest key; it is a command, not part of the start, so that during a rolling change
of keys a replica still on the old list does not re-encrypt rows with a key the others are about to drop.
"""

import argparse
import asyncio
from dataclasses import dataclass

from sqlalchemy import JSON, Column, Table, select, type_coerce, update

from services.common.db.database import Database
from services.common.settings import SettingsError, load_settings
from services.tools.secret_codec import SecretCodec, SecretsUnreadable, new_key
from services.tools.settings import ToolsSettings
from services.tools.tables import SCHEMA, SealedSecrets
from services.tools.tool_settings import ToolSettingsStore


def secret_columns() -> list[tuple[Table, Column[object]]]:
    """Every encrypted column of the tools schema, with its table (found by type: one home for what is secret)."""
    return [
        (table, column)
        for table in SCHEMA.sorted_tables
        for column in table.columns
        if isinstance(column.type, SealedSecrets)
    ]


@dataclass(frozen=True)
class SealReport:
    """What a pass over the stored secrets did: values encrypted from plain text, values re-encrypted with the
    newest key, values left as they were."""

    encrypted: int = 0
    reencrypted: int = 0
    unchanged: int = 0


async def seal_stored_secrets(database: Database, codec: SecretCodec, *, rotate: bool = False) -> SealReport:
    """Encrypt every secret stored in plain text, check that every encrypted one decrypts, and with `rotate`
    re-encrypt those not under the newest key. One transaction: all or nothing. Raises SecretsUnreadable naming
    the rows no configured key opens."""
    encrypted = reencrypted = unchanged = 0
    unreadable: list[str] = []
    async with database.write() as session:
        for table, column in secret_columns():
            # type_coerce to plain JSON: the value as stored, past the column type that would decrypt it.
            stored = type_coerce(column, JSON)
            rows = (await session.execute(select(table.c.name, stored).where(column.is_not(None)))).all()
            for name, value in rows:
                if isinstance(value, dict):
                    new = codec.seal({str(key): str(item) for key, item in value.items()})
                    encrypted += 1
                elif not isinstance(value, str):
                    unreadable.append(f"{table.name} '{name}' ({column.name}: neither encrypted nor a JSON object)")
                    continue
                elif rotate and not codec.is_newest(value):
                    try:
                        new = codec.reseal(value)
                    except SecretsUnreadable:
                        unreadable.append(f"{table.name} '{name}' ({column.name})")
                        continue
                    reencrypted += 1
                else:
                    try:
                        codec.open(value)
                    except SecretsUnreadable:
                        unreadable.append(f"{table.name} '{name}' ({column.name})")
                    unchanged += 1
                    continue
                await session.execute(
                    update(table).where(table.c.name == name).values({column.name: type_coerce(new, JSON)})
                )
        if unreadable:
            raise SecretsUnreadable(
                "stored secrets that no key in TOOLS_SECRET_KEYS decrypts: " + ", ".join(unreadable) + ". The key "
                "they were encrypted with is missing: add it back to TOOLS_SECRET_KEYS (after the newest), or "
                "delete and register these again"
            )
    return SealReport(encrypted, reencrypted, unchanged)


async def _rotate() -> SealReport:
    settings = load_settings(ToolsSettings)
    codec = settings.secret_codec()
    database = Database(settings.database_url)
    try:
        await ToolSettingsStore(database).migrate()
        return await seal_stored_secrets(database, codec, rotate=True)
    finally:
        await database.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.tools.secrets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("new-key", help="print a new key for TOOLS_SECRET_KEYS")
    commands.add_parser(
        "rotate",
        help="encrypt every stored secret with the first key of TOOLS_SECRET_KEYS (then the others can go)",
    )
    args = parser.parse_args(argv)
    if args.command == "new-key":
        print(new_key())
        return
    try:
        report = asyncio.run(_rotate())
    except SecretsUnreadable as exc:
        raise SettingsError(str(exc)) from None
    print(
        f"re-encrypted {report.reencrypted} stored secret(s) with the first key of TOOLS_SECRET_KEYS, encrypted "
        f"{report.encrypted} kept in plain text, {report.unchanged} already under it: the other keys can be removed"
    )


if __name__ == "__main__":
    main()
