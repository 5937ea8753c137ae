"""Settings: defaults, TOML file, environment and options, and clear refusals."""

from __future__ import annotations

import pathlib
import typing
from typing import Any

import attrs
import pytest
from typer.testing import CliRunner

from hoomi.cli.main import app
from hoomi.server.config import ConfigError, Settings, load

HINTS = typing.get_type_hints(Settings)
NUMBERS = [f.name for f in attrs.fields(Settings) if HINTS[f.name] in (int, float)]
RANGES = {f.name: f.metadata.get("range") for f in attrs.fields(Settings)}


def test_safe_defaults() -> None:
    settings = load(None, {"jwt_secret": "s"})
    assert (settings.host, settings.port, settings.path) == ("127.0.0.1", 8765, "/")
    assert settings.max_frame_bytes == 65536
    assert settings.outbox_size == 1024
    assert settings.database.endswith("hoomi/hoomi.db")
    assert settings.allowed_origin == ()  # browsers must be allowed explicitly


def test_a_toml_file_is_read_and_overrides_win(tmp_path: pathlib.Path) -> None:
    file = tmp_path / "hoomi.toml"
    file.write_text('jwt_secret = "from-file"\nport = 9000\nallowed_origin = ["https://a"]\n')
    settings = load(file, {"port": 9100})
    assert (settings.jwt_secret, settings.port, settings.allowed_origin) == (
        "from-file",
        9100,
        ("https://a",),
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("port = 'x'", "port"),
        ("prot = 1\njwt_secret='s'", "unknown settings: prot"),
        ("port = [", "not valid TOML"),
        ("jwt_secret = 's'\nmax_frame_bytes = 10", "max_frame_bytes must be at least 1024"),
        ("jwt_secret = 's'\ntls_cert = 'a.pem'", "tls_cert is set but tls_key is not"),
        ("jwt_secret = 's'\nsqlite_commit_window_ms = -1", "sqlite_commit_window_ms must not"),
        ("", "No token key configured"),
    ],
)
def test_bad_settings_are_one_clear_sentence(
    tmp_path: pathlib.Path, content: str, message: str
) -> None:
    file = tmp_path / "hoomi.toml"
    file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load(file, {})


def test_hoomi_serve_refuses_bad_settings_without_a_traceback(tmp_path: pathlib.Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--port", "70000", "--jwt-secret", "s"])
    assert result.exit_code == 2
    assert "port must be between 0 and 65535" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(app, ["serve", "--config", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2
    assert "Cannot read config file" in missing.output


def test_every_setting_is_an_option_and_an_environment_variable() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    for name in Settings.__attrs_attrs__:
        assert "--" + name.name.replace("_", "-") in result.output
        assert "HOOMI_" + name.name.upper() in result.output


def test_environment_variables_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOMI_PORT", "70001")
    monkeypatch.setenv("HOOMI_JWT_SECRET", "s")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "70001" in result.output


def test_public_key_files_configure_the_verifier(tmp_path: pathlib.Path) -> None:
    import time

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from hoomi.cli.serve import _verifier

    key = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "key.pub.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    verifier = _verifier(load(None, {"jwt_public_key": [str(pem)]}))
    token = jwt.encode({"sub": "carol", "exp": int(time.time()) + 60}, key, "EdDSA")
    assert verifier.verify(token, now_s=time.time()).user_id == "carol"
    with pytest.raises(ConfigError, match="Cannot read public key"):
        _verifier(load(None, {"jwt_public_key": [str(tmp_path / "missing.pem")]}))


def test_hoomi_serve_refuses_a_public_key_as_the_shared_secret() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----"
    result = CliRunner().invoke(app, ["serve", "--jwt-secret", pem, "--port", "0"])
    assert result.exit_code == 2
    assert "Bad jwt_secret" in result.output
    assert "Traceback" not in result.output


def test_every_number_setting_declares_the_range_check_enforces() -> None:
    # A new number setting without a range would take any value, 0 and negatives too.
    assert NUMBERS
    assert {name: RANGES[name] for name in NUMBERS if RANGES[name] is None} == {}


def _with(name: str, value: float) -> Settings:
    """Valid settings but for `name` (not checked yet)."""
    change: dict[str, Any] = {name: value}
    return attrs.evolve(Settings(jwt_secret="s"), **change)


def _refusal(name: str, value: float) -> str:
    with pytest.raises(ConfigError) as refused:
        _with(name, value).check()
    return str(refused.value)


@pytest.mark.parametrize("name", [n for n in NUMBERS if RANGES[n] == "positive"])
@pytest.mark.parametrize("value", [0, -1])
def test_a_setting_that_must_be_positive_refuses_zero_and_negatives(name: str, value: int) -> None:
    assert _refusal(name, value) == f"{name} must be greater than 0 (got {value})."


@pytest.mark.parametrize("name", [n for n in NUMBERS if RANGES[n] == "non-negative"])
def test_a_setting_that_may_be_zero_refuses_negatives(name: str) -> None:
    assert _refusal(name, -1) == f"{name} must not be negative (got -1)."
    assert getattr(_with(name, 0).check(), name) == 0


@pytest.mark.parametrize("name", [n for n in NUMBERS if RANGES[n] == "port"])
def test_a_port_is_0_to_65535(name: str) -> None:
    for bad in (-1, 65536):
        assert _refusal(name, bad) == f"{name} must be between 0 and 65535 (got {bad})."
    for good in (0, 65535):
        assert getattr(_with(name, good).check(), name) == good


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        (
            ["--admin-token", "fifteen-chars.."],
            "admin_token must be at least 16 characters (got 15): use a long random string.",
        ),
        (["--path", "ws"], "path must start with '/' (got 'ws')."),
        (["--tls-key", "k.pem"], "tls_key is set but tls_cert is not: TLS needs both."),
        (["--tls-cert", "c.pem"], "tls_cert is set but tls_key is not: TLS needs both."),
        (["--outbox-size", "0"], "outbox_size must be greater than 0 (got 0)."),
    ],
)
def test_hoomi_serve_refuses_with_one_sentence_and_exit_code_2(
    options: list[str], sentence: str
) -> None:
    result = CliRunner().invoke(app, ["serve", "--jwt-secret", "s", *options])
    assert (result.exit_code, result.output) == (2, f"Error: {sentence}\n")


def test_a_16_character_admin_token_is_enough() -> None:
    assert Settings(jwt_secret="s", admin_token="x" * 16).check().admin_token == "x" * 16
