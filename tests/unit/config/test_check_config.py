"""``xmppd check-config`` refuses what ``xmppd run`` would refuse, and says all of it at once.

Every test runs the real command in a subprocess on real files.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from xmppd.pki import build_crl, create_ca, issue_server_cert, write_crl, write_private_key

from .cli_support import make_pki, xmppd

LISTENER = """
[[listen.c2s]]
port = 5222
tls.certfile = "certs/server.pem"
tls.keyfile = "certs/server.key"
tls.cacertfile = "certs/ca.pem"
"""


def check(tmp_path: Path, text: str):
    (tmp_path / "x.toml").write_text(text)
    return xmppd(tmp_path, "check-config", "x.toml")


def error_lines(r) -> list[str]:
    return [l for l in r.stderr.splitlines() if l.startswith("xmppd: config error: ")]


def test_check_config_accepts_a_config_whose_files_load(tmp_path):
    make_pki(tmp_path)
    r = check(tmp_path, LISTENER)
    assert r.returncode == 0, r.stderr
    assert "x.toml: OK" in r.stdout


def test_check_config_reports_every_schema_error_at_once_each_with_its_key(tmp_path):
    make_pki(tmp_path)
    r = check(tmp_path, '[general]\nhosts = ["Bad_Host"]\nloglvl = "info"\n' + LISTENER
              + 'tls.verify_mode = "sometimes"\n' + LISTENER.replace("5222", "70000"))
    assert r.returncode == 2
    keys = [l.split(": ")[2] for l in error_lines(r)]
    assert set(keys) == {"general.hosts", "general.loglvl", "listen.c2s[0].tls.verify_mode", "listen.c2s[1].port"}


def test_check_config_refuses_a_missing_certificate_file(tmp_path):
    make_pki(tmp_path)
    (tmp_path / "certs/server.pem").unlink()
    r = check(tmp_path, LISTENER)
    assert r.returncode == 2
    assert any("listen.c2s[0].tls.certfile" in l and "server.pem" in l for l in error_lines(r)), r.stderr


def test_check_config_refuses_a_broken_pem_certificate(tmp_path):
    make_pki(tmp_path)
    (tmp_path / "certs/server.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                                               "-----END CERTIFICATE-----\n")
    r = check(tmp_path, LISTENER)
    assert r.returncode == 2
    assert any("listen.c2s[0].tls.certfile" in l for l in error_lines(r)), r.stderr


def test_check_config_refuses_a_key_that_does_not_match_the_certificate(tmp_path):
    ca = make_pki(tmp_path)
    write_private_key(tmp_path / "certs/server.key", issue_server_cert(ca, ["localhost"]).key)
    r = check(tmp_path, LISTENER)
    assert r.returncode == 2
    assert any(l.startswith("xmppd: config error: listen.c2s[0].tls.keyfile:") and "does not match" in l
               for l in error_lines(r)), r.stderr


def test_check_config_refuses_a_file_that_is_not_a_private_key(tmp_path):
    make_pki(tmp_path)
    (tmp_path / "certs/server.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    r = check(tmp_path, LISTENER)
    assert r.returncode == 2
    assert any("listen.c2s[0].tls.keyfile" in l for l in error_lines(r)), r.stderr


def test_check_config_refuses_a_broken_ca_bundle(tmp_path):
    make_pki(tmp_path)
    (tmp_path / "certs/ca.pem").write_bytes(b"\x00\x01 not a certificate")
    r = check(tmp_path, LISTENER)
    assert r.returncode == 2
    assert any("listen.c2s[0].tls.cacertfile" in l for l in error_lines(r)), r.stderr


def test_check_config_refuses_a_broken_and_a_foreign_crl(tmp_path):
    make_pki(tmp_path)
    (tmp_path / "certs/broken.crl").write_text("-----BEGIN X509 CRL-----\nxx\n-----END X509 CRL-----\n")
    r = check(tmp_path, LISTENER + 'tls.crl_files = ["certs/broken.crl"]\n')
    assert r.returncode == 2
    assert any("listen.c2s[0].tls.crl_files" in l for l in error_lines(r)), r.stderr

    other = create_ca("another CA")
    write_crl(tmp_path / "certs/other.crl", build_crl(other, [(1234, _dt.datetime.now(_dt.timezone.utc))]))
    r = check(tmp_path, LISTENER + 'tls.crl_files = ["certs/other.crl"]\n')
    assert r.returncode == 2
    assert any("listen.c2s[0].tls.crl_files" in l and "not in cacertfile" in l for l in error_lines(r)), r.stderr


def test_check_config_refuses_an_ill_formed_auth_http_host(tmp_path):
    make_pki(tmp_path)
    for host in ("ftp://auth.example", "https://auth.example/path", "https://auth.example:99999", "auth:8000"):
        r = check(tmp_path, LISTENER + f'[auth]\nmethods = ["http"]\n[auth.http]\nhost = "{host}"\n')
        assert r.returncode == 2, host
        assert any(l.startswith("xmppd: config error: auth.http.host:") for l in error_lines(r)), (host, r.stderr)


def test_check_config_reports_file_auth_and_module_errors_in_one_run(tmp_path):
    make_pki(tmp_path)
    (tmp_path / "certs/server.key").unlink()
    r = check(tmp_path, LISTENER + LISTENER.replace("certs/ca.pem", "certs/missing-ca.pem")
              + '[auth]\nmethods = ["pki", "http"]\n[auth.http]\nhost = "https://auth.example/x"\n'
              + "[modules.offline]\nmax_per_user = 0\n")
    assert r.returncode == 2
    keys = {l.split(": ")[2] for l in error_lines(r)}
    assert {"listen.c2s[0].tls.keyfile", "listen.c2s[1].tls.keyfile", "listen.c2s[1].tls.cacertfile",
            "auth.http.host", "modules.offline.max_per_user"} <= keys, r.stderr
    assert "Traceback" not in r.stderr


def test_check_config_names_the_key_of_an_unusable_ldap_ca_bundle(tmp_path):
    make_pki(tmp_path)
    (tmp_path / "ldap-ca.pem").write_text("garbage")
    r = check(tmp_path, LISTENER + '[auth]\nmethods = ["pki", "ldap"]\n[auth.ldap]\nbase = "dc=example"\n'
              'tls = true\ncacertfile = "ldap-ca.pem"\n')
    assert r.returncode == 2
    assert any(l.startswith("xmppd: config error: auth.ldap.cacertfile:") for l in error_lines(r)), r.stderr


def test_check_config_only_warns_about_a_ca_file_that_verify_mode_none_does_not_use(tmp_path):
    make_pki(tmp_path)
    r = check(tmp_path, LISTENER.replace("certs/ca.pem", "certs/nothing.pem") + 'tls.verify_mode = "none"\n')
    assert r.returncode == 0, r.stderr
    assert "warning: listen.c2s[0].tls.cacertfile" in r.stderr


def test_check_config_warns_about_an_expired_crl(tmp_path):
    ca = make_pki(tmp_path)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = _dt.datetime.now(_dt.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
           .last_update(now - _dt.timedelta(days=2)).next_update(now - _dt.timedelta(days=1))
           .sign(ca.key, hashes.SHA256()))
    write_crl(tmp_path / "certs/ca.crl", crl)
    r = check(tmp_path, LISTENER + 'tls.crl_files = ["certs/ca.crl"]\n')
    assert r.returncode == 0, r.stderr
    assert "warning: listen.c2s[0].tls.crl_files: item 0:" in r.stderr and r.stderr.count("expired on") == 1


def test_run_exits_2_naming_every_config_error(tmp_path):
    make_pki(tmp_path)
    (tmp_path / "x.toml").write_text('[general]\nloglvl = "info"\nlanguage = "en"\n' + LISTENER
                                     + 'tls.verify_mode = "sometimes"\n[modules.mod_mucc]\n')
    r = xmppd(tmp_path, "run", "--config", "x.toml")
    assert r.returncode == 2
    for key in ("general.loglvl", "listen.c2s[0].tls.verify_mode", "modules.mod_mucc"):
        assert f"  {key}: " in r.stderr, r.stderr
    assert r.stderr.startswith("xmppd: config error: 3 errors:")
    assert "Traceback" not in r.stderr


def test_check_config_exits_2_on_a_toml_syntax_error_naming_the_file(tmp_path):
    (tmp_path / "x.toml").write_text("[general\n")
    r = xmppd(tmp_path, "check-config", "x.toml")
    assert r.returncode == 2
    assert "config error: x.toml: TOML syntax error" in r.stderr
