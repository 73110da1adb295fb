"""What no rule answers, grouped so that near-duplicates fall together (pure).

Each unanswered message is normalised as the rules normalise text; equal normalised texts are counted once
with their users and the ways they were written. Each text is cut into words (words.py), and every word is
weighed by how many unanswered messages contain it. A text joins the group of its heaviest word — the thing
most people who wrote it also asked about — so "发票怎么开", "能开发票吗" and "请问怎么开发票呀" all fall under
发票, whatever else they say. A text without a content word ("？？", "好的") is a group of its own text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .words import normalize, words


@dataclass(slots=True)
class Said:
    """One normalised text: how often, by whom, and how it was written."""

    count: int = 0
    users: set[str] = field(default_factory=set)
    writings: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Group:
    key: str  # the word the group is about (or, for a group without words, its text)
    messages: int
    users: int
    words: tuple[str, ...]  # the words that characterise it, the most common first
    examples: tuple[str, ...]  # the commonest ways users wrote it (none shown when insights.examples is false)
    texts: int  # distinct normalised texts in it
    has_words: bool = True  # False: the group is one text without content words (draft: equals, not keywords)


class Unanswered:
    """Collects unanswered messages as written (one dict step per message: the work per distinct text is done
    once, in `groups()`)."""

    def __init__(self) -> None:
        self.written: dict[str, tuple[list[int], set[str]]] = {}  # text as sent → ([count], users)
        self.messages = 0
        self._said: dict[str, Said] = {}

    def add(self, text: str, user: str) -> None:
        self.messages += 1
        seen = self.written.get(text)
        if seen is None:
            self.written[text] = ([1], {user})
        else:
            seen[0][0] += 1
            seen[1].add(user)

    def merge(self, other: Unanswered) -> None:
        self.messages += other.messages
        for text, (count, users) in other.written.items():
            seen = self.written.get(text)
            if seen is None:
                self.written[text] = (count, users)
            else:
                seen[0][0] += count[0]
                seen[1].update(users)

    def said(self) -> dict[str, Said]:
        """The messages by normalised text; those that normalise to nothing ("？？") are left out."""
        out: dict[str, Said] = {}
        for text, (count, users) in self.written.items():
            key = normalize(text)
            if key:
                said = out.get(key)
                if said is None:
                    said = out[key] = Said()
                said.count += count[0]
                said.users |= users
                said.writings[text] += count[0]
        return out

    def groups(self, top: int = 10) -> list[Group]:
        """The `top` largest groups, the largest first (ties: by key)."""
        self._said = said_by_text = self.said()
        cut = {text: words(text) for text in said_by_text}
        weight: Counter[str] = Counter()
        for text, said in said_by_text.items():
            for word in cut[text]:
                weight[word] += said.count
        members: dict[str, list[str]] = {}
        for text, found in cut.items():
            key = max(found, key=lambda w: (weight[w], len(w), w)) if found else text
            members.setdefault(key, []).append(text)
        sizes = {key: sum(said_by_text[t].count for t in texts) for key, texts in members.items()}
        chosen = sorted(sizes, key=lambda k: (-sizes[k], k))[:top]
        return [self._group(key, members[key], cut, sizes[key]) for key in chosen]

    def _group(self, key: str, texts: list[str], cut: dict[str, tuple[str, ...]], size: int) -> Group:
        users: set[str] = set()
        counts: Counter[str] = Counter()
        writings: Counter[str] = Counter()
        for text in texts:
            said = self._said[text]
            users |= said.users
            for word in cut[text]:
                counts[word] += said.count
            writings.update(said.writings)
        common = [w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:8]]
        # 开发 and 发票 inside 开发票 are the segmenter's, not the users': the longer word says it
        top_words = tuple(w for w in common if w == key or not any(w in o and w != o for o in common))[:5]
        shown = tuple(w for w, _ in sorted(writings.items(), key=lambda wc: (-wc[1], wc[0]))[:3])
        return Group(key, size, len(users), top_words, shown, len(texts), bool(cut[texts[0]]))
