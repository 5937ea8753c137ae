"""Settings: defaults, TOML file, environment and options, and clear refusals."""

from __future__ import annotations

import pathlib

import pytest
from typer.testing import CliRunner

from hoomi.cli.main import app
from hoomi.server.config import ConfigError, Settings, load


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
        ("jwt_secret = 's'\ntls_cert = 'a.pem'", "both tls_cert and tls_key"),
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
