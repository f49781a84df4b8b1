"""Sans-IO XMPP stream parser: bytes in, stream events out.

Spec references:
  RFC 6120 §4.2   stream opening (the header is the root element's start tag)
  RFC 6120 §4.9   stream errors (conditions raised here as :class:`StreamError`)
  RFC 6120 §11.1  restricted XML: no comments, PIs, DTDs, entity declarations
  RFC 6120 §11.6  UTF-8 only
  RFC 6120 §4.6.1 whitespace keepalives between stanzas

Rules of this file:
  * No sockets, no asyncio, no clock.  ``feed(bytes) -> list[Event]``.
  * Peer errors raise :class:`xmppd.errors.StreamError`; our own misuse raises
    ordinary exceptions.
  * Everything held is bounded by a named limit: the header by
    :data:`MAX_HEADER_BYTES`, a top-level element by ``max_stanza_bytes``
    (counted while it accumulates), nesting by ``max_depth``, whitespace between
    stanzas by :data:`MAX_WHITESPACE_RUN` (whitespace is never held, only counted).
  * Offsets are absolute stream byte offsets (0 = first byte ever fed to this
    parser).  After any event, ``data[len(data) - (bytes_fed - event.end):]`` of
    the last chunk is exactly what followed it, so a caller restarting the
    stream (STARTTLS, SASL success) can hand that remainder to a new parser.
  * If the peer's error comes in the same ``feed()`` after complete events,
    the events are returned and the error is raised on the next ``feed()``
    (``feed(b"")`` re-raises it): bytes after a restart point are not this
    stream's business (e.g. ``<auth/>`` followed by the next ``<?xml ...?>``).

Expat notes: the parser is created with protocol encoding UTF-8 (the declared
encoding is checked, never obeyed), namespace processing with prefixes
reported (needed to tell whether a stanza uses a prefix bound on the stream
header), parameter-entity parsing off, and every DTD-related callback raising
restricted-xml, so no entity is ever expanded beyond the five predefined ones
and character references.  Expat (< 2.6) re-scans an incomplete token on every
``Parse`` call, so a single huge token trickled in tiny pieces costs
O(n^2/piece); ``max_stanza_bytes`` bounds n.  On expat >= 2.6 the re-parse
deferral heuristic is switched off because it can hold back a complete end
tag until more data arrives, i.e. delay a stanza indefinitely.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat

from xmppd.errors import StreamError, StreamErrorCondition

__all__ = [
    "NS_STREAM",
    "NS_XML",
    "DEFAULT_MAX_DEPTH",
    "MAX_HEADER_BYTES",
    "MAX_WHITESPACE_RUN",
    "StreamOpen",
    "Stanza",
    "StreamClose",
    "Event",
    "StreamParser",
]

NS_STREAM = "http://etherx.jabber.org/streams"
NS_XML = "http://www.w3.org/XML/1998/namespace"

#: maximum nesting of a stanza: the top-level element is depth 1
DEFAULT_MAX_DEPTH = 32
#: bytes allowed up to and including the '>' of the stream header
#: (XML declaration and leading whitespace included)
MAX_HEADER_BYTES = 4096
#: whitespace allowed between two top-level elements.  Whitespace is never
#: buffered, only counted; a keepalive of one space every 30 s needs about a
#: year to reach this, a peer streaming whitespace is cut off after 1 MiB.
MAX_WHITESPACE_RUN = 1024 * 1024
#: input is handed to expat in pieces of at most this size, so the size
#: limits are checked while a large chunk is being parsed, not only after it
_PARSE_SLICE = 64 * 1024

_STREAM_TAG = "{%s}stream" % NS_STREAM
_XML_PREFIX = "xml"

C = StreamErrorCondition

# A complete start tag beginning at '<'.  Possessive quantifiers: expat has
# already checked the tag, this only finds its end ('>' may sit inside quotes).
_START_TAG = re.compile(rb"""<(?:[^'">]++|'[^']*+'|"[^"]*+")*+>""")
_WHITESPACE = re.compile(rb"[ \t\r\n]*+")
_WS_CHARS = " \t\r\n"
_UTF16_START = (0x00, 0xFE, 0xFF)
_DTD_MARKUP = (b"<!DOCTYPE", b"<!ENTITY", b"<!ELEMENT", b"<!ATTLIST", b"<!NOTATION")


def _expat_codes(*names: str) -> frozenset[int]:
    errors = expat.errors
    return frozenset(errors.codes[getattr(errors, n)] for n in names if hasattr(errors, n))


_ENCODING_ERRORS = _expat_codes("XML_ERROR_INCORRECT_ENCODING", "XML_ERROR_UNKNOWN_ENCODING")
_ENTITY_ERRORS = _expat_codes(
    "XML_ERROR_AMPLIFICATION_LIMIT_BREACH",
    "XML_ERROR_RECURSIVE_ENTITY_REF",
    "XML_ERROR_ENTITY_DECLARED_IN_PE",
    "XML_ERROR_EXTERNAL_ENTITY_HANDLING",
    "XML_ERROR_BINARY_ENTITY_REF",
    "XML_ERROR_ASYNC_ENTITY",
    "XML_ERROR_PARAM_ENTITY_REF",
)


@dataclass(frozen=True, slots=True)
class StreamOpen:
    """The ``<stream:stream ...>`` header."""

    tag: str
    attrs: dict[str, str]
    default_ns: str | None
    end: int


@dataclass(frozen=True, slots=True)
class Stanza:
    """One complete top-level child of the stream."""

    element: ET.Element
    raw: bytes
    start_tag_len: int
    self_contained: bool
    end: int


@dataclass(frozen=True, slots=True)
class StreamClose:
    """``</stream:stream>``; anything after it is ignored."""

    end: int


Event = StreamOpen | Stanza | StreamClose


class _Closed(Exception):
    """Internal: abort expat after the stream's end tag."""


def _restricted(what: str):
    def handler(*_args: object) -> None:
        raise StreamError(C.RESTRICTED_XML, f"{what} are not allowed in XMPP (RFC 6120 §11.1)")

    return handler


#: one handler per kind of restricted markup, shared by every parser (not one closure each)
_RESTRICTED_HANDLERS = (
    ("CommentHandler", _restricted("comments")),
    ("ProcessingInstructionHandler", _restricted("processing instructions")),
    ("StartDoctypeDeclHandler", _restricted("document type declarations")),
    ("EntityDeclHandler", _restricted("entity declarations")),
    ("UnparsedEntityDeclHandler", _restricted("unparsed entities")),
    ("NotationDeclHandler", _restricted("notation declarations")),
    ("ElementDeclHandler", _restricted("element declarations")),
    ("AttlistDeclHandler", _restricted("attribute list declarations")),
    ("ExternalEntityRefHandler", _restricted("external entities")),
    ("SkippedEntityHandler", _restricted("entity references")),
)


def _ignore(*_args: object) -> None:
    pass


class _Names(dict):
    """Expat triplet name ('uri}local}prefix', 'uri}local', 'local') -> Clark name.

    Names written with a namespace prefix other than ``xml`` are also put in
    ``prefixed``, so the hot path can tell with one lookup whether an element
    might depend on a prefix bound outside its stanza.
    """

    __slots__ = ("prefixed",)

    def __init__(self) -> None:
        super().__init__()
        self.prefixed: set[str] = set()

    def __missing__(self, name: str) -> str:
        parts = name.split("}")
        if len(parts) == 1:
            clark = name
        else:
            clark = "{" + parts[0] + "}" + parts[1]
            if len(parts) == 3 and parts[2] != _XML_PREFIX:
                self.prefixed.add(name)
        self[name] = clark
        return clark


def _reparses_alone(raw: bytes) -> bool:
    """True iff every namespace prefix ``raw`` uses is declared inside it.

    Only called for stanzas that use a prefix at all (rare: ``<stream:error>``,
    s2s ``<db:result>``).  ``raw`` is already known to be well-formed, so the
    only way this parse fails is an unbound prefix.
    """
    p = expat.ParserCreate("UTF-8", "}")
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        p.Parse(b"<w>" + raw + b"</w>", True)
    except expat.ExpatError:
        return False
    return True


class StreamParser:
    """Incremental parser for one XML stream (one per stream restart).

    ``max_stanza_bytes`` may be changed at any time (e.g. raised after
    authentication); it applies to the raw size of each top-level element.
    """

    def __init__(self, *, max_stanza_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        if max_stanza_bytes <= 0 or max_depth <= 0:
            raise ValueError("max_stanza_bytes and max_depth must be positive")
        self.max_stanza_bytes = max_stanza_bytes
        self.max_depth = max_depth
        self.bytes_fed = 0

        self._buf = bytearray()  # raw bytes from absolute offset _base on
        self._base = 0
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
        self._names = _Names()
        #: the stream header's start tag, re-fed to a new expat after release_idle()
        self._header_raw: bytes | None = None
        #: absolute byte offset = expat's byte index + _shift (non-zero after a rebuild)
        self._shift = 0
        # bound methods made once: handlers are swapped in and out per stanza
        self._h_start = self._on_start
        self._h_end = self._on_end
        self._h_stream_text = self._on_stream_text
        self._h_child_start = self._on_child_start
        self._h_child_end = self._on_child_end
        self._p: Any = self._new_expat(header_done=False)

    def _new_expat(self, *, header_done: bool) -> Any:
        p = expat.ParserCreate("UTF-8", "}")
        p.namespace_prefixes = True
        p.ordered_attributes = False
        p.buffer_text = False
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        if hasattr(p, "SetReparseDeferralEnabled"):  # expat >= 2.6
            p.SetReparseDeferralEnabled(False)
        p.XmlDeclHandler = self._on_xml_decl
        p.StartElementHandler = self._h_start
        p.EndElementHandler = self._h_end
        p.CharacterDataHandler = self._h_stream_text
        if not header_done:
            p.StartNamespaceDeclHandler = self._on_header_ns  # removed after the header
        for attr, handler in _RESTRICTED_HANDLERS:
            setattr(p, attr, handler)
        return p

    def release_idle(self) -> bool:
        """Between stanzas, drop the expat parser (its buffers and tables: ~15 KiB);
        the next :meth:`feed` builds a new one and re-feeds the stream header.
        For idle connections; False (nothing done) when not between stanzas."""
        if (self._p is None or self._depth != 1 or self._closed or self._error is not None
                or self._header_raw is None or self._scan != self._base + len(self._buf)):
            return False
        self._base += len(self._buf)
        self._buf = bytearray()
        self._p = None
        return True

    def _rebuild(self) -> Any:
        header = self._header_raw
        assert header is not None
        p = self._new_expat(header_done=True)
        p.StartElementHandler = _ignore  # the header again: its namespaces, no event
        p.Parse(header, False)
        p.StartElementHandler = self._h_start
        self._shift = self._base - len(header)
        self._p = p
        return p

    # ------------------------------------------------------------------ API

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data``; return the events it completes, in order."""
        if self._error is not None:
            raise self._error
        self.bytes_fed += len(data)
        if self._closed or not data:
            return []
        events = self._events = []
        try:
            if len(data) <= _PARSE_SLICE:
                self._parse(data)
            else:
                view = memoryview(data)
                for i in range(0, len(data), _PARSE_SLICE):
                    self._parse(view[i : i + _PARSE_SLICE])
                    if self._closed:
                        break
        except _Closed:
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

    def _parse(self, data: bytes | memoryview) -> None:
        p = self._p
        if p is None:
            p = self._rebuild()
        buf = self._buf
        buf += data
        if not self._depth and (buf[0] in _UTF16_START or (len(buf) > 1 and buf[1] == 0)):
            # expat sniffs UTF-16 (byte order mark, or a NUL in the first two
            # bytes) even with UTF-8 forced; none of these can start UTF-8 XML
            raise StreamError(C.UNSUPPORTED_ENCODING, "UTF-16 is not supported, use UTF-8 (RFC 6120 §11.6)")
        p.Parse(data, False)
        # bookkeeping after expat has seen this piece
        fed = self._base + len(buf)
        depth = self._depth
        if depth >= 2:
            start = self._stanza_start
            if fed - start > self.max_stanza_bytes:
                raise StreamError(C.POLICY_VIOLATION, f"stanza larger than {self.max_stanza_bytes} bytes")
            keep = start
        elif depth == 1:
            scan = self._scan
            pos = _WHITESPACE.match(buf, scan - self._base).end() + self._base
            self._ws_run += pos - scan
            self._scan = pos
            if self._ws_run > MAX_WHITESPACE_RUN:
                raise StreamError(C.POLICY_VIOLATION, f"more than {MAX_WHITESPACE_RUN} bytes of whitespace between stanzas")
            if fed - pos > self.max_stanza_bytes:
                raise StreamError(C.POLICY_VIOLATION, f"stanza larger than {self.max_stanza_bytes} bytes")
            keep = pos
        else:
            if fed > MAX_HEADER_BYTES:
                raise StreamError(C.POLICY_VIOLATION, f"stream header larger than {MAX_HEADER_BYTES} bytes")
            return  # keep everything before the header (it is bounded)
        if keep > self._base:
            del buf[: keep - self._base]
            self._base = keep

    def _fail(self, exc: StreamError) -> None:
        self._error = exc
        self._release()

    def _release(self) -> None:
        self._buf = bytearray()
        self._builder = self._bstart = self._bend = None
        p = self._p
        if p is not None:
            p.StartElementHandler = p.EndElementHandler = p.CharacterDataHandler = None

    def _convert(self, exc: expat.ExpatError) -> StreamError:
        code = exc.code
        message = expat.ErrorString(code)
        where = self._p.ErrorByteIndex + self._shift
        if code in _ENCODING_ERRORS:
            return StreamError(C.UNSUPPORTED_ENCODING, f"only UTF-8 is supported ({message})")
        if code in _ENTITY_ERRORS:
            return StreamError(C.RESTRICTED_XML, f"entities are not allowed in XMPP ({message}, RFC 6120 §11.1)")
        # A DTD where expat cannot report it as one (inside content) is still
        # restricted XML rather than merely malformed.
        pos = self._buf.rfind(b"<", 0, where - self._base + 1)
        if pos >= 0 and self._buf.startswith(_DTD_MARKUP, pos):
            return StreamError(C.RESTRICTED_XML, "DTD declarations are not allowed in XMPP (RFC 6120 §11.1)")
        return StreamError(C.NOT_WELL_FORMED, f"{message} at byte {where}")

    # --------------------------------------------------------- expat handlers

    def _on_xml_decl(self, version: str, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() != "utf-8":
            raise StreamError(C.UNSUPPORTED_ENCODING, f"encoding {encoding!r} is not supported, use UTF-8")

    def _on_header_ns(self, prefix: str | None, uri: str) -> None:
        if prefix is None:
            self._header_default_ns = uri

    def _on_stream_text(self, text: str) -> None:
        # only called between stanzas (inside a stanza text goes to the builder)
        if text.strip(_WS_CHARS):
            raise StreamError(C.BAD_FORMAT, "text is not allowed between stanzas")

    # Stream level: the header, a stanza's top-level element, </stream:stream>.
    # Inside a stanza the lean _on_child_* handlers and the tree builder's own
    # data() method take over (swapped in and out once per stanza).

    def _on_start(self, name: str, attrs: dict[str, str]) -> None:
        names = self._names
        tag = names[name]
        if attrs and "}" in "".join(attrs):
            fixed = {names[k]: v for k, v in attrs.items()}
        else:
            fixed = attrs
        if not self._depth:
            self._depth = 1
            self._on_header(tag, fixed)
            return
        p = self._p
        buf = self._buf
        start = p.CurrentByteIndex + self._shift
        m = _START_TAG.match(buf, start - self._base)
        if m is None:  # pragma: no cover - would be a bug in the scanner
            raise RuntimeError("expat reported a start tag the scanner cannot find")
        self._depth = 2
        self._level = 0
        self._stanza_start = start
        self._stanza_tag_len = m.end() - m.start()
        self._stanza_empty = buf[m.end() - 2] == 0x2F  # '/>'
        prefixed = names.prefixed
        self._uses_prefix = name in prefixed or (fixed is not attrs and not prefixed.isdisjoint(attrs))
        builder = self._builder = ET.TreeBuilder()
        self._bstart = builder.start
        self._bend = builder.end
        p.StartElementHandler = self._h_child_start
        p.EndElementHandler = self._h_child_end
        p.CharacterDataHandler = builder.data
        builder.start(tag, fixed)

    def _on_child_start(self, name: str, attrs: dict[str, str]) -> None:
        level = self._level + 1
        if level >= self.max_depth:
            raise StreamError(C.POLICY_VIOLATION, f"elements nested deeper than {self.max_depth}")
        self._level = level
        names = self._names
        tag = names[name]  # first: a new name is classified (prefixed or not) here
        if name in names.prefixed:
            self._uses_prefix = True
        if attrs and "}" in "".join(attrs):
            # namespaced attributes (xml:lang, or a prefix that may come from outside)
            fixed = {names[k]: v for k, v in attrs.items()}
            if not names.prefixed.isdisjoint(attrs):
                self._uses_prefix = True
            attrs = fixed
        self._bstart(tag, attrs)

    def _on_child_end(self, name: str) -> None:
        level = self._level
        if level:
            self._level = level - 1
            self._bend(name)
        else:
            self._on_stanza_end(name)

    def _on_header(self, tag: str, attrs: dict[str, str]) -> None:
        if tag != _STREAM_TAG:
            raise StreamError(C.INVALID_NAMESPACE, f"expected <stream:stream> in namespace {NS_STREAM}, got {tag}")
        start = self._p.CurrentByteIndex + self._shift
        m = _START_TAG.match(self._buf, start - self._base)
        if m is None:  # pragma: no cover - would be a bug in the scanner
            raise RuntimeError("expat reported a start tag the scanner cannot find")
        self._header_raw = bytes(self._buf[m.start():m.end()])
        end = m.end() + self._base
        if end > MAX_HEADER_BYTES:
            raise StreamError(C.POLICY_VIOLATION, f"stream header larger than {MAX_HEADER_BYTES} bytes")
        self._header_empty = self._buf[m.end() - 2] == 0x2F  # <stream:stream/>
        self._header_end = end
        self._scan = end
        self._p.StartNamespaceDeclHandler = None
        self._events.append(StreamOpen(tag, dict(attrs), self._header_default_ns, end))

    def _on_stanza_end(self, name: str) -> None:
        p = self._p
        base = self._base
        buf = self._buf
        start = self._stanza_start
        if self._stanza_empty:
            end = start + self._stanza_tag_len
        else:
            end = buf.index(b">", p.CurrentByteIndex + self._shift - base) + 1 + base
        if end - start > self.max_stanza_bytes:
            raise StreamError(C.POLICY_VIOLATION, f"stanza larger than {self.max_stanza_bytes} bytes")
        elem = self._bend(name)
        self._builder = self._bstart = self._bend = None
        p.StartElementHandler = self._h_start
        p.EndElementHandler = self._h_end
        p.CharacterDataHandler = self._h_stream_text
        self._depth = 1
        raw = bytes(buf[start - base : end - base])
        self_contained = not self._uses_prefix or _reparses_alone(raw)
        self._events.append(Stanza(elem, raw, self._stanza_tag_len, self_contained, end))
        self._scan = end
        self._ws_run = 0

    def _on_end(self, name: str) -> None:
        # only </stream:stream>: stanzas end in _on_stanza_end
        p = self._p
        if self._header_empty:  # <stream:stream .../>
            end = self._header_end
        else:
            end = self._buf.index(b">", p.CurrentByteIndex + self._shift - self._base) + 1 + self._base
        self._depth = 0
        self._events.append(StreamClose(end))
        self._closed = True
        raise _Closed
