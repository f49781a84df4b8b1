"""How :mod:`xmppd.xml.parser` sets up expat: restricted XML, error classes.

Spec references:
  RFC 6120 §11.1  restricted XML: no comments, PIs, DTDs, entity declarations
  RFC 6120 §11.6  UTF-8 only

Every parser is created with protocol encoding UTF-8 (the declared encoding
is checked, never obeyed), namespace processing with prefixes reported,
parameter-entity parsing off, and every DTD-related callback raising
restricted-xml, so no entity is ever expanded beyond the five predefined ones
and character references.  On expat >= 2.6 the re-parse deferral heuristic is
switched off because it can hold back a complete end tag until more data
arrives, i.e. delay a stanza indefinitely (the parser coalesces input itself,
see :mod:`xmppd.xml.coalesce`).
"""

from __future__ import annotations

from typing import Any
from xml.parsers import expat

from xmppd.errors import StreamError, StreamErrorCondition

__all__ = ["SEPARATOR", "ENCODING_ERRORS", "ENTITY_ERRORS", "new_expat", "reparses_alone"]

#: expat's namespace separator: names arrive as 'uri}local}prefix', 'uri}local' or 'local'
SEPARATOR = "}"


def _expat_codes(*names: str) -> frozenset[int]:
    errors = expat.errors
    return frozenset(errors.codes[getattr(errors, n)] for n in names if hasattr(errors, n))


ENCODING_ERRORS = _expat_codes("XML_ERROR_INCORRECT_ENCODING", "XML_ERROR_UNKNOWN_ENCODING")
ENTITY_ERRORS = _expat_codes(
    "XML_ERROR_AMPLIFICATION_LIMIT_BREACH",
    "XML_ERROR_RECURSIVE_ENTITY_REF",
    "XML_ERROR_ENTITY_DECLARED_IN_PE",
    "XML_ERROR_EXTERNAL_ENTITY_HANDLING",
    "XML_ERROR_BINARY_ENTITY_REF",
    "XML_ERROR_ASYNC_ENTITY",
    "XML_ERROR_PARAM_ENTITY_REF",
)


def _restricted(what: str):
    def handler(*_args: object) -> None:
        raise StreamError(StreamErrorCondition.RESTRICTED_XML, f"{what} are not allowed in XMPP (RFC 6120 §11.1)")

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


def new_expat() -> Any:
    """A pyexpat parser set up for XMPP (no element/text handlers yet).

    Its ``intern`` dict holds every distinct element and attribute name (and,
    through the C-level ``EndNamespaceDeclHandler`` set here, every namespace
    prefix) it has seen: the stream parser counts it to bound the per-stream
    name tables (expat's own grow in step and are freed only with the parser).
    """
    p = expat.ParserCreate("UTF-8", SEPARATOR)
    p.namespace_prefixes = True
    p.ordered_attributes = False
    p.buffer_text = False
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    if hasattr(p, "SetReparseDeferralEnabled"):  # expat >= 2.6
        p.SetReparseDeferralEnabled(False)
    # a C builtin taking one argument: calls cost next to nothing, and pyexpat
    # interns the prefix it passes, so declared prefixes show up in p.intern
    p.EndNamespaceDeclHandler = id
    for attr, handler in _RESTRICTED_HANDLERS:
        setattr(p, attr, handler)
    return p


def reparses_alone(raw: bytes) -> bool:
    """True iff every namespace prefix ``raw`` uses is declared inside it.

    Only called for stanzas that use a prefix at all (rare: ``<stream:error>``,
    s2s ``<db:result>``).  ``raw`` is already known to be well-formed, so the
    only way this parse fails is an unbound prefix.
    """
    p = expat.ParserCreate("UTF-8", SEPARATOR)
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        p.Parse(b"<w>" + raw + b"</w>", True)
    except expat.ExpatError:
        return False
    return True
