"""Is the database at the migration head the code needs?

`splitwatch serve` refuses to start on a database that is empty or behind, and /readyz
answers 503 with the same sentence, so nobody runs new code over an old schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

import migrations


def migrations_dir() -> Path:
    return Path(migrations.__file__).resolve().parent


def alembic_config(url: str | None = None) -> object:
    """An alembic Config built in code, pointing at the installed migrations package."""
    from alembic.config import Config

    cfg = Config(str(migrations_dir() / "alembic.ini"))
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head", *, down: bool = False) -> None:
    """Upgrade (or, with `down`, downgrade) the database to `revision` in one transaction: a
    failed migration leaves the schema where it was. `splitwatch db upgrade`, the demo, the
    tests and the benches all migrate through here."""
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn  # type: ignore[attr-defined]
        (command.downgrade if down else command.upgrade)(cfg, revision)  # type: ignore[arg-type]


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrations_dir()))
    head = script.get_current_head()
    assert head is not None, "migrations/versions has no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    ok: bool
    current: str | None
    head: str
    message: str


def safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def schema_status(engine: Engine) -> SchemaStatus:
    head = head_revision()
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["no detail"])[0]
        return SchemaStatus(
            False,
            None,
            head,
            f"database {safe_url(engine)} cannot be reached ({reason}): "
            "check the URL and that the database server runs",
        )
    if current == head:
        return SchemaStatus(True, current, head, f"database {safe_url(engine)} is at {head}")
    return SchemaStatus(
        False,
        current,
        head,
        f"database {safe_url(engine)} is at revision {current or 'none'}, code needs {head}: "
        "run `splitwatch db upgrade`",
    )
