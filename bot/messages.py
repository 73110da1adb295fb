"""What users send (Message and its kinds) and what the bot sends back (Reply and its kinds).

Every message and reply type is a frozen dataclass with domain names (the Decision, one per push, an
equally immutable NamedTuple). A message also
keeps every field as it was received in `fields`, so that a field WeChat adds tomorrow is still there for
rules and templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Common to every push. `msg_type` and `event` are lowercase; `fields` holds everything received."""

    to_user: str  # the account's original id (gh_...)
    from_user: str  # the user's openid
    create_time: int
    msg_type: str
    msg_id: str | None = None
    fields: Mapping[str, Any]
    # What identifies a delivery of this push, so that WeChat's retries are recognised: made once (a push asks
    # for it five times: the dedupe, the outbox, the request id, the shared answer)
    dedupe_key: str = field(init=False, repr=False, compare=False)
    is_event: ClassVar[bool] = False  # a class attribute, not a property: asked several times per push

    def __post_init__(self) -> None:
        object.__setattr__(self, "dedupe_key", self._dedupe_key())

    def _dedupe_key(self) -> str:
        if self.msg_id:
            return f"msg:{self.msg_id}"
        return f"push:{self.from_user}:{self.create_time}:{self.msg_type}"

    @property
    def text(self) -> str | None:
        """The text rules match against: a text message's content, a voice's recognition, else None."""
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class TextMessage(Message):
    content: str
    menu_id: str | None = None  # bizmsgmenuid: a tap on a msgmenu option (official accounts)

    @property
    def text(self) -> str:
        return self.content


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageMessage(Message):
    pic_url: str | None = None
    media_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MiniProgramPageMessage(Message):
    title: str | None = None
    app_id: str | None = None
    page_path: str | None = None
    thumb_url: str | None = None
    thumb_media_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VoiceMessage(Message):
    media_id: str | None = None
    format: str | None = None
    recognition: str | None = None

    @property
    def text(self) -> str | None:
        return self.recognition or None


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoMessage(Message):
    """`video` and `shortvideo`; msg_type tells which."""

    media_id: str | None = None
    thumb_media_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationMessage(Message):
    latitude: float | None = None
    longitude: float | None = None
    scale: int | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkMessage(Message):
    title: str | None = None
    description: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventMessage(Message):
    """Any event. `event` is lowercase (WeChat mixes cases); `event_key` as received."""

    event: str
    event_key: str | None = None
    is_event: ClassVar[bool] = True

    def _dedupe_key(self) -> str:
        return f"event:{self.from_user}:{self.create_time}:{self.event}:{self.event_key or ''}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnterSessionEvent(EventMessage):
    """user_enter_tempsession: the user opened customer service from a mini program."""

    session_from: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeEvent(EventMessage):
    """subscribe (scene set when it came through a parametric QR code) or SCAN (scene = event_key)."""

    ticket: str | None = None
    scene: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationEvent(EventMessage):
    latitude: float | None = None
    longitude: float | None = None
    precision: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MenuEvent(EventMessage):
    """CLICK, VIEW, scancode_*, pic_*, location_select, view_miniprogram."""

    menu_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class KfSessionEvent(EventMessage):
    """kf_create_session, kf_close_session, kf_switch_session."""

    kf_account: str | None = None
    from_kf_account: str | None = None
    to_kf_account: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownMessage(Message):
    """A message type kefu does not know yet; everything is in `fields`."""


# ---- replies ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaFile:
    """An image file a reply sends: uploaded once, its media_id cached by content (`digest`)."""

    path: str
    digest: str  # sha256 of the content
    size: int


@dataclass(frozen=True, slots=True)
class Reply:
    """Something the bot sends to a user."""

    kind = "reply"


@dataclass(frozen=True, slots=True)
class TextReply(Reply):
    content: str
    kind = "text"


@dataclass(frozen=True, slots=True)
class ImageReply(Reply):
    media_id: str
    file: MediaFile | None = None  # an image file to upload (media_id is found when it is sent)
    kind = "image"


@dataclass(frozen=True, slots=True)
class LinkReply(Reply):
    title: str
    description: str
    url: str
    thumb_url: str
    kind = "link"


@dataclass(frozen=True, slots=True)
class MiniProgramPageReply(Reply):
    title: str
    pagepath: str
    thumb_media_id: str
    appid: str | None = None  # required on official accounts, absent on mini programs
    thumb_file: MediaFile | None = None  # a thumbnail file to upload instead of thumb_media_id
    kind = "miniprogrampage"


@dataclass(frozen=True, slots=True)
class VoiceReply(Reply):
    media_id: str
    kind = "voice"


@dataclass(frozen=True, slots=True)
class VideoReply(Reply):
    media_id: str
    title: str = ""
    description: str = ""
    thumb_media_id: str = ""
    kind = "video"


@dataclass(frozen=True, slots=True)
class MusicReply(Reply):
    title: str
    description: str
    music_url: str
    hq_music_url: str
    thumb_media_id: str
    kind = "music"


@dataclass(frozen=True, slots=True)
class NewsReply(Reply):
    """One article (WeChat allows one per message since 2018)."""

    title: str
    description: str
    url: str
    pic_url: str
    kind = "news"


@dataclass(frozen=True, slots=True)
class MenuReply(Reply):
    """msgmenu: options the user taps; the tap comes back as a text with bizmsgmenuid = the option's id."""

    head_content: str
    options: tuple[tuple[str, str], ...]  # (id, content)
    tail_content: str = ""
    kind = "msgmenu"


@dataclass(frozen=True, slots=True)
class CardReply(Reply):
    card_id: str
    kind = "wxcard"


@dataclass(frozen=True, slots=True)
class TypingReply(Reply):
    """Not a message: shows "typing…" to the user (for up to 15 s, or until the next message)."""

    kind = "typing"


# What an official account may answer passively, in the HTTP answer itself.
PASSIVE_KINDS = frozenset({"text", "image", "voice", "video", "music", "news"})
# What only official accounts can send.
OFFICIAL_ACCOUNT_KINDS = frozenset({"voice", "video", "music", "news", "msgmenu", "wxcard"})


@dataclass(frozen=True, slots=True)
class State:
    """Where a user's conversation is (`set_state: awaiting_order`) and what the bot remembered on the way."""

    name: str
    values: Mapping[str, str]

    def as_context(self) -> dict[str, str]:
        return {**self.values, "name": self.name}


@dataclass(frozen=True, slots=True)
class StateChange:
    """What a decision does to the user's state: set a new one (for `ttl` seconds) or clear it."""

    new: State | None  # None: clear
    ttl: float = 600.0


class Decision(NamedTuple):
    """What the engine decided for one message; engine/outcome.py's plan() says what it means for the push.

    Immutable, like every value here, but a NamedTuple rather than a frozen dataclass: one is made per push,
    and a frozen dataclass sets each of its fields through object.__setattr__ — about ten times the cost
    (7 µs against 0.6 µs for this one, measured on a busy machine)."""

    rule: str | None  # the rule that fired; None when the fallback answered
    replies: tuple[Reply, ...] = ()
    transfer: bool = False
    match: Mapping[str, Any] | None = None
    version: str = ""
    error: str | None = None  # set when a reply could not be rendered
    passive: bool = False  # official accounts: the (single) reply goes in the HTTP answer itself
    kf_account: str | None = None  # transfer to this agent (official accounts)
    send_as: str | None = None  # API sends appear from this agent (customservice.kf_account)
    state: StateChange | None = None  # None: the user's state stays as it is
    quiet: bool = False  # the user is with human agents: answer success, send nothing
    cooldown: float = 0.0  # seconds the rule that fired now cools down for this user (0: none)
    where: str = ""  # file:line of the rule that fired ("" for the fallback)
    end_handoff: bool = False  # the rule ends the quiet after a transfer (`end_handoff: true`)

    @property
    def label(self) -> str:
        return self.rule if self.rule is not None else "(fallback)"


# ---- storing replies -------------------------------------------------------------------------------

REPLY_TYPES: dict[str, type[Reply]] = {cls.kind: cls for cls in (
    TextReply, ImageReply, LinkReply, MiniProgramPageReply, VoiceReply, VideoReply, MusicReply, NewsReply,
    MenuReply, CardReply, TypingReply)}


def reply_to_dict(reply: Reply) -> dict[str, Any]:
    """A reply as plain JSON-able data, for the store."""
    data: dict[str, Any] = {"kind": reply.kind}
    for name in reply.__dataclass_fields__:
        value = getattr(reply, name)
        if name == "options":
            value = [list(v) for v in value]
        elif isinstance(value, MediaFile):
            value = {"path": value.path, "digest": value.digest, "size": value.size}
        data[name] = value
    return data


def reply_from_dict(data: dict[str, Any]) -> Reply:
    values = dict(data)
    cls = REPLY_TYPES[values.pop("kind")]
    if "options" in values:
        values["options"] = tuple(tuple(v) for v in values["options"])
    for name in ("file", "thumb_file"):
        if isinstance(values.get(name), dict):
            values[name] = MediaFile(**values[name])
    return cls(**values)
