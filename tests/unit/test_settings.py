"""What a database URL means for the event store."""

from __future__ import annotations

from pathlib import Path

import pytest

from commands.settings import (
    InvalidDatabaseUrl,
    Settings,
    configured_database_url,
    persistence_env,
)


def test_sqlite_urls_are_relative_or_absolute_paths() -> None:
    assert persistence_env("sqlite:///data/ledger.db")["SQLITE_DBNAME"] == "data/ledger.db"
    assert persistence_env("sqlite:////var/ledger.db")["SQLITE_DBNAME"] == "/var/ledger.db"


def test_a_postgresql_url_names_server_database_and_schema() -> None:
    env = persistence_env("postgresql://ann:s%40fe@db.local:6543/books?schema=ledger")
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("db.local", "6543")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("ann", "s@fe")
    assert (env["POSTGRES_DBNAME"], env["POSTGRES_SCHEMA"]) == ("books", "ledger")


@pytest.mark.parametrize(
    "url", ["mysql://x/y", "sqlite:///", "postgresql://host-only", "postgresql:///nohost"]
)
def test_unusable_urls_are_refused_with_the_reason(url: str) -> None:
    with pytest.raises(InvalidDatabaseUrl):
        persistence_env(url)


def test_the_url_comes_from_the_environment_or_a_dotenv_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUBLEDGER_DATABASE_URL", raising=False)
    assert configured_database_url() is None
    assert Settings().database_url == "sqlite:///.subledger/ledger.db"
    (tmp_path / ".env").write_text("SUBLEDGER_DATABASE_URL=sqlite:///from-dotenv.db\n")
    assert configured_database_url() == "sqlite:///from-dotenv.db"
    monkeypatch.setenv("SUBLEDGER_DATABASE_URL", "sqlite:///elsewhere.db")
    assert configured_database_url() == "sqlite:///elsewhere.db"
