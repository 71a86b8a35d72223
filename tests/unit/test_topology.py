from services.scheduler.handlers import USE_CASES
from shared.events import ALL_EVENTS, CampaignCompleted, MessageClicked, MessageOpened, SendMessage
from shared.messaging import CONSUMERS, Topology, publishing

# Written to the outbox for the outgoing webhooks; no service consumes them.
FOR_WEBHOOKS_ONLY = {MessageOpened, MessageClicked, CampaignCompleted}


def test_publishing_is_mandatory_exactly_for_the_events_a_service_consumes() -> None:
    """A mandatory publish without a bound queue fails and holds its row in the outbox: an event that no
    service consumes is published without it (and dropped by the broker unless someone binds a queue)."""
    consumed = {event for events in CONSUMERS.values() for event in events}
    assert set(ALL_EVENTS) - FOR_WEBHOOKS_ONLY == consumed
    for event in ALL_EVENTS:
        assert publishing(event.routing_key) == {"persist": True, "mandatory": event in consumed}, event


def test_queues_are_durable_quorum_queues_that_dead_letter() -> None:
    topology = Topology("p")
    # One queue per consumer and event it takes, so the checks below run over every one of them.
    expected = {
        f"p.{consumer}.{event.routing_key}" for consumer, events in CONSUMERS.items() for event in events
    }
    assert {queue.name for queue in topology.all_queues()} == expected
    assert f"p.sender.{SendMessage.routing_key}" in expected
    for queue in topology.all_queues():
        assert queue.durable
        assert queue.arguments is not None
        assert queue.arguments["x-queue-type"] == "quorum"
        assert queue.arguments["x-delivery-limit"] >= 1
        assert queue.arguments["x-dead-letter-exchange"] == "p.dead"
    names = [q.name for q in topology.all_queues()]
    assert len(names) == len(set(names))


def test_the_scheduler_has_one_use_case_for_each_event_it_is_subscribed_to() -> None:
    assert set(USE_CASES) == set(CONSUMERS["scheduler"])
