"""Audience resolution (SPEC §2.1, §7): which candidate leads survive the exclusions, in order.

A lead matching several reasons is counted once, under the first of EXCLUSION_ORDER; an excluded lead does not
claim its e-mail domain for `one_per_domain`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

EXCLUSION_ORDER = ("unsubscribed", "bounced", "suppressed", "recent", "duplicate_domain")


@dataclass(frozen=True)
class Candidate:
    lead_id: uuid.UUID
    email: str
    status: str
    last_sent_at: datetime | None = None

    @property
    def domain(self) -> str:
        return self.email.rsplit("@", 1)[-1].lower()


@dataclass(frozen=True)
class AudienceRules:
    exclude_suppressed: bool = True
    recent_since: datetime | None = None  # drop leads sent anything at or after this moment
    one_per_domain: bool = False


@dataclass(frozen=True)
class Audience:
    lead_ids: list[uuid.UUID]
    excluded: dict[str, int]


def is_suppressed(email: str, emails: set[str], domains: set[str]) -> bool:
    """An address is suppressed by itself or by its domain or any parent domain."""
    email = email.lower()
    if email in emails:
        return True
    labels = email.rsplit("@", 1)[-1].split(".")
    return any(".".join(labels[i:]) in domains for i in range(len(labels)))


def resolve(
    candidates: Sequence[Candidate],
    rules: AudienceRules,
    suppressed_emails: Iterable[str] = (),
    suppressed_domains: Iterable[str] = (),
) -> Audience:
    emails = {e.lower() for e in suppressed_emails}
    domains = {d.lower() for d in suppressed_domains}
    excluded: Counter[str] = Counter({reason: 0 for reason in EXCLUSION_ORDER})
    seen_domains: set[str] = set()
    kept: list[uuid.UUID] = []
    for lead in candidates:
        reason = _exclusion(lead, rules, emails, domains, seen_domains)
        if reason:
            excluded[reason] += 1
            continue
        seen_domains.add(lead.domain)
        kept.append(lead.lead_id)
    return Audience(kept, dict(excluded))


def _exclusion(
    lead: Candidate, rules: AudienceRules, emails: set[str], domains: set[str], seen_domains: set[str]
) -> str | None:
    if lead.status == "unsubscribed":
        return "unsubscribed"
    if lead.status == "bounced":
        return "bounced"
    if rules.exclude_suppressed and is_suppressed(lead.email, emails, domains):
        return "suppressed"
    if rules.recent_since and lead.last_sent_at and lead.last_sent_at >= rules.recent_since:
        return "recent"
    if rules.one_per_domain and lead.domain in seen_domains:
        return "duplicate_domain"
    return None
