"""Training tables from a relational database (PostgreSQL through SQLAlchemy + psycopg).

`python -m training --data postgresql://USER@HOST:PORT/DB --table T` (or `--query SQL`) reads
the vertical's columns in chunks (server-side cursor, `pandas.read_sql(chunksize=...)`), through
the same column checks as a file (training/data.py: the same rows give the same table, the same
data_sha256 and the same model bytes), and returns what the manifest records: the query, its
bound parameters, the row count and the time window.

Credentials never come from the command line and never reach the manifest: a password in a
`--data` URL is refused (it would sit in `ps` and the shell history); libpq reads PGPASSWORD or
PGPASSFILE (~/.pgpass), or the whole URL (password included) comes from a file
(`--data-url-file`, e.g. a mounted Kubernetes Secret) or from $INSURANCE_DATABASE_URL. Recorded
URLs are rendered without the password.

Row order decides the train/test split, so a table is read in a defined order: `--order-by`, else
the table's primary key; a table with neither is refused. A `--query` keeps its own ORDER BY.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from predictors.spec import Vertical

from .data import DataError, conform

URL_ENV = "INSURANCE_DATABASE_URL"
CHUNK_ROWS = 50_000
DB_SCHEMES = ("postgresql", "postgres")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def is_database_url(text: str | os.PathLike | None) -> bool:
    """True for a database URL (postgresql://, postgresql+psycopg://, ...), False for a file path."""
    if text is None:
        return False
    scheme = str(text).split("://", 1)[0] if "://" in str(text) else ""
    return scheme.split("+", 1)[0].lower() in DB_SCHEMES


@dataclass
class DatabaseSource:
    """Where a training table comes from; `url` may hold a password (never recorded)."""

    url: str
    table: str | None = None
    query: str | None = None
    time_column: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    order_by: list[str] = field(default_factory=list)
    chunk_rows: int = CHUNK_ROWS
    origin: str = "command line"


def resolve_url(data: str | None, url_file: str | Path | None, env: dict[str, str] | None = None
                ) -> tuple[str, str]:
    """(url, where it came from). Refuses a password given on the command line."""
    env = os.environ if env is None else env
    if data and url_file:
        raise DataError("give the database as --data URL or --data-url-file FILE, not both")
    if url_file:
        try:
            url = Path(url_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise DataError(f"--data-url-file {url_file}: cannot read: {e}") from e
        if not is_database_url(url):
            raise DataError(f"--data-url-file {url_file}: expected a postgresql:// URL, found "
                            f"{_scheme(url)!r}")
        return url, f"file {url_file}"
    if data:
        if _password(data) is not None:
            raise DataError("refusing a password in the --data URL on the command line (it would be visible in "
                            "`ps` and the shell history, and could reach logs): pass the URL without it and set "
                            f"PGPASSWORD or PGPASSFILE, or put the full URL in a file (--data-url-file FILE) or in "
                            f"${URL_ENV}")
        return data, "command line (password from PGPASSWORD/PGPASSFILE)"
    url = env.get(URL_ENV, "").strip()
    if not url:
        raise DataError(f"--table/--query need a database: --data postgresql://USER@HOST/DB, --data-url-file FILE "
                        f"or ${URL_ENV}")
    if not is_database_url(url):
        raise DataError(f"${URL_ENV}: expected a postgresql:// URL, found {_scheme(url)!r}")
    return url, f"${URL_ENV}"


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else url[:20]


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password
    except ArgumentError as e:
        raise DataError(f"--data: not a database URL ({e})") from e


def _engine_url(url: str):
    """SQLAlchemy URL with the psycopg (v3) driver when none is named (postgresql:// means psycopg2)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except ArgumentError as e:
        raise DataError(f"not a database URL: {e}") from e
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def safe_url(url: str) -> str:
    """The URL as it may be recorded: no password."""
    return _engine_url(url).render_as_string(hide_password=True).replace(":***@", "@")


def parse_duration(text: str) -> timedelta | None:
    """A duration such as 90s, 10m, 12h, 180d, 2w (Prometheus' units), or None when it is not one."""
    m = _DURATION.match(str(text).strip())
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))}) if m else None


def parse_time(text: str | None, now: datetime | None = None) -> datetime | None:
    """An ISO date/time (UTC when naive) or a duration back from now (90d, 12h, 2w)."""
    if text is None:
        return None
    now = now or datetime.now(timezone.utc)
    back = parse_duration(text)
    if back is not None:
        return (now - back).replace(microsecond=0)
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise DataError(f"time {text!r}: expected an ISO date/time (2026-01-31, 2026-01-31T12:00:00Z) or a "
                        "duration back from now (90d, 12h, 2w)") from e
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _quote(ident: str) -> str:
    if not _IDENT.match(ident):
        raise DataError(f"{ident!r} is not a plain table or column name (letters, digits, _; schema.table allowed)")
    return ".".join(f'"{part}"' for part in ident.split("."))


def _window(src: DatabaseSource) -> tuple[str, dict[str, Any]]:
    """The WHERE condition of --since/--until on the time column (bound parameters), or ''."""
    conds, params = [], {}
    if (src.since or src.until) and not src.time_column:
        raise DataError("--since/--until need --time-column (the column the window applies to)")
    if src.since:
        conds.append(f"{_quote(src.time_column)} >= :since")
        params["since"] = src.since
    if src.until:
        conds.append(f"{_quote(src.time_column)} < :until")
        params["until"] = src.until
    return " AND ".join(conds), params


def build_query(src: DatabaseSource, vertical: Vertical, engine) -> tuple[str, dict[str, Any]]:
    """The SQL text and bound parameters that read the source."""
    where, params = _window(src)
    if src.query:
        if where:
            return f"SELECT * FROM ({src.query.strip().rstrip(';')}) AS q WHERE {where}", params
        return src.query.strip().rstrip(";"), params
    from sqlalchemy import inspect
    from sqlalchemy.exc import NoSuchTableError

    schema, _, name = src.table.rpartition(".")
    _quote(src.table)
    try:
        insp = inspect(engine)
        columns = {c["name"] for c in insp.get_columns(name, schema=schema or None)}
        pk = insp.get_pk_constraint(name, schema=schema or None).get("constrained_columns") or []
    except NoSuchTableError as e:
        raise DataError(f"table {src.table!r} does not exist in {safe_url(src.url)}") from e
    wanted = [*vertical.feature_names, vertical.target]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"table {src.table}: missing columns {', '.join(missing)} (vertical {vertical.name} needs "
                        f"{', '.join(vertical.feature_names)} and the target {vertical.target})")
    order = src.order_by or pk
    if not order:
        raise DataError(f"table {src.table} has no primary key: pass --order-by COLUMN[,COLUMN] (row order decides "
                        "the train/test split, and a table has none without it)")
    for c in [*order, *([src.time_column] if src.time_column else [])]:
        if c not in columns:
            raise DataError(f"table {src.table}: no column {c!r} (columns: {', '.join(sorted(columns))})")
    select = [*wanted, *([src.time_column] if src.time_column and src.time_column not in wanted else [])]
    sql = f"SELECT {', '.join(_quote(c) for c in select)} FROM {_quote(src.table)}"
    if where:
        sql += " WHERE " + where
    return sql + " ORDER BY " + ", ".join(_quote(c) for c in order), params


def read_database(src: DatabaseSource, vertical: Vertical) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read the training table; return it (checked like a file) and what the manifest records."""
    try:
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError as e:
        raise DataError("reading a database needs SQLAlchemy and psycopg: pip install 'insurance-serving[db]'") from e
    if bool(src.table) == bool(src.query):
        raise DataError("a database source needs exactly one of --table or --query")
    if (src.since or src.until) and not src.time_column:
        raise DataError("--since/--until need --time-column (the column the window applies to)")
    url = _engine_url(src.url)
    shown = safe_url(src.url)
    try:
        engine = create_engine(url)
    except ImportError as e:
        raise DataError(f"{shown}: the driver {url.drivername!r} is not installed ({e}); use postgresql:// "
                        "(psycopg 3, installed with the [db] extra)") from e
    try:
        sql, params = build_query(src, vertical, engine)
        chunks = []
        with engine.connect() as conn:
            conn = conn.execution_options(stream_results=True, max_row_buffer=src.chunk_rows)
            for chunk in pd.read_sql(text(sql), conn, params=params, chunksize=src.chunk_rows):
                chunks.append(chunk)
    except SQLAlchemyError as e:
        detail = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        if "no password supplied" in detail or "password authentication failed" in detail:
            detail += (f" (credentials came from {src.origin}; the password comes from PGPASSWORD, PGPASSFILE, "
                       f"--data-url-file or ${URL_ENV})")
        raise DataError(f"{shown}: {type(getattr(e, 'orig', None) or e).__name__}: {detail}") from e
    finally:
        engine.dispose()
    raw = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    if raw.empty:
        raise DataError(f"{shown}: the query returned no rows: {sql} {params or ''}".rstrip())
    window: dict[str, Any] | None = None
    if src.time_column:
        if src.time_column not in raw.columns:
            raise DataError(f"{shown}: the query has no column {src.time_column!r} (--time-column)")
        t = pd.to_datetime(raw[src.time_column], utc=True)
        window = {"column": src.time_column,
                  "since": src.since.isoformat() if src.since else None,
                  "until": src.until.isoformat() if src.until else None,
                  "first": t.min().isoformat() if t.notna().any() else None,
                  "last": t.max().isoformat() if t.notna().any() else None}
    df = conform(raw, vertical, f"{shown} ({src.table or 'query'})")
    record = {"data_source": shown, "database": {
        "url": shown, "url_from": src.origin, "table": src.table, "query": sql,
        "params": {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()},
        "rows": len(df), "chunk_rows": src.chunk_rows, "time_window": window,
        "read_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat()}}
    return df, record
