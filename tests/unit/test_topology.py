from services.scheduler.handlers import USE_CASES
from shared.events import ALL_EVENTS, MessageOpened, SendMessage
from shared.messaging import CONSUMERS, Topology

# Defined by the contract (SPEC §5) but not published yet: opens are recorded straight into the KPI store.
NOT_PUBLISHED = {MessageOpened}


def test_every_published_event_has_a_queue() -> None:
    """Publishing is mandatory: an event without a bound queue would fail and hold up the outbox."""
    consumed = {event for events in CONSUMERS.values() for event in events}
    assert set(ALL_EVENTS) - NOT_PUBLISHED <= consumed


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
