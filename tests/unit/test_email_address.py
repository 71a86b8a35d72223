"""The fast path of address validation answers exactly what email-validator answers."""

from __future__ import annotations

import string

from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.api.kit.schemas import email_address

LOCAL = st.text(
    alphabet=string.ascii_letters + string.digits + ".!#$%&'*+/=?^_`{|}~-\"(),:;<>[]\\ é", max_size=70
)
LABEL = st.text(alphabet=string.ascii_letters + string.digits + "-_é", min_size=0, max_size=70)
DOMAIN = st.lists(LABEL, min_size=1, max_size=5).map(".".join) | st.sampled_from(
    ["lead.example", "EXAMPLE.COM", "bücher.de", "localhost", "x.invalid", "a..b", "-a.com", "1.2.3.4"]
)


def reference(value: str) -> str | None:
    try:
        return str(validate_email(value, check_deliverability=False).normalized)
    except EmailNotValidError:
        return None


def ours(value: str) -> str | None:
    try:
        return email_address(value)
    except ValueError:
        return None


@settings(max_examples=1500)
@example("INFO@lead.example")  # an RFC 2142 role name, which email-validator writes in lower case
@given(
    st.emails() | st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN) | st.text(max_size=40)
)
def test_the_same_verdict_and_normal_form_as_email_validator(value: str) -> None:
    assert ours(value) == reference(value)


def test_an_address_too_long_as_a_whole_is_refused_though_its_parts_are_fine() -> None:
    value = "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com"
    assert reference(value) is None
    assert ours(value) is None
