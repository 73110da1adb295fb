"""Official accounts: passive answers, the `via` choice, the OA send types, agents, and event keys."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET

import pytest

from bot.engine import SourceFile, compile_ruleset
from bot.errors import RulesError

from .fakewechat import APPID, SECRET
from .helpers import ACCOUNT, USER, event_fields, json_push, text_fields, xml_push
from .test_safe_mode import AES_KEY, encrypted_push, their_decrypt

OA = "  platform: official_account\n"
RULES = {"oa.yaml": """
rules:
  - name: hello
    when: {equals: [你好]}
    reply: 您好，欢迎关注{{ vars.shop_name }}！
  - name: hello-api
    when: {equals: [接口]}
    reply: 这条走客服接口。
    via: api
  - name: two
    when: {equals: [两条]}
    reply: [第一条, 第二条]
  - name: image
    when: {equals: [图片]}
    reply: {image: MEDIA_IMG}
  - name: voice
    when: {equals: [语音]}
    reply: {voice: MEDIA_VOICE}
  - name: video
    when: {equals: [视频]}
    reply: {video: {media_id: MEDIA_VIDEO, title: 视频标题, description: 视频说明}}
  - name: music
    when: {equals: [音乐]}
    reply: {music: {title: 歌, description: 说明, musicurl: 'http://m/1.mp3', hqmusicurl: 'http://m/1hq.mp3',
                    thumb_media_id: THUMB}}
  - name: news
    when: {equals: [文章]}
    reply: {news: {title: 新品上市, description: 点击查看, url: 'https://example.com/a', picurl: 'https://example.com/p.jpg'}}
  - name: menu
    when: {equals: [满意度]}
    reply:
      msgmenu:
        head_content: 您对本次服务是否满意？
        list:
          - {id: '101', content: 满意}
          - {id: '102', content: 不满意}
        tail_content: 欢迎再次光临
  - name: card
    when: {equals: [卡券]}
    reply: {wxcard: CARD_1}
  - name: page
    when: {equals: [小程序]}
    reply:
      miniprogrampage: {title: 小程序, appid: wx_mp_appid, pagepath: pages/index, thumb_media_id: THUMB}
  - name: agent-reply
    when: {equals: [客服小王]}
    reply: 我是小王。
    via: api
    send_as: xiaowang@shop
  - name: to-agent
    when: {equals: [找小王]}
    reply: 正在为您转接小王。
    transfer: true
    kf_account: xiaowang@shop
  - name: scene-123
    when: {event: [subscribe, SCAN], event_key: '123'}
    reply: 扫码 {{ match.event_key }} 欢迎您
  - name: menu-item
    when: {event: CLICK, event_key: {regex: 'item_(?P<item>\\d+)'}}
    reply: 您点了商品 {{ match.item }}
  - name: welcome
    when: {event: subscribe}
    reply: 感谢关注！
  - name: agent-session
    when: {event: [kf_create_session, kf_close_session, kf_switch_session]}
    reply: 会话事件 {{ message.event }} {{ message.kf_account or message.to_kf_account }}
    via: api
  - name: tricky
    when: {equals: [特殊字符]}
    reply: "a]]>b<c>&d 😀 tab\\tend"
"""}


@pytest.fixture
async def oa(make_bot):
    return await make_bot(RULES, wechat=OA)


def fields_of(text: str) -> dict:
    def walk(element):
        children = list(element)
        return {c.tag: walk(c) for c in children} if children else (element.text or "")
    return walk(ET.fromstring(text))


async def test_text_push_gets_a_passive_text_answer(oa, fake):
    resp = await oa.push(xml_push(text_fields("你好")))
    answer = fields_of(await resp.text())
    assert answer["MsgType"] == "text"
    assert answer["Content"] == "您好，欢迎关注测试小店！"
    assert answer["ToUserName"] == USER and answer["FromUserName"] == ACCOUNT
    await oa.drain()
    assert fake.calls == []  # nothing through the API: works for unverified accounts too


async def test_passive_answer_follows_a_json_push(oa):
    resp = await oa.push(json_push(text_fields("你好")), content_type="application/json")
    answer = json.loads(await resp.text())
    assert answer["MsgType"] == "text" and answer["Content"] == "您好，欢迎关注测试小店！"


async def test_retried_push_gets_the_same_passive_answer(oa):
    body = xml_push(text_fields("你好", msg_id=31337))
    first = await (await oa.push(body)).text()
    second = await (await oa.push(body)).text()
    assert first == second


@pytest.mark.parametrize("text,kind,expected", [
    ("图片", "image", {"Image": {"MediaId": "MEDIA_IMG"}}),
    ("语音", "voice", {"Voice": {"MediaId": "MEDIA_VOICE"}}),
    ("视频", "video", {"Video": {"MediaId": "MEDIA_VIDEO", "Title": "视频标题", "Description": "视频说明"}}),
    ("音乐", "music", {"Music": {"Title": "歌", "Description": "说明", "MusicUrl": "http://m/1.mp3",
                                "HQMusicUrl": "http://m/1hq.mp3", "ThumbMediaId": "THUMB"}}),
    ("文章", "news", {"ArticleCount": "1", "Articles": {"item": {
        "Title": "新品上市", "Description": "点击查看", "PicUrl": "https://example.com/p.jpg",
        "Url": "https://example.com/a"}}}),
])
async def test_every_passive_kind(oa, text, kind, expected):
    answer = fields_of(await (await oa.push(xml_push(text_fields(text)))).text())
    assert answer["MsgType"] == kind
    for key, value in expected.items():
        assert answer[key] == value


async def test_reply_text_round_trips_through_xml(oa):
    answer = fields_of(await (await oa.push(xml_push(text_fields("特殊字符")))).text())
    assert answer["Content"] == "a]]>b<c>&d 😀 tab\tend"


async def test_via_api_and_several_replies_go_through_the_api(oa, fake):
    assert await (await oa.push(xml_push(text_fields("接口")))).text() == "success"
    assert await (await oa.push(xml_push(text_fields("两条")))).text() == "success"
    sent = await fake.wait_sent(3)
    assert [s["text"]["content"] for s in sent] == ["这条走客服接口。", "第一条", "第二条"]


@pytest.mark.parametrize("text,body", [
    ("满意度", {"msgtype": "msgmenu", "msgmenu": {"head_content": "您对本次服务是否满意？", "list": [
        {"id": "101", "content": "满意"}, {"id": "102", "content": "不满意"}],
        "tail_content": "欢迎再次光临"}}),
    ("卡券", {"msgtype": "wxcard", "wxcard": {"card_id": "CARD_1"}}),
    ("小程序", {"msgtype": "miniprogrampage", "miniprogrampage": {
        "title": "小程序", "pagepath": "pages/index", "thumb_media_id": "THUMB", "appid": "wx_mp_appid"}}),
    ("客服小王", {"msgtype": "text", "text": {"content": "我是小王。"},
                 "customservice": {"kf_account": "xiaowang@shop"}}),
])
async def test_api_only_kinds_are_sent(oa, fake, text, body):
    assert await (await oa.push(xml_push(text_fields(text)))).text() == "success"
    assert (await fake.wait_sent(1))[0] == {"touser": USER, **body}


async def test_transfer_to_a_named_agent(oa, fake):
    answer = fields_of(await (await oa.push(xml_push(text_fields("找小王")))).text())
    assert answer["MsgType"] == "transfer_customer_service"
    assert answer["TransInfo"] == {"KfAccount": "xiaowang@shop"}
    assert (await fake.wait_sent(1))[0]["text"]["content"] == "正在为您转接小王。"


@pytest.mark.parametrize("event,key", [("subscribe", "qrscene_123"), ("SCAN", "123")])
async def test_scene_rule_fires_for_qr_subscribe_and_scan(oa, event, key):
    answer = fields_of(await (await oa.push(xml_push(event_fields(event, EventKey=key, Ticket="T")))).text())
    assert answer["Content"] == "扫码 123 欢迎您"  # match.event_key is the scene that matched


async def test_plain_subscribe_gets_the_welcome(oa):
    answer = fields_of(await (await oa.push(xml_push(event_fields("subscribe", EventKey="")))).text())
    assert answer["Content"] == "感谢关注！"


async def test_event_key_regex_captures(oa):
    answer = fields_of(await (await oa.push(xml_push(event_fields("CLICK", EventKey="item_42")))).text())
    assert answer["Content"] == "您点了商品 42"
    other = await oa.push(xml_push(event_fields("CLICK", EventKey="about")))
    assert await other.text() == "success"  # no rule, and events are never transferred


@pytest.mark.parametrize("event,extra,expected", [
    ("kf_create_session", {"KfAccount": "a@shop"}, "会话事件 kf_create_session a@shop"),
    ("kf_close_session", {"KfAccount": "a@shop"}, "会话事件 kf_close_session a@shop"),
    ("kf_switch_session", {"FromKfAccount": "a@shop", "ToKfAccount": "b@shop"},
     "会话事件 kf_switch_session b@shop"),
])
async def test_agent_session_events_can_be_matched(oa, fake, event, extra, expected):
    await oa.push(xml_push(text_fields("你好")))  # the user wrote (which opens WeChat's send allowance)…
    assert await (await oa.push(xml_push(event_fields(event, **extra)))).text() == "success"  # …then agents
    assert (await fake.wait_sent(1))[0]["text"]["content"] == expected


async def test_passive_answer_is_encrypted_in_safe_mode(make_bot):
    bot = await make_bot(RULES, wechat=OA + f"  encoding_aes_key: {AES_KEY}\n")
    body, query = encrypted_push(xml_push(text_fields("你好")), "xml")
    envelope = fields_of(await (await bot.push(body, query=query)).text())
    inner = fields_of(their_decrypt(envelope["Encrypt"]))
    assert inner["MsgType"] == "text" and inner["Content"] == "您好，欢迎关注测试小店！"


OA_MISTAKES = [
    ("reply: x\n    via: passive\n    transfer: true", "cannot carry both a passive reply and a transfer"),
    ("reply: [a, b]\n    via: passive", "exactly one reply"),
    ("reply: {wxcard: C}\n    via: passive", "a 'wxcard' reply cannot be passive"),
    ("reply: x\n    via: sometimes", "'via' is passive or api"),
    ("reply: x\n    kf_account: a@b", "add 'transfer: true'"),
    ("reply: {miniprogrampage: {title: t, pagepath: p, thumb_media_id: m}}", "needs 'appid'"),
]
MINI_PROGRAM_MISTAKES = [
    ("reply: x\n    via: passive", "mini programs answer only through the API"),
    ("reply: {voice: V}", "for official accounts only"),
    ("reply: {news: {title: t, url: u}}", "for official accounts only"),
    ("transfer: true\n    kf_account: a@b", "'kf_account' is for official accounts only"),
]


@pytest.mark.parametrize("platform,rule,message",
                         [("official_account", *m) for m in OA_MISTAKES]
                         + [("miniprogram", *m) for m in MINI_PROGRAM_MISTAKES])
def test_delivery_mistakes_are_refused_with_file_and_line(platform, rule, message):
    source = f"rules:\n  - name: r\n    when: {{equals: [x]}}\n    {rule}\n"
    with pytest.raises(RulesError) as info:
        compile_ruleset([SourceFile("rules/r.yaml", source)], platform=platform)
    assert message in str(info.value)
    assert str(info.value).startswith("rules/r.yaml:")


async def test_secrets_never_reach_logs_or_reprs_in_a_full_safe_mode_flow(make_bot, fake, caplog):
    caplog.set_level(logging.DEBUG)
    bot = await make_bot(RULES, wechat=OA + f"  encoding_aes_key: {AES_KEY}\n", config="handoff:\n  quiet: 0\n")
    for text in ["两条", "你好", "找小王"]:
        body, query = encrypted_push(xml_push(text_fields(text)), "xml")
        assert (await bot.push(body, query=query)).status == 200
    bad, query = encrypted_push(xml_push(text_fields("x")), "xml", bad_msg_signature=True)
    assert (await bot.push(bad, query=query)).status == 403
    fake.revoke_tokens()
    body, query = encrypted_push(xml_push(text_fields("接口")), "xml")
    await bot.push(body, query=query)
    await bot.drain()
    assert len(fake.sent) == 4
    tokens = {c.answer["access_token"] for c in fake.calls_to("/cgi-bin/token")}
    from .helpers import TOKEN

    rt = bot.runtime
    logs = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records
                     if r.name != "aiohttp.access")  # that one is the fake WeChat server's access log
    objects = (rt, rt.settings, rt.codec, rt.codec.crypto, rt.api, rt.outbox, rt.store)
    reprs = "".join(repr(x) for x in objects)
    for secret in [SECRET, TOKEN, AES_KEY, *tokens]:
        assert secret not in logs
        assert secret not in reprs
    assert APPID in reprs  # the appid is not a secret; it shows the reprs were really checked


async def test_send_as_implies_the_api(make_bot, fake):
    bot = await make_bot({"a.yaml": "rules:\n  - name: r\n    when: {equals: [你好]}\n    reply: 我是小王\n"
                                    "    send_as: xiaowang@shop\n"}, wechat=OA)
    assert await (await bot.push(xml_push(text_fields("你好")))).text() == "success"
    assert (await fake.wait_sent(1))[0]["customservice"] == {"kf_account": "xiaowang@shop"}


def test_send_as_with_via_passive_is_refused():
    source = ("rules:\n  - name: r\n    when: {equals: [x]}\n    reply: x\n    via: passive\n"
              "    send_as: a@b\n")
    with pytest.raises(RulesError) as info:
        compile_ruleset([SourceFile("rules/r.yaml", source)], platform="official_account")
    assert "rules/r.yaml:6: rule 'r': 'send_as' needs the API" in str(info.value)


# ---- a passive image from a local file ------------------------------------------------------------------

IMAGE_RULES = {"img.yaml": """
rules:
  - name: chart
    when: {equals: [尺码]}
    reply: {image: size-chart.png}
"""}


async def _image_bot(make_bot, tmp_path):
    from .test_media import PNG

    (tmp_path / "media").mkdir(exist_ok=True)
    (tmp_path / "media" / "size-chart.png").write_bytes(PNG)
    return await make_bot(IMAGE_RULES, wechat=OA)


async def test_a_passive_image_file_is_uploaded_before_answering_and_then_cached(make_bot, fake, tmp_path):
    bot = await _image_bot(make_bot, tmp_path)
    first = fields_of(await (await bot.push(xml_push(text_fields("尺码")))).text())
    assert first["MsgType"] == "image" and first["Image"]["MediaId"].startswith("UPLOADED_")
    second = fields_of(await (await bot.push(xml_push(text_fields("尺码")))).text())
    assert second["Image"]["MediaId"] == first["Image"]["MediaId"]
    await bot.drain()
    assert len(fake.calls_to("/cgi-bin/media/upload")) == 1 and fake.sent == []  # once; nothing via the API


async def test_a_passive_image_whose_upload_fails_goes_through_the_api_instead(make_bot, fake, tmp_path, caplog):
    from .fakewechat import Failure

    bot = await _image_bot(make_bot, tmp_path)
    fake.fail("/cgi-bin/media/upload", Failure(errcode=40005))  # a final error: no quick retry
    resp = await bot.push(xml_push(text_fields("尺码")))
    assert await resp.text() == "success"  # never <Image><MediaId /></Image>
    await bot.drain()
    assert [s["msgtype"] for s in fake.sent] == ["image"]  # the outbox uploaded it and sent it
    assert fake.sent[0]["image"]["media_id"].startswith("UPLOADED_")
    assert any("sending it through the API instead" in r.getMessage() for r in caplog.records)
