"""Token verification: the algorithms that are configured, nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

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
    strict = TokenVerifier(hs256_secret="s" * 32, issuer="backend", audience="hoomi")
    with pytest.raises(TokenError):
        strict.verify(token, now_s=time.time())
    claimed = mint_hs256("s" * 32, "bob", ttl_s=60, issuer="backend", audience="hoomi")
    assert strict.verify(claimed, now_s=time.time()).user_id == "bob"


# -- held to PyJWT's verdict ---------------------------------------------------------------

SECRET = "s" * 32
KEYS: dict[str, Any] = {
    "HS256": SECRET,
    "RS256": RSA,
    "EdDSA": ED,
    "wrong-HS256": "t" * 32,
    "wrong-RS256": OTHER_RSA,
}


def _pyjwt_verdict(token: str, *, issuer: str | None, audience: str | None) -> str:
    """What the previous, PyJWT-based verifier decided: the reference for `verify`."""
    keys = [("HS256", SECRET), *load_public_keys([_pem(RSA), _pem(ED)])]
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        return "unauthorized"
    claims = None
    for alg, key in keys:
        if alg != algorithm:
            continue
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=issuer,
                audience=audience,
                options={
                    "require": ["sub", "exp"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": audience is not None,
                },
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            return "unauthorized"
    if claims is None:
        return "unauthorized"
    sub, exp, nbf = claims["sub"], claims["exp"], claims.get("nbf")
    number = (int, float)
    if not isinstance(sub, str) or not 1 <= len(sub) <= 128:
        return "unauthorized"
    if type(exp) not in number or (nbf is not None and type(nbf) not in number):
        return "unauthorized"
    if nbf is not None and nbf > NOW + 5:
        return "unauthorized"
    if exp <= NOW - 5:
        return "token_expired"
    return f"ok:{sub}"


def _verdict(verifier: TokenVerifier, token: str) -> str:
    try:
        return f"ok:{verifier.verify(token, now_s=NOW).user_id}"
    except TokenError as refused:
        return refused.code.value


def _flip(segment: str, at: int) -> str:
    if not segment:
        return "A"
    i = at % len(segment)
    return segment[:i] + ("A" if segment[i] != "A" else "B") + segment[i + 1 :]


claim_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=int(NOW) - 100, max_value=int(NOW) + 100),
    st.floats(min_value=NOW - 100, max_value=NOW + 100),
    st.text(max_size=3),
)


def _sign(claims: dict[str, Any], key: str, headers: dict[str, Any]) -> str:
    """A compact JWS over any claims (PyJWT's encode refuses some of them)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    algorithm = key.removeprefix("wrong-")
    header = json.dumps({"alg": algorithm, "typ": "JWT", **headers}).encode()
    signing_input = f"{b64(header)}.{b64(json.dumps(claims).encode())}".encode()
    private = KEYS[key]
    if algorithm == "HS256":
        signature = hmac.new(private.encode(), signing_input, hashlib.sha256).digest()
    elif algorithm == "RS256":
        signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = private.sign(signing_input)
    return f"{signing_input.decode()}.{b64(signature)}"


VALID = {"sub": "alice", "exp": int(NOW) + 60, "iss": "backend", "aud": "hoomi"}
ABSENT = object()


@settings(max_examples=400, deadline=None)
@given(
    key=st.sampled_from(["HS256", "RS256", "EdDSA"]),
    configured=st.sampled_from([(None, None), ("backend", "hoomi")]),
    # One deviation from a good token at a time, so each verdict hinges on it.
    deviation=st.one_of(
        st.tuples(
            st.sampled_from(["sub", "exp", "nbf", "iss", "aud"]),
            st.one_of(
                claim_values,
                st.text(max_size=130),
                st.sampled_from([ABSENT, "hoomi", ["x", "hoomi"], ["x"], ["hoomi", 5], 7]),
            ),
        ),
        st.tuples(st.just("key"), st.sampled_from(["wrong-HS256", "wrong-RS256", "EdDSA"])),
        st.tuples(st.just("header"), st.sampled_from([{"kid": "k1"}, {"crit": ["exp"], "exp": 1}])),
        st.tuples(
            st.just("tamper"),
            st.sampled_from(["signature", "payload", "header", "alg-none", "drop"]),
        ),
    ),
    at=st.integers(min_value=0, max_value=400),
)
def test_verify_agrees_with_pyjwt_on_generated_and_tampered_tokens(
    key: str, configured: tuple[str | None, str | None], deviation: tuple[str, Any], at: int
) -> None:
    what, value = deviation
    claims = dict(VALID)
    signing_key, headers = key, None
    if what in VALID or what == "nbf":
        claims[what] = value
    elif what == "key":
        signing_key = value
    elif what == "header":
        headers = value
    claims = {name: v for name, v in claims.items() if v is not ABSENT}
    token = _sign(claims, signing_key, headers or {})
    header, payload, signature = token.split(".")
    if value == "signature":
        signature = _flip(signature, at)
    elif value == "payload":
        payload = _flip(payload, at)
    elif value == "header":
        header = _flip(header, at)
    elif value == "alg-none":
        header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    elif value == "drop":
        signature = ""
    token = f"{header}.{payload}.{signature}"
    issuer, audience = configured
    verifier = TokenVerifier(
        hs256_secret=SECRET,
        public_keys=load_public_keys([_pem(RSA), _pem(ED)]),
        issuer=issuer,
        audience=audience,
        leeway_s=5,
    )
    assert _verdict(verifier, token) == _pyjwt_verdict(token, issuer=issuer, audience=audience)


def test_padded_or_non_base64url_segments_are_malformed() -> None:
    verifier = TokenVerifier(hs256_secret=SECRET)
    header, payload, signature = jwt.encode(_claims(), SECRET).split(".")
    for token in (
        f"{header}.{payload}.{signature}=",
        f"{header}.{payload}+.{signature}",
        f"{header}.{payload}",
        f"{header}.{payload}.{signature}.x",
    ):
        assert _refused(verifier, token) is ErrorCode.UNAUTHORIZED


def test_edge_cases_get_pyjwts_verdict() -> None:
    config = {"issuer": "backend", "audience": "hoomi"}
    verifier = TokenVerifier(
        hs256_secret=SECRET, public_keys=load_public_keys([_pem(ED)]), leeway_s=5, **config
    )
    good = dict(VALID)
    header, payload, signature = _sign(good, "EdDSA", {}).split(".")
    # 64 signature bytes leave the low 4 bits of the last base64url character unused:
    # flipping one spells the same signature differently.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    alias = alphabet[alphabet.index(signature[-1]) ^ 1]
    cases = {
        "kid must be a string": _sign(good, "HS256", {"kid": 5}),
        "one spelling per signature": f"{header}.{payload}.{signature[:-1]}{alias}",
        "aud lists only strings": _sign({**good, "aud": ["hoomi", 5]}, "HS256", {}),
        "aud list naming us": _sign({**good, "aud": ["x", "hoomi"]}, "HS256", {}),
        "nbf within the leeway": _sign({**good, "nbf": int(NOW) + 4}, "HS256", {}),
        "nbf beyond the leeway": _sign({**good, "nbf": int(NOW) + 6}, "HS256", {}),
        "no issuer": _sign({"sub": "alice", "exp": int(NOW) + 60, "aud": "hoomi"}, "HS256", {}),
    }
    verdicts = {name: _verdict(verifier, token) for name, token in cases.items()}
    assert verdicts == {name: _pyjwt_verdict(token, **config) for name, token in cases.items()}
    assert [v.startswith("ok") for v in verdicts.values()] == [0, 0, 0, 1, 1, 0, 0]


def test_a_public_key_as_the_hs256_secret_is_refused() -> None:
    # An operator pasting the RSA public key as the shared secret would let anyone holding
    # that public key sign tokens (algorithm confusion); PyJWT refuses such a secret too.
    with pytest.raises(ValueError, match="PEM or SSH key"):
        TokenVerifier(hs256_secret=_pem(RSA).decode())
    with pytest.raises(ValueError, match="PEM or SSH key"):
        TokenVerifier(hs256_secret="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI user@host")


def test_numbers_out_of_range_are_refused_not_a_crash() -> None:
    verifier = TokenVerifier(hs256_secret=SECRET)
    for claims in ({"sub": "a", "exp": 1e308}, {"sub": "a", "exp": int(NOW) + 60, "nbf": 1e400}):
        token = _sign(claims, "HS256", {})
        assert _refused(verifier, token) is ErrorCode.UNAUTHORIZED
