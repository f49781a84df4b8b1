"""A real HTTP auth service speaking MongooseIM's ``http`` auth contract, for tests.

Runs an ``aiohttp.web`` app on 127.0.0.1, port 0, over an in-memory user
table.  Every endpoint can be switched into a failure mode, and every request
is recorded, so tests can check exactly what the client sent::

    service = AuthService()
    url = await service.start()
    service.add_user("alice", "localhost", password="secret", certs=[pem])
    service.set_mode("get_password", Mode.SLOW)
    ...
    await service.stop()

Stored passwords are kept as given: plaintext, or a ``==MULTI_SCRAM==`` value
(``check_password`` verifies against either).
"""

from __future__ import annotations

import asyncio
import base64
import enum
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from xmppd_auth import scram

__all__ = ["AuthService", "Mode", "Fixed", "Recorded", "UserRecord", "OPERATIONS"]

OPERATIONS = ("check_password", "user_exists", "get_password", "get_certs",
              "register", "set_password", "remove_user")
_GET = {"check_password", "user_exists", "get_password", "get_certs"}


class Mode(enum.Enum):
    NORMAL = "normal"
    SLOW = "slow"  # sleep ``slow_s`` (longer than the client's timeout), then answer normally
    ERROR_500 = "500"
    MALFORMED = "malformed"  # 200 with a body the contract does not allow
    WRONG_STATUS = "418"  # a status outside the contract
    NO_CONTENT_LENGTH = "no-content-length"  # normal answer, chunked, no Content-Length
    HUGE = "huge"  # chunked body larger than the client's limit, no Content-Length
    HUGE_DECLARED = "huge-declared"  # Content-Length larger than the client's limit


@dataclass(frozen=True)
class Fixed:
    """Answer with exactly this status and body."""

    status: int
    body: str | bytes = ""


@dataclass
class UserRecord:
    password: str | None = None  # plaintext or ==MULTI_SCRAM==
    certs: list[str] = field(default_factory=list)  # PEM strings


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    operation: str
    query_string: str  # raw, as sent
    params: dict[str, str]  # decoded query (GET) or form (POST)
    headers: dict[str, str]
    at: float


class AuthService:
    def __init__(self, *, path_prefix: str = "/", basic_auth: str | None = None,
                 slow_s: float = 5.0, huge_bytes: int = 2 * 1024 * 1024) -> None:
        self.path_prefix = path_prefix if path_prefix.endswith("/") else path_prefix + "/"
        self.basic_auth = basic_auth  # "user:password": requests without it get 401
        self.slow_s = slow_s
        self.huge_bytes = huge_bytes
        self.users: dict[tuple[str, str], UserRecord] = {}
        self.protected: set[tuple[str, str]] = set()  # remove_user → 403
        self.modes: dict[str, Mode | Fixed] = {}
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrived = asyncio.Event()  # set whenever a request arrives
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    # -- control ---------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", self.path_prefix + "{op}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def add_user(self, user: str, server: str, password: str | None = None,
                 certs: list[str] | tuple[str, ...] = ()) -> UserRecord:
        rec = UserRecord(password, list(certs))
        self.users[(user, server)] = rec
        return rec

    def set_mode(self, operation: str, mode: Mode | Fixed) -> None:
        if operation not in OPERATIONS:
            raise ValueError(operation)
        self.modes[operation] = mode

    def set_mode_all(self, mode: Mode | Fixed) -> None:
        for op in OPERATIONS:
            self.modes[op] = mode

    def calls(self, operation: str) -> list[Recorded]:
        return [r for r in self.requests if r.operation == operation]

    async def wait_for_request(self, operation: str, count: int = 1, timeout: float = 10.0) -> Recorded:
        async def until() -> Recorded:
            while len(self.calls(operation)) < count:
                self.arrived.clear()
                await self.arrived.wait()
            return self.calls(operation)[count - 1]
        return await asyncio.wait_for(until(), timeout)

    # -- HTTP ----------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        op = request.match_info["op"]
        if request.method == "POST":
            params = {k: str(v) for k, v in (await request.post()).items()}
        else:
            params = dict(request.query)
        self.requests.append(Recorded(request.method, request.path, op, request.query_string,
                                      params, dict(request.headers), time.monotonic()))
        self.arrived.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, op, params)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, op: str, params: dict[str, str]) -> web.StreamResponse:
        if op not in OPERATIONS:
            return web.Response(status=404, text="no such operation")
        expected = "GET" if op in _GET else "POST"
        if request.method != expected:
            return web.Response(status=405, text=f"{op} takes {expected}")
        if self.basic_auth is not None:
            want = "Basic " + base64.b64encode(self.basic_auth.encode()).decode()
            if request.headers.get("Authorization") != want:
                return web.Response(status=401, text="basic auth required")

        mode = self.modes.get(op, Mode.NORMAL)
        if isinstance(mode, Fixed):
            if isinstance(mode.body, bytes):
                return web.Response(status=mode.status, body=mode.body)
            return web.Response(status=mode.status, text=mode.body)
        if mode is Mode.SLOW:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.slow_s)
            except TimeoutError:
                pass
        elif mode is Mode.ERROR_500:
            return web.Response(status=500, text="internal error")
        elif mode is Mode.WRONG_STATUS:
            return web.Response(status=418, text="I'm a teapot")
        elif mode is Mode.MALFORMED:
            body = {"get_password": "==MULTI_SCRAM==,i=oops", "get_certs": "-----BEGIN CERTIFICATE-----\nnot base64\n"
                    "-----END CERTIFICATE-----\n"}.get(op, "maybe")
            return web.Response(status=200, text=body)
        elif mode is Mode.HUGE:
            return await self._stream(request, b"x" * self.huge_bytes, declare=False)
        elif mode is Mode.HUGE_DECLARED:
            return await self._stream(request, b"x" * self.huge_bytes, declare=True)

        status, body = self._contract(op, params)
        if mode is Mode.NO_CONTENT_LENGTH:
            resp = await self._stream(request, body.encode(), declare=False, status=status)
            return resp
        return web.Response(status=status, text=body) if body or status != 204 else web.Response(status=204)

    async def _stream(self, request: web.Request, data: bytes, *, declare: bool,
                      status: int = 200) -> web.StreamResponse:
        resp = web.StreamResponse(status=status)
        resp.content_type = "text/plain"
        if declare:
            resp.content_length = len(data)
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for i in range(0, len(data), 64 * 1024):
                await resp.write(data[i:i + 64 * 1024])
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client gave up, as it should
        return resp

    # -- the contract (MongooseIM ejabberd_auth_http) ---------------------------------
    def _contract(self, op: str, params: dict[str, str]) -> tuple[int, str]:
        key = (params.get("user", ""), params.get("server", ""))
        password = params.get("pass", "")
        rec = self.users.get(key)
        if op == "check_password":
            return 200, "true" if rec is not None and _matches(rec.password, password) else "false"
        if op == "user_exists":
            return 200, "true" if rec is not None else "false"
        if op == "get_password":
            if rec is None or rec.password is None:
                return 404, ""
            return 200, rec.password
        if op == "get_certs":
            if rec is None:
                return 404, ""
            return 200, "".join(rec.certs)
        if op == "register":
            if rec is not None:
                return 409, ""
            self.users[key] = UserRecord(password)
            return 201, ""
        if op == "set_password":
            if rec is None:
                return 404, ""
            rec.password = password
            return 204, ""
        if op == "remove_user":
            if key in self.protected:
                return 403, ""
            if self.users.pop(key, None) is None:
                return 404, ""
            return 204, ""
        raise AssertionError(op)  # pragma: no cover


def _matches(stored: str | None, password: str) -> bool:
    if stored is None or not password:
        return False
    if stored.startswith("==MULTI_SCRAM=="):
        creds: dict[str, Any] = scram.deserialize(stored)
        best = next(creds[h] for h in ("sha512", "sha256", "sha1") if h in creds)
        return scram.verify_password(password, best)
    return stored == password
