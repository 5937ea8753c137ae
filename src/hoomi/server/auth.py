"""JWT verification for `hello` and `refresh` (HOOMI-HELLO-2, HOOMI-TOKEN-2).

Accepted: HS256 with the shared secret, RS256 with RSA public keys, EdDSA with Ed25519
public keys — only the algorithms whose key is configured. `alg: none`, any other
algorithm, a wrong key or signature, a token without `sub` or `exp`, or one used before
`nbf` is refused (`unauthorized`); an expired one is `token_expired`. Time is passed in, so
timer tests run on a mock clock. Verification is CPU-only (no I/O).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from hoomi.protocol.errors import ErrorCode, HoomiError


class TokenError(HoomiError):
    """A token was refused; `code` is ``unauthorized`` or ``token_expired``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class Identity:
    user_id: str
    expires_at_ms: int


@attrs.frozen
class _Key:
    algorithm: str
    key: Any


def load_public_keys(pems: Sequence[bytes]) -> list[tuple[str, Any]]:
    """(algorithm, key) for each PEM public key; ValueError names an unsupported key type."""
    keys: list[tuple[str, Any]] = []
    for pem in pems:
        key = load_pem_public_key(pem)
        if isinstance(key, RSAPublicKey):
            keys.append(("RS256", key))
        elif isinstance(key, Ed25519PublicKey):
            keys.append(("EdDSA", key))
        else:
            raise ValueError(
                f"unsupported public key type {type(key).__name__}: use RSA or Ed25519"
            )
    return keys


class TokenVerifier:
    """Verifies user tokens against the configured keys."""

    def __init__(
        self,
        *,
        hs256_secret: str | None = None,
        public_keys: Sequence[tuple[str, Any]] = (),
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 5.0,
    ) -> None:
        self._keys = [_Key(alg, key) for alg, key in public_keys]
        if hs256_secret:
            self._keys.append(_Key("HS256", hs256_secret.encode()))
        if not self._keys:
            raise ValueError("no token key configured: give a HS256 secret or a public key")
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s

    def verify(self, token: str, *, now_s: float) -> Identity:
        """The identity in `token` at time `now_s`; raises `TokenError`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _refused(f"token is malformed: {exc}") from None
        algorithm = header.get("alg")
        candidates = [k for k in self._keys if k.algorithm == algorithm]
        if not candidates:
            raise _refused(f"token algorithm {algorithm!r} is not accepted by this server")
        claims: dict[str, Any] | None = None
        for candidate in candidates:
            try:
                claims = jwt.decode(
                    token,
                    candidate.key,
                    algorithms=[candidate.algorithm],
                    issuer=self._issuer,
                    audience=self._audience,
                    # exp and nbf are checked below against the time passed in.
                    options={
                        "require": ["sub", "exp"],
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                        "verify_aud": self._audience is not None,
                    },
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise _refused(f"token refused: {exc}") from None
        if claims is None:
            raise _refused("token signature does not verify with any configured key")
        sub, exp, nbf = claims["sub"], claims["exp"], claims.get("nbf")
        if not isinstance(sub, str) or not 1 <= len(sub) <= 128:
            raise _refused("token `sub` must be a user id of 1-128 characters")
        if not isinstance(exp, int | float) or (
            nbf is not None and not isinstance(nbf, int | float)
        ):
            raise _refused("token `exp` and `nbf` must be numbers")
        if nbf is not None and now_s + self._leeway_s < nbf:
            raise _refused("token is not valid yet (`nbf` is in the future)")
        if now_s - self._leeway_s >= exp:
            raise TokenError(ErrorCode.TOKEN_EXPIRED, "token has expired; get a new one")
        return Identity(user_id=sub, expires_at_ms=int(exp * 1000))


def _refused(message: str) -> TokenError:
    return TokenError(ErrorCode.UNAUTHORIZED, message)


def mint_hs256(secret: str, user_id: str, *, ttl_s: int = 3600, now_s: float | None = None) -> str:
    """A user token signed with the shared secret (development and tests)."""
    issued = int(time.time() if now_s is None else now_s)
    return jwt.encode({"sub": user_id, "iat": issued, "exp": issued + ttl_s}, secret, "HS256")
