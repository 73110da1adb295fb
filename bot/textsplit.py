"""Splitting long texts for WeChat: no source confirms the customer-service text limit, so texts are split
at about 2,000 UTF-8 bytes (wechat-protocol.md §5) — at line breaks where possible, then at sentence ends,
then at any character — and each part is sent as its own message, in order."""

from __future__ import annotations

import re

from .messages import Reply, TextReply

LIMIT = 2000
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;…])|(?<=\. )")


def split_text(text: str, limit: int = LIMIT) -> list[str]:
    """Parts of `text`, each at most `limit` UTF-8 bytes, that joined give the text back (line breaks at
    split points aside)."""
    if len(text.encode("utf-8")) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for piece in _pieces(text, limit):
        candidate = f"{current}\n{piece}" if current else piece
        if current and len(candidate.encode("utf-8")) > limit:
            parts.append(current)
            current = piece
        else:
            current = candidate
    if current:
        parts.append(current)
    return [p for p in (part.strip("\n") for part in parts) if p]


def _pieces(text: str, limit: int) -> list[str]:
    """Lines, with lines longer than the limit cut at sentence ends, then at characters."""
    out: list[str] = []
    for line in text.split("\n"):
        if len(line.encode("utf-8")) <= limit:
            out.append(line)
            continue
        out.extend(_cut(line, limit))
    return out


def _cut(line: str, limit: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for sentence in (s for s in _SENTENCE_END.split(line) if s):
        while len(sentence.encode("utf-8")) > limit:  # one sentence longer than the limit
            head = _prefix(sentence, limit - len(current.encode("utf-8")))
            if not head:
                chunks.append(current)
                current = ""
                continue
            chunks.append(current + head)
            current, sentence = "", sentence[len(head):]
        if len((current + sentence).encode("utf-8")) > limit:
            chunks.append(current)
            current = sentence
        else:
            current += sentence
    if current:
        chunks.append(current)
    return chunks


def _prefix(text: str, budget: int) -> str:
    """The longest prefix of `text` within `budget` UTF-8 bytes (never a broken character)."""
    encoded = text.encode("utf-8")[:max(budget, 0)]
    return encoded.decode("utf-8", "ignore")


def split_replies(replies: tuple[Reply, ...], limit: int = LIMIT) -> tuple[Reply, ...]:
    """The replies with every text longer than `limit` UTF-8 bytes split into several texts."""
    for reply in replies:  # a character is at most 4 UTF-8 bytes (an emoji is 4): only a text that could be
        if isinstance(reply, TextReply) and len(reply.content) * 4 > limit and \
                len(reply.content.encode("utf-8")) > limit:  # over the limit is encoded
            break
    else:
        return replies  # the common case: nothing near the limit
    out: list[Reply] = []
    for reply in replies:
        if isinstance(reply, TextReply):
            out.extend(TextReply(part) for part in split_text(reply.content, limit))
        else:
            out.append(reply)
    return tuple(out)
