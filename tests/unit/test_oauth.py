"""The pure parts of OAuth2 for the sending mailboxes (shared/oauth.py), and the settings for it."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from services.sender.smtp import Account
from shared import oauth
from shared.imap.client import Endpoint
from shared.oauth import Pkce, ProviderError, ProviderName, Tokens
from shared.settings import Settings
from tests.support.oauth_smtp import parse_oauthbearer, parse_xoauth2
from tests.unit.test_settings import REAL

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_the_pkce_challenge_is_rfc_7636s_example() -> None:
    # RFC 7636, appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oauth.challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_a_new_verifier_is_long_unreserved_and_new_each_time() -> None:
    first, second = Pkce.new(), Pkce.new()
    assert re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", first.verifier)
    assert first.challenge == oauth.challenge(first.verifier)
    assert first.verifier != second.verifier


def test_the_state_is_stored_only_as_its_hash() -> None:
    state = oauth.new_state()
    assert len(state) >= 43
    assert oauth.state_hash(state) == oauth.state_hash(state)
    assert state not in oauth.state_hash(state)
    assert len(oauth.state_hash(state)) == 64


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def test_the_authorize_url_asks_for_a_code_with_pkce_for_the_from_address() -> None:
    pkce = Pkce.new()
    provider = oauth.microsoft("client-1", "secret", "contoso.onmicrosoft.com")
    url = oauth.authorize_url(
        provider, "https://api.example/api/v1/oauth/callback", "st", pkce, "anna@x.example"
    )
    assert url.startswith("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize?")
    query = query_of(url)
    assert query == {
        "response_type": "code",
        "client_id": "client-1",
        "redirect_uri": "https://api.example/api/v1/oauth/callback",
        "scope": " ".join(oauth.MICROSOFT_SCOPES),
        "state": "st",
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "login_hint": "anna@x.example",
    }
    assert "secret" not in url
    assert pkce.verifier not in url


def test_google_is_asked_for_offline_access_so_that_it_gives_a_refresh_token() -> None:
    url = oauth.authorize_url(oauth.google("c", "s"), "https://r.example/cb", "st", Pkce.new(), "a@b.example")
    query = query_of(url)
    assert (query["access_type"], query["prompt"]) == ("offline", "consent")
    assert "https://mail.google.com/" in query["scope"].split()


def test_a_generic_provider_comes_from_its_discovery_document() -> None:
    document = {
        "authorization_endpoint": "https://id.example/auth",
        "token_endpoint": "https://id.example/token",
        "revocation_endpoint": "https://id.example/revoke",
    }
    provider = oauth.from_discovery("c", "s", document)
    assert (provider.name, provider.authorize, provider.token) == (
        ProviderName.OIDC, "https://id.example/auth", "https://id.example/token",
    )  # fmt: skip
    assert provider.revoke == "https://id.example/revoke"
    assert provider.userinfo is None
    assert oauth.discovery_url("https://id.example/") == "https://id.example/.well-known/openid-configuration"
    with pytest.raises(ProviderError, match="token_endpoint"):
        oauth.from_discovery("c", "s", {"authorization_endpoint": "https://id.example/auth"})


@pytest.mark.parametrize(
    ("expires_in", "due"),
    [(None, True), (-1, True), (0, True), (299, True), (300, True), (301, False), (3600, False)],
)
def test_a_token_is_refreshed_its_margin_before_it_expires(expires_in: int | None, due: bool) -> None:
    expires_at = None if expires_in is None else NOW + timedelta(seconds=expires_in)
    margin = timedelta(seconds=Settings().oauth_refresh_margin_seconds)  # the default, 300 s
    assert oauth.due_for_refresh(expires_at, NOW, margin) is due


def test_a_token_answer_is_parsed_and_a_missing_refresh_token_keeps_the_old_one() -> None:
    tokens = Tokens.parse({"access_token": "a", "expires_in": 3599, "token_type": "Bearer"}, NOW)
    assert tokens == Tokens("a", NOW + timedelta(seconds=3599), None, None)
    with pytest.raises(ProviderError, match="no access token"):
        Tokens.parse({"error": "x"}, NOW)
    with pytest.raises(ProviderError, match="expires_in"):
        Tokens.parse({"access_token": "a", "expires_in": "soon"}, NOW)
    with pytest.raises(ProviderError, match="expires_in"):
        Tokens.parse({"access_token": "a", "expires_in": float("inf")}, NOW)
    huge = Tokens.parse({"access_token": "a", "expires_in": 10**30}, NOW)  # past the last date there is
    assert huge.expires_at == NOW + timedelta(seconds=oauth.MAX_LIFETIME)


def id_token(claims: object) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


@pytest.mark.parametrize(
    ("token", "email"),
    [
        (id_token({"email": "anna@x.example"}), "anna@x.example"),
        (id_token({"preferred_username": "anna@x.example", "name": "Anna"}), "anna@x.example"),
        (id_token({"preferred_username": "anna"}), None),
        (id_token(["not", "claims"]), None),
        ("not.a-token", None),
        ("a.!!!.c", None),
        (None, None),
    ],
)
def test_the_address_of_an_id_token(token: str | None, email: str | None) -> None:
    assert oauth.id_token_email(token) == email


def test_addresses_compare_without_case_or_spaces() -> None:
    assert oauth.same_address("Anna@X.example ", "anna@x.example")
    assert not oauth.same_address("anna@x.example", "anna@y.example")


def test_the_xoauth2_string_is_googles_example_and_reads_back() -> None:
    # https://developers.google.com/gmail/imap/xoauth2-protocol
    encoded = oauth.xoauth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    assert encoded == (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )
    assert parse_xoauth2(encoded) == (
        "someuser@example.com",
        "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
    )
    assert parse_xoauth2("not base64!") is None
    assert parse_xoauth2(base64.b64encode(b"user=a\x01\x01").decode()) is None


def test_the_oauthbearer_string_is_rfc_7628s_example_and_reads_back() -> None:
    # RFC 7628, §4.1.
    token = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
    encoded = oauth.oauthbearer("user@example.com", "server.example.com", 143, token)
    assert base64.b64decode(encoded) == (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer "
        + token.encode()
        + b"\x01\x01"
    )
    assert parse_oauthbearer(encoded) == ("user@example.com", token)
    odd = oauth.oauthbearer("a,b=c@x.example", "h", 1, "t")
    assert parse_oauthbearer(odd) == ("a,b=c@x.example", "t")
    assert parse_oauthbearer(oauth.xoauth2("a@x.example", "t")) is None


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["PLAIN", "LOGIN", "XOAUTH2"], oauth.Mechanism.XOAUTH2),  # Microsoft 365
        (["xoauth2", "oauthbearer", "plain"], oauth.Mechanism.OAUTHBEARER),  # Google, as aiosmtplib spells it
        ([], oauth.Mechanism.XOAUTH2),  # listing nothing before login: the one both providers take
    ],
)
def test_oauthbearer_where_offered_else_xoauth2(offered: list[str], chosen: oauth.Mechanism) -> None:
    assert oauth.mechanism(offered) is chosen


def test_logins_never_show_their_token_in_a_log_line() -> None:
    account = Account("smtp.example", 587, "anna@x.example", None, "starttls", token="ya29.secret-token")
    endpoint = Endpoint(
        "imap.example", 993, "tls", "anna@x.example", "ya29.secret-token", 5.0, False, None, True
    )
    assert "secret-token" not in repr(account)
    assert "secret-token" not in repr(endpoint)
    tokens = Tokens("ya29.secret-token", NOW, "1//secret-refresh", "secret.id.token")
    assert "secret" not in repr(tokens)
    assert "secret" not in repr(oauth.google("id", "secret-client"))


def test_a_session_logged_in_with_a_grant_serves_only_that_grants_domain() -> None:
    """The pool's key: another workspace's domain with the same host and username (and no password) must
    not be handed the session a grant logged in; a refreshed token of the same grant may."""
    ours, theirs = uuid.uuid4(), uuid.uuid4()
    logged_in = Account("smtp.gmail.com", 587, "ceo@x.example", None, "starttls", "token-1", grant=ours)
    assert logged_in == Account(
        "smtp.gmail.com", 587, "ceo@x.example", None, "starttls", "token-2", grant=ours
    )
    assert logged_in != Account(
        "smtp.gmail.com", 587, "ceo@x.example", None, "starttls", "token-1", grant=theirs
    )
    assert logged_in != Account("smtp.gmail.com", 587, "ceo@x.example", None, "starttls")


def test_production_needs_the_secret_of_every_configured_provider_and_an_https_callback() -> None:
    google = {"oauth_google_client_id": "id.apps.googleusercontent.com"}
    with pytest.raises(ValidationError, match="MAILDASH_OAUTH_GOOGLE_CLIENT_SECRET"):
        Settings(env="production", **REAL, **google)
    with pytest.raises(ValidationError, match="MAILDASH_OAUTH_REDIRECT_URL"):
        Settings(env="production", **REAL, **google, oauth_google_client_secret="s" * 24)
    configured = Settings(
        env="production",
        **REAL,
        **google,
        oauth_google_client_secret="s" * 24,
        oauth_redirect_url="https://api.example/api/v1/oauth/callback",
    )
    assert configured.oauth_google_client_secret == "s" * 24
    assert Settings(env="production", **REAL).oauth_google_client_id == ""  # no provider: nothing asked
    oidc = {"oauth_oidc_client_id": "maildash", "oauth_oidc_client_secret": "s" * 24}
    with pytest.raises(ValidationError, match="MAILDASH_OAUTH_OIDC_ISSUER"):
        Settings(env="production", **REAL, **oidc, oauth_oidc_issuer="http://id.example")
