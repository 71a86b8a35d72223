"""What `make demo` makes (tools/demo.py replays it): three sending domains on `make run`'s SMTP sink, two
templates, 200 leads in five segments, and the stories of six campaigns, one in each status."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from services.api.domains.schemas import DomainIn
from services.api.leads.schemas import LeadIn
from services.api.templates.schemas import TemplateIn

SINK = {"host": "127.0.0.1", "port": 1025, "security": "none"}  # `make run`'s local SMTP sink
EVERY_DAY = {"timezone": "Europe/Amsterdam", "days": [0, 1, 2, 3, 4, 5, 6], "holidays": None}
OFFICE_HOURS = {**EVERY_DAY, "start": "08:00", "end": "18:00"}
ROUND_THE_CLOCK = {**EVERY_DAY, "start": "00:00", "end": "24:00"}

DOMAINS = tuple(
    DomainIn(
        domain=name,
        from_email=f"{sender.lower()}@{name}",
        from_name=sender,
        smtp=SINK,
        min_interval_seconds=interval,
    )
    for name, sender, interval in (
        ("acme-outreach.example", "Anna", 1200),
        ("hello-acme.example", "Bram", 1200),
        ("news-acme.example", "Chris", 7200),  # the running campaign's: 12 a day, so it runs for days
    )
)
INTRO = TemplateIn(
    name="Acme intro",
    subject="{{ first_name }}, a quicker way to ship for {{ company }}",
    body_html=(
        "<p>Hi {{ first_name }},</p><p>Teams in {{ fields.city }} like {{ company }} cut their shipping"
        ' admin in half with Acme. <a href="https://acme.example/tour">A two-minute tour</a>.</p>'
        '<p>{{ sender_name }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    ),
    followup_subject="Re: {{ first_name }}, a quicker way to ship for {{ company }}",
    followup_body_html=(
        "<p>Hi {{ first_name }}, did you get a chance to look? Happy to send a short case study.</p>"
        '<p>{{ sender_name }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    ),
)
WEBINAR = TemplateIn(
    name="Acme webinar invite",
    subject="Webinar: shipping without spreadsheets, for {{ company }}",
    body_html=(
        "<p>Hi {{ first_name }},</p><p>Join our 30-minute webinar next Thursday."
        ' <a href="https://acme.example/webinar">Save your seat</a>.</p>'
        '<p>{{ sender_name }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
    ),
)

SEGMENTS = ("retail", "saas", "logistics", "agencies", "healthcare")
FIRST = ("Jan", "Sanne", "Pieter", "Lotte", "Daan", "Emma", "Bram", "Julia", "Lucas", "Fleur", "Noah", "Eva")
LAST = ("de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder", "Bos", "Peters")
PLACES, KINDS = ("Noord", "Zuid", "Delta", "Polder", "Kanaal"), ("BV", "Logistics", "Retail", "Labs")
CITIES = ("Amsterdam", "Utrecht", "Rotterdam", "Eindhoven", "Antwerp", "Ghent", "Groningen", "Leiden")


def demo_leads() -> list[LeadIn]:
    """200 leads, 40 in each segment (a tag), the same every run."""
    pick = random.Random("maildash-demo-leads")  # noqa: S311 (sample data, not a secret)
    made = []
    for n in range(200):
        first, last, city = pick.choice(FIRST), pick.choice(LAST), pick.choice(CITIES)
        company = f"{pick.choice(PLACES)} {pick.choice(KINDS)}"
        host = company.lower().replace(" ", "-")
        made.append(
            LeadIn(
                email=f"{first.lower()}.{last.lower().replace(' ', '')}.{n}@{host}.example",
                first_name=first,
                last_name=last,
                company=company,
                tags=[SEGMENTS[n % len(SEGMENTS)]],
                fields={"city": city},
            )
        )
    return made


@dataclass(frozen=True)
class Story:
    """A campaign and how its life went: begun `began_days_ago` (None: a draft; negative: to start later);
    paused or stopped once `share` of its audience was mailed (completed and running ones go on)."""

    name: str
    template: str
    segment: str
    domains: tuple[str, ...]
    window: dict[str, Any]
    outcome: str  # completed, stopped, paused, running, scheduled, draft
    began_days_ago: float | None
    share: float = 1.0
    followup: bool = False
    clicks: bool = False


OUTREACH, HELLO, NEWS = (domain.domain for domain in DOMAINS)
STORIES = (
    Story("Retail — intro", INTRO.name, "retail", (OUTREACH, HELLO), OFFICE_HOURS, "completed", 28,
          followup=True, clicks=True),
    Story("SaaS — webinar invite", WEBINAR.name, "saas", (OUTREACH,), OFFICE_HOURS, "stopped", 21, share=0.6),
    Story("Logistics — autumn offer", INTRO.name, "logistics", (HELLO,), OFFICE_HOURS, "paused", 12,
          share=0.5, clicks=True),
    Story("Agencies — case study", INTRO.name, "agencies", (NEWS,), ROUND_THE_CLOCK, "running", 2,
          clicks=True),
    Story("Healthcare — new year", INTRO.name, "healthcare", (OUTREACH, HELLO), OFFICE_HOURS, "scheduled",
          -6),
    Story("Retail — spring (draft)", WEBINAR.name, "retail", (OUTREACH,), OFFICE_HOURS, "draft", None),
)  # fmt: skip
