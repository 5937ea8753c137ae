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
import jwt.types
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from hoomi.server.auth import (
    Identity,
    TokenError,
    TokenVerifier,
    load_public_keys,
    mint_hs256,
)

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


def _refused(verifier: TokenVerifier, token: str, now_s: float = NOW) -> str:
    """The refusal as ``"code: message"``; fails the test if `token` is accepted."""
    with pytest.raises(TokenError) as caught:
        verifier.verify(token, now_s=now_s)
    return f"{caught.value.code.value}: {caught.value.message}"


UNAUTHORIZED = "unauthorized: "
EXPIRED = "token_expired: token has expired; get a new one"
NOT_YET = "unauthorized: token is not valid yet (`nbf` is in the future)"
NO_EXP = "unauthorized: token `exp` must be a number, and `nbf` too if given"
BAD_SUB = "unauthorized: token `sub` must be a user id of 1-128 characters"
BAD_SIGNATURE = "unauthorized: token signature does not verify with any configured key"


def test_rs256_and_eddsa_public_keys_verify_their_tokens() -> None:
    verifier = TokenVerifier(public_keys=load_public_keys([_pem(RSA), _pem(ED)]))
    for token in (jwt.encode(_claims(), RSA, "RS256"), jwt.encode(_claims(), ED, "EdDSA")):
        identity = verifier.verify(token, now_s=NOW)
        assert (identity.user_id, identity.expires_at_ms) == ("alice", (int(NOW) + 600) * 1000)


def test_wrong_keys_unconfigured_algorithms_and_alg_none_are_refused() -> None:
    verifier = TokenVerifier(public_keys=load_public_keys([_pem(RSA)]))
    assert _refused(verifier, jwt.encode(_claims(), OTHER_RSA, "RS256")) == BAD_SIGNATURE
    not_accepted = "unauthorized: token algorithm {!r} is not accepted by this server"
    assert _refused(verifier, jwt.encode(_claims(), ED, "EdDSA")) == not_accepted.format("EdDSA")
    assert _refused(verifier, jwt.encode(_claims(), "", "none")) == not_accepted.format("none")

    # Algorithm confusion: an HS256 token "signed" with the public key's PEM as the secret
    # is refused because only RS256 is configured.
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = (
        b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(b'{"sub":"alice","exp":9999999999}')
    )
    signature = hmac.new(_pem(RSA), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + b64(signature)).decode()
    assert _refused(verifier, forged) == not_accepted.format("HS256")


def test_expiry_nbf_and_required_claims_use_the_time_passed_in() -> None:
    verifier = TokenVerifier(hs256_secret="s" * 32, leeway_s=5)
    secret = "s" * 32
    assert _refused(verifier, jwt.encode(_claims(exp=int(NOW) - 6), secret)) == EXPIRED
    accepted = verifier.verify(jwt.encode(_claims(exp=int(NOW) + 1), secret), now_s=NOW)
    assert accepted == Identity(user_id="alice", expires_at_ms=(int(NOW) + 1) * 1000)
    assert _refused(verifier, jwt.encode(_claims(nbf=int(NOW) + 60), secret)) == NOT_YET
    assert _refused(verifier, jwt.encode({"sub": "alice"}, secret)) == NO_EXP
    assert _refused(verifier, jwt.encode({"exp": int(NOW) + 60}, secret)) == BAD_SUB
    assert _refused(verifier, jwt.encode(_claims(sub=""), secret)) == BAD_SUB
    assert _refused(verifier, "not a token").startswith("unauthorized: token is malformed: ")


def test_issuer_and_audience_when_configured() -> None:
    secret = "s" * 32
    verifier = TokenVerifier(hs256_secret=secret, issuer="backend", audience="hoomi")
    good = jwt.encode(_claims(iss="backend", aud="hoomi"), secret)
    assert verifier.verify(good, now_s=NOW).user_id == "alice"
    wrong_issuer = "unauthorized: token `iss` is not the configured issuer"
    wrong_audience = "unauthorized: token `aud` does not name the configured audience"
    assert _refused(verifier, jwt.encode(_claims(iss="other", aud="hoomi"), secret)) == (
        wrong_issuer
    )
    assert _refused(verifier, jwt.encode(_claims(aud="hoomi"), secret)) == wrong_issuer
    assert _refused(verifier, jwt.encode(_claims(iss="backend"), secret)) == wrong_audience
    assert _refused(verifier, jwt.encode(_claims(iss="backend", aud="other"), secret)) == (
        wrong_audience
    )


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
    assert _refused(strict, token, time.time()) == (
        "unauthorized: token `iss` is not the configured issuer"
    )
    claimed = mint_hs256("s" * 32, "bob", ttl_s=60, issuer="backend", audience="hoomi")
    assert strict.verify(claimed, now_s=time.time()).user_id == "bob"


# -- held to PyJWT's verdict ---------------------------------------------------------------
# PyJWT is the oracle: it checks the signature, `exp`, `nbf`, `iat`, `iss` and `aud` itself,
# with the leeway the verifier has, against its own clock (its `decode` takes no time).
# Generated times are whole seconds away from every boundary, so that the two clocks, read
# a moment apart, cannot disagree; the exact boundaries are tested on Hoomi alone, with the
# time passed in (`test_expiry_and_nbf_boundaries_are_pyjwts`). Where Hoomi deliberately
# differs from PyJWT, `_expected` says so in a numbered rule.

SECRET = "s" * 32
KEYS: dict[str, Any] = {
    "HS256": SECRET,
    "RS256": RSA,
    "EdDSA": ED,
    "wrong-HS256": "t" * 32,
    "wrong-RS256": OTHER_RSA,
}
CONFIGURED: list[tuple[str, Any]] = [("HS256", SECRET), *load_public_keys([_pem(RSA), _pem(ED)])]
# The longest one example may take between reading the clock and PyJWT's decode.
SLACK_S = 15


def _pyjwt(
    token: str, *, issuer: str | None, audience: str | None, leeway: int, skip: frozenset[str]
) -> dict[str, Any] | jwt.PyJWTError:
    """PyJWT's decode with the configured keys of the header's algorithm (as Hoomi picks
    them): the claims, or why it refused. `skip` names checks a rule in `_expected` lifts."""
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError as exc:
        return exc
    refusal: jwt.PyJWTError = jwt.InvalidAlgorithmError(f"no key for {algorithm!r}")
    options: jwt.types.Options = {
        # Hoomi requires both (HOOMI-HELLO-2); PyJWT checks them when asked to.
        "require": ["sub", "exp"],
        # With no audience configured Hoomi ignores `aud`; PyJWT would refuse any.
        "verify_aud": audience is not None,
        "verify_exp": "exp" not in skip,
        "verify_nbf": "nbf" not in skip,
        "verify_iat": "iat" not in skip,
    }
    for alg, key in CONFIGURED:
        if alg != algorithm:
            continue
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=issuer,
                audience=audience,
                leeway=leeway,
                options=options,
            )
        except jwt.InvalidSignatureError as exc:
            refusal = exc  # the next key of that algorithm may verify it
        except jwt.PyJWTError as exc:
            return exc
        else:
            return claims
    return refusal


def _about(result: object, claim: str) -> bool:
    """Whether PyJWT refused for `claim` alone (its messages name the claim: "(iat)")."""
    return isinstance(result, jwt.PyJWTError) and f"({claim})" in str(result)


def _payload(token: str) -> dict[str, Any]:
    """The claims of a token whose signature PyJWT verified."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _number(value: object) -> bool:
    return type(value) in (int, float)


def _expected(token: str, *, issuer: str | None, audience: str | None, leeway: int) -> str:
    """PyJWT's verdict (``ok:<sub>``, ``token_expired`` or ``unauthorized``), overruled only
    where Hoomi deliberately differs, each difference a rule below."""
    config: dict[str, Any] = {"issuer": issuer, "audience": audience, "leeway": leeway}
    skip: frozenset[str] = frozenset()
    result = _pyjwt(token, **config, skip=skip)
    if _about(result, "iat"):
        # Rule 1: Hoomi does not read `iat` (HOOMI-HELLO-2 names exp and nbf), so a token
        # PyJWT refuses for its `iat` gets the verdict PyJWT gives it otherwise.
        skip |= {"iat"}
        result = _pyjwt(token, **config, skip=skip)
    if _about(result, "nbf") and _payload(token).get("nbf", 0) is None:
        # Rule 2: `nbf: null` is no `nbf` to Hoomi; PyJWT refuses it.
        skip |= {"nbf"}
        result = _pyjwt(token, **config, skip=skip)
    if isinstance(result, jwt.ExpiredSignatureError):
        # Rule 3: Hoomi reports expiry only for a token it would otherwise accept; PyJWT
        # checks `exp` before `iss`, `aud` and `sub`.
        if not isinstance(_pyjwt(token, **config, skip=skip | {"exp"}), dict):
            return "unauthorized"
    elif isinstance(result, jwt.PyJWTError):
        return "unauthorized"
    claims = _payload(token)
    sub, exp, nbf = claims["sub"], claims["exp"], claims.get("nbf")
    # Rule 4: `sub` is a user id of 1-128 characters; PyJWT takes any string.
    # Rule 5: `exp` and `nbf` are JSON numbers; PyJWT takes whatever int() takes ("7", true).
    if not 1 <= len(sub) <= 128 or not _number(exp) or not (nbf is None or _number(nbf)):
        return "unauthorized"
    return "token_expired" if isinstance(result, jwt.ExpiredSignatureError) else f"ok:{sub}"


def _verdict(verifier: TokenVerifier, token: str, now_s: float) -> str:
    try:
        return f"ok:{verifier.verify(token, now_s=now_s).user_id}"
    except TokenError as refused:
        return refused.code.value


def _flip(segment: str, at: int) -> str:
    if not segment:
        return "A"
    i = at % len(segment)
    return segment[:i] + ("A" if segment[i] != "A" else "B") + segment[i + 1 :]


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


ABSENT = object()
# Seconds from a boundary (`exp` = now - leeway, `nbf` / `iat` = now + leeway), never
# within SLACK_S of it: both clocks give the same verdict.
far = st.integers(min_value=-100, max_value=-2) | st.integers(min_value=SLACK_S + 1, max_value=100)
# Values of a claim that are not a time.
not_times = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.sampled_from([ABSENT, ["x"], {"a": 1}, "7", "1e3"]),
)


@settings(max_examples=400, deadline=None)
@given(
    key=st.sampled_from(["HS256", "RS256", "EdDSA"]),
    configured=st.sampled_from([(None, None), ("backend", "hoomi")]),
    leeway=st.sampled_from([0, 5, 30]),
    # Times around the boundaries, several at once.
    times=st.fixed_dictionaries(
        {"exp": far},
        optional={"nbf": far, "iat": far, "fraction": st.floats(min_value=0, max_value=0.99)},
    ),
    # One deviation from a good token at a time, so each verdict hinges on it.
    deviation=st.one_of(
        st.just(("none", None)),
        st.tuples(
            st.sampled_from(["sub", "iss", "aud"]),
            st.one_of(
                not_times,
                st.integers(),
                st.text(max_size=130),
                st.sampled_from(["hoomi", "backend", ["x", "hoomi"], ["hoomi", 5], 7]),
            ),
        ),
        st.tuples(st.sampled_from(["exp", "nbf", "iat"]), not_times),
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
    key: str,
    configured: tuple[str | None, str | None],
    leeway: int,
    times: dict[str, float],
    deviation: tuple[str, Any],
    at: int,
) -> None:
    started = time.time()
    base = int(started)
    fraction = times.pop("fraction", 0)
    claims: dict[str, Any] = {"sub": "alice", "iss": "backend", "aud": "hoomi"}
    claims["exp"] = base - leeway + times.pop("exp") + fraction
    claims |= {name: base + leeway + offset for name, offset in times.items()}
    what, value = deviation
    signing_key, headers = key, None
    if what in ("sub", "iss", "aud", "exp", "nbf", "iat"):
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
        leeway_s=leeway,
    )
    hoomi = _verdict(verifier, token, time.time())
    assert hoomi == _expected(token, issuer=issuer, audience=audience, leeway=leeway)
    assert time.time() - started < SLACK_S, "too slow for the margins of the generated times"


# PyJWT's rules, stated: refused as expired when exp <= now - leeway, as not yet valid when
# nbf > now + leeway (jwt/api_jwt.py, _validate_exp and _validate_nbf).
BOUNDARIES = [
    ({"exp": NOW}, 0, EXPIRED),
    ({"exp": NOW + 0.001}, 0, "ok"),
    ({"exp": NOW - 5}, 5, EXPIRED),
    ({"exp": NOW - 4.999}, 5, "ok"),
    ({"exp": NOW - 6}, 5, EXPIRED),
    ({"exp": NOW}, 5, "ok"),
    ({"exp": NOW - 30}, 30, EXPIRED),
    ({"exp": NOW - 29}, 30, "ok"),
    ({"nbf": NOW}, 0, "ok"),
    ({"nbf": NOW + 0.001}, 0, NOT_YET),
    ({"nbf": NOW + 5}, 5, "ok"),
    ({"nbf": NOW + 5.001}, 5, NOT_YET),
    ({"nbf": NOW + 30}, 30, "ok"),
    ({"nbf": NOW + 31}, 30, NOT_YET),
    # `iat` is not read (rule 1 above), not even far in the future.
    ({"iat": NOW + 3600}, 0, "ok"),
]


@pytest.mark.parametrize(("claims", "leeway", "expected"), BOUNDARIES)
def test_expiry_and_nbf_boundaries_are_pyjwts(
    claims: dict[str, float], leeway: int, expected: str
) -> None:
    verifier = TokenVerifier(hs256_secret=SECRET, leeway_s=leeway)
    token = _sign({"sub": "alice", "exp": NOW + 60, **claims}, "HS256", {})
    if expected == "ok":
        assert verifier.verify(token, now_s=NOW).user_id == "alice"
    else:
        assert _refused(verifier, token) == expected


def test_padded_or_non_base64url_segments_are_malformed() -> None:
    verifier = TokenVerifier(hs256_secret=SECRET)
    header, payload, signature = jwt.encode(_claims(), SECRET).split(".")
    malformed = "unauthorized: token is malformed: a segment is not canonical base64url"
    for token in (
        f"{header}.{payload}.{signature}=",
        f"{header}.{payload}+.{signature}",
        f"{header}.{payload}.{signature}.x",
    ):
        assert _refused(verifier, token) == malformed
    # A missing third segment is an empty signature, which verifies with no key.
    assert _refused(verifier, f"{header}.{payload}") == BAD_SIGNATURE


def test_edge_cases_get_pyjwts_verdict() -> None:
    config: dict[str, Any] = {"issuer": "backend", "audience": "hoomi", "leeway": 5}
    verifier = TokenVerifier(
        hs256_secret=SECRET,
        public_keys=load_public_keys([_pem(ED)]),
        issuer="backend",
        audience="hoomi",
        leeway_s=5,
    )
    now = int(time.time())
    good = {"sub": "alice", "exp": now + 60, "iss": "backend", "aud": "hoomi"}
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
        "nbf within the leeway": _sign({**good, "nbf": now + 4}, "HS256", {}),
        "nbf beyond the leeway": _sign({**good, "nbf": now + 5 + SLACK_S + 1}, "HS256", {}),
        "no issuer": _sign({"sub": "alice", "exp": now + 60, "aud": "hoomi"}, "HS256", {}),
    }
    verdicts = {name: _verdict(verifier, token, time.time()) for name, token in cases.items()}
    assert verdicts == {name: _expected(token, **config) for name, token in cases.items()}
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
    huge_exp = _sign({"sub": "a", "exp": 1e308}, "HS256", {})
    assert _refused(verifier, huge_exp) == "unauthorized: token `exp` or `nbf` is out of range"
    # json.dumps writes an infinite nbf as `Infinity`, which is not JSON (orjson's message).
    infinite_nbf = _sign({"sub": "a", "exp": int(NOW) + 60, "nbf": 1e400}, "HS256", {})
    assert _refused(verifier, infinite_nbf).startswith("unauthorized: token is malformed: ")
