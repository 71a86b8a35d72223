"""No lead data, rendered template or tenant setting can add, end or split a header of the e-mail we build."""

from __future__ import annotations

import sys
import unicodedata
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.headers import UNSAFE_IN_HEADER, one_line
from shared.render import SUBJECT_MAX_CHARS, Letter, RenderError, build
from tests.support.letters import letter as support_letter
from tests.support.wire import LETTER_HEADERS, checked_headers

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
# Every character that str.splitlines() breaks on: what Python's e-mail code may take for a line end.
LINE_BREAKS = [chr(c) for c in range(sys.maxunicode + 1) if len(f"a{chr(c)}b".splitlines()) > 1]


def test_every_line_break_and_control_character_is_unsafe_and_nothing_else() -> None:
    assert set(LINE_BREAKS) == set("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")  # the class this guards
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        breaks = char in LINE_BREAKS or unicodedata.category(char) == "Cc"
        assert bool(UNSAFE_IN_HEADER.search(char)) is breaks, hex(code)


def test_one_line_turns_each_run_of_unsafe_characters_into_one_space() -> None:
    assert one_line("Jan\x0bReply-To : x@evil.example") == "Jan Reply-To : x@evil.example"
    assert one_line(" Jan\r\n\u2028\x00Smith\x85") == "Jan Smith"
    assert one_line("Zoë\tMüller") == "Zoë Müller"
    assert one_line("Zoë Müller — café") == "Zoë Müller — café"


def letter(**changes: object) -> Letter:
    """Every lead field in the subject, so that hostile values reach it."""
    subject = "Hi {{ first_name }} {{ last_name }} of {{ company }} in {{ fields.city }}"
    return support_letter(**{"subject": subject, **changes})


# Text as a hostile lead or tenant would write it: line breaks of every kind among would-be headers.
PIECES = [
    *LINE_BREAKS,
    "\x00",
    "\x7f",
    "\x9f",
    "\t",
    " ",
    ":",
    "Bcc: victim@evil.example",
    "Reply-To : x@e.example",
]
# No lone surrogates: PostgreSQL cannot store them, and the api refuses them.
hostile = st.lists(
    st.one_of(st.sampled_from(PIECES), st.characters(exclude_categories=["Cs"])), max_size=40
).map("".join)


@settings(max_examples=200, deadline=None)
@given(
    first_name=hostile,
    last_name=hostile,
    company=hostile,
    city=hostile,
    from_name=hostile,
    to_email=st.emails(),  # the api lets only valid addresses in
    in_reply_to=st.none() | hostile,
    filename=st.none() | hostile,
)
def test_any_text_in_lead_and_tenant_fields_leaves_the_header_set_as_built(
    first_name: str,
    last_name: str,
    company: str,
    city: str,
    from_name: str,
    to_email: str,
    in_reply_to: str | None,
    filename: str | None,
) -> None:
    source = letter(
        variables={
            "first_name": first_name,
            "last_name": last_name,
            "company": company,
            "fields": {"city": city},
        },
        from_name=from_name,
        to_email=to_email,
        in_reply_to=in_reply_to,
        attachment=None if filename is None else (filename, b"%PDF-1.4"),
    )
    wire = build(source, NOW)
    assert wire.isascii()
    email = checked_headers(wire)
    threaded = one_line(in_reply_to or "") != ""
    expected = LETTER_HEADERS + (["In-Reply-To", "References"] if threaded else [])
    assert sorted(email.keys()) == sorted(expected)
    assert str(email["Subject"]).startswith("Hi")
    assert len(str(email["Subject"])) <= SUBJECT_MAX_CHARS


@pytest.mark.parametrize("name", ["x" * 200, "é" * 200, "😀" * 200, "Zoë " * 50])
def test_long_display_names_and_subjects_fold_into_lines_smtp_takes(name: str) -> None:
    source = letter(
        from_name=name, subject="{{ first_name }}", variables={"first_name": name[:SUBJECT_MAX_CHARS]}
    )
    wire = build(source, NOW)
    email = checked_headers(wire)
    assert email["Subject"] == name.strip()
    # RFC 2047 §6.2: the white space between encoded words goes (Python's address parser keeps it).
    raw_from = message_from_bytes(wire, policy=policy.compat32)["From"]
    assert str(make_header(decode_header(raw_from))) == f"{name.strip()} <anna@out.example>"


def test_a_subject_longer_than_a_header_line_fails_its_message_with_the_reason() -> None:
    checked_headers(build(letter(subject=f"{{{{ 'x' * {SUBJECT_MAX_CHARS} }}}}"), NOW))
    with pytest.raises(RenderError, match=f"subject renders to 5000 characters; at most {SUBJECT_MAX_CHARS}"):
        build(letter(subject="{{ 'x' * 5000 }}"), NOW)
