import pytest
from pydantic import ValidationError

from shared.settings import Settings

REAL = {
    "jwt_secret": "j" * 40,
    "tracking_secret": "t" * 40,
    "encryption_key": "e" * 40,
    "inbound_secret": "i" * 40,
    "admin_password": "a-long-admin-password",
    "public_tracker_url": "https://t.example",
}


def test_production_refuses_development_secrets_and_names_them() -> None:
    with pytest.raises(ValidationError, match="MAILDASH_JWT_SECRET"):
        Settings(env="production", **{**REAL, "jwt_secret": Settings().jwt_secret})
    with pytest.raises(ValidationError, match="MAILDASH_INBOUND_SECRET"):
        Settings(env="production", **{**REAL, "inbound_secret": ""})


def test_production_needs_https_tracking_links() -> None:
    with pytest.raises(ValidationError, match="https"):
        Settings(env="production", **{**REAL, "public_tracker_url": "http://t.example"})


def test_production_starts_with_real_secrets() -> None:
    assert Settings(env="production", **REAL).env == "production"


def test_environment_variables_use_the_maildash_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILDASH_MIN_INTERVAL_SECONDS", "600")
    monkeypatch.setenv("MAILDASH_WINDOW_DAYS", "[0, 2]")
    settings = Settings()
    assert settings.min_interval_seconds == 600
    assert settings.window_days == [0, 2]
