"""XMPP-style XML output: stanzas, the stream header, stream errors, start-tag rewriting.

Spec references:
  RFC 6120 §4.7    stream attributes (from, to, id, xml:lang, version)
  RFC 6120 §4.8    namespaces: the content namespace is the stream's default
                   namespace; the streams namespace uses the 'stream' prefix
  RFC 6120 §4.9    stream errors
  RFC 6120 §11     XML usage (UTF-8, no comments/PIs/DTDs are ever written)

Rules of this file:
  * Output is always UTF-8 bytes, attribute values in single quotes.
  * Elements in the stream's default namespace carry no xmlns; the first element
    of another namespace declares it as its default namespace (xmlns='...'),
    never an ``ns0:`` prefix.  Elements in the streams namespace are written with
    the ``stream:`` prefix that every stream header of ours declares, so the
    output is meant for inside such a stream (``<stream:features>``,
    ``<stream:error>``).
  * Text or attribute values containing characters XML 1.0 cannot carry raise
    ValueError: that is a bug in the caller, not something to put on the wire.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element

from xmppd.errors import NS_STREAMS, StreamErrorCondition

__all__ = [
    "serialize",
    "stream_header",
    "STREAM_CLOSE",
    "stream_error",
    "rewrite_start_tag",
]

NS_STREAM = "http://etherx.jabber.org/streams"
NS_XML = "http://www.w3.org/XML/1998/namespace"

STREAM_CLOSE: bytes = b"</stream:stream>"

# XML 1.0 Char production excludes these (surrogates fail at encoding anyway)
_INVALID = "\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff"
_INVALID_CHARS = re.compile(f"[{_INVALID}]")
# one search decides the common case (nothing to do) for text and attribute values
_TEXT_SPECIAL = re.compile(f"[&<>{_INVALID}]")
_ATTR_SPECIAL = re.compile(f"[&<>\"'\n\r\t{_INVALID}]")
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "'": "&apos;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def _check(s: str) -> None:
    m = _INVALID_CHARS.search(s)
    if m is not None:
        raise ValueError(f"character {m.group()!r} cannot be represented in XML 1.0")


def _escape_text(s: str) -> str:
    if _TEXT_SPECIAL.search(s) is None:
        return s
    _check(s)
    return s.translate(_TEXT_ESCAPES)


def _escape_attr(s: str) -> str:
    if _ATTR_SPECIAL.search(s) is None:
        return s
    _check(s)
    return s.translate(_ATTR_ESCAPES)


def serialize(elem: Element, *, default_ns: str = "jabber:client") -> bytes:
    """Serialize ``elem`` (Clark-notation tags and attributes) as it goes on a stream
    whose default namespace is ``default_ns``.

    Children's text and tails are written; the tail of ``elem`` itself is not
    (it lies outside the element).
    """
    out: list[str] = []
    _write(out, elem, default_ns)
    return "".join(out).encode("utf-8")


def _write(out: list[str], elem: Element, default_ns: str) -> None:
    tag = elem.tag
    if not isinstance(tag, str):
        raise ValueError("comments and processing instructions cannot be sent in XMPP")
    attrib = elem.attrib
    if tag[0] == "{":
        ns, _, name = tag[1:].partition("}")
    else:
        # convenience: Element("bind", xmlns="urn:...") means the namespace
        ns = attrib.get("xmlns", "")
        name = tag
    if ns == NS_STREAM:
        name = "stream:" + name
        out.append("<" + name)
    elif ns == default_ns:
        out.append("<" + name)
    else:
        out.append("<" + name + " xmlns='" + _escape_attr(ns) + "'")
        default_ns = ns
    if attrib:
        n_prefixes = 0
        for key, value in attrib.items():
            if key[0] == "{":
                ans, _, local = key[1:].partition("}")
                if ans == NS_XML:
                    key = "xml:" + local
                elif ans == NS_STREAM:
                    key = "stream:" + local
                else:
                    n_prefixes += 1
                    prefix = f"a{n_prefixes}"
                    out.append(" xmlns:" + prefix + "='" + _escape_attr(ans) + "'")
                    key = prefix + ":" + local
            elif key == "xmlns":
                if tag[0] == "{":
                    raise ValueError(f"{tag}: use Clark notation or an xmlns attribute, not both")
                continue
            elif key.startswith("xmlns:"):
                raise ValueError(f"{tag}: namespace declarations are generated, use Clark notation")
            out.append(" " + key + "='" + _escape_attr(value) + "'")
    text = elem.text
    if not text and not len(elem):
        out.append("/>")
        return
    out.append(">")
    if text:
        out.append(_escape_text(text))
    for child in elem:
        _write(out, child, default_ns)
        tail = child.tail
        if tail:
            out.append(_escape_text(tail))
    out.append("</" + name + ">")


def stream_header(
    *,
    from_: str | None,
    to: str | None = None,
    id_: str | None = None,
    version: str | None = "1.0",
    lang: str | None = "en",
    ns: str = "jabber:client",
) -> bytes:
    """The XML declaration and ``<stream:stream ...>`` start tag (RFC 6120 §4.7)."""
    parts = [
        "<?xml version='1.0'?><stream:stream xmlns='",
        _escape_attr(ns),
        "' xmlns:stream='" + NS_STREAM + "'",
    ]
    for name, value in (("from", from_), ("to", to), ("id", id_), ("version", version), ("xml:lang", lang)):
        if value is not None:
            parts.append(" " + name + "='" + _escape_attr(value) + "'")
    parts.append(">")
    return "".join(parts).encode("utf-8")


def stream_error(condition: StreamErrorCondition, text: str | None = None) -> bytes:
    """``<stream:error>`` with a defined condition and optional text (RFC 6120 §4.9.2)."""
    cond = StreamErrorCondition(condition).value
    out = "<stream:error><" + cond + " xmlns='" + NS_STREAMS + "'/>"
    if text:
        out += "<text xmlns='" + NS_STREAMS + "'>" + _escape_text(text) + "</text>"
    return (out + "</stream:error>").encode("utf-8")


# --------------------------------------------------------------- fast path

_TAG_NAME = re.compile(rb"<[^\s/>]++")
_ATTRIBUTE = re.compile(rb"""[ \t\r\n]++([^\s=/>]++)[ \t\r\n]*+=[ \t\r\n]*+('[^']*+'|"[^"]*+")""")
_TAG_END = re.compile(rb"[ \t\r\n]*+/?>")
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_checked_names: dict[str, bytes] = {"from": b"from", "to": b"to", "id": b"id", "type": b"type"}


def rewrite_start_tag(raw: bytes, start_tag_len: int, set_attrs: dict[str, str]) -> bytes:
    """Return ``raw`` with unqualified attributes of its top-level start tag set.

    ``raw[:start_tag_len]`` must be one complete start tag as the parser found
    it (``Stanza.raw`` / ``Stanza.start_tag_len``).  Existing attributes named in
    ``set_attrs`` get the new value (in their original quote style); missing ones
    are appended after the last attribute.  Every other byte is unchanged.
    """
    # fast path (the relay's case): none of the names occurs anywhere in the start tag, so
    # each is absent: insert it after the last attribute, where the general path puts it
    if 1 < start_tag_len <= len(raw) and raw[start_tag_len - 1] == 0x3E and raw[0] == 0x3C:  # '>' '<'
        added: list[bytes] = []
        for key, value in set_attrs.items():
            bkey = _checked_names.get(key)
            if bkey is None or raw.find(bkey, 0, start_tag_len) != -1:
                break
            added.append(b" " + bkey + b"='" + _escape_attr(value).encode("utf-8") + b"'")
        else:
            if added:
                end = start_tag_len - 1
                if raw[end - 1] == 0x2F:  # '/>'
                    end -= 1
                while raw[end - 1] in b" \t\r\n":
                    end -= 1
                return b"".join((raw[:end], *added, raw[end:]))
    new: dict[bytes, str] = {}
    for key, value in set_attrs.items():
        bkey = _checked_names.get(key)
        if bkey is None:
            if _PLAIN_NAME.fullmatch(key) is None:
                raise ValueError(f"not an unqualified attribute name: {key!r}")
            bkey = key.encode("ascii")
            if len(_checked_names) < 64:  # bounded cache of validated names
                _checked_names[key] = bkey
        new[bkey] = _escape_attr(value)
    m = _TAG_NAME.match(raw)
    if m is None or start_tag_len > len(raw):
        raise ValueError("raw does not start with a start tag")
    pos = m.end()
    pieces: list[bytes] = []
    done = 0  # raw[:done] is already in pieces
    match = _ATTRIBUTE.match
    while (a := match(raw, pos, start_tag_len)) is not None:
        name = a.group(1)
        if name in new:
            v_start, v_end = a.span(2)
            quote = raw[v_start : v_start + 1]
            pieces.append(raw[done:v_start])
            pieces.append(quote + new.pop(name).encode("utf-8") + quote)
            done = v_end
        pos = a.end()
    if _TAG_END.fullmatch(raw, pos, start_tag_len) is None:
        raise ValueError("raw[:start_tag_len] is not a well-formed start tag")
    if not pieces and not new:
        return bytes(raw)
    pieces.append(raw[done:pos])
    for name, value in new.items():
        pieces.append(b" " + name + b"='" + value.encode("utf-8") + b"'")
    pieces.append(raw[pos:])
    return b"".join(pieces)
