"""auth.http end to end: a real xmppd asks a real HTTP auth service; slixmpp logs in."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from xmppd_auth import scram
from tests.support.http_auth_service import AuthService, Mode

from .harness import AuthFailed

D = "localhost"


def audit_records(server) -> list[dict]:
    return [json.loads(line) for line in server.config.audit.file.read_text().splitlines()]


def auth_records(server) -> list[dict]:
    return [r for r in audit_records(server) if r["event"] == "auth"]


def pem(cert) -> str:
    return cert.x509.public_bytes(Encoding.PEM).decode()


@pytest.fixture
async def service():
    svc = AuthService(slow_s=8.0)
    await svc.start()
    yield svc
    await svc.stop()


def http_overrides(service, methods=("http",), **options) -> dict:
    return {"auth": {"methods": list(methods), "http": {"host": service.url, **options}}}


async def test_scram_login_with_a_plaintext_password_user(make_server, clients, service):
    service.add_user("dave", D, password="plain horse")
    server = await make_server(http_overrides(service))
    dave = await clients("dave@localhost", "plain horse").login(server.listener_port(0))
    assert str(dave.boundjid.bare) == "dave@localhost"
    rec = auth_records(server)[-1]
    assert rec["result"] == "success" and rec["mechanism"].startswith("SCRAM-SHA-")
    assert rec["auth_method"] == "http"
    assert service.calls("get_password")[0].params == {"user": "dave", "server": D, "pass": ""}
    assert "plain horse" not in server.config.audit.file.read_text()


async def test_scram_login_with_a_multi_scram_user(make_server, clients, service):
    stored = scram.serialize(scram.new_credentials("scram horse", ["sha1", "sha256", "sha512"], 4096))
    service.add_user("frank", D, password=stored)
    server = await make_server(http_overrides(service))
    frank = await clients("frank@localhost", "scram horse", direct_tls=True).login(server.listener_port(1))
    assert str(frank.boundjid.bare) == "frank@localhost"
    assert auth_records(server)[-1]["auth_method"] == "http"


async def test_wrong_password_is_not_authorized(make_server, clients, service):
    service.add_user("dave", D, password="plain horse")
    server = await make_server(http_overrides(service))
    c = clients("dave@localhost", "wrong horse", mechanisms=["SCRAM-SHA-256"])
    with pytest.raises(AuthFailed) as err:
        await c.login(server.listener_port(0))
    assert err.value.condition == "not-authorized"
    rec = auth_records(server)[-1]
    assert rec["result"] == "failure" and rec["condition"] == "not-authorized"


async def test_account_registered_through_the_server_logs_in(make_server, clients, service):
    server = await make_server(http_overrides(service))
    assert await server.auth_chain.register("gina", D, "reg horse")
    sent = service.calls("register")[0].params["pass"]
    assert sent.startswith("==MULTI_SCRAM==") and "reg horse" not in sent
    gina = await clients("gina@localhost", "reg horse").login(server.listener_port(0))
    assert str(gina.boundjid.bare) == "gina@localhost"


async def test_external_succeeds_only_while_the_service_returns_the_certificate(make_server, clients,
                                                                                 service, pki):
    cert = pki.client("carl-http", xmpp_addrs=["carl@localhost"])
    rec = service.add_user("carl", D, certs=[pem(pki.client("carl-http-old", xmpp_addrs=["carl@localhost"])),
                                             pem(cert)])
    server = await make_server(http_overrides(service))
    carl = await clients("carl@localhost", cert=cert, mechanisms=["EXTERNAL"]).login(server.listener_port(0))
    assert str(carl.boundjid.bare) == "carl@localhost"
    ok = auth_records(server)[-1]
    assert ok["mechanism"] == "EXTERNAL" and ok["result"] == "success" and ok["auth_method"] == "http"
    assert ok["cert_fingerprint"] == cert.fingerprint_sha256

    rec.certs = rec.certs[:1]  # the service revokes it by no longer returning it
    c = clients("carl@localhost", cert=cert, mechanisms=["EXTERNAL"])
    with pytest.raises(AuthFailed) as err:
        await c.login(server.listener_port(0))
    assert err.value.condition == "not-authorized"
    assert "cert-not-registered" in err.value.text
    refused = auth_records(server)[-1]
    assert refused["result"] == "failure" and refused["reason"] == "cert-not-registered"
    assert refused["cert_fingerprint"] == cert.fingerprint_sha256


async def test_slow_service_gives_temporary_auth_failure_while_a_cert_login_proceeds(make_server, clients,
                                                                                      service, pki):
    service.add_user("dave", D, password="plain horse")
    service.set_mode("get_password", Mode.SLOW)
    server = await make_server(http_overrides(service, methods=("http", "pki"), request_timeout=3000))
    dave = clients("dave@localhost", "plain horse", mechanisms=["SCRAM-SHA-256"])
    dave_login = asyncio.create_task(dave.login(server.listener_port(0)))
    await service.wait_for_request("get_password")  # dave's login is now stuck on the service

    erin_cert = pki.client("erin-http", xmpp_addrs=["erin@localhost"])
    t0 = time.monotonic()
    erin = clients("erin@localhost", cert=erin_cert, mechanisms=["EXTERNAL"])
    await erin.login(server.listener_port(0))
    erin_took = time.monotonic() - t0
    assert str(erin.boundjid.bare) == "erin@localhost"
    assert not dave_login.done(), f"cert login took {erin_took:.2f}s and waited for the slow service"
    assert auth_records(server)[-1]["auth_method"] == "pki"

    with pytest.raises(AuthFailed) as err:
        await dave_login
    assert err.value.condition == "temporary-auth-failure"
    assert "try again later" in err.value.text
    assert "3000 ms" not in err.value.text  # backend internals stay out of the client's view
    failed = [r for r in auth_records(server) if r["result"] == "failure"]
    assert failed and failed[-1]["condition"] == "temporary-auth-failure"
    assert failed[-1]["reason"] == "backend-unavailable"
    assert "get_password timed out after 3000 ms" in failed[-1]["detail"]  # the audit log says why
    assert "http: http:" not in failed[-1]["detail"]
    assert "plain horse" not in server.config.audit.file.read_text()


async def test_dead_service_gives_temporary_auth_failure(make_server, clients, service):
    service.add_user("dave", D, password="plain horse")
    server = await make_server(http_overrides(service))
    await service.stop()
    c = clients("dave@localhost", "plain horse", mechanisms=["SCRAM-SHA-256"])
    with pytest.raises(AuthFailed) as err:
        await c.login(server.listener_port(0))
    assert err.value.condition == "temporary-auth-failure"
    detail = [r for r in auth_records(server) if r["result"] == "failure"][-1]["detail"]
    assert "get_password failed" in detail
