"""The stream parser's expat callbacks: the header, each stanza's tree and raw bytes.

Spec references:
  RFC 6120 §4.2   stream opening (the header is the root element's start tag)
  RFC 6120 §4.7.1 the stream header's namespace must be the streams namespace
  RFC 6120 §11.1  restricted XML (through :mod:`xmppd.xml._expat`)

Rules of this file:
  * A mixin of :class:`xmppd.xml.parser._Core` (state lives there, in its
    ``__slots__``); expat calls these methods.  At stream level the ``_on_*``
    handlers run; inside a stanza the lean ``_on_child_*`` handlers and the tree
    builder's own ``data()`` method take over (swapped in and out once per stanza).
  * Internal exceptions abort expat: :class:`Closed` after ``</stream:stream>``,
    :class:`Rebuild` after a stanza that pushed the name tables past their bound.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from xmppd.errors import StreamError, StreamErrorCondition
from xmppd.xml._expat import reparses_alone
from xmppd.xml.events import NS_STREAM, Stanza, StreamClose, StreamOpen

__all__ = ["Closed", "Rebuild", "Names", "TreeHandlers", "ignore"]

_STREAM_TAG = "{%s}stream" % NS_STREAM
_XML_PREFIX = "xml"
_WS_CHARS = " \t\r\n"
C = StreamErrorCondition

# A complete start tag beginning at '<'.  Possessive quantifiers: expat has
# already checked the tag, this only finds its end ('>' may sit inside quotes).
_START_TAG = re.compile(rb"""<(?:[^'">]++|'[^']*+'|"[^"]*+")*+>""")


class Closed(Exception):
    """Internal: abort expat after the stream's end tag."""


def ignore(*_args: object) -> None:
    pass


class Names(dict):
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



class Rebuild(Exception):
    """Internal: abort expat at a stanza boundary; the rest goes to a new one."""



class TreeHandlers:
    """expat callbacks of the stream parser (see the module docstring)."""

    __slots__ = ()
    _p: Any
    _names: Names

    def _check_header_size(self, end: int) -> None:  # pragma: no cover - the parser's own
        raise NotImplementedError

    def _names_full(self, intern: dict[str, str]) -> bool:  # pragma: no cover - the parser's own
        raise NotImplementedError

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
        self._check_header_size(end)
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
        self_contained = not self._uses_prefix or reparses_alone(raw)
        self._events.append(Stanza(elem, raw, self._stanza_tag_len, self_contained, end))
        self._scan = end
        self._ws_run = 0
        intern = p.intern
        if len(intern) != self._n_names and self._names_full(intern):
            self._rebuild_at = end
            raise Rebuild

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
        raise Closed
