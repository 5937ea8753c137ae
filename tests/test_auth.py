"""Token verification: the algorithms that are configured, nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hoomi.protocol import ErrorCode
from hoomi.server.auth import TokenError, TokenVerifier, load_public_keys, mint_hs256

NOW = 1_800_000_000.0


def _pem(private: Any) -> bytes:
    pem: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED = ed25519.Ed25519PrivateKey.generate()
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(NOW) + 600, **extra}


def _refused(verifier: TokenVerifier, token: str) -> ErrorCode:
    with pytest.raises(TokenError) as caught:
        verifier.verify(token, now_s=NOW)
    return caught.value.code


def test_rs256_and_eddsa_public_keys_verify_their_tokens() -> None:
    verifier = TokenVerifier(public_keys=load_public_keys([_pem(RSA), _pem(ED)]))
    for token in (jwt.encode(_claims(), RSA, "RS256"), jwt.encode(_claims(), ED, "EdDSA")):
        identity = verifier.verify(token, now_s=NOW)
        assert (identity.user_id, identity.expires_at_ms) == ("alice", (int(NOW) + 600) * 1000)


def test_wrong_keys_unconfigured_algorithms_and_alg_none_are_refused() -> None:
    verifier = TokenVerifier(public_keys=load_public_keys([_pem(RSA)]))
    assert _refused(verifier, jwt.encode(_claims(), OTHER_RSA, "RS256")) is ErrorCode.UNAUTHORIZED
    assert _refused(verifier, jwt.encode(_claims(), ED, "EdDSA")) is ErrorCode.UNAUTHORIZED
    assert _refused(verifier, jwt.encode(_claims(), "", "none")) is ErrorCode.UNAUTHORIZED

    # Algorithm confusion: an HS256 token "signed" with the public key's PEM as the secret
    # is refused because only RS256 is configured.
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = (
        b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(b'{"sub":"alice","exp":9999999999}')
    )
    signature = hmac.new(_pem(RSA), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + b64(signature)).decode()
    assert _refused(verifier, forged) is ErrorCode.UNAUTHORIZED


def test_expiry_nbf_and_required_claims_use_the_time_passed_in() -> None:
    verifier = TokenVerifier(hs256_secret="s" * 32, leeway_s=5)
    secret = "s" * 32
    assert (
        _refused(verifier, jwt.encode(_claims(exp=int(NOW) - 6), secret)) is ErrorCode.TOKEN_EXPIRED
    )
    assert verifier.verify(jwt.encode(_claims(exp=int(NOW) + 1), secret), now_s=NOW)
    assert (
        _refused(verifier, jwt.encode(_claims(nbf=int(NOW) + 60), secret)) is ErrorCode.UNAUTHORIZED
    )
    assert _refused(verifier, jwt.encode({"sub": "alice"}, secret)) is ErrorCode.UNAUTHORIZED
    assert _refused(verifier, jwt.encode({"exp": int(NOW) + 60}, secret)) is ErrorCode.UNAUTHORIZED
    assert _refused(verifier, jwt.encode(_claims(sub=""), secret)) is ErrorCode.UNAUTHORIZED
    assert _refused(verifier, "not a token") is ErrorCode.UNAUTHORIZED


def test_issuer_and_audience_when_configured() -> None:
    secret = "s" * 32
    verifier = TokenVerifier(hs256_secret=secret, issuer="backend", audience="hoomi")
    good = jwt.encode(_claims(iss="backend", aud="hoomi"), secret)
    assert verifier.verify(good, now_s=NOW).user_id == "alice"
    assert _refused(verifier, jwt.encode(_claims(iss="other", aud="hoomi"), secret))
    assert _refused(verifier, jwt.encode(_claims(iss="backend"), secret))


def test_unsupported_key_types_and_no_keys_are_configuration_errors() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="RSA or Ed25519"):
        load_public_keys([_pem(ec_key)])
    with pytest.raises(ValueError, match="no token key"):
        TokenVerifier()


def test_minted_development_tokens_verify() -> None:
    verifier = TokenVerifier(hs256_secret="s" * 32)
    token = mint_hs256("s" * 32, "bob", ttl_s=60, now_s=time.time())
    assert verifier.verify(token, now_s=time.time()).user_id == "bob"
