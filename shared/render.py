"""Build the e-mail for one message: Jinja2 sandbox rendering, tracking pixel, compliance headers. Pure.

Templates are tenant code. The sandbox bounds what they may touch and how much they may output; how long they
run and how much memory they take is bounded by the process they run in (`shared.render_pool`)."""

from __future__ import annotations

import functools
import html
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import format_datetime, formataddr
from html.parser import HTMLParser
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlencode

from jinja2 import Template, TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shared import esp, tokens
from shared.headers import one_line

# compat32's MIME classes take headers as given: several times cheaper than `EmailMessage`, which parses
# every header set on it, and sending is the product's hottest path. Taken as given, a value must not hold
# anything Python reads as a line break: every value passes `one_line`. ASCII headers are not folded, so
# List-Unsubscribe and Message-ID stay plain; a non-ASCII subject or display name becomes RFC 2047 words.
WIRE_POLICY = policy.compat32.clone(linesep="\r\n", max_line_length=998)
UTF8_QUOTED_PRINTABLE = Charset("utf-8")
UTF8_QUOTED_PRINTABLE.body_encoding = QP
MessagePart = TypeVar("MessagePart", bound=Message)
# "Subject: " and an unfolded ASCII subject of this length make SMTP's longest line, 998 octets.
SUBJECT_MAX_CHARS = 989


class RenderError(ValueError):
    """The template cannot be compiled or rendered for this lead, or not within its limits; the message fails
    with this reason (it would fail again), a save or preview answers 422. `part`: the template field."""

    def __init__(self, reason: str, part: str | None = None) -> None:
        super().__init__(reason)
        self.part = part


@dataclass(frozen=True)
class TemplateLimits:
    """What one template may be and make: characters of source per field, characters of output per part."""

    source_chars: int = 100_000
    output_chars: int = 500_000


DEFAULT_LIMITS = TemplateLimits()


@dataclass(frozen=True)
class Letter:
    """Everything the e-mail needs, resolved from the database by the caller."""

    message_id: str
    domain: str
    from_email: str
    from_name: str
    to_email: str
    subject: str
    body_html: str
    body_text: str | None
    variables: dict[str, Any]
    tracker_url: str
    open_token: str | None  # None: open tracking off
    unsubscribe_token: str
    smtp_message_id: str
    in_reply_to: str | None = None  # the Message-ID of the thread's last e-mail
    references: str | None = None  # the thread's Message-IDs, oldest first (default: `in_reply_to`)
    click_secret: str | None = None  # signs each tracked link for this message; None: click tracking off
    attachment: tuple[str, bytes] | None = None  # (file name, PDF bytes)
    smtp_host: str = ""  # the relay: an ESP's relay gets our message id where its events return it


# A power with a result this long is no e-mail content, and computing it could take minutes.
MAX_POWER_BITS = 4096


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's sandbox, unable to change lead data (`fields.update(…)`), that checks `*` and `**` before they
    run: a string repeated a billion times would be allocated at once, before any output limit could see it.
    Intercepted operators are also never folded into constants at compile time."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, output_chars: int, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape)
        self.output_chars = output_chars

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*" and _repeated_length(left, right) > self.output_chars:
            raise SecurityError(f"repeating makes more than the {self.output_chars} characters allowed")
        if operator == "**" and _power_bits(left, right) > MAX_POWER_BITS:
            raise SecurityError(f"{left} ** {right} is too large a number for a template")
        return super().call_binop(context, operator, left, right)


def _repeated_length(left: Any, right: Any) -> int:
    """The length of `left * right` when it repeats a string or list, else 0."""
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(times, int):
            return len(sequence) * times
    return 0


def _power_bits(base: Any, exponent: Any) -> int:
    """About how many bits `base ** exponent` has, for integers; else 0."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        return abs(base).bit_length() * exponent if abs(base) > 1 else 0
    return 0


@functools.lru_cache(maxsize=8)
def _environment(limits: TemplateLimits, html: bool) -> _Sandbox:
    return _Sandbox(limits.output_chars, autoescape=html)


# Compiling costs far more than rendering, and a campaign renders the same few sources for every lead. Few
# entries: a compiled template of the largest allowed source takes megabytes.
@functools.lru_cache(maxsize=64)
def _compiled(env: _Sandbox, source: str) -> Template:
    return env.from_string(source)


def compile_template(part: str, source: str, limits: TemplateLimits) -> Template:
    """The compiled template of one field (`body_html`, `subject` …); RenderError if it is over its size
    limit or does not compile."""
    if len(source) > limits.source_chars:
        raise RenderError(
            f"{part}: template is {len(source)} characters long, more than the {limits.source_chars} allowed",
            part,
        )
    try:
        return _compiled(_environment(limits, part.endswith("html")), source)
    except TemplateSyntaxError as error:
        message = f"{part}: template syntax error on line {error.lineno}: {error.message}"
        raise RenderError(message, part) from error
    except RecursionError as error:
        raise RenderError(f"{part}: template is nested too deeply", part) from error
    except Exception as error:  # compiling folds constants: template code can run here too
        raise RenderError(f"{part}: template cannot be compiled: {_reason(error)}", part) from error


def _reason(error: Exception) -> str:
    if isinstance(error, TemplateError):
        return str(error)
    if isinstance(error, MemoryError):
        return "it needs more memory than a template may use"
    return f"{type(error).__name__}: {error}"


def _render(part: str, source: str, variables: dict[str, Any], limits: TemplateLimits) -> str:
    """The output, piece by piece, refused as soon as it grows past the limit."""
    template = compile_template(part, source, limits)
    pieces: list[str] = []
    size = 0
    try:
        for piece in template.generate(variables):
            size += len(piece)
            if size > limits.output_chars:
                raise RenderError(
                    f"template {part} renders more than the {limits.output_chars} characters allowed", part
                )
            pieces.append(piece)
    except RenderError:
        raise
    except Exception as error:  # template code can raise anything (1 / 0, a bad filter argument …)
        raise RenderError(f"template {part} failed to render: {_reason(error)}", part) from error
    text = "".join(pieces)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:  # `'%c' % 55296`: a lone surrogate no e-mail or JSON can carry
            raise RenderError(f"template {part} renders text that is not valid Unicode", part) from error
    return text


class _TextExtractor(HTMLParser):
    BREAKS: ClassVar[set[str]] = {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._href: str | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head"):
            self._skip += 1
        if tag in self.BREAKS:
            self.parts.append("\n")
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head"):
            self._skip = max(0, self._skip - 1)
        if tag == "a" and self._href:
            self.parts.append(f" ({self._href})")
            self._href = None
        if tag in ("p", "div", "h1", "h2", "h3", "h4"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    extractor = _TextExtractor()
    extractor.feed(markup)
    text = "".join(extractor.parts)
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n\s*\n\s*\n+", "\n\n", text).strip() + "\n"


def pixel_url(letter: Letter) -> str:
    return (
        f"{letter.tracker_url}/track/open.gif?{urlencode({'m': letter.message_id, 't': letter.open_token})}"
    )


def unsubscribe_url(letter: Letter) -> str:
    return f"{letter.tracker_url}/u/{letter.unsubscribe_token}"


_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)


def track_links(letter: Letter, body: str) -> str:
    """Point every http(s) link, but the unsubscribe link, at the tracker's signed click redirect."""
    secret = letter.click_secret
    if secret is None:
        return body

    def rewrite(match: re.Match[str]) -> str:
        url = html.unescape(match.group(3)).strip()
        if not url.lower().startswith(("http://", "https://")) or url == unsubscribe_url(letter):
            return match.group(0)
        token = tokens.sign_message(secret, "click", letter.message_id, url)
        query = urlencode({"m": letter.message_id, "u": url, "t": token})
        tracked = f"{letter.tracker_url}/track/click?{query}"
        return f"{match.group(1)}{match.group(2)}{html.escape(tracked)}{match.group(2)}"

    return _LINK.sub(rewrite, body)


def _with_pixel(body: str, url: str) -> str:
    img = f'<img src="{html.escape(url)}" width="1" height="1" alt="" style="display:none">'
    closing = body.lower().rfind("</body>")
    return body[:closing] + img + body[closing:] if closing >= 0 else body + img


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


def lead_variables(lead: Any, sender_name: str) -> dict[str, Any]:
    """What a template may use of a lead (any object with the lead's attributes)."""
    return {
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "email": lead.email,
        "company": lead.company,
        "fields": lead.fields,
        "timezone": lead.timezone or "",  # the lead's own, as given: not one derived from its country
        "country": lead.country or "",
        "sender_name": sender_name,
    }


def render(letter: Letter, limits: TemplateLimits = DEFAULT_LIMITS) -> Rendered:
    """Subject and both bodies as the lead will see them: links tracked, pixel in. Also the API's preview."""
    variables = {**letter.variables, "unsubscribe_url": unsubscribe_url(letter)}
    subject = one_line(_render("subject", letter.subject, variables, limits))
    body_html = _render("body_html", letter.body_html, variables, limits)
    body_text = (
        _render("body_text", letter.body_text, variables, limits)
        if letter.body_text
        else html_to_text(body_html)
    )
    body_html = track_links(letter, body_html)
    if letter.open_token:
        body_html = _with_pixel(body_html, pixel_url(letter))
    return Rendered(subject, body_html, body_text)


def build(letter: Letter, now: datetime, limits: TemplateLimits = DEFAULT_LIMITS) -> bytes:
    """The e-mail as it goes on the wire (CRLF line ends)."""
    rendered = render(letter, limits)
    email: Message = MIMEMultipart("alternative", boundary=_boundary(), policy=WIRE_POLICY)
    email.attach(_text_part(rendered.text, "plain"))
    email.attach(_text_part(rendered.html, "html"))
    if letter.attachment is not None:
        filename, content = letter.attachment
        report = MIMEApplication(content, "pdf", policy=WIRE_POLICY)
        name = one_line(filename) or "report.pdf"  # RFC 2231 escapes it; a blank name would be no parameter
        report.add_header("Content-Disposition", "attachment", filename=("utf-8", "", name))
        parts = [_inner(email), _inner(report)]
        email = MIMEMultipart("mixed", boundary=_boundary(), policy=WIRE_POLICY, _subparts=parts)
    # Every header value passes `one_line` (or is ours alone, like Date): no input can add, end or split one.
    email["From"] = _mailbox(letter.from_name, letter.from_email)
    email["To"] = one_line(letter.to_email)
    email["Subject"] = _encoded(_subject(rendered.subject), "Subject")
    email["Date"] = format_datetime(now)
    email["Message-ID"] = one_line(letter.smtp_message_id)
    if thread := one_line(letter.in_reply_to or ""):
        email["In-Reply-To"] = thread
        email["References"] = one_line(letter.references or thread)
    email["List-Unsubscribe"] = one_line(
        f"<{unsubscribe_url(letter)}>, <mailto:unsubscribe+{letter.unsubscribe_token}@{letter.domain}>"
    )
    email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in esp.tagging_headers(letter.smtp_host, letter.message_id):
        email[name] = one_line(value)
    return email.as_bytes()


def _subject(rendered: str) -> str:
    subject = one_line(rendered)
    if len(subject) > SUBJECT_MAX_CHARS:
        raise RenderError(
            f"template subject renders to {len(subject)} characters; at most {SUBJECT_MAX_CHARS} fit a header"
        )
    return subject


def _mailbox(name: str, address: str) -> str:
    name, address = one_line(name), one_line(address)
    if name.isascii():
        return formataddr((name, address))
    return f"{_encoded(name, 'From')} <{address}>"


def _encoded(text: str, header: str) -> str:
    """ASCII as it is; anything else as RFC 2047 words of at most 76 characters, folded between words."""
    return text if text.isascii() else Header(text, "utf-8", header_name=header).encode(linesep="\r\n")


def _boundary() -> str:
    """A fresh random boundary. Its 122 random bits cannot turn up in the content unless guessed, so the
    generator's own search of the content for a clash (a regex compiled for every e-mail) is not needed."""
    return f"=_{uuid.uuid4().hex}"


def _text_part(body: str, subtype: str) -> MIMENonMultipart:
    """7bit when it can be (ASCII, no line over SMTP's 998 octets), else quoted-printable UTF-8."""
    plain = body.isascii() and all(len(line) <= 998 for line in body.splitlines())
    part = MIMENonMultipart("text", subtype, policy=WIRE_POLICY)
    part.set_payload(body, "us-ascii" if plain else UTF8_QUOTED_PRINTABLE)
    return _inner(part)


def _inner(part: MessagePart) -> MessagePart:
    """MIME-Version belongs on the top-level message only."""
    del part["MIME-Version"]
    return part


def return_path(message_id: str, domain: str) -> str:
    """VERP envelope sender: a bounce to it names the message."""
    return f"bounce+{message_id.replace('-', '')}@{domain}"
