"""Sans-IO XMPP stream parser: bytes in, stream events out.

Spec references:
  RFC 6120 §4.2   stream opening (the header is the root element's start tag)
  RFC 6120 §4.9   stream errors (conditions raised here as :class:`StreamError`)
  RFC 6120 §11.1  restricted XML: no comments, PIs, DTDs, entity declarations
  RFC 6120 §11.6  UTF-8 only
  RFC 6120 §4.6.1 whitespace keepalives between stanzas

Rules of this file:
  * No sockets, no asyncio, no clock (``incomplete_for`` is told the time).
    ``feed(bytes) -> list[Event]``.
  * Peer errors raise :class:`xmppd.errors.StreamError`; our own misuse raises
    ordinary exceptions.
  * Everything held is bounded by a named limit: the header by
    :data:`MAX_HEADER_BYTES`, a top-level element by ``max_stanza_bytes``
    (counted while it accumulates), nesting by ``max_depth``, whitespace between
    stanzas by :data:`MAX_WHITESPACE_RUN` (whitespace is never held, only
    counted), the per-stream name tables by :data:`MAX_DISTINCT_NAMES` and
    :data:`MAX_NAME_BYTES` (past either, expat is rebuilt at the next stanza
    boundary: expat frees names only with the parser).
  * CPU is linear in the bytes received whatever the piece sizes: bytes are
    handed to expat as :mod:`xmppd.xml.coalesce` decides, so expat re-scans an
    incomplete token a bounded number of times; an event is never held back.
  * Offsets are absolute stream byte offsets (0 = first byte ever fed to this
    parser).  After any event, ``data[len(data) - (bytes_fed - event.end):]`` of
    the last chunk is exactly what followed it, so a caller restarting the
    stream (STARTTLS, SASL success) can hand that remainder to a new parser.
  * If the peer's error comes in the same ``feed()`` after complete events,
    the events are returned and the error is raised on the next ``feed()``
    (``feed(b"")`` re-raises it, and hands expat any bytes held back): bytes
    after a restart point are not this stream's business (e.g. ``<auth/>``
    followed by the next ``<?xml ...?>``).
  * No reference cycle outlives its owner: :class:`StreamParser` is a small
    shell whose finaliser breaks the expat <-> handlers cycle of its core, so
    dropping the parser frees its expat tables at once, not at the next full GC.

Expat notes (set-up in :mod:`xmppd.xml._expat`): namespace processing with
prefixes reported (needed to tell whether a stanza uses a prefix bound on the
stream header); a new expat after :meth:`StreamParser.release_idle` or a name
table rebuild is primed with the stream header's start tag, so the header's
namespace bindings stay in scope and offsets continue (``_shift``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from itertools import islice
from typing import Any, Callable
from xml.parsers import expat

from xmppd.errors import StreamError, StreamErrorCondition
from xmppd.xml._expat import ENCODING_ERRORS, ENTITY_ERRORS, new_expat
from xmppd.xml._tree import Closed, Names, Rebuild, TreeHandlers, ignore
from xmppd.xml.coalesce import MAX_HELD_CONTENT, SMALL_TOKEN, TokenEnd
from xmppd.xml.events import NS_STREAM, NS_XML, Event, ParserStats, Stanza, StreamClose, StreamOpen

__all__ = [
    "NS_STREAM",
    "NS_XML",
    "DEFAULT_MAX_DEPTH",
    "MAX_HEADER_BYTES",
    "MAX_WHITESPACE_RUN",
    "MAX_DISTINCT_NAMES",
    "MAX_NAME_BYTES",
    "StreamOpen",
    "Stanza",
    "StreamClose",
    "Event",
    "ParserStats",
    "StreamParser",
]

#: maximum nesting of a stanza: the top-level element is depth 1
DEFAULT_MAX_DEPTH = 32
#: bytes allowed up to and including the '>' of the stream header
#: (XML declaration and leading whitespace included)
MAX_HEADER_BYTES = 4096
#: whitespace allowed between two top-level elements.  Whitespace is never
#: buffered, only counted; a keepalive of one space every 30 s needs about a
#: year to reach this, a peer streaming whitespace is cut off after 1 MiB.
MAX_WHITESPACE_RUN = 1024 * 1024
#: distinct element/attribute names and namespace prefixes (namespace URI
#: included) one expat parser may have seen before it is rebuilt at the next
#: stanza boundary.  A client session uses a few hundred at most; the tables
#: cost ~300 bytes per name (expat's pools and hashes, pyexpat's intern dict,
#: the Clark-name cache), so a peer inventing names holds ~150 KiB, not
#: megabytes growing for the life of the stream.
MAX_DISTINCT_NAMES = 512
#: the same bound for the characters of those names (long names, long namespace URIs)
MAX_NAME_BYTES = 32 * 1024
#: input is handed to expat in pieces of at most this size, so the size
#: limits are checked while a large chunk is being parsed, not only after it
_PARSE_SLICE = 64 * 1024

C = StreamErrorCondition

_WHITESPACE = re.compile(rb"[ \t\r\n]*+")
_UTF16_START = (0x00, 0xFE, 0xFF)
_DTD_MARKUP = (b"<!DOCTYPE", b"<!ENTITY", b"<!ELEMENT", b"<!ATTLIST", b"<!NOTATION")


class _Core(TreeHandlers):
    """The parser proper; see :class:`StreamParser`.  Its expat parser's handlers
    are its bound methods (a reference cycle, broken by :meth:`close`)."""

    __slots__ = ("max_stanza_bytes", "max_depth", "bytes_fed", "parse_calls", "bytes_scanned",
                 "name_rebuilds", "idle_releases", "_buf", "_base", "_fed", "_pending", "_token_end", "_events",
                 "_error",
                 "_closed", "_depth", "_header_empty", "_header_end", "_header_default_ns", "_scan",
                 "_ws_run", "_stanza_start", "_stanza_tag_len", "_stanza_empty", "_uses_prefix", "_level",
                 "_builder", "_bstart", "_bend", "_names", "_n_names", "_name_bytes", "_header_raw",
                 "_shift", "_rebuild_at", "_stall_key", "_stall_since", "_h_start", "_h_end",
                 "_h_stream_text", "_h_child_start", "_h_child_end", "_p")

    def __init__(self, max_stanza_bytes: int, max_depth: int) -> None:
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self.bytes_fed = 0
        self.parse_calls = self.bytes_scanned = self.name_rebuilds = self.idle_releases = 0

        self._buf = bytearray()  # raw bytes from absolute offset _base on
        self._base = 0
        self._fed = 0  # absolute end of the bytes handed to expat (the rest is held back)
        self._pending = 0  # absolute start of the incomplete token expat holds (up to _fed)
        self._token_end = TokenEnd()
        self._events: list[Event] = []
        self._error: StreamError | None = None
        self._closed = False
        self._depth = 0  # 0 before the header, 1 inside the stream, 2 = stanza
        self._header_empty = False
        self._header_end = 0
        self._header_default_ns: str | None = None
        self._scan = 0  # between stanzas: first byte not yet known to be whitespace
        self._ws_run = 0
        # current stanza
        self._stanza_start = 0
        self._stanza_tag_len = 0
        self._stanza_empty = False
        self._uses_prefix = False
        self._level = 0  # nesting below the stanza's top-level element
        self._builder: ET.TreeBuilder | None = None
        self._bstart = self._bend = None
        self._names = Names()
        self._n_names = self._name_bytes = 0  # size of the current expat's intern dict, as last counted
        #: the stream header's start tag, re-fed to a new expat after a release or rebuild
        self._header_raw: bytes | None = None
        #: absolute byte offset = expat's byte index + _shift (non-zero after a rebuild)
        self._shift = 0
        self._rebuild_at = 0
        self._stall_key: int | None = None
        self._stall_since = 0.0
        # bound methods made once: handlers are swapped in and out per stanza
        self._h_start = self._on_start
        self._h_end = self._on_end
        self._h_stream_text = self._on_stream_text
        self._h_child_start = self._on_child_start
        self._h_child_end = self._on_child_end
        self._p: Any = self._new_expat(header_done=False)

    def _new_expat(self, *, header_done: bool) -> Any:
        p = new_expat()
        p.XmlDeclHandler = self._on_xml_decl
        p.StartElementHandler = self._h_start
        p.EndElementHandler = self._h_end
        p.CharacterDataHandler = self._h_stream_text
        if not header_done:
            p.StartNamespaceDeclHandler = self._on_header_ns  # removed after the header
        return p

    def release_idle(self) -> bool:
        if (self._p is None or self._depth != 1 or self._closed or self._error is not None
                or self._header_raw is None or self._scan != self._base + len(self._buf)
                or self._fed != self._scan):
            return False
        self._base = self._pending = self._fed
        self._buf = bytearray()
        self._p = None
        self.idle_releases += 1
        return True

    def _rebuild(self, at: int) -> Any:
        """A new expat continuing the stream at absolute offset ``at`` (between stanzas)."""
        header = self._header_raw
        assert header is not None
        p = self._new_expat(header_done=True)
        p.StartElementHandler = ignore  # the header again: its namespaces, no event
        p.Parse(header, False)
        p.StartElementHandler = self._h_start
        self._shift = at - len(header)
        self._names = Names()
        self._n_names = self._name_bytes = 0
        self._pending = at
        self._p = p
        return p

    def close(self) -> None:
        """Drop expat and everything held; later feeds are ignored."""
        self._closed = True
        self._release()
        self._h_start = self._h_end = self._h_stream_text = self._h_child_start = self._h_child_end = None

    def incomplete_for(self, now: float, paused: bool) -> float:
        key = self._incomplete_start()
        if key is None:
            self._stall_key = None
            return 0.0
        if key != self._stall_key or paused:
            self._stall_key, self._stall_since = key, now
            return 0.0
        return now - self._stall_since

    def _incomplete_start(self) -> int | None:
        """Absolute offset where the unfinished header/top-level element began, or None."""
        if self._closed or self._error is not None:
            return None
        depth = self._depth
        if depth >= 2:
            return self._stanza_start
        total = self._base + len(self._buf)
        if depth == 1:
            return self._scan if self._scan < total else None
        return 0 if total else None

    def stats(self) -> ParserStats:
        p = self._p
        total = self._base + len(self._buf)
        return ParserStats(self.parse_calls, self.bytes_scanned, self.name_rebuilds, self.idle_releases,
                           len(p.intern) if p is not None else 0, self._name_bytes if p is not None else 0,
                           len(self._buf), total - self._fed)

    # ------------------------------------------------------------------ API

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``; return the events it completes, in order."""
        if self._error is not None:
            raise self._error
        self.bytes_fed += len(data)
        if self._closed:
            return []
        buf = self._buf
        if data:
            buf += data
        elif self._fed == self._base + len(buf):
            return []
        events = self._events = []
        try:
            if not self._depth and (buf[0] in _UTF16_START or (len(buf) > 1 and buf[1] == 0)):
                # expat sniffs UTF-16 (byte order mark, or a NUL in the first two
                # bytes) even with UTF-8 forced; none of these can start UTF-8 XML
                raise StreamError(C.UNSUPPORTED_ENCODING, "UTF-16 is not supported, use UTF-8 (RFC 6120 §11.6)")
            # coalescing (xmppd.xml.coalesce): hand over now, or hold back?
            held = self._fed - self._pending
            if not data:
                go = True
            elif held > SMALL_TOKEN:
                go = (self._base + len(buf) - self._fed >= held
                      or self._token_end.found(buf, self._base, self._pending))
            else:
                go = (self._depth < 2 or b">" in data
                      or self._base + len(buf) - self._fed >= MAX_HELD_CONTENT)
            if go:
                self._parse(data)
            else:
                self._check_held()
        except Closed:
            pass
        except StreamError as exc:
            self._fail(exc)
        except expat.ExpatError as exc:
            self._fail(self._convert(exc))
        if self._closed:
            self._release()
        elif self._error is not None and not events:
            raise self._error
        return events

    # ------------------------------------------------------------ internals

    def _parse(self, data: bytes) -> None:
        """Hand everything not yet given to expat over, in slices of at most _PARSE_SLICE."""
        while True:
            start = self._fed
            end = self._base + len(self._buf)
            if end - start == len(data) and end - start <= _PARSE_SLICE:
                chunk: Any = data  # the common case: nothing was held back, no copy
            elif end > start:
                end = min(end, start + _PARSE_SLICE)
                chunk = self._buf[start - self._base : end - self._base]
            else:
                return
            p = self._p
            if p is None:
                p = self._rebuild(start)
            self.parse_calls += 1
            self.bytes_scanned += end - self._pending
            self._fed = end
            try:
                p.Parse(chunk, False)
            except Rebuild:
                chunk = None  # not all of it was parsed: loop on
                # the stanza that just ended pushed the name tables past their bound:
                # a new expat takes over right after it (offsets stay absolute)
                self.name_rebuilds += 1
                self._p = None
                self._fed = self._rebuild_at
                self._rebuild(self._rebuild_at)
            else:
                index = p.CurrentByteIndex  # where expat's incomplete token starts
                self._pending = index + self._shift if index >= 0 else end
            # bookkeeping after expat has seen this piece
            buf = self._buf
            base = self._base
            total = base + len(buf)
            depth = self._depth
            if depth >= 2:
                keep = self._stanza_start
                if total - keep > self.max_stanza_bytes:
                    raise StreamError(C.POLICY_VIOLATION, f"stanza larger than {self.max_stanza_bytes} bytes")
            elif depth == 1:
                scan = self._scan
                keep = _WHITESPACE.match(buf, scan - base, self._fed - base).end() + base
                self._ws_run += keep - scan
                self._scan = keep
                if self._ws_run > MAX_WHITESPACE_RUN:
                    raise StreamError(C.POLICY_VIOLATION, f"more than {MAX_WHITESPACE_RUN} bytes of whitespace between stanzas")
                if total - keep > self.max_stanza_bytes:
                    raise StreamError(C.POLICY_VIOLATION, f"stanza larger than {self.max_stanza_bytes} bytes")
            else:
                if total > MAX_HEADER_BYTES:
                    raise StreamError(C.POLICY_VIOLATION, f"stream header larger than {MAX_HEADER_BYTES} bytes")
                continue  # keep everything before the header (it is bounded)
            if keep > base:
                del buf[: keep - base]
                self._base = keep
            if chunk is data:
                return

    def _check_header_size(self, end: int) -> None:
        if end > MAX_HEADER_BYTES:
            raise StreamError(C.POLICY_VIOLATION, f"stream header larger than {MAX_HEADER_BYTES} bytes")

    def _check_held(self) -> None:
        """Bytes were held back (not given to expat): the size limits still count them."""
        total = self._base + len(self._buf)
        depth = self._depth
        if depth:
            start = self._stanza_start if depth >= 2 else self._scan
            if total - start > self.max_stanza_bytes:
                raise StreamError(C.POLICY_VIOLATION, f"stanza larger than {self.max_stanza_bytes} bytes")
        elif total > MAX_HEADER_BYTES:
            raise StreamError(C.POLICY_VIOLATION, f"stream header larger than {MAX_HEADER_BYTES} bytes")

    def _fail(self, exc: StreamError) -> None:
        self._error = exc
        self._release()

    def _release(self) -> None:
        self._buf = bytearray()
        self._builder = self._bstart = self._bend = None
        p = self._p
        if p is not None:
            p.StartElementHandler = p.EndElementHandler = p.CharacterDataHandler = None
            p.XmlDeclHandler = p.StartNamespaceDeclHandler = None
            self._p = None

    def _names_full(self, intern: dict[str, str]) -> bool:
        """Count the names this expat learnt since the last count (the newest
        entries of its intern dict); True when past a bound."""
        n = len(intern)
        self._name_bytes += sum(map(len, filter(None, islice(reversed(intern), n - self._n_names))))
        self._n_names = n
        return n > MAX_DISTINCT_NAMES or self._name_bytes > MAX_NAME_BYTES

    def _convert(self, exc: expat.ExpatError) -> StreamError:
        code = exc.code
        message = expat.ErrorString(code)
        where = self._p.ErrorByteIndex + self._shift
        if code in ENCODING_ERRORS:
            return StreamError(C.UNSUPPORTED_ENCODING, f"only UTF-8 is supported ({message})")
        if code in ENTITY_ERRORS:
            return StreamError(C.RESTRICTED_XML, f"entities are not allowed in XMPP ({message}, RFC 6120 §11.1)")
        # A DTD where expat cannot report it as one (inside content) is still
        # restricted XML rather than merely malformed.
        pos = self._buf.rfind(b"<", 0, where - self._base + 1)
        if pos >= 0 and self._buf.startswith(_DTD_MARKUP, pos):
            return StreamError(C.RESTRICTED_XML, "DTD declarations are not allowed in XMPP (RFC 6120 §11.1)")
        return StreamError(C.NOT_WELL_FORMED, f"{message} at byte {where}")


class StreamParser:
    """Incremental parser for one XML stream (one per stream restart).

    ``max_stanza_bytes`` may be changed at any time (e.g. raised after
    authentication); it applies to the raw size of each top-level element.

    A shell over the parser proper: nothing refers back to it, so it is freed
    as soon as its owner drops it, and its finaliser breaks the core's cycle
    with expat (the expat tables go then, not at the next full collection).
    """

    __slots__ = ("_core", "feed", "__weakref__")
    feed: Callable[[bytes], list[Event]]

    def __init__(self, *, max_stanza_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        if max_stanza_bytes <= 0 or max_depth <= 0:
            raise ValueError("max_stanza_bytes and max_depth must be positive")
        core = self._core = _Core(max_stanza_bytes, max_depth)
        #: ``feed(data) -> list[Event]``: parse ``data``, return the events it completes
        #: (the core's bound method: no extra call on the hot path)
        self.feed = core.feed

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None:
            core.close()

    def close(self) -> None:
        """Drop expat and every buffer now; later feeds return nothing."""
        self._core.close()

    @property
    def max_stanza_bytes(self) -> int:
        return self._core.max_stanza_bytes

    @max_stanza_bytes.setter
    def max_stanza_bytes(self, value: int) -> None:
        if value <= 0:
            raise ValueError("max_stanza_bytes must be positive")
        self._core.max_stanza_bytes = value

    @property
    def bytes_fed(self) -> int:
        """Every byte given to :meth:`feed` so far (held back or parsed)."""
        return self._core.bytes_fed

    def release_idle(self) -> bool:
        """Between stanzas, drop the expat parser (its buffers and tables: ~15 KiB);
        the next :meth:`feed` builds a new one and re-feeds the stream header.
        For idle connections; False (nothing done) when not between stanzas."""
        return self._core.release_idle()

    def incomplete_for(self, now: float, *, paused: bool = False) -> float:
        """How long the current top-level element (or the header) has been incomplete,
        by the caller's clock ``now``; 0.0 when nothing is pending.

        However many bytes of it trickle in, only its completion resets this.  The
        first call that sees a given unfinished element starts its clock, so the
        answer is as precise as the caller's polling interval (a connection sweep).
        ``paused``: the caller is not reading from the peer now (backpressure, an
        auth backend call); the clock starts again, time we did not read is not the
        peer's fault."""
        return self._core.incomplete_for(now, paused)

    def stats(self) -> ParserStats:
        return self._core.stats()
