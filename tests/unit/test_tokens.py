import uuid

from shared import tokens

SECRET = "test-secret"
MESSAGE = str(uuid.uuid4())


def test_a_genuine_token_verifies_for_its_message_and_purpose_only() -> None:
    token = tokens.sign_message(SECRET, "open", MESSAGE)
    assert tokens.verify_message(SECRET, "open", token, MESSAGE)
    assert not tokens.verify_message(SECRET, "unsubscribe", token, MESSAGE)
    assert not tokens.verify_message(SECRET, "open", token, str(uuid.uuid4()))
    assert not tokens.verify_message("other-secret", "open", token, MESSAGE)


def test_altered_or_malformed_tokens_are_refused_without_raising() -> None:
    token = tokens.sign_message(SECRET, "open", MESSAGE)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (flipped, "", ".", "no-dot", "a.b.c", "%%%.***", token + "x", "ü.ü"):
        assert not tokens.verify_message(SECRET, "open", bad, MESSAGE)
    assert not tokens.verify_message(SECRET, "open", token, "not-a-uuid")


def test_click_tokens_bind_the_exact_url() -> None:
    token = tokens.sign_message(SECRET, "click", MESSAGE, "https://example.com/a")
    assert tokens.verify_message(SECRET, "click", token, MESSAGE, "https://example.com/a")
    assert not tokens.verify_message(SECRET, "click", token, MESSAGE, "https://evil.example/a")


def test_unsubscribe_token_names_its_message() -> None:
    token = tokens.sign_message(SECRET, "unsubscribe", MESSAGE)
    assert tokens.message_of(SECRET, "unsubscribe", token) == MESSAGE
    assert tokens.message_of(SECRET, "open", token) is None
    assert len(token) < 70  # fits on one List-Unsubscribe header line


def test_every_single_character_change_is_refused() -> None:
    token = tokens.sign_message(SECRET, "open", MESSAGE)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, original in enumerate(token):
        if original == ".":
            continue
        for replacement in alphabet.replace(original, ""):
            altered = token[:i] + replacement + token[i + 1 :]
            assert not tokens.verify_message(SECRET, "open", altered, MESSAGE), (i, replacement)
