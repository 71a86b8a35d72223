import uuid
from datetime import UTC, datetime

from shared.planning.audience import AudienceRules, Candidate, is_suppressed, resolve


def lead(email: str, status: str = "active", last_sent_at: datetime | None = None) -> Candidate:
    return Candidate(uuid.uuid4(), email, status, last_sent_at)


def test_unsubscribed_and_bounced_are_never_kept_even_without_exclusions() -> None:
    leads = [lead("a@x.example", "unsubscribed"), lead("b@x.example", "bounced"), lead("c@x.example")]
    result = resolve(leads, AudienceRules(exclude_suppressed=False))
    assert result.lead_ids == [leads[2].lead_id]
    assert result.excluded["unsubscribed"] == 1
    assert result.excluded["bounced"] == 1


def test_a_lead_with_several_reasons_counts_once_under_the_first() -> None:
    recent = datetime(2026, 11, 20, tzinfo=UTC)
    leads = [lead("a@blocked.example", "bounced", recent)]
    result = resolve(
        leads, AudienceRules(recent_since=datetime(2026, 11, 1, tzinfo=UTC)), [], ["blocked.example"]
    )
    assert result.excluded == {
        "unsubscribed": 0,
        "bounced": 1,
        "suppressed": 0,
        "recent": 0,
        "duplicate_domain": 0,
    }


def test_suppressed_domain_covers_subdomains_case_insensitively() -> None:
    assert is_suppressed("Jan@Mail.Corp.Example", set(), {"corp.example"})
    assert not is_suppressed("jan@corp.example.org", set(), {"corp.example"})
    assert is_suppressed("JAN@x.example", {"jan@x.example"}, set())


def test_one_per_domain_keeps_the_first_surviving_lead_of_each_domain() -> None:
    leads = [
        lead("a@x.example", "unsubscribed"),
        lead("b@X.example"),
        lead("c@x.example"),
        lead("d@y.example"),
    ]
    result = resolve(leads, AudienceRules(one_per_domain=True))
    assert result.lead_ids == [leads[1].lead_id, leads[3].lead_id]
    assert result.excluded["duplicate_domain"] == 1


def test_recent_sends_are_excluded_only_when_asked() -> None:
    sent = lead("a@x.example", last_sent_at=datetime(2026, 11, 20, tzinfo=UTC))
    assert resolve([sent], AudienceRules()).lead_ids == [sent.lead_id]
    since = datetime(2026, 11, 11, tzinfo=UTC)
    assert resolve([sent], AudienceRules(recent_since=since)).excluded["recent"] == 1
