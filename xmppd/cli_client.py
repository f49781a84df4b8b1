"""``xmppd client send|listen``: a minimal XMPP client to try a server out from the shell.

    xmppd client send FROM_JID TO_JID TEXT     log in as FROM_JID, send one chat message, log out
    xmppd client listen JID [--count N]        log in, announce presence (offline messages arrive), print
                                               each message as ``FROM: TEXT`` until N arrived

It is for a first test and for scripts, not a chat program: no roster, no encryption beyond TLS, no
reconnection.  Login: the client certificate under ``--dir``/clients/JID/ (what ``xmppd certs issue`` writes)
with SASL EXTERNAL if it exists, otherwise a password with SCRAM-SHA-512/256/1 (``--password-file``, stdin when
it is not a terminal, or a prompt).  The server certificate is verified against ``--ca`` (default
``certs/ca.pem`` when it exists, else the system's trusted CAs) for the JID's domain.

Spec references: RFC 6120 §5 (STARTTLS), §6 (SASL; EXTERNAL per XEP-0178 with an empty authzid ``=``), §7
(bind); RFC 5802 / RFC 7677 (SCRAM, client side, no channel binding: gs2 flag ``n``); RFC 6121 §4.2 (initial
presence), §5.2.2 (type ``chat``); XEP-0198 acks and XEP-0199 ping as the barrier before logging out.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import getpass
import hashlib
import hmac
import secrets
import socket
import ssl
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .cli_common import EXIT_USAGE, CliError, default_ports, parse_account, port_number, positive_int, read_secret

__all__ = ["add_client_commands", "CONNECT_RETRY_S", "STEP_TIMEOUT_S", "DEFAULT_LISTEN_TIMEOUT_S"]

#: how long a refused TCP connection is retried (the server may still be starting: `xmppd run &`)
CONNECT_RETRY_S = 15.0
#: pause between two connection attempts
CONNECT_RETRY_INTERVAL_S = 0.2
#: longest wait for one answer of the server during login and logout
STEP_TIMEOUT_S = 15.0
#: `client listen` gives up after this many seconds without the messages it waits for (--timeout)
DEFAULT_LISTEN_TIMEOUT_S = 30.0
#: largest stanza accepted from the server
MAX_STANZA_BYTES = 1024 * 1024
#: bytes read from the socket at a time
READ_BYTES = 65536

NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_PING = "urn:xmpp:ping"
NS_SM = "urn:xmpp:sm:3"
_SCRAM = (("SCRAM-SHA-512", "sha512"), ("SCRAM-SHA-256", "sha256"), ("SCRAM-SHA-1", "sha1"))


def _q(ns: str, name: str) -> str:
    return "{%s}%s" % (ns, name)


def _text(elem: ET.Element | None) -> str:
    return "".join(elem.itertext()) if elem is not None else ""


class LoginFailed(CliError):
    pass


# ------------------------------------------------------------------ SCRAM (client side)
class _ScramClient:
    def __init__(self, hash_name: str, username: str, password: str) -> None:
        self.hash_name = hash_name
        self.password = password
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        user = username.replace("=", "=3D").replace(",", "=2C")
        self.first_bare = f"n={user},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode("utf-8")

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode("utf-8")
        attrs = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        nonce, salt, iterations = attrs.get("r", ""), base64.b64decode(attrs.get("s", "")), int(attrs.get("i", "0"))
        if not nonce.startswith(self.nonce) or iterations < 1:
            raise LoginFailed("the server's SCRAM challenge is malformed: is this an XMPP server?")
        salted = hashlib.pbkdf2_hmac(self.hash_name, self.password.encode("utf-8"), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", self.hash_name).digest()
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode("utf-8")
        signature = hmac.new(stored_key, auth_message, self.hash_name).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", self.hash_name).digest()
        self.server_signature = hmac.new(server_key, auth_message, self.hash_name).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode("utf-8")

    def verify(self, additional: bytes) -> bool:
        text = additional.decode("utf-8", "replace")
        return text.startswith("v=") and hmac.compare_digest(base64.b64decode(text[2:]), self.server_signature)


# ------------------------------------------------------------------ the connection
class Client:
    """One logged-in XMPP session over asyncio streams (``await Client.login(...)``)."""

    def __init__(self, jid, *, host: str, port: int, ca: Path | None, cert: Path | None, key: Path | None,
                 password: str | None, direct_tls: bool) -> None:
        self.jid = jid
        self.host, self.port = host, port
        self.ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
        if cert is not None:
            self.ctx.load_cert_chain(str(cert), str(key))
        self.password = password
        self.direct_tls = direct_tls
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.full_jid = ""
        self._events: list = []
        #: stanzas that arrived while waiting for something else (see barrier())
        self._pending: list[ET.Element] = []
        #: stream management enabled (XEP-0198), and the stanzas received since (for <a h=.../>)
        self.sm = False
        self.received = 0

    # -- bytes
    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_RETRY_S
        while True:
            try:
                self.reader, self.writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.ctx if self.direct_tls else None,
                    server_hostname=self.jid.domain if self.direct_tls else None)
                return
            except ConnectionRefusedError:
                if loop.time() >= deadline:
                    raise CliError(f"nothing listens on {self.host} port {self.port} (tried for "
                                   f"{CONNECT_RETRY_S:.0f} s): start the server (`xmppd run`), or give --host/--port")
                await asyncio.sleep(CONNECT_RETRY_INTERVAL_S)
            except socket.gaierror as exc:
                raise CliError(f"cannot resolve {self.host}: {exc.strerror}: give --host") from None

    def send(self, data: bytes | ET.Element) -> None:
        from .xml import serialize

        self.writer.write(serialize(data) if isinstance(data, ET.Element) else data)

    async def _restart(self) -> ET.Element:
        """Open a new stream; return its <stream:features/>."""
        from .xml import StreamOpen, StreamParser, stream_header

        self.parser = StreamParser(max_stanza_bytes=MAX_STANZA_BYTES)
        self._events = []
        self.send(stream_header(from_=None, to=self.jid.domain))
        opened = await self._next_event()
        if not isinstance(opened, StreamOpen):
            raise LoginFailed("the server did not open an XMPP stream: is this an XMPP client port?")
        return await self.next_stanza(STEP_TIMEOUT_S, expect=_q("http://etherx.jabber.org/streams", "features"))

    async def _next_event(self, timeout: float = STEP_TIMEOUT_S):
        from .errors import StreamError

        async with asyncio.timeout(timeout):
            while not self._events:
                data = await self.reader.read(READ_BYTES)
                if not data:
                    raise LoginFailed("the server closed the connection")
                try:
                    self._events.extend(self.parser.feed(data))
                except StreamError as exc:
                    raise LoginFailed(f"the server sent invalid XML ({exc})") from None
        return self._events.pop(0)

    async def next_stanza(self, timeout: float = STEP_TIMEOUT_S, *, expect: str | None = None) -> ET.Element:
        from .xml import Stanza, StreamClose

        event = await self._next_event(timeout)
        if isinstance(event, StreamClose):
            raise LoginFailed("the server closed the stream")
        if not isinstance(event, Stanza):
            raise LoginFailed("unexpected stream restart from the server")
        elem = event.element
        if elem.tag == _q("http://etherx.jabber.org/streams", "error"):
            condition = next((c.tag.split("}")[-1] for c in elem if not c.tag.endswith("}text")), "undefined")
            text = _text(elem.find("{urn:ietf:params:xml:ns:xmpp-streams}text"))
            raise LoginFailed(f"stream error from the server: {condition}" + (f" ({text})" if text else ""))
        if expect is not None and elem.tag != expect:
            raise LoginFailed(f"unexpected answer from the server: <{elem.tag.split('}')[-1]}/>")
        return elem

    # -- login
    async def login(self) -> "Client":
        await self._connect()
        features = await self._restart()
        if not self.direct_tls:
            if features.find(_q(NS_TLS, "starttls")) is None:
                raise LoginFailed("the server does not offer STARTTLS on this port: try --direct-tls")
            self.send(ET.Element(_q(NS_TLS, "starttls")))
            answer = await self.next_stanza()
            if answer.tag != _q(NS_TLS, "proceed"):
                raise LoginFailed("the server refused STARTTLS")
            await self.writer.start_tls(self.ctx, server_hostname=self.jid.domain)
            features = await self._restart()
        offered = [_text(m) for m in features.iter(_q(NS_SASL, "mechanism"))]
        await self._authenticate(offered)
        features = await self._restart()
        if features.find(_q(NS_BIND, "bind")) is None:
            raise LoginFailed("the server offers no resource binding")
        iq = ET.Element(_q(NS_CLIENT, "iq"), {"type": "set", "id": "bind"})
        ET.SubElement(ET.SubElement(iq, _q(NS_BIND, "bind")), _q(NS_BIND, "resource")).text = "xmppd-client"
        self.send(iq)
        result = await self.next_stanza(expect=_q(NS_CLIENT, "iq"))
        if result.get("type") != "result":
            raise LoginFailed("resource binding failed")
        self.full_jid = _text(result.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid"))
        if features.find(_q(NS_SM, "sm")) is not None:
            # XEP-0198 without resumption: the server's <a h='N'/> then says the stanzas it took
            self.send(ET.Element(_q(NS_SM, "enable")))
            answer = await self.next_stanza()
            self.sm = answer.tag == _q(NS_SM, "enabled")
        return self

    async def _authenticate(self, offered: list[str]) -> None:
        if self.password is None:
            if "EXTERNAL" not in offered:
                raise LoginFailed(f"the server does not accept this certificate (no SASL EXTERNAL offered; "
                                  f"offered: {', '.join(offered) or 'nothing'}): `xmppd explain-login {self.jid}` "
                                  "on the server says why")
            self.send(self._auth("EXTERNAL", b"="))
            await self._sasl_result(None)
            return
        for name, hash_name in _SCRAM:
            if name in offered:
                scram = _ScramClient(hash_name, self.jid.local, self.password)
                self.send(self._auth(name, scram.first()))
                challenge = await self.next_stanza()
                if challenge.tag != _q(NS_SASL, "challenge"):
                    self._raise_sasl(challenge)
                resp = ET.Element(_q(NS_SASL, "response"))
                resp.text = base64.b64encode(scram.final(base64.b64decode(_text(challenge)))).decode()
                self.send(resp)
                await self._sasl_result(scram)
                return
        raise LoginFailed(f"no password mechanism this client knows is offered ({', '.join(offered) or 'none'})")

    @staticmethod
    def _auth(mechanism: str, data: bytes) -> ET.Element:
        auth = ET.Element(_q(NS_SASL, "auth"), {"mechanism": mechanism})
        auth.text = base64.b64encode(data).decode() if data != b"=" else "="
        return auth

    async def _sasl_result(self, scram: _ScramClient | None) -> None:
        answer = await self.next_stanza()
        if answer.tag != _q(NS_SASL, "success"):
            self._raise_sasl(answer)
        if scram is not None and not scram.verify(base64.b64decode(_text(answer) or "")):
            raise LoginFailed("the server's SCRAM signature is wrong: this is not the server holding the account")

    def _raise_sasl(self, answer: ET.Element):
        condition = next((c.tag.split("}")[-1] for c in answer if not c.tag.endswith("}text")), "failure")
        text = _text(answer.find(_q(NS_SASL, "text")))
        how = "password" if self.password is not None else "certificate"
        raise LoginFailed(f"login as {self.jid} with a {how} failed: {condition}"
                          + (f" ({text})" if text else "")
                          + f": check the {how}, or run `xmppd explain-login {self.jid}` on the server")

    # -- after login
    def presence(self) -> None:
        self.send(ET.Element(_q(NS_CLIENT, "presence")))

    def message(self, to: str, body: str) -> None:
        msg = ET.Element(_q(NS_CLIENT, "message"), {"to": to, "type": "chat", "id": secrets.token_hex(6)})
        ET.SubElement(msg, _q(NS_CLIENT, "body")).text = body
        self.send(msg)

    async def _next_after_login(self, timeout: float = STEP_TIMEOUT_S) -> ET.Element:
        """The next stanza; answers the server's ack requests and counts what it must acknowledge."""
        while True:
            stanza = await self.next_stanza(timeout)
            if stanza.tag == _q(NS_SM, "r"):
                self.send(ET.Element(_q(NS_SM, "a"), {"h": str(self.received)}))
                continue
            if stanza.tag.startswith("{%s}" % NS_CLIENT):
                self.received += 1
            return stanza

    async def next_client_stanza(self, timeout: float = STEP_TIMEOUT_S) -> ET.Element:
        """The next message/presence/iq (first those that arrived while waiting in :meth:`barrier`)."""
        while not self._pending:
            stanza = await self._next_after_login(timeout)
            if stanza.tag.startswith("{%s}" % NS_CLIENT):
                return stanza
        return self._pending.pop(0)

    async def barrier(self) -> None:
        """Wait until the server has taken everything sent so far.

        With stream management an ack request first, answered by ``<a h='N'/>`` once the server took the
        stanzas (XEP-0198 §4); then a ping (XEP-0199), answered after everything before it was handled."""
        if self.sm:
            self.send(ET.Element(_q(NS_SM, "r")))
            while (stanza := await self._next_after_login()).tag != _q(NS_SM, "a"):
                if stanza.tag.startswith("{%s}" % NS_CLIENT):
                    self._pending.append(stanza)
        ping_id = "barrier-" + secrets.token_hex(4)
        iq = ET.Element(_q(NS_CLIENT, "iq"), {"type": "get", "id": ping_id, "to": self.jid.domain})
        ET.SubElement(iq, _q(NS_PING, "ping"))
        self.send(iq)
        while True:
            stanza = await self._next_after_login()
            if stanza.tag == _q(NS_CLIENT, "iq") and stanza.get("id") == ping_id:
                return
            if stanza.tag.startswith("{%s}" % NS_CLIENT):
                self._pending.append(stanza)

    async def close(self) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(b"</stream:stream>")
            await asyncio.wait_for(self.writer.drain(), STEP_TIMEOUT_S)
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), STEP_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass


# ------------------------------------------------------------------ commands
def _client(args, jid_text: str) -> Client:
    jid = parse_account(jid_text, what="the account to log in as")
    d = Path(args.dir)
    cert, key = d / "clients" / str(jid) / "cert.pem", d / "clients" / str(jid) / "key.pem"
    if args.cert:
        cert = Path(args.cert)
        key = Path(args.key) if args.key else cert.with_name("key.pem")
    use_cert = args.password_file is None and cert.exists() and key.exists()
    if args.cert and not use_cert and args.password_file is None:
        raise CliError(f"--cert {cert} or its key {key} does not exist: give the files `xmppd certs issue` wrote",
                       EXIT_USAGE)
    password = None
    if not use_cert:
        password = read_secret(args.password_file, "password")
        if password is None:
            if sys.stdin.isatty():
                password = getpass.getpass(f"password for {jid}: ")
            else:
                password = read_secret("-", "password")
        from .sasl import prepare_password

        try:
            password = prepare_password(password)  # PRECIS OpaqueString, as `xmppd user add` stored it
        except ValueError as exc:
            raise CliError(f"unusable password ({exc}): give the account's password", EXIT_USAGE) from None
    ca = Path(args.ca) if args.ca else (d / "ca.pem" if (d / "ca.pem").exists() else None)
    if ca is not None and not ca.exists():
        raise CliError(f"--ca {ca} does not exist: give the CA certificate that signed the server's certificate",
                       EXIT_USAGE)
    starttls, tls = default_ports()
    port = args.port if args.port is not None else (tls if args.direct_tls else starttls)
    try:
        return Client(jid, host=args.host or jid.domain, port=port, ca=ca, cert=cert if use_cert else None,
                      key=key if use_cert else None, password=password, direct_tls=args.direct_tls)
    except ssl.SSLError as exc:
        raise CliError(f"cannot use {cert} / {key} / {ca}: {exc.reason or exc}: give a matching PEM "
                       "certificate and key (and a PEM CA)", EXIT_USAGE) from None


async def _session(client: Client, work) -> int:
    try:
        await client.login()
        return await work(client)
    except ssl.SSLCertVerificationError as exc:
        raise CliError(f"the server's certificate is not trusted ({exc.verify_message}): give --ca with the CA "
                       "that signed it (the embedded default's is certs/ca.pem)") from None
    except ssl.SSLError as exc:
        raise CliError(f"TLS with {client.host}:{client.port} failed ({exc.reason or exc}): is this an XMPP port? "
                       "(--direct-tls for 5223)") from None
    except (asyncio.TimeoutError, TimeoutError):
        raise CliError(f"the server at {client.host}:{client.port} did not answer within {STEP_TIMEOUT_S:.0f} s: "
                       "is it an XMPP server, and is it healthy?") from None
    except OSError as exc:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            raise CliError("the server closed the connection during login: `xmppd explain-login "
                           f"{client.jid}` on the server says why") from None
        raise
    finally:
        await client.close()


def cmd_client_send(args) -> int:
    from .jid import JID, InvalidJID

    try:
        to = JID.parse(args.to)
    except InvalidJID as exc:
        raise CliError(f"recipient {args.to!r} is not a valid JID ({exc}): give user@domain", EXIT_USAGE) from None
    client = _client(args, args.jid)

    async def work(c: Client) -> int:
        c.message(str(to), args.text)
        await c.barrier()  # the server has routed (delivered or stored) the message
        print(f"{c.full_jid} -> {to}: {args.text}")
        return 0

    return asyncio.run(_session(client, work))


def cmd_client_listen(args) -> int:
    client = _client(args, args.jid)

    async def work(c: Client) -> int:
        c.presence()  # initial presence: the server now delivers stored (offline) messages
        got = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        while got < args.count:
            left = deadline - loop.time()
            if left <= 0:
                raise CliError(f"{got} of {args.count} message(s) arrived within {args.timeout:g} s: "
                               "wait longer with --timeout, or check the sender's output")
            try:
                stanza = await c.next_client_stanza(left)
            except (asyncio.TimeoutError, TimeoutError):
                continue
            body = stanza.find(_q(NS_CLIENT, "body"))
            if stanza.tag == _q(NS_CLIENT, "message") and body is not None and stanza.get("type") != "error":
                print(f"{stanza.get('from', '?')}: {_text(body)}", flush=True)
                got += 1
        return 0

    return asyncio.run(_session(client, work))


def add_client_commands(sub) -> None:
    client = sub.add_parser("client", help="a minimal client to try the server: send or receive a message")
    commands = client.add_subparsers(dest="client_command", required=True)

    def common(p) -> None:
        p.add_argument("--dir", default="certs", help="where `xmppd certs` keeps the CA and clients/JID/ "
                                                      "(default certs)")
        p.add_argument("--cert", help="client certificate (PEM); default DIR/clients/JID/cert.pem if it exists")
        p.add_argument("--key", help="its private key (default: key.pem next to --cert)")
        p.add_argument("--password-file", help="log in with the password on this file's first line ('-' = stdin) "
                                               "instead of a certificate")
        p.add_argument("--ca", help="CA that signed the server's certificate (default DIR/ca.pem if it exists, "
                                    "else the system's)")
        p.add_argument("--host", help="server address (default: the JID's domain)")
        p.add_argument("--port", type=port_number, help="port (default 5222, or 5223 with --direct-tls; "
                                                "$XMPPD_PORT / $XMPPD_TLS_PORT)")
        p.add_argument("--direct-tls", action="store_true", help="TLS from the first byte (XEP-0368) instead of "
                                                                 "STARTTLS")

    s = commands.add_parser("send", help="log in, send one chat message, log out")
    s.add_argument("jid", help="log in as this account")
    s.add_argument("to", help="recipient JID")
    s.add_argument("text", help="message text")
    common(s)
    s.set_defaults(func=cmd_client_send)
    li = commands.add_parser("listen", help="log in and print messages as they arrive (stored ones first)")
    li.add_argument("jid")
    li.add_argument("--count", type=positive_int, default=1, help="stop after this many messages (default 1)")
    li.add_argument("--timeout", type=float, default=DEFAULT_LISTEN_TIMEOUT_S,
                    help=f"give up after this many seconds (default {DEFAULT_LISTEN_TIMEOUT_S:g})")
    common(li)
    li.set_defaults(func=cmd_client_listen)
