"""HTTP signatures: our signing and checking, and interop with apsig and bovine.

Requests in the "variants" and "refusals" sections are signed by a few lines
here that follow the draft directly (``cavage_request``), not by our signer, so a
mistake in our signing-string code cannot hide itself.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import hashlib
import time
import types

import apsig.draft.sign as apsig_draft_sign
import apsig.draft.verify as apsig_draft_verify
import apsig.rfc9421 as apsig_rfc9421
import bovine.clients.signed_http as bovine_signed_http
import bovine.clients.signed_http_methods as bovine_methods
import bovine.crypto as bovine_crypto
import bovine.crypto.helper as bovine_helper
import bovine.crypto.types as bovine_types
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from microfedi.federation.signatures import (
    SignatureError,
    SignedRequest,
    body_digest,
    content_digest,
    load_public_key,
    parse_signed_request,
    sign_request,
    sign_request_rfc9421,
    verify_signed_request,
)

NOW = 1_750_000_000.0
KEY_ID = "https://alice.example/@alice#main-key"
HOST = "bob.example"
INBOX = "/users/bob/inbox"
INBOX_URL = f"https://{HOST}{INBOX}"
BODY = b'{"type": "Follow", "actor": "https://alice.example/@alice", "object": "https://bob.example/@bob"}'


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def http_date(moment: float) -> str:
    return email.utils.formatdate(moment, usegmt=True)


def check(headers, key, *, method="POST", target=INBOX, body=BODY, now=NOW, **options) -> SignedRequest:
    """Parse and verify the way the inbox will; raises SignatureError on refusal."""
    signed = parse_signed_request(method, target, headers, body, now=now, **options)
    verify_signed_request(signed, key.public_key())
    return signed


def cavage_request(
    key,
    covered: list[str],
    *,
    algorithm: str | None = "rsa-sha256",
    method: str = "post",
    target: str = INBOX,
    body: bytes = BODY,
    now: float = NOW,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """A request signed straight from the draft's rules, independent of our signer."""
    params = params or {}
    sent = {
        "Host": HOST,
        "Date": http_date(now),
        "Digest": "SHA-256=" + b64(hashlib.sha256(body).digest()),
        "Content-Type": "application/activity+json",
        **(headers or {}),
    }
    values = {name.lower(): value for name, value in sent.items()}
    values["(request-target)"] = f"{method} {target}"
    values.update({f"({name})": value for name, value in params.items()})
    message = "\n".join(f"{name}: {values[name]}" for name in covered).encode()
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    else:
        raw = key.sign(message)
    fields = [f'keyId="{KEY_ID}"']
    if algorithm is not None:
        fields.append(f'algorithm="{algorithm}"')
    fields.append(f'headers="{" ".join(covered)}"')
    fields += [f"{name}={value}" for name, value in params.items()]
    fields.append(f'signature="{b64(raw)}"')
    sent["Signature"] = ",".join(fields)
    return sent


MASTODON_POST = ["(request-target)", "host", "date", "digest"]


# --- our own signing -----------------------------------------------------------


def test_digests_of_a_known_body() -> None:
    # sha256("") is a well-known constant.
    assert body_digest(b"") == "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert content_digest(b"") == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"


def test_sign_request_sends_mastodon_shaped_headers(rsa_key) -> None:
    headers = sign_request(
        "POST", INBOX_URL, BODY, KEY_ID, rsa_key, {"Content-Type": "application/activity+json"}, now=NOW
    )
    assert headers["Host"] == HOST
    assert headers["Date"] == http_date(NOW)
    assert headers["Digest"] == "SHA-256=" + b64(hashlib.sha256(BODY).digest())
    assert headers["Content-Type"] == "application/activity+json"
    prefix = f'keyId="{KEY_ID}",algorithm="rsa-sha256",headers="(request-target) host date digest",signature="'
    assert headers["Signature"].startswith(prefix)
    raw = base64.b64decode(headers["Signature"][len(prefix) : -1])
    expected = (
        f"(request-target): post {INBOX}\nhost: {HOST}\ndate: {http_date(NOW)}\ndigest: {headers['Digest']}"
    ).encode()
    rsa_key.public_key().verify(raw, expected, padding.PKCS1v15(), hashes.SHA256())


def test_signed_get_has_no_digest_and_keeps_the_query(rsa_key) -> None:
    headers = sign_request("GET", f"https://{HOST}:443/@bob/outbox?page=2", None, KEY_ID, rsa_key, now=NOW)
    assert "Digest" not in headers
    assert headers["Host"] == HOST  # the default port is not part of Host
    assert 'headers="(request-target) host date"' in headers["Signature"]
    signed = check(headers, rsa_key, method="GET", target="/@bob/outbox?page=2", body=b"")
    assert signed.messages[0].startswith(b"(request-target): get /@bob/outbox?page=2\n")


@pytest.mark.parametrize("method, body", [("POST", BODY), ("GET", None)], ids=["post", "get"])
@pytest.mark.parametrize("key_name", ["rsa_key", "ed_key"])
def test_cavage_round_trip(request, key_name, method, body) -> None:
    key = request.getfixturevalue(key_name)
    headers = sign_request(method, INBOX_URL, body, KEY_ID, key, now=NOW)
    signed = check(headers, key, method=method, body=body or b"")
    assert (signed.key_id, signed.scheme) == (KEY_ID, "cavage")


@pytest.mark.parametrize("method, body", [("POST", BODY), ("GET", None)], ids=["post", "get"])
@pytest.mark.parametrize("key_name, alg", [("rsa_key", "rsa-v1_5-sha256"), ("ed_key", "ed25519")])
def test_rfc9421_round_trip(request, key_name, alg, method, body) -> None:
    key = request.getfixturevalue(key_name)
    headers = sign_request_rfc9421(method, INBOX_URL + "?x=1", body, KEY_ID, key, now=NOW)
    covered = '"@method" "@target-uri" "content-digest"' if body else '"@method" "@target-uri"'
    assert headers["Signature-Input"] == f'sig1=({covered});created={int(NOW)};alg="{alg}";keyid="{KEY_ID}"'
    signed = check(headers, key, method=method, target=INBOX + "?x=1", body=body or b"", authority=HOST)
    assert (signed.key_id, signed.scheme, signed.algorithm) == (KEY_ID, "rfc9421", alg)


def test_rfc9421_every_derived_component_and_optional_params(rsa_key) -> None:
    components = ["@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query"]
    components += ["date", "content-type", "content-digest"]
    headers = sign_request_rfc9421(
        "POST", INBOX_URL + "?a=1&b=2", BODY, 'https://alice.example/key"1\\', rsa_key,
        {"Content-Type": "application/activity+json"}, now=NOW,
        components=components, label="fedi", expires=int(NOW) + 60, nonce="n-1", tag="microfedi",
    )  # fmt: skip
    signed = check(headers, rsa_key, target=INBOX + "?a=1&b=2")
    assert signed.key_id == 'https://alice.example/key"1\\'  # quoted and escaped on the wire
    base = signed.messages[0].decode().splitlines()
    assert base[:7] == [
        '"@method": POST',
        f'"@target-uri": https://{HOST}{INBOX}?a=1&b=2',
        f'"@authority": {HOST}',
        '"@scheme": https',
        f'"@request-target": {INBOX}?a=1&b=2',
        f'"@path": {INBOX}',
        '"@query": ?a=1&b=2',
    ]
    assert base[-1].endswith(';nonce="n-1";tag="microfedi"')


def test_rfc9421_signature_input_is_read_as_a_structured_field(rsa_key) -> None:
    headers = sign_request_rfc9421("POST", INBOX_URL, BODY, KEY_ID, rsa_key, now=NOW)
    label, _, value = headers["Signature-Input"].partition("=")
    # Optional whitespace is not part of the signed serialization, and a second,
    # unsigned label is skipped in favour of the one that has a Signature.
    headers["Signature-Input"] = f'other=("@method");keyid="x", {label}=(  {value[1:].replace(" ", "  ", 1)}'
    check(headers, rsa_key)


# --- variants every checker must accept --------------------------------------------


@pytest.mark.parametrize(
    "key_name, algorithm",
    [("rsa_key", "rsa-sha256"), ("rsa_key", "hs2019"), ("rsa_key", None), ("ed_key", "hs2019"), ("ed_key", "ed25519")],
)
def test_accepts_algorithm_names(request, key_name, algorithm) -> None:
    key = request.getfixturevalue(key_name)
    check(cavage_request(key, MASTODON_POST, algorithm=algorithm), key)


def test_accepts_created_and_expires_instead_of_date(ed_key) -> None:
    covered = ["(request-target)", "(created)", "(expires)", "host", "digest"]
    params = {"created": str(int(NOW) - 5), "expires": str(int(NOW) + 300)}
    signed = check(cavage_request(ed_key, covered, algorithm="hs2019", params=params), ed_key)
    assert signed.covered == tuple(covered)


def test_accepts_headers_in_any_order(rsa_key) -> None:
    check(cavage_request(rsa_key, ["digest", "date", "host", "(request-target)"]), rsa_key)


def test_accepts_request_target_with_query(rsa_key) -> None:
    target = INBOX + "?page=1"
    check(cavage_request(rsa_key, MASTODON_POST, target=target), rsa_key, target=target)


def test_accepts_request_target_signed_without_query(rsa_key) -> None:
    signed = check(cavage_request(rsa_key, MASTODON_POST, target=INBOX), rsa_key, target=INBOX + "?page=1")
    assert len(signed.messages) == 2


@pytest.mark.parametrize(
    "digest",
    [
        "SHA-256=" + b64(hashlib.sha256(BODY).digest()),
        "sha-256=" + b64(hashlib.sha256(BODY).digest()),
        "Sha-256=" + b64(hashlib.sha256(BODY).digest()),
        f"SHA-512={b64(hashlib.sha512(BODY).digest())}, SHA-256={b64(hashlib.sha256(BODY).digest())}",
        f"UNIXsum=1234,sha-256={b64(hashlib.sha256(BODY).digest())}",
    ],
)
def test_accepts_digest_spellings(rsa_key, digest) -> None:
    check(cavage_request(rsa_key, MASTODON_POST, headers={"Digest": digest}), rsa_key)


def test_accepts_rfc9530_content_digest(rsa_key) -> None:
    headers = {"Content-Digest": f"sha-256=:{b64(hashlib.sha256(BODY).digest())}:"}
    covered = ["(request-target)", "host", "date", "content-digest"]
    request = cavage_request(rsa_key, covered, headers=headers)
    del request["Digest"]
    check(request, rsa_key)


def test_header_names_in_any_case_and_repeated_headers_joined(rsa_key) -> None:
    covered = MASTODON_POST + ["x-forwarded-for"]
    request = cavage_request(rsa_key, covered, headers={"X-Forwarded-For": "192.0.2.1, 192.0.2.2"})
    pairs = [(name.upper(), value) for name, value in request.items() if name != "X-Forwarded-For"]
    pairs += [("x-forwarded-for", "192.0.2.1"), ("X-Forwarded-For", " 192.0.2.2 ")]
    check(pairs, rsa_key)


def test_accepts_signature_in_authorization_header(rsa_key) -> None:
    request = cavage_request(rsa_key, MASTODON_POST)
    request["Authorization"] = "Signature " + request.pop("Signature")
    check(request, rsa_key)


def test_skew_is_configurable(rsa_key) -> None:
    request = cavage_request(rsa_key, MASTODON_POST, now=NOW - 600)
    check(request, rsa_key)
    with pytest.raises(SignatureError, match="Date is too old"):
        check(request, rsa_key, max_skew=300)


# --- refusals --------------------------------------------------------------------------


def refused(headers, key, match: str, **options) -> None:
    with pytest.raises(SignatureError, match=match):
        check(headers, key, **options)


def test_refuses_unsigned_and_malformed(rsa_key) -> None:
    refused({"Host": HOST, "Date": http_date(NOW)}, rsa_key, "not signed")
    refused({"Signature": 'keyId="x" signature="y"'}, rsa_key, "malformed")
    refused({"Signature": 'algorithm="rsa-sha256",headers="date"'}, rsa_key, "lacks keyId")
    request = cavage_request(rsa_key, MASTODON_POST)
    request["Signature"] = request["Signature"].replace('signature="', 'signature="!!')
    refused(request, rsa_key, "base64")


def test_refuses_tampered_body(rsa_key) -> None:
    request = cavage_request(rsa_key, MASTODON_POST)
    tampered = BODY.replace(b"Follow", b"Block")
    refused(request, rsa_key, "digest does not match", body=tampered)
    # Replacing the Digest too leaves a signature over the old digest.
    request["Digest"] = "SHA-256=" + b64(hashlib.sha256(tampered).digest())
    refused(request, rsa_key, "does not verify", body=tampered)


@pytest.mark.parametrize(
    "name, value", [("Date", http_date(NOW + 1)), ("Host", "evil.example"), ("Digest", "sha-256=" + "A" * 44)]
)
def test_refuses_tampered_header(rsa_key, name, value) -> None:
    request = cavage_request(rsa_key, MASTODON_POST, body=b"")
    request[name] = value
    refused(request, rsa_key, "does not verify|does not match", body=b"")


def test_refuses_other_method_or_path(rsa_key) -> None:
    request = cavage_request(rsa_key, MASTODON_POST)
    refused(request, rsa_key, "does not verify", target="/users/carol/inbox")
    refused(request, rsa_key, "does not verify", method="PUT")


@pytest.mark.parametrize(
    "moment, reason", [(NOW - 3601, "Date is too old"), (NOW + 3601, "Date is in the future")]
)
def test_refuses_date_outside_an_hour(rsa_key, moment, reason) -> None:
    refused(cavage_request(rsa_key, MASTODON_POST, now=moment), rsa_key, reason)


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"created": str(int(NOW) + 3700)}, "created is in the future"),
        ({"created": str(int(NOW) - 3700)}, "created is too old"),
        ({"created": str(int(NOW) - 60), "expires": str(int(NOW) - 1)}, "expired"),
    ],
)
def test_refuses_bad_created_or_expires(ed_key, params, reason) -> None:
    covered = ["(request-target)", "host", "digest"] + [f"({name})" for name in params]
    refused(cavage_request(ed_key, covered, algorithm="hs2019", params=params), ed_key, reason)


@pytest.mark.parametrize(
    "covered, reason",
    [
        (["(request-target)", "host", "date"], "does not cover the body digest"),
        (["(request-target)", "host", "digest"], "neither date nor created"),
        (["host", "date", "digest"], r"does not cover \(request-target\)"),
    ],
)
def test_refuses_weak_coverage(rsa_key, covered, reason) -> None:
    refused(cavage_request(rsa_key, covered), rsa_key, reason)


def test_refuses_covered_values_that_are_not_there(rsa_key) -> None:
    request = cavage_request(rsa_key, MASTODON_POST + ["accept"], headers={"Accept": "application/activity+json"})
    del request["Accept"]
    refused(request, rsa_key, "signed header accept is missing")
    covered = ["(request-target)", "(created)", "host", "digest"]
    request = cavage_request(rsa_key, covered, params={"created": str(int(NOW))})
    request["Signature"] = request["Signature"].replace(f",created={int(NOW)}", "")
    refused(request, rsa_key, "without a valid created")


def test_refuses_wrong_key(rsa_key, other_rsa_key, ed_key) -> None:
    request = cavage_request(rsa_key, MASTODON_POST)
    signed = parse_signed_request("POST", INBOX, request, BODY, now=NOW)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signed_request(signed, other_rsa_key.public_key())
    with pytest.raises(SignatureError, match="key does not fit"):
        verify_signed_request(signed, ed_key.public_key())


def test_refuses_unknown_algorithm_and_digest(rsa_key) -> None:
    refused(cavage_request(rsa_key, MASTODON_POST, algorithm="hmac-sha256"), rsa_key, "not supported")
    md5 = {"Digest": "MD5=" + b64(hashlib.md5(BODY).digest())}
    refused(cavage_request(rsa_key, MASTODON_POST, headers=md5), rsa_key, "no supported algorithm")


def test_rfc9421_refusals(rsa_key, other_rsa_key, ed_key) -> None:
    def signed(**options) -> dict[str, str]:
        return sign_request_rfc9421("POST", INBOX_URL, BODY, KEY_ID, rsa_key, now=NOW, **options)

    refused(signed(), rsa_key, "content-digest does not match", body=BODY + b" ")
    refused(signed(components=["@method", "@target-uri"]), rsa_key, "does not cover the body digest")
    refused(signed(components=["@target-uri", "content-digest"]), rsa_key, "method and target")
    refused(signed(components=["@method", "@authority", "content-digest"]), rsa_key, "method and target")
    refused(signed(), rsa_key, "created is too old", now=NOW + 3601)
    refused(signed(), rsa_key, "created is in the future", now=NOW - 3601)
    refused(signed(expires=int(NOW) - 1), rsa_key, "expired")
    refused(signed(), other_rsa_key, "does not verify")
    refused(signed(), ed_key, "key does not fit")
    refused(signed(), rsa_key, "does not verify", authority="evil.example")
    refused(signed(), rsa_key, "does not verify", scheme="http")
    refused({**signed(), "Signature": "sig2=:AAAA:"}, rsa_key, "no matching Signature")
    refused({**signed(), "Signature-Input": "sig1=(@method)"}, rsa_key, "malformed")

    def tweak(old: str, new: str) -> dict[str, str]:
        headers = signed()
        headers["Signature-Input"] = headers["Signature-Input"].replace(old, new)
        return headers

    refused(tweak('"@method"', '"@method" "@method"'), rsa_key, "more than once")
    refused(tweak('"@method"', '"@method" "@query-param";name="a"'), rsa_key, "component parameters")
    refused(tweak('alg="rsa-v1_5-sha256"', 'alg="hmac-sha256"'), rsa_key, "not supported")
    refused(tweak(f"created={int(NOW)}", 'created="soon"'), rsa_key, "not an integer")


def test_load_public_key_caches_and_refuses_garbage(rsa_key) -> None:
    pem = public_pem(rsa_key)
    assert load_public_key(pem) is load_public_key(pem)
    assert load_public_key(pem).public_numbers() == rsa_key.public_key().public_numbers()
    with pytest.raises(SignatureError, match="not a readable PEM"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


# --- RFC 9421 appendix B test vectors ------------------------------------------------

RFC_KEY_RSA_PSS = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAr4tmm3r20Wd/PbqvP1s2
+QEtvpuRaV8Yq40gjUR8y2Rjxa6dpG2GXHbPfvMs8ct+Lh1GH45x28Rw3Ry53mm+
oAXjyQ86OnDkZ5N8lYbggD4O3w6M6pAvLkhk95AndTrifbIFPNU8PPMO7OyrFAHq
gDsznjPFmTOtCEcN2Z1FpWgchwuYLPL+Wokqltd11nqqzi+bJ9cvSKADYdUAAN5W
Utzdpiy6LbTgSxP7ociU4Tn0g5I6aDZJ7A8Lzo0KSyZYoA485mqcO0GVAdVw9lq4
aOT9v6d+nb4bnNkQVklLQ3fVAvJm+xdDOp9LCNCN48V2pnDOkFV6+U9nV5oyc6XI
2wIDAQAB
-----END PUBLIC KEY-----
"""
RFC_KEY_ED25519 = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----
"""
RFC_CREATED = 1618884473
RFC_BODY = b'{"hello": "world"}'
RFC_HEADERS = {
    "Host": "example.com",
    "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "Content-Type": "application/json",
    "Content-Digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
    "Content-Length": "18",
}


def test_rfc9421_b23_full_coverage_rsa_pss_without_alg() -> None:
    headers = {
        **RFC_HEADERS,
        "Signature-Input": 'sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" '
        '"content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"',
        "Signature": "sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yBiMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+"
        "qRpRRU5p2voTp768ZrCUb38K0fUxN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1pFkh/aYA2HXXZz"
        "NBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJp"
        "vRX2Zbhl5ZJzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==:",
    }
    signed = parse_signed_request(
        "POST", "/foo?param=Value&Pet=dog", headers, RFC_BODY, now=RFC_CREATED, authority="example.com"
    )
    assert signed.algorithm is None  # no alg: the RSA key allows PKCS#1 v1.5 and PSS
    verify_signed_request(signed, load_public_key(RFC_KEY_RSA_PSS))
    with pytest.raises(SignatureError, match="content-digest does not match"):
        parse_signed_request("POST", "/foo", headers, RFC_BODY + b"\n", now=RFC_CREATED)


def test_rfc9421_b26_ed25519() -> None:
    headers = {
        **RFC_HEADERS,
        "Signature-Input": 'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
        ';created=1618884473;keyid="test-key-ed25519"',
        "Signature": "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
    }
    # This example leaves the body unsigned, which an inbox must refuse...
    with pytest.raises(SignatureError, match="does not cover the body digest"):
        parse_signed_request("POST", "/foo?param=Value&Pet=dog", headers, RFC_BODY, now=RFC_CREATED)
    # ...but the signature base can still be checked byte for byte without the body.
    signed = parse_signed_request("POST", "/foo?param=Value&Pet=dog", headers, b"", now=RFC_CREATED)
    verify_signed_request(signed, load_public_key(RFC_KEY_ED25519))


# --- interop: apsig ----------------------------------------------------------------


@pytest.mark.parametrize("method, body", [("POST", BODY), ("GET", b"")], ids=["post", "get"])
def test_apsig_draft_signatures_verify_with_us(rsa_key, method, body) -> None:
    headers = apsig_draft_sign.Signer(
        headers={"Content-Type": "application/activity+json"},
        private_key=rsa_key, method=method, url=INBOX_URL, key_id=KEY_ID, body=body,
    ).sign()  # fmt: skip
    assert check(headers, rsa_key, method=method, body=body, now=None).key_id == KEY_ID
    # apsig also sends the signature as "Authorization: Signature …"; that alone works too.
    del headers["Signature"]
    check(headers, rsa_key, method=method, body=body, now=None)


def test_apsig_signs_the_target_without_query_and_we_accept_it(rsa_key) -> None:
    headers = apsig_draft_sign.Signer(
        headers={}, private_key=rsa_key, method="POST", url=INBOX_URL + "?page=1", key_id=KEY_ID, body=BODY
    ).sign()
    signed = check(headers, rsa_key, target=INBOX + "?page=1", now=None)
    assert b"(request-target): post /users/bob/inbox\n" in signed.messages[1]


@pytest.fixture
def frozen_apsig_clock(monkeypatch) -> int:
    """apsig's RFC 9421 signer reads the clock twice (base, then header); freeze it."""
    moment = int(time.time())

    class FrozenDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.fromtimestamp(moment, tz)

    monkeypatch.setattr(apsig_rfc9421, "dt", types.SimpleNamespace(datetime=FrozenDatetime, timezone=datetime.timezone))
    return moment


def test_apsig_rfc9421_get_verifies_with_us(rsa_key, frozen_apsig_clock) -> None:
    headers = apsig_rfc9421.RFC9421Signer(rsa_key, KEY_ID).sign(
        "GET", INBOX, HOST, {"Host": HOST, "Content-Type": "application/activity+json"}, b""
    )
    signed = check(headers, rsa_key, method="GET", body=b"", now=frozen_apsig_clock)
    assert signed.covered == ("date", "@method", "@path", "@authority", "content-type", "content-length")


def test_apsig_rfc9421_post_is_refused_for_leaving_the_body_unsigned(rsa_key, frozen_apsig_clock) -> None:
    headers = apsig_rfc9421.RFC9421Signer(rsa_key, KEY_ID).sign(
        "POST", INBOX, HOST, {"Host": HOST, "Content-Type": "application/activity+json"}, BODY
    )
    refused(headers, rsa_key, "does not cover the body digest", now=frozen_apsig_clock)


@pytest.mark.parametrize("method, body", [("POST", BODY), ("GET", None)], ids=["post", "get"])
def test_our_cavage_signatures_verify_with_apsig(rsa_key, method, body) -> None:
    headers = sign_request(method, INBOX_URL, body, KEY_ID, rsa_key)
    verifier = apsig_draft_verify.Verifier(public_pem(rsa_key), method, INBOX_URL, headers, body)
    assert verifier.verify(raise_on_fail=True) == KEY_ID


@pytest.mark.parametrize("key_name", ["rsa_key", "ed_key"])
def test_our_rfc9421_signatures_verify_with_apsig(request, key_name) -> None:
    key = request.getfixturevalue(key_name)
    # apsig rebuilds only @method, @path, @authority and header fields.
    components = ["@method", "@path", "@authority", "content-digest"]
    headers = sign_request_rfc9421("POST", INBOX_URL, BODY, KEY_ID, key, components=components)
    verifier = apsig_rfc9421.RFC9421Verifier(key.public_key(), "POST", INBOX, HOST, headers, BODY)
    assert verifier.verify(raise_on_fail=True) == KEY_ID


# --- interop: bovine ----------------------------------------------------------------


class CapturingSession:
    """Stands in for aiohttp.ClientSession at the HTTP boundary: keeps what bovine sends."""

    async def get(self, url, headers, allow_redirects):
        self.sent = headers

    async def post(self, url, data, headers):
        self.sent = headers


@pytest.mark.parametrize(
    "digest_method",
    [
        bovine_signed_http.legacy_digest_method,  # "sha-256=…"
        bovine_signed_http.legacy_digest_method_uppercase,  # "SHA-256=…"
        bovine_helper.content_digest_sha256_rfc_9530,  # Content-Digest
    ],
)
def test_bovine_posts_verify_with_us(rsa_key, digest_method) -> None:
    session = CapturingSession()
    secret = bovine_types.CryptographicSecret(KEY_ID, rsa_key)
    asyncio.run(bovine_methods.signed_post(session, secret, INBOX_URL, BODY.decode(), digest_method))
    signed = check(session.sent, rsa_key, now=None)
    assert signed.covered == ("(request-target)", "host", "date", digest_method(BODY)[0], "content-type")


def test_bovine_get_with_query_verifies_with_us(rsa_key) -> None:
    session = CapturingSession()
    secret = bovine_types.CryptographicSecret(KEY_ID, rsa_key)
    asyncio.run(bovine_methods.signed_get(session, secret, INBOX_URL + "?page=true"))
    check(session.sent, rsa_key, method="GET", target=INBOX + "?page=true", body=b"", now=None)


def bovine_validates(method: str, headers: dict[str, str], body: bytes, key) -> str | None:
    async def retrieve(key_id):
        assert key_id == KEY_ID
        return bovine_types.CryptographicIdentifier("https://alice.example/@alice", key.public_key())

    async def read_body():
        return body

    # bovine expects a framework's case-insensitive headers; lower-case keys stand in.
    lowered = {name.lower(): value for name, value in headers.items()}
    validate = bovine_crypto.build_validate_http_signature_raw(retrieve)
    return asyncio.run(validate(method, INBOX_URL, lowered, read_body))


@pytest.mark.parametrize("method, body", [("POST", BODY), ("GET", None)], ids=["post", "get"])
def test_our_cavage_signatures_verify_with_bovine(rsa_key, method, body) -> None:
    headers = sign_request(method, INBOX_URL, body, KEY_ID, rsa_key)
    assert bovine_validates(method, headers, body or b"", rsa_key) == "https://alice.example/@alice"
    headers["Date"] = http_date(time.time() + 1)
    assert bovine_validates(method, headers, body or b"", rsa_key) is None
