"""Pushes are read by expat into fields exactly as ElementTree would read them, and DTDs and entities are
refused."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.protocol.xmlfields import XmlRefused, parse_xml_fields

PUSH = ("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o_1]]></FromUserName>"
        "<CreateTime>1714112445</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        "<Content><![CDATA[我的快递到哪了]]></Content><MsgId>1000000001</MsgId></xml>").encode()


def _fields(element: ET.Element):
    if len(element) == 0:
        return element.text or ""
    out: dict = {}
    for child in element:
        value = _fields(child)
        if child.tag not in out:
            out[child.tag] = value
        elif isinstance(out[child.tag], list):  # a field's value is text or fields, never a list
            out[child.tag].append(value)
        else:
            out[child.tag] = [out[child.tag], value]
    return out


def both(body: bytes):
    """(our result, ElementTree's), each a value or the XmlRefused class."""
    try:
        ours = parse_xml_fields(body, 32)
    except XmlRefused:
        ours = XmlRefused
    try:
        theirs = _fields(ET.fromstring(body))
    except (ET.ParseError, LookupError, ValueError):
        theirs = XmlRefused
    return ours, theirs


def test_a_push_reads_to_its_fields():
    assert parse_xml_fields(PUSH, 32) == {"ToUserName": "gh_1", "FromUserName": "o_1", "CreateTime": "1714112445",
                                          "MsgType": "text", "Content": "我的快递到哪了", "MsgId": "1000000001"}


@pytest.mark.parametrize("body", [
    b"<xml><A><![CDATA[a]]]></A></xml>",  # a ] before the end of the section
    b"<xml><A><![CDATA[a]]]]></A><B>x</B></xml>",
    b"<xml>\n <A>1</A>\r\n</xml>\n",
    b"<xml><A>1</A><A>2</A><A>3</A></xml>",  # repeated: a list
    b"<xml><A>x &amp; y</A></xml>",  # an entity
    b"<xml><A>a\rb</A></xml>",  # \r becomes \n
    b"<xml><A><![CDATA[a\r\nb]]></A></xml>",
    b"<xml><A><B>1</B></A></xml>",  # nested
    b"<xml><A/></xml>",
    b"<xml><A x='1'>v</A></xml>",
    b"<?xml version='1.0' encoding='utf-8'?><xml><A>v</A></xml>",
    b"\xef\xbb\xbf<xml><A>v</A></xml>",
    b"<xml><A>v</A><!-- c --></xml>",
    b"<xml><A>\x01</A></xml>",  # not XML
    b"<xml><A>v</B></xml>",
    b"<xml><A>v</A></xml><xml/>",
    b"<xml>text only</xml>",
    b"<xml></xml>",
    "<xml><A>\U0001f600 表情</A></xml>".encode(),
    b"<xml><A>\xff</A></xml>",  # not UTF-8
])
def test_fields_are_what_elementtree_reads(body):
    ours, theirs = both(body)
    assert ours == theirs


def test_dtds_and_entities_are_refused():
    laughs = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
              b"<xml><A>&b;</A></xml>")
    external = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><A>&e;</A></xml>'
    for body in (laughs, external, b"<!DOCTYPE xml><xml><A>v</A></xml>", b"<xml><A>&undeclared;</A></xml>"):
        with pytest.raises(XmlRefused):
            parse_xml_fields(body, 32)


def test_depth_is_bounded():
    deep = b"<xml>" + b"<a>" * 40 + b"x" + b"</a>" * 40 + b"</xml>"
    with pytest.raises(XmlRefused, match="deeply"):
        parse_xml_fields(deep, 32)


TAGS = st.sampled_from(["ToUserName", "FromUserName", "MsgType", "Content", "A", "b.c", "_x"])
TEXT = st.text(alphabet=st.sampled_from(list("ab 快递\t\n\r]>[<&;!-CDAT\x00\x1f\ufffe\U0001f600")), max_size=12)
SPACE = st.sampled_from(["", " ", "\n", "\t", "\r\n", "  \n  "])


@st.composite
def documents(draw) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        tag, value, space = draw(TAGS), draw(TEXT), draw(SPACE)
        kind = draw(st.sampled_from(["cdata", "text", "escaped", "empty"]))
        if kind == "cdata":
            inner = f"<![CDATA[{value}]]>"
        elif kind == "escaped":
            inner = value.replace("&", "&amp;").replace("<", "&lt;")
        elif kind == "empty":
            inner = ""
        else:
            inner = value
        parts.append(f"{space}<{tag}>{inner}</{tag}>")
    doc = f"{draw(SPACE)}<xml>{''.join(parts)}{draw(SPACE)}</xml>{draw(SPACE)}"
    return doc.encode("utf-8", "surrogatepass")


@settings(max_examples=600, deadline=None)
@given(documents())
def test_fields_are_what_elementtree_reads_on_generated_documents(body):
    ours, theirs = both(body)
    assert ours == theirs


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(PUSH) - 1), st.binary(min_size=1, max_size=3))
def test_fields_are_what_elementtree_reads_on_mutated_pushes(at, junk):
    body = PUSH[:at] + junk + PUSH[at + len(junk):]
    ours, theirs = both(body)
    assert ours == theirs
