"""TokenVerifier against real tokens signed by keys made here, and the attacks on it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from gateway.callers.caller import Caller, Scope
from gateway.callers.jwks import FileKeySource, KeySetError, parse_key_set
from gateway.callers.tokens import TokenVerifier
from gateway.errors import Unauthenticated

from .issuer import AUDIENCE, ISSUER, Issuer, SigningKey, b64, forged, hs256_with


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer(
        [SigningKey.make("rsa"), SigningKey.make("ec", "ES256"), SigningKey.make("ed", "EdDSA")]
    )


def verifier_for(issuer: Issuer, tmp_path: Path, **options: object) -> TokenVerifier:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()))
    values: dict[str, object] = {"issuer": ISSUER, "audience": AUDIENCE, "leeway": 5.0, **options}
    return TokenVerifier(FileKeySource(str(path)), **values)  # type: ignore[arg-type]


async def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.caller(token)
    message = caught.value.message
    # Nothing of the token is repeated: not the whole, not its signature, not its payload.
    for part in (token, *token.split(".")):
        if len(part) > 8:
            assert part not in message
    return caught.value.reason


@pytest.mark.parametrize("kid", ["rsa", "ec", "ed"])
async def test_a_valid_token_of_each_key_type_is_a_caller(
    issuer: Issuer, tmp_path: Path, kid: str
) -> None:
    key = next(key for key in issuer.keys if key.kid == kid)
    exp = int(time.time()) + 600
    token = issuer.token(key, scope="jobs:read jobs:submit other:thing", exp=exp)
    caller = await verifier_for(issuer, tmp_path).caller(token)
    assert caller == Caller(
        name="user-1",
        tenant="acme",
        scopes=frozenset({Scope.READ, Scope.SUBMIT}),
        method="jwt",
        expires_at=float(exp),
    )


async def test_scopes_and_tenant_come_from_the_configured_claims(
    issuer: Issuer, tmp_path: Path
) -> None:
    token = issuer.token(scope=None, tenant=None, scp=["jobs:read:all"], org="globex")
    verifier = verifier_for(issuer, tmp_path, scope_claim="scp", tenant_claim="org")
    caller = await verifier.caller(token)
    assert (caller.tenant, caller.scopes) == ("globex", frozenset({Scope.READ_ALL}))


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        # Times are offsets from when the test runs (not from collection: a long suite would
        # carry a "not yet valid" token into its leeway).
        ({"exp": -60}, "the token has expired."),
        ({"nbf": 60}, "the token is not valid yet (nbf or iat)."),
        (
            {"iss": "https://evil.example/"},
            "the token's issuer is not the one this gateway trusts.",
        ),
        ({"aud": "another-api"}, "the token is not meant for this gateway (aud)."),
        ({"exp": None}, "the token lacks a required claim (exp, iss, aud)."),
        ({"aud": None}, "the token lacks a required claim (exp, iss, aud)."),
    ],
)
async def test_claims_are_checked(
    issuer: Issuer, tmp_path: Path, claims: dict[str, object], reason: str
) -> None:
    now = int(time.time())
    timed = {
        name: now + value if name in ("exp", "nbf") and isinstance(value, int) else value
        for name, value in claims.items()
    }
    assert await refused(verifier_for(issuer, tmp_path), issuer.token(**timed)) == reason


async def test_exp_and_nbf_have_a_small_leeway(issuer: Issuer, tmp_path: Path) -> None:
    now = int(time.time())
    verifier = verifier_for(issuer, tmp_path, leeway=30.0)
    assert await verifier.caller(issuer.token(exp=now - 10))
    assert await verifier.caller(issuer.token(nbf=now + 10))
    await refused(verifier, issuer.token(exp=now - 60))


async def test_alg_none_is_refused(issuer: Issuer, tmp_path: Path) -> None:
    for alg in ("none", "None", "NONE"):
        token = forged({"alg": alg, "typ": "JWT", "kid": "rsa"}, issuer.claims())
        reason = await refused(verifier_for(issuer, tmp_path), token)
        assert reason.startswith("the token's algorithm is not one this gateway accepts")


async def test_hs256_signed_with_the_public_key_is_refused(issuer: Issuer, tmp_path: Path) -> None:
    rsa = issuer.keys[0]
    # The classic confusion attack: the public key (which anyone can fetch) as an HMAC secret,
    # in each form a verifier might hand to HMAC.
    for secret in (rsa.public_pem(), json.dumps(rsa.jwk()).encode(), rsa.jwk()["n"].encode()):
        token = hs256_with(secret, {"alg": "HS256", "typ": "JWT", "kid": "rsa"}, issuer.claims())
        reason = await refused(verifier_for(issuer, tmp_path), token)
        assert reason.startswith("the token's algorithm is not one this gateway accepts")


async def test_an_algorithm_other_than_the_keys_is_refused(issuer: Issuer, tmp_path: Path) -> None:
    # Signed by the EC key, but naming the RSA key: the header's ES256 is not that key's.
    ec_key = issuer.keys[1]
    token = issuer.token(SigningKey(kid="rsa", algorithm="ES256", private=ec_key.private))
    assert await refused(verifier_for(issuer, tmp_path), token) == (
        "the token's algorithm is not its key's."
    )


async def test_an_unknown_kid_is_refused(issuer: Issuer, tmp_path: Path) -> None:
    stranger = SigningKey.make("stranger")
    assert await refused(verifier_for(issuer, tmp_path), issuer.token(stranger)) == (
        "the token's key (kid) is not in the trusted key set."
    )


async def test_a_known_kid_signed_by_another_key_is_refused(issuer: Issuer, tmp_path: Path) -> None:
    impostor = SigningKey(kid="rsa", algorithm="RS256", private=SigningKey.make("x").private)
    assert await refused(verifier_for(issuer, tmp_path), issuer.token(impostor)) == (
        "the token's signature does not verify."
    )


async def test_a_tampered_payload_is_refused(issuer: Issuer, tmp_path: Path) -> None:
    head, _, signature = issuer.token(tenant="acme").split(".")
    other = b64(json.dumps(issuer.claims(tenant="globex")).encode())
    tampered = f"{head}.{other}.{signature}"
    assert await refused(verifier_for(issuer, tmp_path), tampered) == (
        "the token's signature does not verify."
    )


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 20_000, "..", "eyJ.eyJ.eyJ"])
async def test_garbage_is_refused(issuer: Issuer, tmp_path: Path, token: str) -> None:
    await refused(verifier_for(issuer, tmp_path), token)


async def test_without_a_kid_only_a_single_key_set_decides(tmp_path: Path) -> None:
    single = Issuer([SigningKey.make("only")])
    # The same key, signing a header without kid.
    no_kid = jwt.encode(single.claims(), single.keys[0].private, algorithm="RS256")
    assert await verifier_for(single, tmp_path).caller(no_kid)
    several = Issuer([single.keys[0], SigningKey.make("other")])
    assert await refused(verifier_for(several, tmp_path), no_kid) == (
        "the token's key (kid) is not in the trusted key set."
    )


def test_a_key_set_keeps_asymmetric_signing_keys_only() -> None:
    rsa = SigningKey.make("rsa").jwk()
    secret = {"kty": "oct", "kid": "hmac", "k": b64(b"shared secret"), "alg": "HS256"}
    encryption = {**SigningKey.make("enc").jwk(), "use": "enc"}
    keys = parse_key_set(json.dumps({"keys": [secret, rsa, encryption, {"kty": "bogus"}]}))
    assert list(keys) == ["rsa"]
    with pytest.raises(KeySetError, match="at least one asymmetric signing key"):
        parse_key_set(json.dumps({"keys": [secret]}))
    with pytest.raises(KeySetError, match="not JSON"):
        parse_key_set("{")
