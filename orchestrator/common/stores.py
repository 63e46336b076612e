"""Where a study keeps its MLflow runs and its Optuna studies: a SQLite file (the embedded
default, in the output directory) or a PostgreSQL database shared by many studies and
machines (what MLflow and Optuna recommend for distributed work).

* :func:`is_postgres`, :func:`normalize`: ``postgresql://`` URLs go to MLflow and Optuna as
  ``postgresql+psycopg2://`` (SQLAlchemy 2.1 made psycopg 3 the default driver of a bare
  ``postgresql://``; this project installs psycopg2, the ``postgres`` extra).
* :func:`url_problem`: what is wrong with a URL's form (checked with the study file).
* :func:`postgres_problem`: whether a PostgreSQL URL can be used from here (the driver is
  installed, the server answers, the database exists, the user may log in), checked before a
  study starts: one line, with the fix.
* :func:`same_database`: MLflow and Optuna cannot share one database (both keep their schema
  revision in a table ``alembic_version``), so a study gives each its own.
* :func:`redact`: a URL with its password hidden, for anything printed or logged.
"""

from __future__ import annotations

import re
from typing import Optional

POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg2")
DRIVER = "psycopg2"
INSTALL = "pip install 'psycopg2-binary>=2.9' (or pip install -e \".[postgres]\")"
CONNECT_TIMEOUT_S = 5
SETUP = "docs/cluster.md, 'PostgreSQL'"


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_postgres(url: Optional[str]) -> bool:
    return bool(url) and scheme(url).startswith("postgres")


def is_sqlite(url: Optional[str]) -> bool:
    return bool(url) and url.startswith("sqlite:")


def normalize(url: str) -> str:
    """A PostgreSQL URL with its driver named (``postgresql+psycopg2://``); others as they are."""
    if scheme(url) == "postgresql":
        return "postgresql+psycopg2" + url[len("postgresql") :]
    return url


def redact(url: str) -> str:
    """``scheme://user:***@host/...``: never print or log a password."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^@/]*@", r"\1:***@", url)


def split_password(url: str) -> tuple[str, Optional[str]]:
    """(the URL without its password, the password): a password goes to a child process in
    ``PGPASSWORD`` (libpq reads it), not on its command line, where ``ps`` shows it."""
    if not is_postgres(url):
        return url, None
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.password is None:
        return url, None
    return u._replace(password=None).render_as_string(hide_password=False), str(u.password)  # a NamedTuple: set() keeps a None


def url_problem(url: str, example: str) -> Optional[str]:
    """What is wrong with the form of a PostgreSQL URL (None: nothing), with the fix."""
    s = scheme(url)
    if s in ("postgres",) or (s.startswith("postgres") and s not in POSTGRES_SCHEMES):
        return (f"{redact(url)!r}: the PostgreSQL URL must start postgresql:// (or postgresql+psycopg2://, "
                f"the driver this project installs); write e.g. {example}")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(normalize(url))
    except (ArgumentError, ValueError) as e:
        return f"{redact(url)!r} is not a database URL ({e}); write e.g. {example}"
    if not u.database:
        return f"{redact(url)!r} names no database; add it after the host, e.g. {example}"
    return None


def _where(u) -> str:
    return f"{u.host or 'the local socket'}:{u.port or 5432}"


def postgres_problem(url: str) -> Optional[str]:
    """Why the PostgreSQL database at ``url`` cannot be used from this machine, and the fix,
    on one line (None: it answers and lets us in). Opens one connection, for at most
    :data:`CONNECT_TIMEOUT_S` seconds."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return f"{redact(url)} needs the PostgreSQL driver {DRIVER}, which is not installed; {INSTALL}"
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    u = make_url(normalize(url))
    engine = create_engine(u, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
        return None
    except Exception as e:  # sqlalchemy.exc.OperationalError around psycopg2's, or anything else on the way
        orig = getattr(e, "orig", None) or e
        text = " ".join(str(orig).strip().splitlines()[0].split()) if str(orig).strip() else type(orig).__name__
        where = _where(u)
        if f'database "{u.database}" does not exist' in text:
            return (f"the PostgreSQL server at {where} has no database {u.database!r}; create it "
                    f"(psql -h {u.host or 'localhost'} -U {u.username or 'postgres'} -c 'CREATE DATABASE \"{u.database}\"') "
                    f"or fix the database name in the URL")
        if re.search(r'password authentication failed|no password supplied|role ".*" does not exist|pg_hba\.conf', text):
            return (f"the PostgreSQL server at {where} refused user {u.username or '(default)'!r} ({text}); check the user "
                    f"and password (PGPASSWORD or ~/.pgpass, rather than in the study file) and the server's pg_hba.conf")
        return f"no PostgreSQL server answers at {where} ({text}); start it, or fix the host and port in the URL ({SETUP})"
    finally:
        engine.dispose()


def same_database(a: str, b: str) -> bool:
    """Whether two store URLs name one database (a SQLite file, or one PostgreSQL database)."""
    if is_sqlite(a) and is_sqlite(b):
        import os

        return os.path.realpath(a.split(":///", 1)[-1]) == os.path.realpath(b.split(":///", 1)[-1])
    if is_postgres(a) and is_postgres(b):
        from sqlalchemy.engine import make_url

        ua, ub = make_url(normalize(a)), make_url(normalize(b))
        host = lambda u: (u.host or "localhost").lower().replace("127.0.0.1", "localhost")  # noqa: E731
        return (host(ua), ua.port or 5432, ua.database, dict(ua.query)) == (host(ub), ub.port or 5432, ub.database, dict(ub.query))
    return False
