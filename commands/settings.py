"""Settings from the environment (``SUBLEDGER_*``) or a ``.env`` file, and what the
database URL means for the event store."""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.dunning import DunningPolicy, ExhaustedAction
from ledger.personal_data import master_key

DEFAULT_DATABASE_URL = "sqlite:///.subledger/ledger.db"
# The demo keeps its own file, so that it never touches the default ledger.
DEFAULT_DEMO_DATABASE_URL = "sqlite:///.subledger/demo.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUBLEDGER_", env_file=".env", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    # The master key (base64 of 16, 24 or 32 bytes) wrapping each customer's personal
    # data key. Unset: a key file made beside the SQLite database (.subledger/ for
    # PostgreSQL), for the demo and development only (see commands.bootstrap).
    personal_data_key: SecretStr | None = None
    # Days after a first failed charge on which it is retried ("1,3,5,7").
    dunning_retry_days: str = Field("1,3,5,7", pattern=r"^\s*(\d+\s*(,\s*\d+\s*)*)?$")
    # What dunning does to a subscription when it gives up: cancel it, or leave it unpaid.
    dunning_exhausted: Literal["cancel", "unpaid"] = "cancel"
    # The sandbox gateway's own records, kept across restarts of `subledger serve`.
    sandbox_path: str = ".subledger/sandbox.db"
    # Seconds between two ticks of `subledger serve` (projections, clock, payments).
    serve_interval: float = Field(5.0, gt=0)
    # The bus: Redis, the prefix of its keys (streams `<prefix>:commands`...), how many
    # messages one read (and one transaction) takes, after how long a message left
    # pending by a dead worker is claimed by another, and after how many deliveries a
    # message that never got an answer goes to `<prefix>:dead`.
    redis_url: str = "redis://127.0.0.1:6379/0"
    bus_prefix: str = Field("subledger", pattern=r"^[!-~]+$")
    bus_batch: int = Field(200, ge=1, le=10_000)
    bus_claim_idle_ms: int = Field(30_000, ge=10)
    bus_max_deliveries: int = Field(5, ge=1)
    # This worker's consumer name in the group (default: host and process id).
    bus_consumer: str | None = None
    # Outbound webhooks: the key each endpoint's signing secret is derived from (none:
    # deliveries wait), and seconds an endpoint has to answer a delivery.
    webhook_signing_key: SecretStr | None = None
    webhook_timeout: float = Field(10.0, gt=0, le=60)
    # Payment gateways beside the sandbox: each is on when its keys are set. Webhook
    # secrets are only needed to receive its webhooks (`subledger http`).
    gateway_timeout: float = Field(30.0, gt=0, le=120)
    stripe_api_key: SecretStr | None = None
    stripe_api_base: str = "https://api.stripe.com"
    stripe_webhook_secret: SecretStr | None = None
    paypal_client_id: str | None = None
    paypal_client_secret: SecretStr | None = None
    paypal_api_base: str = "https://api-m.paypal.com"
    paypal_webhook_id: str | None = None
    razorpay_key_id: str | None = None
    razorpay_key_secret: SecretStr | None = None
    razorpay_api_base: str = "https://api.razorpay.com"
    razorpay_webhook_secret: SecretStr | None = None
    authorizenet_api_login_id: str | None = None
    authorizenet_transaction_key: SecretStr | None = None
    authorizenet_api_url: str = "https://api.authorize.net/xml/v1/request.api"
    authorizenet_signature_key: SecretStr | None = None
    authorizenet_duplicate_window: int = Field(28_800, ge=0, le=28_800)
    authorizenet_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")

    @field_validator("dunning_retry_days")
    @classmethod
    def _retry_days_make_a_policy(cls, value: str) -> str:
        DunningPolicy(_days(value))  # raises ValueError, reported as a settings error
        return value

    @field_validator("personal_data_key")
    @classmethod
    def _personal_data_key_is_an_aes_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            master_key(value.get_secret_value())  # raises ValueError: a settings error
        return value

    @model_validator(mode="after")
    def _gateways_have_both_keys(self) -> Settings:
        """An id without its secret (or the reverse) is a mistake, not a gateway off."""
        pairs = {
            "PAYPAL_CLIENT_ID/SECRET": (self.paypal_client_id, self.paypal_client_secret),
            "RAZORPAY_KEY_ID/SECRET": (self.razorpay_key_id, self.razorpay_key_secret),
            "AUTHORIZENET_API_LOGIN_ID/TRANSACTION_KEY": (
                self.authorizenet_api_login_id,
                self.authorizenet_transaction_key,
            ),
        }
        for name, (identity, secret) in pairs.items():
            if bool(identity) != bool(secret):
                raise ValueError(f"SUBLEDGER_{name}: set both or neither")
        return self

    def dunning_policy(self) -> DunningPolicy:
        return DunningPolicy(
            _days(self.dunning_retry_days), ExhaustedAction(self.dunning_exhausted)
        )


def _days(text: str) -> tuple[int, ...]:
    return tuple(int(day) for day in text.split(",") if day.strip())


def configured_database_url() -> str | None:
    """The database URL set in the environment or .env, if one is set."""
    settings = Settings()
    return settings.database_url if "database_url" in settings.model_fields_set else None


class InvalidDatabaseUrl(ValueError):
    pass


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///")
    if not path or path.startswith(":memory:"):
        raise InvalidDatabaseUrl(f"{url!r} names no file (sqlite:///relative/path.db)")
    return path


def persistence_env(url: str) -> dict[str, str]:
    """The eventsourcing environment for a database URL."""
    path = sqlite_path(url)
    if path is not None:
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "APPLICATION_RECORDER_TOPIC": "ledger.sqlite_recorder:ChainedSQLiteApplicationRecorder",
        }
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise InvalidDatabaseUrl(
            f"unsupported database URL {url!r}: use sqlite:///path.db or "
            "postgresql://user@host:port/dbname"
        )
    dbname = parts.path.lstrip("/")
    if not dbname or not parts.hostname:
        raise InvalidDatabaseUrl(f"{url!r} needs a host and a database name")
    try:
        port = parts.port or 5432
    except ValueError:
        raise InvalidDatabaseUrl(f"{url!r} has an invalid port") from None
    query = parse_qs(parts.query)
    # Silently dropping a parameter (sslmode, say) would connect other than asked.
    if unknown := sorted(set(query) - {"schema"}):
        raise InvalidDatabaseUrl(f"{url!r}: unsupported parameters {', '.join(unknown)}")
    schema = query.get("schema", [""])[0]
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": parts.hostname,
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_SCHEMA": schema,
        # Fail within seconds, not the pool's default half minute, when the server is down.
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "APPLICATION_RECORDER_TOPIC": "ledger.postgres_recorder:LeanPostgresApplicationRecorder",
    }
