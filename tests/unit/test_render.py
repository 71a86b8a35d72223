from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from shared.render import (
    Letter,
    RenderError,
    TemplateLimits,
    build,
    compile_template,
    html_to_text,
    render,
    return_path,
)
from tests.support.letters import letter

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def parsed(source: Letter):  # type: ignore[no-untyped-def]
    return message_from_bytes(build(source, NOW), policy=policy.default)


def test_headers_carry_threading_unsubscribe_and_one_click() -> None:
    source = letter(in_reply_to="<orig@out.example>")
    email = parsed(source)
    assert email["Message-ID"] == source.smtp_message_id
    assert email["In-Reply-To"] == "<orig@out.example>"
    assert email["References"] == "<orig@out.example>"
    assert email["List-Unsubscribe"] == (
        f"<https://t.example/u/{source.unsubscribe_token}>, "
        f"<mailto:unsubscribe+{source.unsubscribe_token}@out.example>"
    )
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert email["From"] == "Anna de Vries <anna@out.example>"


def test_non_ascii_text_is_encoded_for_the_wire_and_reads_back_unchanged() -> None:
    subject = "Één vraag over {{ company }}, " + "ß" * 80
    source = letter(from_name="Zoë Müller", subject=subject, body_html="<p>Café " + "é" * 1200 + "</p>")
    wire = build(source, NOW)
    assert wire.isascii()  # no 8-bit data: any server takes it
    assert all(len(line) <= 78 for line in wire.split(b"\r\n") if line.startswith((b"Subject", b" =?")))
    email = message_from_bytes(wire, policy=policy.default)
    assert email["Subject"] == "Één vraag over <Client & Co>, " + "ß" * 80
    assert email["From"] == "Zoë Müller <anna@out.example>"
    assert "Café " + "é" * 1200 in email.get_body(("html",)).get_content()


def test_ascii_parts_stay_7bit_and_long_lines_become_quoted_printable() -> None:
    short, long = parsed(letter()), parsed(letter(body_html="<p>" + "x" * 2000 + "</p>"))
    assert [p["Content-Transfer-Encoding"] for p in short.iter_parts()] == ["7bit", "7bit"]
    assert long.get_body(("html",))["Content-Transfer-Encoding"] == "quoted-printable"
    assert "x" * 2000 in long.get_body(("html",)).get_content()


def test_a_report_is_attached_beside_the_alternative_parts() -> None:
    email = parsed(letter(attachment=("Rapport café.pdf", b"%PDF-1.4 report")))
    assert email.get_content_type() == "multipart/mixed"
    [attachment] = email.iter_attachments()
    assert attachment.get_filename() == "Rapport café.pdf"
    assert attachment.get_content() == b"%PDF-1.4 report"
    assert email.get_body(("plain",)).get_content().startswith("Dear Jan")
    assert "MIME-Version" not in attachment


def test_html_is_escaped_and_carries_the_pixel_text_part_is_derived() -> None:
    email = parsed(letter())
    html = email.get_body(("html",)).get_content()
    assert "&lt;Client &amp; Co&gt;" in html
    assert "/track/open.gif?m=" in html
    assert html.index("open.gif") < html.index("</body>")
    text = email.get_body(("plain",)).get_content()
    assert "Dear Jan of <Client & Co>" in text
    assert "open.gif" not in text


def test_no_pixel_when_open_tracking_is_off() -> None:
    assert "open.gif" not in parsed(letter(open_token=None)).get_body(("html",)).get_content()


def test_sandbox_refuses_unsafe_templates_with_a_reason() -> None:
    with pytest.raises(RenderError, match="body_html"):
        build(letter(body_html="{{ ''.__class__.__mro__[1].__subclasses__() }}"), NOW)


@pytest.mark.parametrize("source", ["{{ 1 / 0 }}", "{{ first_name | round(2) }}", "{{ fields.a.b.c }}"])
def test_any_error_inside_a_template_is_a_render_error_not_a_crash(source: str) -> None:
    with pytest.raises(RenderError, match="body_html failed to render"):
        build(letter(body_html=source), NOW)


def test_subject_cannot_inject_headers() -> None:
    email = parsed(letter(subject="Hi\r\nBcc: victim@example.com"))
    assert email["Bcc"] is None


def test_html_to_text_keeps_links_and_paragraphs() -> None:
    assert html_to_text('<p>One</p><p>Two <a href="https://x.example">link</a></p>') == (
        "One\n\nTwo link (https://x.example)\n"
    )


def test_return_path_names_the_message() -> None:
    assert return_path("1234-abcd", "out.example") == "bounce+1234abcd@out.example"


def test_click_tracking_rewrites_web_links_but_not_unsubscribe_or_mailto() -> None:
    source = letter(
        body_html=(
            '<p><a href="https://shop.example/a?x=1&amp;y=2">shop</a> <a href="mailto:a@b.example">mail</a> '
            '<a href="{{ unsubscribe_url }}">unsubscribe</a></p>'
        ),
        click_secret="s",
    )
    html = parsed(source).get_body(("html",)).get_content()
    assert "https://t.example/track/click?" in html
    assert "u=https%3A%2F%2Fshop.example%2Fa%3Fx%3D1%26y%3D2" in html  # the unescaped href, signed
    assert 'href="mailto:a@b.example"' in html
    assert f'href="https://t.example/u/{source.unsubscribe_token}"' in html


def test_links_are_left_alone_without_click_tracking() -> None:
    html = parsed(letter(body_html='<a href="https://shop.example/">x</a>')).get_body(("html",)).get_content()
    assert 'href="https://shop.example/"' in html


SMALL = TemplateLimits(source_chars=1_000, output_chars=10_000)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 10001 }}",  # one repetition, refused before it is allocated
        "{{ 10001 * ['ab'] }}",
        "{{ 'a' | center(10001) }}",  # one filter call
        "{% for i in range(2001) %}hello{% endfor %}",  # many small pieces
        "{% set a = 'x' * 5000 %}{{ a ~ a ~ a }}",
    ],
)
def test_output_beyond_the_limit_is_refused_whatever_makes_it(source: str) -> None:
    with pytest.raises(RenderError, match="body_html") as refused:
        build(letter(body_html=source), NOW, SMALL)
    assert refused.value.part == "body_html"


def test_output_up_to_the_limit_renders() -> None:
    rendered = render(letter(body_html="{{ 'a' * 9000 }}", open_token=None), SMALL)
    assert rendered.html == "a" * 9000


def test_a_power_too_large_for_any_e_mail_is_refused_before_it_is_computed() -> None:
    with pytest.raises(RenderError, match="too large a number"):
        build(letter(body_html="{{ 10 ** 100000 }}"), NOW)


def test_a_template_cannot_change_lead_data() -> None:
    fields = {"city": "Delft"}
    source = letter(
        subject="{{ fields.update({'city': 'Evil'}) }}",
        variables={"first_name": "Jan", "company": "", "fields": fields},
    )
    with pytest.raises(RenderError, match="unsafe"):
        build(source, NOW)
    assert fields == {"city": "Delft"}


def test_a_source_over_its_size_limit_is_refused_naming_the_field() -> None:
    with pytest.raises(RenderError, match="followup_body_html: template is 1001 characters") as refused:
        compile_template("followup_body_html", "x" * 1001, SMALL)
    assert refused.value.part == "followup_body_html"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ " + "(" * 400 + "1" + ")" * 400 + " }}", "nested too deeply"),
        ("{% if 1 %}" * 300 + "{% endif %}" * 300, "nested too deeply"),
        ("<p>\n{{ first_name", "syntax error on line 2"),
    ],
)
def test_a_template_that_cannot_compile_is_refused_with_the_reason(source: str, reason: str) -> None:
    with pytest.raises(RenderError, match=f"body_text: .*{reason}"):
        compile_template("body_text", source, TemplateLimits())


def test_text_that_is_not_valid_unicode_is_refused() -> None:
    with pytest.raises(RenderError, match="subject renders text that is not valid Unicode"):
        build(letter(subject="Hi {{ '%c' % 55296 }}"), NOW)
