"""The AsyncAPI document: every event and command, and the committed copy as the code generates it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared import asyncapi, events
from shared.events import ALL_EVENTS
from shared.messaging import CONSUMED, CONSUMERS, Topology

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return asyncapi.document()


def test_the_committed_document_is_what_the_code_generates(spec: dict[str, Any]) -> None:
    assert COMMITTED.read_text() == asyncapi.dumps(spec), (
        "docs/asyncapi.json is out of date with shared/events.py or shared/messaging.py: run `make asyncapi`"
    )


def _payload(spec: dict[str, Any], operation: dict[str, Any]) -> str:
    channel = spec["channels"][operation["channel"]["$ref"].rsplit("/", 1)[1]]
    (message,) = channel["messages"].values()
    name = message["$ref"].rsplit("/", 1)[1]
    return str(spec["components"]["messages"][name]["payload"]["$ref"].rsplit("/", 1)[1])


def test_every_event_is_published_and_every_consumer_receives_from_its_queue(spec: dict[str, Any]) -> None:
    topology = Topology("maildash")
    sent = {
        _payload(spec, op): op["bindings"]["amqp"]["cc"]
        for op in spec["operations"].values()
        if op["action"] == "send"
    }
    assert sent == {event.__name__: [event.routing_key] for event in ALL_EVENTS}
    received = {
        spec["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]["bindings"]["amqp"]["queue"]["name"]: (
            _payload(spec, op)
        )
        for op in spec["operations"].values()
        if op["action"] == "receive"
    }
    assert received == {
        topology.queue(consumer, event).name: event.__name__
        for consumer, events in CONSUMERS.items()
        for event in events
    }
    for operation in spec["operations"].values():
        if operation["action"] == "send":  # as the outbox relay publishes: persistent, mandatory if consumed
            amqp = operation["bindings"]["amqp"]
            assert amqp["deliveryMode"] == 2
            assert amqp["mandatory"] is (amqp["cc"][0] in CONSUMED)


def test_each_payload_schema_is_its_event_model(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for event in ALL_EVENTS:
        schema = schemas[event.__name__]
        assert set(schema["properties"]) == set(event.model_fields), event
        assert {"event_id", "occurred_at", "workspace_id"} <= set(schema["properties"])
        assert schema.get("description"), f"{event.__name__} has no docstring to describe it"


def test_every_event_the_code_defines_is_in_all_events() -> None:
    """An event left out of ALL_EVENTS would be published without a word in the document (or the topology):
    every class with its own routing key is in it."""
    defined = {
        cls
        for cls in vars(events).values()
        if isinstance(cls, type) and issubclass(cls, events.Event) and "routing_key" in vars(cls)
    }
    assert defined == set(ALL_EVENTS)
