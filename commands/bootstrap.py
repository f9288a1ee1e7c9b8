"""Builds the ledger from settings: the one place that wires storage to the domain."""

from __future__ import annotations

import os
from base64 import b64encode
from pathlib import Path

import psycopg
from psycopg import sql
from pydantic import SecretStr

from commands.settings import Settings, persistence_env
from gateways.authorizenet import AuthorizeNetConfig, AuthorizeNetGateway, AuthorizeNetWebhooks
from gateways.paypal import PayPalConfig, PayPalGateway, PayPalWebhooks
from gateways.port import Gateway, Gateways
from gateways.razorpay import RazorpayConfig, RazorpayGateway, RazorpayWebhooks
from gateways.sandbox import SandboxGateway
from gateways.stripe import StripeConfig, StripeGateway, StripeWebhooks
from gateways.webhooks import WebhookVerifier
from ledger.application import PERSONAL_DATA_KEY, Ledger
from ledger.personal_data import master_key
from projections import all_projections
from projections.database import Database, PostgresDatabase, SQLiteDatabase
from projections.runner import Projector


def prepare_storage(env: dict[str, str]) -> None:
    """Creates what eventsourcing expects to exist: the SQLite folder, the PG schema.

    PostgreSQL is connected to once directly, so that a wrong database, user or host is
    reported at once with its cause, not after the pool's wait with none.
    """
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        Path(env["SQLITE_DBNAME"]).parent.mkdir(parents=True, exist_ok=True)
        return
    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
        autocommit=True,
    ) as conn:
        if env["POSTGRES_SCHEMA"]:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(env["POSTGRES_SCHEMA"])
                )
            )


def bootstrap(database_url: str | None = None, settings: Settings | None = None) -> Ledger:
    """The ledger on ``database_url``, or on ``SUBLEDGER_DATABASE_URL`` / the default,
    with the business's billing rules from settings."""
    settings = settings or Settings()
    env = persistence_env(database_url or settings.database_url)
    prepare_storage(env)
    env[PERSONAL_DATA_KEY] = personal_data_key(settings, env)
    ledger = Ledger(env=env)
    ledger.dunning_policy = settings.dunning_policy()
    return ledger


# Where a key of the development kind is kept for a PostgreSQL ledger.
DEVELOPMENT_KEY_FILE = ".subledger/personal-data.key"


def personal_data_key(settings: Settings, env: dict[str, str]) -> str:
    """The master key of personal data: ``SUBLEDGER_PERSONAL_DATA_KEY``, or else (the
    demo, tests, a developer's machine) a random key kept in a file beside the SQLite
    database (``<database>.key``; ``.subledger/personal-data.key`` for PostgreSQL), made
    on first use. Production sets the setting and keeps the key away from the database:
    a key file beside it protects nothing from whoever copies both."""
    if settings.personal_data_key is not None:
        return settings.personal_data_key.get_secret_value()
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        path = Path(f"{env['SQLITE_DBNAME']}.key")
    else:
        path = Path(DEVELOPMENT_KEY_FILE)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        made = path.with_name(f"{path.name}.{os.getpid()}")
        # Readable by its owner only, from the start.
        with os.fdopen(os.open(made, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(b64encode(os.urandom(32)).decode() + "\n")
            f.flush()
            os.fsync(f.fileno())  # never an empty key file after a crash
        try:
            # Atomic, and never replaces a key: of two processes starting together,
            # the second reads the first's.
            os.link(made, path)
        except FileExistsError:
            pass
        finally:
            made.unlink()
    text = path.read_text().strip()
    try:
        master_key(text)
    except ValueError as error:
        raise ValueError(f"the key file {path} holds no usable key: {error}") from None
    return text


def gateways(settings: Settings | None = None) -> Gateways:
    """The payment gateways payment methods can name: the sandbox, and every provider
    whose keys are set."""
    settings = settings or Settings()
    Path(settings.sandbox_path).parent.mkdir(parents=True, exist_ok=True)
    configured: list[Gateway] = [SandboxGateway(settings.sandbox_path)]
    stripe, paypal, razorpay, authorizenet = _provider_configs(settings)
    if stripe:
        configured.append(StripeGateway(stripe))
    if paypal:
        configured.append(PayPalGateway(paypal))
    if razorpay:
        configured.append(RazorpayGateway(razorpay))
    if authorizenet:
        configured.append(AuthorizeNetGateway(authorizenet))
    return Gateways(configured)


def webhook_verifiers(settings: Settings | None = None) -> dict[str, WebhookVerifier]:
    """The verifiers of the providers whose webhook secret (PayPal: webhook id) is set."""
    settings = settings or Settings()
    stripe, paypal, razorpay, authorizenet = _provider_configs(settings)
    verifiers: list[WebhookVerifier] = []
    if stripe and stripe.webhook_secret:
        verifiers.append(StripeWebhooks(stripe))
    if paypal and paypal.webhook_id:
        verifiers.append(PayPalWebhooks(paypal))
    if razorpay and razorpay.webhook_secret:
        verifiers.append(RazorpayWebhooks(razorpay))
    if authorizenet and authorizenet.signature_key:
        verifiers.append(AuthorizeNetWebhooks(authorizenet))
    return {verifier.name: verifier for verifier in verifiers}


def _provider_configs(
    settings: Settings,
) -> tuple[
    StripeConfig | None, PayPalConfig | None, RazorpayConfig | None, AuthorizeNetConfig | None
]:
    """Each provider's configuration from settings, None where its keys are not set."""
    timeout = settings.gateway_timeout
    stripe = paypal = razorpay = authorizenet = None
    if settings.stripe_api_key:
        stripe = StripeConfig(
            api_key=settings.stripe_api_key.get_secret_value(),
            api_base=settings.stripe_api_base,
            webhook_secret=_secret(settings.stripe_webhook_secret),
            timeout=timeout,
        )
    if settings.paypal_client_id and settings.paypal_client_secret:
        paypal = PayPalConfig(
            client_id=settings.paypal_client_id,
            client_secret=settings.paypal_client_secret.get_secret_value(),
            api_base=settings.paypal_api_base,
            webhook_id=settings.paypal_webhook_id,
            timeout=timeout,
        )
    if settings.razorpay_key_id and settings.razorpay_key_secret:
        razorpay = RazorpayConfig(
            key_id=settings.razorpay_key_id,
            key_secret=settings.razorpay_key_secret.get_secret_value(),
            api_base=settings.razorpay_api_base,
            webhook_secret=_secret(settings.razorpay_webhook_secret),
            timeout=timeout,
        )
    if settings.authorizenet_api_login_id and settings.authorizenet_transaction_key:
        authorizenet = AuthorizeNetConfig(
            api_login_id=settings.authorizenet_api_login_id,
            transaction_key=settings.authorizenet_transaction_key.get_secret_value(),
            api_url=settings.authorizenet_api_url,
            signature_key=_secret(settings.authorizenet_signature_key),
            duplicate_window=settings.authorizenet_duplicate_window,
            timeout=timeout,
            currency=settings.authorizenet_currency,
        )
    return stripe, paypal, razorpay, authorizenet


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


def projection_database(env: dict[str, str]) -> Database:
    """The projections' connection: the event store's own database (and schema)."""
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        return SQLiteDatabase(env["SQLITE_DBNAME"])
    return PostgresDatabase(
        schema=env["POSTGRES_SCHEMA"],
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
    )


def projector(ledger: Ledger, database_url: str | None = None) -> Projector:
    """Every projection, on the database of ``database_url`` (as ``bootstrap`` reads it)."""
    env = persistence_env(database_url or Settings().database_url)
    return Projector(ledger, projection_database(env), all_projections())
