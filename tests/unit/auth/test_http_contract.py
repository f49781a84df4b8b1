"""auth.http against a real HTTP service: configuration and the MongooseIM contract.

Failure modes (timeouts, 5xx, malformed and oversize bodies) are in
test_http_failures.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from xmppd_auth import scram
from xmppd_auth.base import SASL_EXTERNAL, SASL_PASSWORD, SASL_SCRAM, AuthConfigError, AuthUnavailable, CertFacts
from xmppd_auth.http import PLAIN_SCRAM_CACHE_ENTRIES, HttpAuth
from xmppd_auth.registry import build_methods
from tests.support.http_auth_service import AuthService, Fixed, Mode
from tests.support.pki import PKIFactory

D = "localhost"
ITER = scram.MIN_ITERATIONS


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKIFactory(tmp_path_factory.mktemp("pki-http"))


def facts(cert) -> CertFacts:
    x = cert.x509
    return CertFacts(der=x.public_bytes(Encoding.DER), fingerprint_sha256=cert.fingerprint_sha256,
                     serial=x.serial_number, subject=x.subject.rfc4514_string(),
                     issuer=x.issuer.rfc4514_string(), not_before=x.not_valid_before_utc,
                     not_after=x.not_valid_after_utc, xmpp_addrs=("alice@localhost",))


def pem(cert) -> str:
    return cert.x509.public_bytes(Encoding.PEM).decode()


@pytest.fixture
async def service():
    svc = AuthService()
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
async def make_method(service):
    made: list[HttpAuth] = []

    async def make(**options) -> HttpAuth:
        options.setdefault("host", service.url)
        m = HttpAuth(options, {"password_hashes": ("sha1", "sha256", "sha512"), "scram_iterations": ITER})
        await m.start()
        made.append(m)
        return m

    yield make
    for m in made:
        await m.stop()


@pytest.fixture
async def http(make_method):
    return await make_method()


# -- configuration ------------------------------------------------------------------

@pytest.mark.parametrize("options, key", [
    ({}, "auth.http.host"),
    ({"host": ""}, "auth.http.host"),
    ({"host": "ftp://auth:21"}, "auth.http.host"),
    ({"host": "auth-service:8000"}, "auth.http.host"),
    ({"host": "http://u:p@auth:8000"}, "auth.http.host"),
    ({"host": "http://auth:8000/api"}, "auth.http.host"),
    ({"host": "http://auth:notaport"}, "auth.http.host"),
    ({"host": "http://auth", "path_prefix": "api/"}, "auth.http.path_prefix"),
    ({"host": "http://auth", "path_prefix": "/api?x=1"}, "auth.http.path_prefix"),
    ({"host": "http://auth", "request_timeout": 0}, "auth.http.request_timeout"),
    ({"host": "http://auth", "request_timeout": "2000"}, "auth.http.request_timeout"),
    ({"host": "http://auth", "request_timeout": True}, "auth.http.request_timeout"),
    ({"host": "http://auth", "pool_size": 0}, "auth.http.pool_size"),
    ({"host": "http://auth", "basic_auth": "nocolon"}, "auth.http.basic_auth"),
    ({"host": "http://auth", "basic_auth": ":secret"}, "auth.http.basic_auth"),
    ({"host": "http://auth", "password_format": "md5"}, "auth.http.password_format"),
    ({"host": "http://auth", "cacertfile": "/nonexistent/ca.pem"}, "auth.http.cacertfile"),
    ({"host": "https://auth", "cacertfile": "/nonexistent/ca.pem"}, "auth.http.cacertfile"),
    ({"host": "http://auth", "connection.host": "http://auth"}, "auth.http.connection.host"),
])
def test_bad_option_is_a_config_error_naming_the_key(options, key):
    with pytest.raises(AuthConfigError) as err:
        HttpAuth(options, {})
    assert err.value.key == key


def test_defaults_follow_mongooseim(tmp_path):
    m = HttpAuth({"host": "https://auth-service:8000"}, {})
    assert m.base_url == "https://auth-service:8000/"
    assert m.request_timeout_ms == 2000 and m.pool_size == 20 and m.password_format == "scram"


def test_path_prefix_gets_a_trailing_slash():
    assert HttpAuth({"host": "http://a:1", "path_prefix": "/auth"}, {}).base_url == "http://a:1/auth/"


def test_cacertfile_is_loaded_at_config_time(pki):
    m = HttpAuth({"host": "https://auth:8443", "cacertfile": str(pki.ca_path)}, {})
    assert m.base_url == "https://auth:8443/"


def test_registry_resolves_http_and_passes_the_section():
    [m] = build_methods(["http"], {"http": {"host": "http://a:1", "pool_size": 3}}, {})
    assert isinstance(m, HttpAuth) and m.pool_size == 3


def test_serves_plain_scram_and_external_and_can_register():
    m = HttpAuth({"host": "http://a:1"}, {})
    assert all(m.supports_sasl(f) for f in (SASL_PASSWORD, SASL_SCRAM, SASL_EXTERNAL))
    assert m.can_register


def test_repr_hides_basic_auth():
    m = HttpAuth({"host": "http://a:1", "basic_auth": "xmppd:hunter2-secret"}, {})
    text = repr(m)
    assert "hunter2" not in text and "xmppd:" not in text and "basic_auth=set" in text
    assert base64.b64encode(b"xmppd:hunter2-secret").decode() not in text


async def test_a_method_that_was_not_started_is_unavailable():
    m = HttpAuth({"host": "http://127.0.0.1:1"}, {})
    with pytest.raises(AuthUnavailable, match="not started"):
        await m.user_exists("alice", D)


# -- request shape ---------------------------------------------------------------------

async def test_get_sends_user_server_and_pass_in_the_query(service, http):
    service.add_user("alice", D, password="pw")
    await http.check_password("alice", D, "pw")
    await http.user_exists("alice", D)
    await http.get_scram("alice", D, "sha256")
    r = service.calls("check_password")[0]
    assert (r.method, r.path) == ("GET", "/check_password")
    assert r.params == {"user": "alice", "server": D, "pass": "pw"}
    for op in ("user_exists", "get_password"):
        r = service.calls(op)[0]
        assert (r.method, r.path) == ("GET", f"/{op}")
        assert r.params == {"user": "alice", "server": D, "pass": ""}  # pass always sent


async def test_post_sends_all_three_keys_urlencoded(service, make_method):
    http = await make_method(password_format="plain")
    await http.register("bob", D, "pw")
    await http.remove_user("bob", D)
    reg, rem = service.calls("register")[0], service.calls("remove_user")[0]
    assert (reg.method, reg.path, reg.query_string) == ("POST", "/register", "")
    assert reg.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert reg.params == {"user": "bob", "server": D, "pass": "pw"}
    assert rem.params == {"user": "bob", "server": D, "pass": ""}


@pytest.mark.parametrize("password", ["a+b", "a b", "x&pass=y", "100%", "=?#/", "pässwörd ☃", "+ %2B"])
async def test_usernames_and_passwords_are_url_encoded(service, make_method, password):
    http = await make_method(password_format="plain")
    user = "al+ice&x=y"
    service.add_user(user, D, password=password)
    assert await http.check_password(user, D, password) is True
    assert service.calls("check_password")[0].params == {"user": user, "server": D, "pass": password}
    assert await http.set_password(user, D, password + "2")
    assert service.users[(user, D)].password == password + "2"


async def test_path_prefix_is_honoured(make_method):
    svc = AuthService(path_prefix="/api/auth/")
    await svc.start()
    try:
        http = await make_method(host=svc.url, path_prefix="/api/auth")
        svc.add_user("alice", D, password="pw")
        assert await http.user_exists("alice", D)
        assert svc.calls("user_exists")[0].path == "/api/auth/user_exists"
    finally:
        await svc.stop()


async def test_basic_auth_is_sent_as_authorization_header(make_method):
    svc = AuthService(basic_auth="xmppd:s3cret")
    await svc.start()
    try:
        http = await make_method(host=svc.url, basic_auth="xmppd:s3cret")
        svc.add_user("alice", D, password="pw")
        assert await http.check_password("alice", D, "pw")
        want = "Basic " + base64.b64encode(b"xmppd:s3cret").decode()
        assert all(r.headers.get("Authorization") == want for r in svc.requests)
    finally:
        await svc.stop()


async def test_without_the_required_basic_auth_the_service_refuses_and_login_fails(make_method):
    svc = AuthService(basic_auth="xmppd:s3cret")
    await svc.start()
    try:
        http = await make_method(host=svc.url)
        svc.add_user("alice", D, password="pw")
        assert await http.check_password("alice", D, "pw") is False  # 401 not_authorized
        assert "Authorization" not in svc.requests[0].headers
        with pytest.raises(AuthUnavailable, match="401"):
            await http.user_exists("alice", D)
    finally:
        await svc.stop()


async def test_password_is_never_logged(service, make_method, caplog):
    http = await make_method(password_format="plain")
    service.add_user("alice", D, password="pw-never-logged")
    with caplog.at_level(logging.DEBUG):
        await http.check_password("alice", D, "pw-never-logged")
        await http.register("bob", D, "pw-never-logged")
        service.set_mode("check_password", Mode.ERROR_500)
        with pytest.raises(AuthUnavailable) as err:
            await http.check_password("alice", D, "pw-never-logged")
    assert "pw-never-logged" not in caplog.text and "pw-never-logged" not in err.value.reason


# -- check_password / user_exists ---------------------------------------------------------

async def test_check_password_true_and_false(service, http):
    service.add_user("alice", D, password="right")
    assert await http.check_password("alice", D, "right") is True
    assert await http.check_password("alice", D, "wrong") is False
    assert await http.check_password("nobody", D, "right") is False


async def test_check_password_with_empty_password_is_false_without_asking(service, http):
    assert await http.check_password("alice", D, "") is False
    assert service.requests == []


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_check_password_not_authorized_not_allowed_not_found_are_false(service, http, status):
    service.set_mode("check_password", Fixed(status))
    assert await http.check_password("alice", D, "pw") is False


async def test_user_exists_true_false_and_404(service, http):
    service.add_user("alice", D, password="pw")
    assert await http.user_exists("alice", D) is True
    assert await http.user_exists("bob", D) is False
    service.set_mode("user_exists", Fixed(404))
    assert await http.user_exists("alice", D) is False


@pytest.mark.parametrize("op", ["check_password", "user_exists"])
async def test_boolean_answer_tolerates_surrounding_whitespace(service, http, op):
    service.set_mode(op, Fixed(200, "true\n"))
    call = http.check_password("a", D, "p") if op == "check_password" else http.user_exists("a", D)
    assert await call is True


# -- get_password → SCRAM ---------------------------------------------------------------------

@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha512"])
async def test_get_scram_from_multi_scram_returns_the_stored_keys(service, http, hash_name):
    stored = scram.new_credentials("pw", ["sha1", "sha256", "sha512"], ITER)
    service.add_user("alice", D, password=scram.serialize(stored))
    creds = await http.get_scram("alice", D, hash_name)
    assert creds == stored[hash_name]


async def test_get_scram_hash_missing_from_multi_scram_is_none(service, http):
    service.add_user("alice", D, password=scram.serialize(scram.new_credentials("pw", ["sha256"], ITER)))
    assert await http.get_scram("alice", D, "sha1") is None
    assert await http.get_scram("alice", D, "sha256") is not None
    assert await http.get_scram("alice", D, "md5") is None


async def test_get_scram_accepts_legacy_single_sha1_scram_value(service, http):
    c = scram.derive("pw", "sha1", b"0123456789abcdef", ITER)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    service.add_user("alice", D, password=f"==SCRAM==,{b64(c.stored_key)},{b64(c.server_key)},{b64(c.salt)},{ITER}")
    assert await http.get_scram("alice", D, "sha1") == c
    assert await http.get_scram("alice", D, "sha256") is None


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha512"])
async def test_get_scram_from_plaintext_derives_keys_that_verify_the_password(service, http, hash_name):
    service.add_user("alice", D, password="correct horse")
    creds = await http.get_scram("alice", D, hash_name)
    assert creds.hash_name == hash_name and creds.iterations == scram.DEFAULT_ITERATIONS
    assert len(creds.salt) == 16
    assert scram.verify_password("correct horse", creds)
    assert not scram.verify_password("wrong", creds)


async def test_plaintext_salt_is_stable_per_user_and_differs_between_users(service, http):
    service.add_user("alice", D, password="same")
    service.add_user("bob", D, password="same")
    a1 = await http.get_scram("alice", D, "sha256")
    http._plain_cache.clear()
    a2 = await http.get_scram("alice", D, "sha256")
    b = await http.get_scram("bob", D, "sha256")
    assert a1.salt == a2.salt and a1 == a2
    assert b.salt != a1.salt and b.stored_key != a1.stored_key


async def test_plaintext_derivation_is_cached_and_a_changed_password_is_noticed(service, http, monkeypatch):
    service.add_user("alice", D, password="first")
    runs = []
    real = scram.derive
    monkeypatch.setattr(scram, "derive", lambda *a: runs.append(a[1]) or real(*a))
    first = await http.get_scram("alice", D, "sha256")
    again = await http.get_scram("alice", D, "sha256")
    assert again is first and runs == ["sha256"]
    assert len(service.calls("get_password")) == 2  # the service is still asked each time
    service.users[("alice", D)].password = "second"
    changed = await http.get_scram("alice", D, "sha256")
    assert runs == ["sha256", "sha256"] and scram.verify_password("second", changed)


async def test_plaintext_cache_is_bounded(service, http, monkeypatch):
    monkeypatch.setattr("xmppd_auth.http.PLAIN_SCRAM_CACHE_ENTRIES", 3)
    monkeypatch.setattr("xmppd_auth.http.scram.DEFAULT_ITERATIONS", 1)
    for i in range(5):
        service.add_user(f"u{i}", D, password="pw")
        await http.get_scram(f"u{i}", D, "sha1")
    assert len(http._plain_cache) == 3
    assert [k[0] for k in http._plain_cache] == ["u2", "u3", "u4"]
    assert PLAIN_SCRAM_CACHE_ENTRIES >= 100  # the real bound is a named, sane number


async def test_get_scram_unknown_user_is_none(service, http):
    assert await http.get_scram("nobody", D, "sha256") is None
    assert service.calls("get_password")[0].params["user"] == "nobody"


async def test_concurrent_plaintext_derivations_do_not_block_the_event_loop(service, http):
    service.add_user("alice", D, password="pw")
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    t = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(http.get_scram("alice", D, h) for h in ("sha1", "sha256", "sha512")))
    finally:
        t.cancel()
    assert ticks > 1


# -- get_certs → EXTERNAL -----------------------------------------------------------------

async def test_authorize_cert_accepts_only_a_listed_certificate(service, http, pki):
    mine = pki.client("http-alice", xmpp_addrs=["alice@localhost"])
    other = pki.client("http-other", xmpp_addrs=["alice@localhost"])
    third = pki.client("http-third", xmpp_addrs=["alice@localhost"])
    service.add_user("alice", D, certs=[pem(other), pem(mine)])
    assert (await http.authorize_cert("alice", D, facts(mine))).ok
    assert (await http.authorize_cert("alice", D, facts(other))).ok
    decision = await http.authorize_cert("alice", D, facts(third))
    assert not decision.ok and decision.reason == "cert-not-registered"
    assert service.calls("get_certs")[0].params == {"user": "alice", "server": D, "pass": ""}


async def test_a_certificate_the_service_stops_returning_is_refused(service, http, pki):
    cert = pki.client("http-revoked", xmpp_addrs=["alice@localhost"])
    rec = service.add_user("alice", D, certs=[pem(cert)])
    assert (await http.authorize_cert("alice", D, facts(cert))).ok
    rec.certs.clear()  # the service's way to revoke
    decision = await http.authorize_cert("alice", D, facts(cert))
    assert not decision.ok and decision.reason == "cert-not-registered"


@pytest.mark.parametrize("answer", [Fixed(404), Fixed(200, ""), Fixed(200, "\n"), Fixed(204)])
async def test_no_certificates_refuses_with_cert_not_registered(service, http, pki, answer):
    service.set_mode("get_certs", answer)
    decision = await http.authorize_cert("alice", D, facts(pki.client("http-none", xmpp_addrs=["a@localhost"])))
    assert not decision.ok and decision.reason == "cert-not-registered"


# -- administration --------------------------------------------------------------------------

async def test_register_created_is_true_and_conflict_is_false(service, http):
    assert await http.register("alice", D, "pw") is True
    assert await http.register("alice", D, "other") is False


async def test_register_sends_multi_scram_by_default(service, http):
    await http.register("alice", D, "pw-scram")
    sent = service.calls("register")[0].params["pass"]
    creds = scram.deserialize(sent)
    assert set(creds) == {"sha1", "sha256", "sha512"} and all(c.iterations == ITER for c in creds.values())
    assert scram.verify_password("pw-scram", creds["sha512"]) and "pw-scram" not in sent
    assert await http.check_password("alice", D, "pw-scram")  # the service verifies it


async def test_register_and_set_password_send_plaintext_with_password_format_plain(service, make_method):
    http = await make_method(password_format="plain")
    await http.register("alice", D, "pw1")
    await http.set_password("alice", D, "pw2")
    assert [r.params["pass"] for r in service.requests] == ["pw1", "pw2"]


async def test_register_uses_the_configured_hashes_and_iterations(service):
    m = HttpAuth({"host": service.url}, {"password_hashes": ("sha256",), "scram_iterations": 5000})
    await m.start()
    try:
        await m.register("alice", D, "pw")
    finally:
        await m.stop()
    creds = scram.deserialize(service.calls("register")[0].params["pass"])
    assert list(creds) == ["sha256"] and creds["sha256"].iterations == 5000


@pytest.mark.parametrize("status", [200, 201, 204])
async def test_set_password_done_on_200_201_204(service, http, status):
    service.set_mode("set_password", Fixed(status))
    assert await http.set_password("alice", D, "pw") is True


async def test_set_password_unknown_user_is_false(service, http):
    assert await http.set_password("nobody", D, "pw") is False


@pytest.mark.parametrize("status", [200, 201, 204])
async def test_remove_user_done_on_200_201_204(service, http, status):
    service.set_mode("remove_user", Fixed(status))
    assert await http.remove_user("alice", D) is True


async def test_remove_user_404_is_false_and_403_is_unavailable_not_allowed(service, http):
    assert await http.remove_user("nobody", D) is False
    service.add_user("admin", D, password="pw")
    service.protected.add(("admin", D))
    with pytest.raises(AuthUnavailable, match="not allowed"):
        await http.remove_user("admin", D)
    assert ("admin", D) in service.users


@pytest.mark.parametrize("op, status", [("register", 200), ("register", 204), ("set_password", 409),
                                        ("remove_user", 409), ("user_exists", 201)])
async def test_a_mapped_status_an_operation_does_not_expect_is_unavailable(service, http, op, status):
    service.set_mode(op, Fixed(status))
    calls = {"register": lambda: http.register("a", D, "p"), "set_password": lambda: http.set_password("a", D, "p"),
             "remove_user": lambda: http.remove_user("a", D), "user_exists": lambda: http.user_exists("a", D)}
    with pytest.raises(AuthUnavailable, match=f"http: {op}: unexpected answer HTTP {status}"):
        await calls[op]()


async def test_stop_then_start_again_works(service, http):
    service.add_user("alice", D, password="pw")
    await http.stop()
    with pytest.raises(AuthUnavailable):
        await http.user_exists("alice", D)
    await http.start()
    assert await http.user_exists("alice", D)

