"""XML bytes → nested fields, straight from expat.

A push is a flat `<xml>` of fields (a few nest: ScanCodeInfo, SendPicsInfo/PicList/item). Most pushes are read
by one regular expression that accepts only that flat shape with text XML would leave as it is (4.6 µs for a
text message); everything else goes to expat, with the fields built directly in its callbacks (8.8 µs).
defusedxml's pure-Python ElementTree parser took 16 µs and was the largest single cost of a push.

The defences are defusedxml's, applied the same way: any DOCTYPE is refused as soon as expat sees it (so no
entity can ever be declared, internal or external), an entity declaration or an external reference is refused
should one get through, and undeclared entities are expat's own error. Nesting is bounded.
"""

from __future__ import annotations

import re
from typing import Any
from xml.parsers import expat


class XmlRefused(ValueError):
    """The body is not XML a push may be: malformed, a DTD or entity, or nested too deeply."""


def _refuse_dtd(*_: Any) -> None:
    raise XmlRefused("DTDs are not accepted")


def _refuse_entity(*_: Any) -> None:
    raise XmlRefused("entities are not accepted")


# The shape of nearly every push: one root holding distinct fields, each plain text or one CDATA section.
# Text that XML would transform or refuse (entities, \r, control characters, `]`) is left out of the pattern,
# as is anything else (declarations, comments, attributes, nesting, repeats): those go to expat. What the
# pattern accepts, expat reads to the same fields (tests/test_xmlfields.py holds the two to that).
_SPACE = r"[ \t\n]*"
_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_NOT_TEXT = r"\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff"  # \r: XML turns it into \n; the rest: not XML
_CDATA = rf"<!\[CDATA\[([^\]{_NOT_TEXT}]*)\]\]>"  # a `]` inside (rare) goes to expat: it may end the section


def _field(group: int) -> str:
    return rf"<({_NAME})>(?:{_CDATA}|([^<&\]{_NOT_TEXT}]*))</\{group}>"


_FLAT = re.compile(rf"{_SPACE}<({_NAME})>((?:{_SPACE}{_field(3)})*){_SPACE}</\1>{_SPACE}")
_FIELDS = re.compile(_field(1))


def parse_xml_fields(body: bytes, max_depth: int) -> dict[str, Any] | str:
    """The root element's fields: {tag: text, or nested fields, or a list of either for a repeated tag};
    the root's text when it has no children. Attributes are ignored (WeChat sends none).

    Raises XmlRefused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and (flat := _FLAT.fullmatch(text)) is not None:
        fields = {tag: cdata or plain for tag, cdata, plain in _FIELDS.findall(flat.group(2))}
        if fields and len(fields) == flat.group(2).count("</"):  # no tag repeated (repeats become lists)
            return fields
    return _parse_with_expat(body, max_depth)


def _parse_with_expat(body: bytes, max_depth: int) -> dict[str, Any] | str:
    # each open element: [tag, fields-or-None, text parts, tags seen more than once]
    stack: list[list[Any]] = [["", None, [], None]]

    def start(tag: str, _attrs: Any) -> None:
        if len(stack) > max_depth + 1:
            raise XmlRefused("nested too deeply")
        parent = stack[-1]
        if parent[1] is None:
            parent[1] = {}
        stack.append([tag, None, [], None])

    def end(_tag: str) -> None:
        tag, fields, texts, _ = stack.pop()
        value = fields if fields is not None else "".join(texts)
        parent = stack[-1]
        siblings = parent[1]
        if tag in siblings:
            repeated = parent[3]
            if repeated is None:
                repeated = parent[3] = set()
            if tag in repeated:
                siblings[tag].append(value)
            else:
                siblings[tag] = [siblings[tag], value]
                repeated.add(tag)
        else:
            siblings[tag] = value

    def text(data: str) -> None:
        node = stack[-1]
        if node[1] is None:  # text after a child element is not the element's text (as in ElementTree)
            node[2].append(data)

    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_entity
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise XmlRefused(f"invalid XML: {expat.ErrorString(exc.code)}") from None
    except XmlRefused:
        raise
    except (LookupError, ValueError) as exc:  # an encoding declaration expat hands to Python's codecs: gbk, x-…
        raise XmlRefused(f"unsupported encoding ({exc})") from None
    except RecursionError:  # pragma: no cover - the depth bound comes first
        raise XmlRefused("nested too deeply") from None
    root = stack[0][1]
    if not root:
        raise XmlRefused("no root element")
    return next(iter(root.values()))
