"""auth.http failure modes against a real HTTP service: every one is AuthUnavailable, never a login.

Also: timeouts are bounded, a slow service does not block other requests, and
the connection pool is bounded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from xmppd_auth import scram
from xmppd_auth.base import AuthUnavailable, CertFacts
from xmppd_auth.http import MAX_BODY_BYTES, HttpAuth
from tests.support.http_auth_service import AuthService, Fixed, Mode
from tests.support.pki import PKIFactory

D = "localhost"
TIMEOUT_MS = 400
#: generous slack for a shared 2-core machine: this is a correctness bound, not a benchmark
SLACK_S = 1.0


def cert_facts(der: bytes = b"\x30\x03\x02\x01\x01") -> CertFacts:
    now = dt.datetime.now(dt.timezone.utc)
    return CertFacts(der=der, fingerprint_sha256="00" * 32, serial=1, subject="CN=a", issuer="CN=ca",
                     not_before=now, not_after=now, xmpp_addrs=("alice@localhost",))


@pytest.fixture
async def service():
    svc = AuthService(slow_s=5.0)
    await svc.start()
    svc.add_user("alice", D, password="pw")
    yield svc
    await svc.stop()


@pytest.fixture
async def make_method(service):
    made: list[HttpAuth] = []

    async def make(**options) -> HttpAuth:
        options.setdefault("host", service.url)
        options.setdefault("request_timeout", TIMEOUT_MS)
        m = HttpAuth(options, {"scram_iterations": scram.MIN_ITERATIONS})
        await m.start()
        made.append(m)
        return m

    yield make
    for m in made:
        await m.stop()


@pytest.fixture
async def http(make_method):
    return await make_method()


CALLS = {
    "check_password": lambda m: m.check_password("alice", D, "pw"),
    "user_exists": lambda m: m.user_exists("alice", D),
    "get_password": lambda m: m.get_scram("alice", D, "sha256"),
    "get_certs": lambda m: m.authorize_cert("alice", D, cert_facts()),
    "register": lambda m: m.register("carol", D, "pw"),
    "set_password": lambda m: m.set_password("alice", D, "pw2"),
    "remove_user": lambda m: m.remove_user("alice", D),
}
OPS = list(CALLS)


# -- every endpoint, every failure mode ----------------------------------------------------

@pytest.mark.parametrize("op", OPS)
async def test_server_error_500_is_unavailable_naming_operation_and_status(service, http, op):
    service.set_mode(op, Mode.ERROR_500)
    with pytest.raises(AuthUnavailable) as err:
        await CALLS[op](http)
    assert err.value.reason == f"http: {op}: service answered HTTP 500 (server error)"


@pytest.mark.parametrize("op", OPS)
async def test_status_outside_the_contract_is_unavailable(service, http, op):
    service.set_mode(op, Mode.WRONG_STATUS)
    with pytest.raises(AuthUnavailable, match=f"http: {op}: service answered HTTP 418"):
        await CALLS[op](http)


@pytest.mark.parametrize("op", OPS)
async def test_redirect_is_not_followed_and_is_unavailable(service, http, op):
    service.set_mode(op, Fixed(302, ""))
    with pytest.raises(AuthUnavailable, match="HTTP 302"):
        await CALLS[op](http)


@pytest.mark.parametrize("op", OPS)
async def test_400_is_unavailable_and_quotes_the_services_reason(service, http, op):
    service.set_mode(op, Fixed(400, "database\x00 is down"))
    with pytest.raises(AuthUnavailable) as err:
        await CALLS[op](http)
    assert err.value.reason == f"http: {op}: service reported an error (HTTP 400): database? is down"


@pytest.mark.parametrize("op", OPS)
async def test_timeout_is_unavailable_within_the_timeout_plus_slack(service, http, op):
    service.set_mode(op, Mode.SLOW)
    t0 = time.monotonic()
    with pytest.raises(AuthUnavailable) as err:
        await CALLS[op](http)
    elapsed = time.monotonic() - t0
    assert err.value.reason == f"http: {op} timed out after {TIMEOUT_MS} ms"
    assert TIMEOUT_MS / 1000 * 0.9 <= elapsed < TIMEOUT_MS / 1000 + SLACK_S


@pytest.mark.parametrize("op", OPS)
async def test_body_declared_larger_than_the_limit_is_unavailable(service, http, op):
    service.set_mode(op, Mode.HUGE_DECLARED)
    with pytest.raises(AuthUnavailable, match=f"http: {op}: body of {service.huge_bytes} bytes exceeds"):
        await CALLS[op](http)


@pytest.mark.parametrize("op", OPS)
async def test_body_without_content_length_is_read_but_capped(service, http, op):
    service.set_mode(op, Mode.HUGE)
    with pytest.raises(AuthUnavailable, match=f"http: {op}: body exceeds the {MAX_BODY_BYTES}-byte limit"):
        await CALLS[op](http)


async def test_normal_answer_without_content_length_is_still_read(service, http, caplog):
    service.set_mode_all(Mode.NO_CONTENT_LENGTH)
    assert await http.check_password("alice", D, "pw") is True
    assert await http.user_exists("nobody", D) is False
    assert (await http.get_scram("alice", D, "sha1")) is not None
    assert "without Content-Length" in caplog.text  # warned (once)


async def test_body_exactly_at_the_limit_is_accepted(service, http):
    service.set_mode("get_password", Fixed(200, "p" * MAX_BODY_BYTES))
    creds = await http.get_scram("alice", D, "sha1")
    assert creds is not None


@pytest.mark.parametrize("body", ["maybe", "TRUE", "1", "", "true false", "yes"])
async def test_check_password_answer_other_than_true_or_false_is_unavailable_never_a_login(service, http, body):
    service.set_mode("check_password", Fixed(200, body))
    with pytest.raises(AuthUnavailable, match="http: check_password answered .* expected 'true' or 'false'"):
        await http.check_password("alice", D, "pw")


async def test_user_exists_malformed_answer_is_unavailable(service, http):
    service.set_mode("user_exists", Mode.MALFORMED)
    with pytest.raises(AuthUnavailable, match="user_exists answered 'maybe'"):
        await http.user_exists("alice", D)


async def test_non_utf8_body_is_unavailable(service, http):
    service.set_mode("check_password", Fixed(200, b"tr\xffe"))
    with pytest.raises(AuthUnavailable, match="http: check_password: body is not UTF-8"):
        await http.check_password("alice", D, "pw")


@pytest.mark.parametrize("value", [
    "==MULTI_SCRAM==,i=oops",
    "==MULTI_SCRAM==,i=4096",
    "==MULTI_SCRAM==,i=4096,===SHA256===not base64!|x|y",
    "==MULTI_SCRAM==,i=4096,===SHA256===AAAA|AAAA|AAAA",  # keys of the wrong length
    "==MULTI_SCRAM==,i=999999999,===SHA1===QUFBQQ==|" + "A" * 27 + "=|" + "A" * 27 + "=",
    "==SCRAM==,AAAA,AAAA",
])
async def test_malformed_scram_value_is_unavailable_never_a_login(service, http, value):
    service.set_mode("get_password", Fixed(200, value))
    with pytest.raises(AuthUnavailable, match="malformed SCRAM value for alice@localhost"):
        await http.get_scram("alice", D, "sha256")


async def test_empty_password_from_the_service_is_unavailable(service, http):
    service.set_mode("get_password", Fixed(200, ""))
    with pytest.raises(AuthUnavailable, match="empty password"):
        await http.get_scram("alice", D, "sha256")


@pytest.mark.parametrize("body", [
    "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    "this is not PEM",
    "-----BEGIN CERTIFICATE-----\nMIIB\n",
])
async def test_unparsable_pem_from_get_certs_is_unavailable(service, http, body):
    service.set_mode("get_certs", Fixed(200, body))
    with pytest.raises(AuthUnavailable, match="get_certs answered unparsable PEM for alice@localhost"):
        await http.authorize_cert("alice", D, cert_facts())


# -- dead service ---------------------------------------------------------------------------

def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("op", OPS)
async def test_connection_refused_is_unavailable_and_says_so(make_method, op):
    m = await make_method(host=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(AuthUnavailable) as err:
        await CALLS[op](m)
    assert err.value.reason.startswith(f"http: {op} failed: ")
    assert "Cannot connect to host" in err.value.reason
    assert "pass=" not in err.value.reason


async def test_service_that_accepts_but_never_answers_times_out(make_method):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        m = await make_method(host=f"http://127.0.0.1:{listener.getsockname()[1]}")
        t0 = time.monotonic()
        with pytest.raises(AuthUnavailable, match=f"check_password timed out after {TIMEOUT_MS} ms"):
            await m.check_password("alice", D, "pw")
        assert time.monotonic() - t0 < TIMEOUT_MS / 1000 + SLACK_S
    finally:
        listener.close()


async def test_https_to_a_plain_http_service_is_unavailable(service, make_method):
    m = await make_method(host=service.url.replace("http://", "https://"))
    with pytest.raises(AuthUnavailable, match="http: user_exists failed: "):
        await m.user_exists("alice", D)


# -- concurrency and bounds ----------------------------------------------------------------------

async def test_a_slow_request_does_not_block_a_concurrent_fast_request(service, make_method):
    http = await make_method(request_timeout=3000)
    service.set_mode("get_password", Mode.SLOW)
    slow = asyncio.create_task(http.get_scram("alice", D, "sha256"))
    await service.wait_for_request("get_password")
    t0 = time.monotonic()
    assert await http.check_password("alice", D, "pw") is True
    assert await http.user_exists("alice", D) is True
    assert time.monotonic() - t0 < 1.0
    assert not slow.done()
    with pytest.raises(AuthUnavailable, match="get_password timed out after 3000 ms"):
        await slow


async def test_many_slow_requests_all_time_out_together_not_one_after_another(service, make_method):
    http = await make_method(pool_size=20)
    service.set_mode("user_exists", Mode.SLOW)
    t0 = time.monotonic()
    results = await asyncio.gather(*(http.user_exists(f"u{i}", D) for i in range(10)), return_exceptions=True)
    assert all(isinstance(r, AuthUnavailable) for r in results)
    assert time.monotonic() - t0 < TIMEOUT_MS / 1000 + SLACK_S


async def test_pool_size_bounds_simultaneous_connections(service, make_method):
    http = await make_method(pool_size=2, request_timeout=3000)
    service.slow_s = 0.3
    service.set_mode("user_exists", Mode.SLOW)
    results = await asyncio.gather(*(http.user_exists("alice", D) for _ in range(6)), return_exceptions=True)
    assert results == [True] * 6
    assert service.max_in_flight == 2


async def test_waiting_for_a_pooled_connection_counts_against_the_timeout(service, make_method):
    http = await make_method(pool_size=1)
    service.set_mode("get_password", Mode.SLOW)
    http._timeout_s = 5.0  # the occupier alone gets a long timeout, so the one slot stays busy
    occupier = asyncio.create_task(http.get_scram("alice", D, "sha256"))
    await service.wait_for_request("get_password")
    http._timeout_s = TIMEOUT_MS / 1000
    t0 = time.monotonic()
    with pytest.raises(AuthUnavailable, match=f"user_exists timed out after {TIMEOUT_MS} ms"):
        await http.user_exists("alice", D)
    assert time.monotonic() - t0 < TIMEOUT_MS / 1000 + SLACK_S
    assert service.calls("user_exists") == []  # it never got a connection
    occupier.cancel()


async def test_the_method_recovers_when_the_service_recovers(service, http):
    service.set_mode("check_password", Mode.ERROR_500)
    with pytest.raises(AuthUnavailable):
        await http.check_password("alice", D, "pw")
    service.set_mode("check_password", Mode.SLOW)
    with pytest.raises(AuthUnavailable):
        await http.check_password("alice", D, "pw")
    service.set_mode("check_password", Mode.NORMAL)
    assert await http.check_password("alice", D, "pw") is True


async def test_a_certificate_differing_in_one_byte_is_not_registered(service, http, tmp_path):
    c = PKIFactory(tmp_path).client("x", xmpp_addrs=["alice@localhost"])
    service.users[("alice", D)].certs = [c.x509.public_bytes(Encoding.PEM).decode()]
    der = c.x509.public_bytes(Encoding.DER)
    assert (await http.authorize_cert("alice", D, cert_facts(der))).ok
    decision = await http.authorize_cert("alice", D, cert_facts(der[:-1] + bytes([der[-1] ^ 1])))
    assert not decision.ok and decision.reason == "cert-not-registered"
