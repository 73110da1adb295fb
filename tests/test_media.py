"""Image files in replies: checked at load, uploaded once, media_id cached (shared), re-uploaded on 40007."""

from __future__ import annotations

import pytest

from bot.config import load_settings
from bot.errors import RulesError
from bot.sources import load_ruleset

from .fakewechat import Failure
from .helpers import text_fields, write_bot, xml_push

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
       b"\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82")
RULES = {"a.yaml": """
rules:
  - name: chart
    when: {equals: [尺码]}
    reply: {image: charts/size.png}
  - name: page
    when: {equals: [页面]}
    reply:
      miniprogrampage: {title: 优惠, pagepath: pages/x, thumb: thumb.png}
"""}


def with_media(tmp_path, rules=RULES, **files: bytes):
    config = write_bot(tmp_path, rules)
    (tmp_path / "media" / "charts").mkdir(parents=True, exist_ok=True)
    for name, data in {"charts/size.png": PNG, "thumb.png": PNG, **files}.items():
        (tmp_path / "media" / name).write_bytes(data)
    return config


@pytest.mark.parametrize("files,message", [
    ({"charts/size.png": b"not an image"}, "rules/a.yaml:5: rule 'chart': image: 'charts/size.png' is not a PNG"),
    ({"charts/size.png": PNG + b"\0" * (2 * 1024 * 1024)}, "WeChat takes images up to 2 MB"),
])
def test_image_files_are_checked_at_load(tmp_path, files, message):
    config = with_media(tmp_path, **files)
    with pytest.raises(RulesError) as info:
        load_ruleset(load_settings(config))
    assert message in str(info.value)


def test_a_missing_image_names_the_rule_line(tmp_path):
    config = with_media(tmp_path, rules={"a.yaml": RULES["a.yaml"].replace("charts/size.png", "charts/sise.png")})
    with pytest.raises(RulesError) as info:
        load_ruleset(load_settings(config))
    assert "rules/a.yaml:5: rule 'chart': image: 'charts/sise.png' not found in the media or templates folder " \
           "(did you mean 'charts/size.png'?)" in str(info.value)


async def test_an_image_is_uploaded_once_and_sent_by_media_id(make_bot, fake, tmp_path):
    with_media(tmp_path)
    bot = await make_bot(RULES)
    for i in range(3):
        await bot.push(xml_push(text_fields("尺码", msg_id=600 + i)))
    await bot.drain()
    uploads = fake.calls_to("/cgi-bin/media/upload")
    assert len(uploads) == 1 and uploads[0].query["type"] == "image" and uploads[0].body == {"fields": ["media"]}
    media_ids = {s["image"]["media_id"] for s in fake.sent}
    assert len(fake.sent) == 3 and len(media_ids) == 1 and next(iter(media_ids)).startswith("UPLOADED_")


async def test_a_thumbnail_file_is_uploaded_for_a_page_card(make_bot, fake, tmp_path):
    with_media(tmp_path)
    bot = await make_bot(RULES)
    await bot.push(xml_push(text_fields("页面")))
    await bot.drain()
    assert fake.sent[0]["miniprogrampage"]["thumb_media_id"].startswith("UPLOADED_")


async def test_a_forgotten_media_is_uploaded_again(make_bot, fake, tmp_path):
    with_media(tmp_path)
    bot = await make_bot(RULES)
    await bot.push(xml_push(text_fields("尺码", msg_id=700)))
    await bot.drain()
    fake.forget_media()  # three days later: WeChat answers 40007
    await bot.push(xml_push(text_fields("尺码", msg_id=701)))
    await bot.drain()
    assert len(fake.calls_to("/cgi-bin/media/upload")) == 2
    assert [c.answer["errcode"] for c in fake.calls_to("/cgi-bin/message/custom/send")] == [0, 40007, 0]
    assert len(fake.sent) == 2


async def test_a_failed_upload_fails_the_send_with_the_reason(make_bot, fake, tmp_path):
    with_media(tmp_path)
    bot = await make_bot(RULES)
    fake.fail("/cgi-bin/media/upload", Failure(errcode=40004))
    await bot.push(xml_push(text_fields("尺码")))
    await bot.drain()
    [item] = await bot.runtime.store.outbox_items()
    assert item.status == "failed" and item.errcode == 40004 and "upload failed" in item.error


async def test_instances_share_the_media_cache(fleet_of, fake, tmp_path):
    with_media(tmp_path)
    first, second = await fleet_of(RULES, 2)
    await first.push(xml_push(text_fields("尺码", msg_id=800)))
    await first.drain()
    await second.push(xml_push(text_fields("尺码", msg_id=801, user="o_second_user")))
    await second.drain()
    assert len(fake.calls_to("/cgi-bin/media/upload")) == 1
    assert len({s["image"]["media_id"] for s in fake.sent}) == 1


@pytest.mark.parametrize("folder", ["media", "templates"])
async def test_an_image_replaced_under_the_same_name_is_taken_on_reload(make_bot, fake, tmp_path, folder):
    """The rule set's version covers the images' contents: a new picture under the old name is a change, not
    "nothing changed" (which would keep sending the old picture's cached media_id)."""
    rules = {"a.yaml": "rules:\n  - name: promo\n    when: {equals: [活动]}\n    reply: {image: promo.png}\n"}
    write_bot(tmp_path, rules)
    (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / folder / "promo.png").write_bytes(PNG)
    bot = await make_bot(rules)
    await bot.push(xml_push(text_fields("活动", msg_id=900)))
    await bot.drain()
    v0 = bot.runtime.rules.current.version
    (tmp_path / folder / "promo.png").write_bytes(PNG + b"\0new")
    outcome = await bot.runtime.reloader.reload("image replaced")
    assert outcome.swapped and outcome.version != v0
    await bot.push(xml_push(text_fields("活动", msg_id=901)))
    await bot.drain()
    uploads = fake.calls_to("/cgi-bin/media/upload")
    assert len(uploads) == 2  # the new picture, uploaded under its own digest
    assert len({s["image"]["media_id"] for s in fake.sent}) == 2
