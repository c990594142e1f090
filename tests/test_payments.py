"""process_payment through real worker.py and scheduler.py processes against a scripted gateway."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.foundation.models import Payment
from app.services.currency import CURRENCY_EXPONENTS, minor_units
from tests.conftest import make_env
from tests.peers import Answer, HttpPeer, Seen, engine_for, gaps, migrate
from tests.servers import (
    FINAL,
    Starter,
    catalogue,
    enqueue,
    invalid_fields,
    start_scheduler,
    start_worker,
    wait_state,
)


def test_minor_units() -> None:
    """It converts to the currency's minor unit exactly, refusing more decimals than it has."""
    assert minor_units(19.99, "USD") == 1999
    assert minor_units(0.3, "EUR") == 30
    assert minor_units(1999, "JPY") == 1999
    assert minor_units(1.234, "KWD") == 1234
    assert minor_units(1e9, "USD") == 100_000_000_000
    for amount, currency in [(19.999, "USD"), (10.5, "JPY"), (0.0001, "KWD"), (0.1 + 0.2, "EUR")]:
        with pytest.raises(ValueError, match="decimal places"):
            minor_units(amount, currency)
    assert {"USD", "EUR", "JPY", "GBP", "CHF", "KWD"} <= set(CURRENCY_EXPONENTS)


@pytest.mark.parametrize(
    ("args", "fields"),
    [
        ({"payment_id": "p-1", "amount": 0, "currency": "USD"}, ["args.amount"]),
        ({"payment_id": "p-1", "amount": -5, "currency": "USD"}, ["args.amount"]),
        ({"payment_id": "p-1", "amount": 10, "currency": "usd"}, ["args.currency"]),
        ({"payment_id": "p-1", "amount": 10, "currency": "XYZ"}, ["args.currency"]),
        ({"payment_id": "p 1", "amount": 10, "currency": "USD"}, ["args.payment_id"]),
        ({"payment_id": "", "amount": 10, "currency": "USD"}, ["args.payment_id"]),
        ({"payment_id": "p-1", "amount": 19.999, "currency": "USD"}, ["args"]),
        ({"payment_id": "p-1", "amount": 100.5, "currency": "JPY"}, ["args"]),
    ],
)
def test_process_payment_validation(
    client: FlaskClient, auth: dict[str, str], args: dict[str, Any], fields: list[str]
) -> None:
    """It answers 422 for a non-positive amount, a code outside ISO 4217, a bad id, too many decimals."""
    assert invalid_fields(client, auth, "process_payment", args) == fields


def test_process_payment_schema(client: FlaskClient, auth: dict[str, str]) -> None:
    """It lists the currencies in the schema and declares the high queue and three retries."""
    tasks = catalogue(client, auth)
    spec = tasks["process_payment"]
    assert spec["queue"] == "high" and spec["retry"]["max_retries"] == 3
    assert spec["retry"]["dont_retry_for"] == ["GatewayError", "PaymentConflict"]
    props = spec["input_schema"]["properties"]
    assert "USD" in props["currency"]["enum"] and "usd" not in props["currency"]["enum"]
    assert props["amount"]["exclusiveMinimum"] == 0


# --- through the worker --------------------------------------------------------------------------


@pytest.fixture
def gateway(http_peer: Callable[..., HttpPeer]) -> HttpPeer:
    return http_peer()


@pytest.fixture
def env(tmp_path: Path, redis_url: str, gateway: HttpPeer) -> dict[str, str]:
    """The gateway's URL carries an API key, sent as Basic auth."""
    url = gateway.url("/v1").replace("http://", "http://sk_test_123:@")
    return make_env(tmp_path, redis_url, PAYMENT_GATEWAY_URL=url)


@pytest.fixture
def engine(start: Starter, rconn: redis.Redis, env: dict[str, str]) -> Engine:
    migrate(start)
    start_worker(start, rconn)
    start_scheduler(start, rconn)
    return engine_for(env)


def for_key(key: str) -> Callable[[Seen], bool]:
    return lambda seen: seen.headers.get("idempotency-key") == key


def charges(gateway: HttpPeer, key: str) -> list[Seen]:
    return [s for s in gateway.requests("/v1/charges") if s.headers.get("idempotency-key") == key]


def recorded(engine: Engine) -> dict[str, Payment]:
    with Session(engine) as session:
        return {p.payment_id: p for p in session.scalars(select(Payment))}


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_approved_after_503_declined_at_once_and_4xx_final(
    engine: Engine, gateway: HttpPeer, client: FlaskClient, auth: dict[str, str]
) -> None:
    """It retries a 503 with the same Idempotency-Key, records a 402 decline as a result, fails on a 400."""
    gateway.script(
        "/v1/charges",
        Answer(503, {"error": "maintenance"}),
        Answer(201, {"id": "ch_ok", "status": "succeeded"}),
        when=for_key("order-1"),
    )
    gateway.script(
        "/v1/charges",
        Answer(
            402, {"id": "ch_no", "status": "declined", "decline_code": "insufficient_funds", "message": "No."}
        ),
        when=for_key("order-2"),
    )
    gateway.script("/v1/charges", Answer(400, {"error": "currency not enabled"}), when=for_key("order-3"))
    approved = enqueue(
        client, auth, "process_payment", {"payment_id": "order-1", "amount": 19.99, "currency": "USD"}
    )
    declined = enqueue(
        client, auth, "process_payment", {"payment_id": "order-2", "amount": 500, "currency": "JPY"}
    )
    broken = enqueue(
        client, auth, "process_payment", {"payment_id": "order-3", "amount": 1.5, "currency": "EUR"}
    )

    done = wait_state(client, auth, declined, FINAL)
    assert done["state"] == "SUCCESS" and done["retries"] == 0, done
    assert done["result"]["status"] == "declined"
    assert done["result"]["decline_code"] == "insufficient_funds"
    assert [s.json() for s in charges(gateway, "order-2")] == [
        {"payment_id": "order-2", "amount": 500, "currency": "JPY"}
    ]

    failed = wait_state(client, auth, broken, FINAL)
    assert failed["state"] == "FAILURE" and failed["retries"] == 0, failed
    assert failed["error"]["type"] == "GatewayError" and "currency not enabled" in failed["error"]["message"]
    assert len(charges(gateway, "order-3")) == 1

    done = wait_state(client, auth, approved, FINAL, timeout=30)
    assert done["state"] == "SUCCESS" and done["retries"] == 1, done
    assert done["result"] | {"recorded_at": None} == {
        "payment_id": "order-1",
        "status": "approved",
        "amount": "19.99",
        "currency": "USD",
        "gateway_reference": "ch_ok",
        "decline_code": None,
        "decline_message": None,
        "recorded_at": None,
    }
    seen = charges(gateway, "order-1")
    assert len(seen) == 2 and gaps(seen)[0] >= 0.5
    for request in seen:
        assert request.method == "POST"
        assert request.json() == {"payment_id": "order-1", "amount": 1999, "currency": "USD"}
        assert request.headers["authorization"] == "Basic c2tfdGVzdF8xMjM6"  # sk_test_123:
        assert request.headers["content-type"] == "application/json"

    rows = recorded(engine)
    assert set(rows) == {"order-1", "order-2"}
    assert (rows["order-1"].status, rows["order-1"].amount_minor, rows["order-1"].gateway_reference) == (
        "approved",
        1999,
        "ch_ok",
    )
    assert (rows["order-2"].status, rows["order-2"].decline_message) == ("declined", "No.")

    # Again for a recorded payment: the recorded outcome, without charging again.
    again = enqueue(
        client, auth, "process_payment", {"payment_id": "order-1", "amount": 19.99, "currency": "USD"}
    )
    repeat = wait_state(client, auth, again, FINAL)
    assert repeat["state"] == "SUCCESS" and repeat["result"]["already_recorded"] is True
    assert repeat["result"]["gateway_reference"] == "ch_ok"
    other = enqueue(
        client, auth, "process_payment", {"payment_id": "order-1", "amount": 20, "currency": "USD"}
    )
    conflict = wait_state(client, auth, other, FINAL)
    assert conflict["state"] == "FAILURE" and conflict["error"]["type"] == "PaymentConflict"
    assert len(charges(gateway, "order-1")) == 2
    assert len(recorded(engine)) == 2


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_timeout_and_429_are_retried_with_the_same_key(
    engine: Engine, gateway: HttpPeer, client: FlaskClient, auth: dict[str, str]
) -> None:
    """It retries a charge that timed out (10 s) and one answered 429 (after Retry-After); one row each."""
    gateway.script(
        "/v1/charges",
        Answer(201, {"id": "ch_late", "status": "succeeded"}, delay=12),  # charged, but answered too late
        Answer(200, {"id": "ch_late", "status": "succeeded"}),  # the gateway's idempotent replay
        when=for_key("order-slow"),
    )
    gateway.script(
        "/v1/charges",
        Answer(429, {"error": "slow down"}, headers={"Retry-After": "2"}),
        Answer(200, {"id": "ch_busy", "status": "succeeded"}),
        when=for_key("order-busy"),
    )
    slow = enqueue(
        client, auth, "process_payment", {"payment_id": "order-slow", "amount": 5, "currency": "GBP"}
    )
    busy = enqueue(
        client, auth, "process_payment", {"payment_id": "order-busy", "amount": 7, "currency": "CHF"}
    )

    done = wait_state(client, auth, slow, FINAL, timeout=45)
    assert done["state"] == "SUCCESS" and done["retries"] == 1, done
    assert done["result"]["gateway_reference"] == "ch_late"
    seen = charges(gateway, "order-slow")
    assert len(seen) == 2 and gaps(seen)[0] >= 10  # the first attempt waited for its timeout
    assert {s.json()["amount"] for s in seen} == {500}

    done = wait_state(client, auth, busy, FINAL, timeout=45)
    assert done["state"] == "SUCCESS" and done["retries"] == 1, done
    seen = charges(gateway, "order-busy")
    assert len(seen) == 2 and gaps(seen)[0] >= 2
    rows = recorded(engine)
    assert {k: v.gateway_reference for k, v in rows.items()} == {
        "order-slow": "ch_late",
        "order-busy": "ch_busy",
    }
