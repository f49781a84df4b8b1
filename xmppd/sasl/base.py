"""Sans-IO SASL mechanisms: the steps a mechanism returns, and its base class.

Rules of this package (read before editing):

* A mechanism never does I/O.  It takes bytes (already base64-decoded by the
  caller) and returns one :data:`Step`.  When it needs the auth backend it
  returns a *Need* step; the connection asks the backend and hands the answer
  back with :meth:`Mechanism.provide`.
* Peer errors (malformed input, bad credentials) are values:
  :class:`Failure`.  Misuse by *our* caller (calling ``respond`` before
  ``start``, answering a Need with the wrong type...) raises
  :class:`ProtocolMisuse`: that is a bug in the server, not in the client.
* Every :class:`Failure` carries a stable machine ``reason`` code and a
  human ``text`` that starts with that code (``"bad-credentials: ..."``), so
  the ``<text/>`` a client sees names the cause.

Call order::

    step = mech.start(initial_response)       # None = no initial response
    while True:
        if Challenge:  send <challenge/>; step = mech.respond(decoded <response/>)
        if Need*:      ask backend;       step = mech.provide(answer)
        if Success / Failure: done
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import precis_i18n

from xmppd_auth.base import CertDecision, ScramCredentials
from xmppd.errors import SaslFailureCondition
from xmppd.jid import JID, InvalidJID, nodeprep

__all__ = [
    "Challenge",
    "Success",
    "Failure",
    "NeedScramCredentials",
    "NeedPasswordCheck",
    "NeedCertAuthorization",
    "Need",
    "Step",
    "Mechanism",
    "ProtocolMisuse",
    "failure",
    "prepare_username",
    "prepare_password",
    "authzid_failure",
    "shown_jid",
]

_OPAQUE = precis_i18n.get_profile("OpaqueString")


class ProtocolMisuse(RuntimeError):
    """The *caller* drove a mechanism out of order (a server bug)."""


# -- steps -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``<challenge/>`` with ``data`` (empty bytes: empty challenge)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    """Authentication succeeded.

    ``username`` is the prepared localpart being logged in.  ``authzid`` is
    what the client asked to act as (``None`` if nothing); the shell must
    reject it unless it equals the user's own bare JID (see
    :func:`authzid_failure`).  ``additional_data`` goes in ``<success/>``
    (SCRAM server-final message).  ``strategy`` says which EXTERNAL rule
    resolved the identity (``standard``/``common_name``/``auth_id``).
    """

    username: str
    authzid: str | None
    additional_data: bytes | None
    strategy: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """Send ``<failure/>`` with ``condition`` and ``<text>text</text>``.

    ``reason`` is a stable machine code for logs and tests.
    """

    condition: SaslFailureCondition
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class NeedScramCredentials:
    """Ask the backend for stored keys. Answer: ``ScramCredentials | None``."""

    username: str
    hash_name: str


@dataclass(frozen=True, slots=True)
class NeedPasswordCheck:
    """Ask the backend to check a password. Answer: ``bool``."""

    username: str
    password: str = dataclasses.field(repr=False)


@dataclass(frozen=True, slots=True)
class NeedCertAuthorization:
    """Ask the backend whether this certificate may log in as
    ``username@domain``. Answer: :class:`auth.base.CertDecision`."""

    username: str
    domain: str


Need = Union[NeedScramCredentials, NeedPasswordCheck, NeedCertAuthorization]
Step = Union[Challenge, Success, Failure, NeedScramCredentials, NeedPasswordCheck,
             NeedCertAuthorization]

#: what each Need must be answered with
_ANSWER_TYPES: dict[type, tuple[type, ...]] = {
    NeedScramCredentials: (ScramCredentials, type(None)),
    NeedPasswordCheck: (bool,),
    NeedCertAuthorization: (CertDecision,),
}


def failure(condition: SaslFailureCondition, reason: str, detail: str) -> Failure:
    """A :class:`Failure` whose text is ``"<reason>: <detail>"``."""
    return Failure(condition, reason, f"{reason}: {detail}")


# -- string preparation ----------------------------------------------------------

def prepare_username(raw: str) -> str:
    """PRECIS UsernameCaseMapped + RFC 7622 localpart rules.

    Raises :class:`xmppd.jid.InvalidJID` (a ``ValueError``) when ``raw``
    cannot be a localpart.
    """
    return nodeprep(raw)


def prepare_password(raw: str) -> str:
    """PRECIS OpaqueString (RFC 8265 §4.2). Raises ``ValueError`` if refused.

    Use the same preparation when storing a password (derivation) and when
    checking one, or non-ASCII passwords will not match.
    """
    try:
        return _OPAQUE.enforce(raw)
    except UnicodeError as exc:
        raise ValueError(f"password refused by OpaqueString ({getattr(exc, 'reason', exc)})") from None


def shown_jid(jid: JID, domain: str) -> str:
    """How a failure text names a JID the client asked for: as itself on this stream's domain,
    else not at all (a "JID" on a foreign domain may be a mistyped password; texts reach the
    audit log, see :mod:`xmppd.audit`)."""
    return str(jid) if jid.domain == domain else "an identity on another domain"


def authzid_failure(authzid: str | None, username: str, domain: str) -> Failure | None:
    """Shell helper: ``None`` if ``authzid`` is absent or names the user's own
    bare JID ``username@domain``; otherwise the :class:`Failure` to send.

    RFC 6120 §6.3.8: a client may only act as itself.
    """
    if authzid is None or authzid in ("", "="):
        return None
    try:
        wanted = JID.parse(authzid)
    except InvalidJID as exc:
        # the text never repeats what the client typed (it may be a password): it ends in the audit log
        return failure(SaslFailureCondition.INVALID_AUTHZID, "bad-authzid",
                       f"the authorization identity is not a valid JID ({exc})")
    own = JID(username, domain)
    if wanted.bare != own:
        return failure(SaslFailureCondition.INVALID_AUTHZID, "authzid-mismatch",
                       f"authenticated as {own}, may not act as {shown_jid(wanted.bare, domain)}")
    return None


# -- base class ---------------------------------------------------------------------

class _State(enum.Enum):
    NEW = "new"  # start() not called yet
    AWAIT_RESPONSE = "await-response"  # sent a Challenge
    AWAIT_ANSWER = "await-answer"  # returned a Need
    DONE = "done"  # returned Success or Failure


def _as_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise ProtocolMisuse(f"{what} must be bytes, not {type(data).__name__}")


class Mechanism:
    """Base class: enforces the call order; subclasses implement the
    ``_on_start`` / ``_on_response`` / ``_on_answer`` hooks, each returning
    a :data:`Step`.  A mechanism object serves exactly one exchange.
    """

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self._state = _State.NEW
        self._need: Need | None = None

    # -- public API ---------------------------------------------------------
    def start(self, initial_response: bytes | None) -> Step:
        """Begin.  ``None``: the client sent no initial response;
        ``b""``: an empty one (``=`` on the wire)."""
        self._expect(_State.NEW, "start()")
        if initial_response is not None:
            initial_response = _as_bytes(initial_response, "initial response")
        return self._emit(self._on_start(initial_response))

    def respond(self, data: bytes) -> Step:
        """The client's ``<response/>`` payload, already base64-decoded."""
        self._expect(_State.AWAIT_RESPONSE, "respond()")
        return self._emit(self._on_response(_as_bytes(data, "response")))

    def provide(self, answer: Any) -> Step:
        """The backend's answer to the last Need step."""
        self._expect(_State.AWAIT_ANSWER, "provide()")
        need = self._need
        assert need is not None
        allowed = _ANSWER_TYPES[type(need)]
        if not isinstance(answer, allowed):
            raise ProtocolMisuse(
                f"{type(need).__name__} must be answered with "
                f"{' | '.join(t.__name__ for t in allowed)}, not {type(answer).__name__}")
        self._need = None
        return self._emit(self._on_answer(need, answer))

    def fail(self, condition: SaslFailureCondition, reason: str, detail: str) -> Failure:
        """End the exchange from the outside (client ``<abort/>``, backend
        unavailable → ``TEMPORARY_AUTH_FAILURE``...).  Allowed at any time
        before the exchange finished."""
        if self._state is _State.DONE:
            raise ProtocolMisuse(f"{self.name}: exchange already finished")
        self._state = _State.DONE
        self._need = None
        return failure(condition, reason, detail)

    @property
    def done(self) -> bool:
        """True once Success or Failure was returned."""
        return self._state is _State.DONE

    @property
    def pending_need(self) -> Need | None:
        """The Need step waiting for :meth:`provide`, if any."""
        return self._need

    # -- hooks for subclasses ---------------------------------------------------
    def _on_start(self, initial_response: bytes | None) -> Step:
        raise NotImplementedError

    def _on_response(self, data: bytes) -> Step:
        raise NotImplementedError

    def _on_answer(self, need: Need, answer: Any) -> Step:
        raise NotImplementedError

    # -- internals ------------------------------------------------------------
    def _expect(self, state: _State, call: str) -> None:
        if self._state is not state:
            raise ProtocolMisuse(
                f"{self.name or type(self).__name__}: {call} called in state "
                f"{self._state.value!r} (expected {state.value!r})")

    def _emit(self, step: Step) -> Step:
        if isinstance(step, Challenge):
            self._state = _State.AWAIT_RESPONSE
        elif isinstance(step, (Success, Failure)):
            self._state = _State.DONE
        elif isinstance(step, tuple(_ANSWER_TYPES)):
            self._state = _State.AWAIT_ANSWER
            self._need = step
        else:  # pragma: no cover - subclass bug
            raise TypeError(f"mechanism returned {step!r}")
        return step

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self._state.value}>"
