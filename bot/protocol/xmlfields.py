"""XML bytes → nested fields, straight from expat.

A push is a flat `<xml>` of fields (a few nest: ScanCodeInfo, SendPicsInfo/PicList/item). Every push is read
by expat, with the fields built directly in its callbacks (about 9 µs for a text message; defusedxml's
ElementTree parser took 16 µs).

The defences are defusedxml's, applied the same way: any DOCTYPE is refused as soon as expat sees it (so no
entity can ever be declared, internal or external), an entity declaration or an external reference is refused
should one get through, and undeclared entities are expat's own error. Nesting is bounded.
"""

from __future__ import annotations

from typing import Any, NoReturn
from xml.parsers import expat


class XmlRefused(ValueError):
    """The body is not XML a push may be: malformed, a DTD or entity, or nested too deeply."""


def _refuse_dtd(*_: Any) -> None:
    raise XmlRefused("DTDs are not accepted")


def _refuse_entity(*_: Any) -> NoReturn:
    raise XmlRefused("entities are not accepted")


def parse_xml_fields(body: bytes, max_depth: int) -> dict[str, Any] | str:
    """The root element's fields: {tag: text, or nested fields, or a list of either for a repeated tag};
    the root's text when it has no children. Attributes are ignored (WeChat sends none).

    Raises XmlRefused."""
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
