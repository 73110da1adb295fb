"""bot.config: bot.yaml → Settings, ${ENV} interpolation, file:line errors, Secret."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bot.config import (
    AdminSettings,
    Secret,
    SecuritySettings,
    ServerSettings,
    Settings,
    WeChatSettings,
    load_settings,
    parse_settings,
)
from bot.errors import ConfigError, SourceError

BASE = Path("/srv/kefu")
AES_KEY = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM"  # a valid 43-character EncodingAESKey
FILE = "conf/bot.yaml"


def parse(text: str, env: dict[str, str] | None = None, base: Path = BASE) -> Settings:
    return parse_settings(text, FILE, base, env={} if env is None else env)


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return [str(p) for p in info.value.problems]


# ---- defaults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# only a comment\n", "wechat:\nserver:\nsecurity:\nadmin:\n"])
def test_empty_config_gives_defaults(text):
    s = parse(text)
    assert s.wechat == WeChatSettings()
    assert s.wechat.platform == "miniprogram"
    assert s.wechat.appid == ""
    assert s.wechat.api_base == "https://api.weixin.qq.com"
    assert s.wechat.use_stable_token is False
    assert s.server == ServerSettings(host="127.0.0.1", port=8080, path="/wechat")
    assert s.security == SecuritySettings(max_body_bytes=65536, max_timestamp_age=300,
                                          require_encryption=False)
    assert s.admin == AdminSettings()
    assert not s.admin.token
    assert s.store == "memory://"
    assert dict(s.vars) == {}
    assert s.rules == BASE / "rules"
    assert s.templates == BASE / "templates"
    assert s.source == FILE


def test_full_config_is_read():
    s = parse(
        "wechat:\n"
        "  platform: official_account\n"
        "  appid: wx0000000000000000\n"
        "  secret: the-secret\n"
        "  token: customer12\n"
        f"  encoding_aes_key: {AES_KEY}\n"
        "  api_base: http://localhost:9999/\n"
        "  use_stable_token: true\n"
        "server:\n  host: 0.0.0.0\n  port: 9090\n  path: /wx\n"
        "store: memory://\n"
        "vars:\n  shop_name: 示例小店\n  n: 3\n"
        "security:\n  max_body_bytes: 1024\n  max_timestamp_age: 0\n  require_encryption: true\n"
        "admin:\n  token: adm\n"
    )
    assert s.wechat.platform == "official_account"
    assert s.wechat.appid == "wx0000000000000000"
    assert s.wechat.secret.reveal() == "the-secret"
    assert s.wechat.token.reveal() == "customer12"
    assert s.wechat.encoding_aes_key.reveal() == AES_KEY
    assert s.wechat.api_base == "http://localhost:9999"  # trailing slash dropped
    assert s.wechat.use_stable_token is True
    assert s.server == ServerSettings(host="0.0.0.0", port=9090, path="/wx")
    assert s.store == "memory://"
    assert dict(s.vars) == {"shop_name": "示例小店", "n": 3}
    assert s.security == SecuritySettings(max_body_bytes=1024, max_timestamp_age=0, require_encryption=True)
    assert s.admin.token.reveal() == "adm"


def test_settings_are_frozen():
    s = parse("")
    with pytest.raises(AttributeError):
        s.store = "redis://x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.vars["x"] = 1  # type: ignore[index]


# ---- ${NAME} interpolation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${APPID}", {"APPID": "wx123"}, "wx123"),
        ("${APPID:-wxdefault}", {}, "wxdefault"),
        ("${APPID:-wxdefault}", {"APPID": "wxenv"}, "wxenv"),
        ("${APPID:-}", {}, ""),
        ("pre-${A}-mid-${B:-b}-post", {"A": "a"}, "pre-a-mid-b-post"),
        ("${A}${A}", {"A": "x"}, "xx"),
        ("no dollar braces here", {}, "no dollar braces here"),
        ("$APPID", {"APPID": "wx"}, "$APPID"),  # only the braced form is interpolated
        ("${A}", {"A": "${B}", "B": "nested"}, "${B}"),  # values are not re-interpolated
    ],
)
def test_interpolation(value, env, expected):
    s = parse(f"wechat:\n  appid: '{value}'\n", env)
    assert s.wechat.appid == expected


def test_interpolation_reaches_nested_vars_and_lists():
    s = parse("vars:\n  shop: ${SHOP}\n  nested:\n    list:\n      - ${A:-one}\n      - two\n",
              {"SHOP": "小店"})
    assert s.vars["shop"] == "小店"
    assert list(s.vars["nested"]["list"]) == ["one", "two"]


@pytest.mark.parametrize(
    ("text", "env", "check"),
    [
        ("server:\n  port: ${PORT}\n", {"PORT": "9000"}, lambda s: s.server.port == 9000),
        ("server:\n  port: ${PORT:-8081}\n", {}, lambda s: s.server.port == 8081),
        (f"wechat:\n  appid: wx1\n  encoding_aes_key: {AES_KEY}\nsecurity:\n  require_encryption: ${{ENC}}\n",
         {"ENC": "true"},
         lambda s: s.security.require_encryption is True),
        ("security:\n  require_encryption: ${ENC:-false}\n", {},
         lambda s: s.security.require_encryption is False),
        ("wechat:\n  secret: ${SECRET}\n", {"SECRET": "s3"}, lambda s: s.wechat.secret.reveal() == "s3"),
        ("admin:\n  token: ${KEFU_ADMIN_TOKEN:-}\n", {}, lambda s: not s.admin.token),
        ("store: ${STORE:-memory://}\n", {}, lambda s: s.store == "memory://"),
    ],
)
def test_interpolated_values_are_converted(text, env, check):
    assert check(parse(text, env))


def test_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("KEFU_TEST_APPID_7Q", "wx-from-os")
    s = parse_settings("wechat:\n  appid: ${KEFU_TEST_APPID_7Q}\n", FILE, BASE)
    assert s.wechat.appid == "wx-from-os"


def test_explicit_env_is_used_instead_of_os_environ(monkeypatch):
    monkeypatch.setenv("KEFU_TEST_APPID_7Q", "wx-from-os")
    s = parse("wechat:\n  appid: ${KEFU_TEST_APPID_7Q:-dflt}\n", env={})
    assert s.wechat.appid == "dflt"


def test_default_applies_when_variable_is_set_but_empty():
    s = parse("wechat:\n  token: ${WECHAT_TOKEN:-kefu-demo-token}\n", {"WECHAT_TOKEN": ""})
    assert s.wechat.token.reveal() == "kefu-demo-token"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wechat:\n  appid: x\n  secret: ${WECHAT_SECRET}\n",
         "conf/bot.yaml:3: environment variable WECHAT_SECRET is not set"),
        ("admin:\n  token: ${ADMIN}\n", "conf/bot.yaml:2: environment variable ADMIN is not set"),
        ("vars:\n  list:\n    - a\n    - ${ITEM}\n", "conf/bot.yaml:4: environment variable ITEM is not set"),
        ("vars:\n  a:\n    b:\n      c: x ${DEEP} y\n",
         "conf/bot.yaml:4: environment variable DEEP is not set"),
    ],
)
def test_missing_env_without_default_is_an_error_with_line(text, expected):
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith(expected)
    assert ":-default}" in found[0]  # tells how to give a default


def test_every_missing_env_variable_is_reported():
    found = problems("wechat:\n  appid: ${A}\n  secret: ${B}\nadmin:\n  token: ${C}\n")
    assert [p.split(": ", 1)[0] for p in found] == ["conf/bot.yaml:2", "conf/bot.yaml:3", "conf/bot.yaml:5"]
    assert ["A" in found[0], "B" in found[1], "C" in found[2]] == [True, True, True]


# ---- paths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rules", "templates"),
    [
        ("", BASE / "rules", BASE / "templates"),
        ("rules: my_rules\ntemplates: tpl/sub\n", BASE / "my_rules", BASE / "tpl" / "sub"),
        ("rules: ../shared/rules\n", Path("/srv/shared/rules"), BASE / "templates"),
        ("rules: /abs/rules\ntemplates: /abs/tpl\n", Path("/abs/rules"), Path("/abs/tpl")),
        ("rules: ${RULES:-r2}\n", BASE / "r2", BASE / "templates"),
    ],
)
def test_paths_are_relative_to_base(text, rules, templates):
    s = parse(text)
    assert s.rules == rules
    assert s.templates == templates


def test_load_settings_resolves_paths_from_the_config_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "deploy" / "conf"
    folder.mkdir(parents=True)
    path = folder / "bot.yaml"
    path.write_text("rules: my_rules\nvars:\n  shop: 小店\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    s = load_settings(path, env={})
    assert s.rules == (folder / "my_rules").resolve()
    assert s.templates == (folder / "templates").resolve()
    assert s.source == str(path)
    assert s.vars["shop"] == "小店"


def test_load_settings_relative_path_argument(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "bot.yaml").write_text("templates: t\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    s = load_settings("conf/bot.yaml", env={})
    assert s.templates == (tmp_path / "conf" / "t").resolve()
    assert s.rules == (tmp_path / "conf" / "rules").resolve()


# ---- unknown keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rule: rules\n", "conf/bot.yaml:1: unknown key 'rule' (did you mean 'rules'?)"),
        ("store: memory://\ntemplate: t\n",
         "conf/bot.yaml:2: unknown key 'template' (did you mean 'templates'?)"),
        ("wechat:\n  appid: x\n  apid: y\n",
         "conf/bot.yaml:3: wechat: unknown key 'apid' (did you mean 'appid'?)"),
        ("wechat:\n  tokn: x\n", "conf/bot.yaml:2: wechat: unknown key 'tokn' (did you mean 'token'?)"),
        ("server:\n  host: h\n  prot: 1\n",
         "conf/bot.yaml:3: server: unknown key 'prot' (did you mean 'port'?)"),
        ("security:\n\n  max_body_byte: 3\n",
         "conf/bot.yaml:3: security: unknown key 'max_body_byte' (did you mean 'max_body_bytes'?)"),
        ("admin:\n  tokens: x\n", "conf/bot.yaml:2: admin: unknown key 'tokens' (did you mean 'token'?)"),
    ],
)
def test_unknown_key_is_an_error_with_line_and_hint(text, expected):
    assert problems(text) == [expected]


def test_unknown_key_without_close_match_has_no_hint():
    found = problems("server:\n  zzzzzz: 1\n")
    assert found == ["conf/bot.yaml:2: server: unknown key 'zzzzzz'"]


# ---- wrong types -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server:\n  host: h\n  port: eighty\n", "conf/bot.yaml:3: 'port' must be a whole number, not text"),
        ("server:\n  port: true\n", "conf/bot.yaml:2: 'port' must be a whole number, not true/false"),
        ("server:\n  port: 70000\n", "conf/bot.yaml:2: 'port' is out of range: 70000"),
        ("security:\n  require_encryption: 'yes please'\n",
         "conf/bot.yaml:2: 'require_encryption' must be true or false, not text"),
        ("security:\n  max_body_bytes: -1\n", "conf/bot.yaml:2: 'max_body_bytes' is out of range: -1"),
        ("store: memory://\nvars:\n  - a\n  - b\n", "conf/bot.yaml:2: 'vars' must be a mapping, not a list"),
        ("wechat: miniprogram\n", "conf/bot.yaml:1: 'wechat' must be a mapping, not text"),
        ("wechat:\n  appid: [a, b]\n", "conf/bot.yaml:2: 'appid' must be text, not a list"),
        ("wechat:\n  platform: wechat\n",
         "conf/bot.yaml:2: 'platform' must be one of miniprogram, official_account"),
        ("wechat:\n  api_base: ftp://x\n", "conf/bot.yaml:2: 'api_base' must start with http:// or https://"),
        ("server:\n  path: wechat\n", "conf/bot.yaml:2: 'path' must start with /"),
        ("store: mysql://x\n", "conf/bot.yaml:1: 'store' must be one of memory://"),
        ("server:\n  path: /healthz\n", "conf/bot.yaml:2: 'path' /healthz is kefu's own"),
        ("server:\n  path: /admin/x\n", "conf/bot.yaml:2: 'path' /admin/x is kefu's own"),
        ("wechat:\n  appid: wx1\n  encoding_aes_key: tooshort\n",
         "conf/bot.yaml:3: 'encoding_aes_key' must be 43 characters, not 8"),
    ],
)
def test_wrong_type_is_an_error_with_line(text, expected):
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith(expected)


def test_a_number_is_accepted_where_text_is_expected():
    s = parse("wechat:\n  appid: 12345\n  token: 678\n")
    assert s.wechat.appid == "12345"
    assert s.wechat.token.reveal() == "678"


def test_top_level_must_be_a_mapping():
    assert problems("- a\n- b\n") == ["conf/bot.yaml:1: bot.yaml must be a mapping, not a list"]


def test_several_problems_are_reported_at_once():
    text = (
        "wechat:\n"  # 1
        "  apid: x\n"  # 2
        "  secret: ${NOPE}\n"  # 3
        "server:\n"  # 4
        "  port: eighty\n"  # 5
        "security:\n"  # 6
        "  require_encryption: maybe\n"  # 7
        "vars: [1, 2]\n"  # 8
        "rulez: r\n"  # 9
    )
    with pytest.raises(ConfigError) as info:
        parse(text)
    found = sorted((p.line, p.message.split(" (")[0]) for p in info.value.problems)
    assert found == [
        (2, "wechat: unknown key 'apid'"),
        (3, "environment variable NOPE is not set"),
        (5, "'port' must be a whole number, not text"),
        (7, "'require_encryption' must be true or false, not text"),
        (8, "'vars' must be a mapping, not a list"),
        (9, "unknown key 'rulez'"),
    ]
    assert all(p.file == FILE for p in info.value.problems)
    message = str(info.value)
    assert len(message.splitlines()) == 6  # one problem per line
    assert "conf/bot.yaml:5: 'port'" in message


# ---- YAML syntax and duplicates ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("wechat:\n\tappid: x\n", "conf/bot.yaml:2: YAML syntax:"),
        ("wechat:\n  appid: x\n   secret: y\n", "conf/bot.yaml:3: YAML syntax:"),
        ("store: memory://\nvars:\n  a: b: c\n", "conf/bot.yaml:3: YAML syntax:"),
        ("vars:\n  a: 1\n b: 2\n", "conf/bot.yaml:3: YAML syntax:"),
        ("store: x\n- a\n", "conf/bot.yaml:2: YAML syntax:"),
    ],
)
def test_yaml_syntax_error_has_file_and_line(text, prefix):
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith(prefix)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wechat:\n  appid: a\n  appid: b\n", "conf/bot.yaml:3: YAML syntax: duplicate key 'appid'"),
        ("store: memory://\nrules: a\nstore: memory://\n",
         "conf/bot.yaml:3: YAML syntax: duplicate key 'store'"),
        ("vars:\n  x: 1\n  y: 2\n  x: 3\n", "conf/bot.yaml:4: YAML syntax: duplicate key 'x'"),
    ],
)
def test_duplicate_keys_are_an_error(text, expected):
    assert problems(text) == [expected]


def test_config_error_is_a_source_error():
    with pytest.raises(SourceError):
        parse("nope: 1\n")


# ---- secrets ---------------------------------------------------------------------------------------

SECRET_TEXT = "AppSecret-5f3a9c"
TOKEN_TEXT = "Token-b81e77"
AES_TEXT = AES_KEY
ADMIN_TEXT = "Admin-9a7f11"


@pytest.fixture
def secret_settings() -> Settings:
    return parse(
        f"wechat:\n  appid: wx1\n  secret: {SECRET_TEXT}\n  token: {TOKEN_TEXT}\n"
        f"  encoding_aes_key: {AES_TEXT}\nadmin:\n  token: ${{ADMIN}}\n",
        {"ADMIN": ADMIN_TEXT},
    )


@pytest.mark.parametrize(
    "show",
    [repr, str, lambda o: f"{o}", lambda o: f"{o!r}",
     lambda o: "%s %r" % (o, o),  # noqa: UP031 - the old formatting must not leak either
     lambda o: format(o)],
    ids=["repr", "str", "fstring", "fstring-r", "percent", "format"],
)
@pytest.mark.parametrize("pick", [
    lambda s: s, lambda s: s.wechat, lambda s: s.wechat.secret, lambda s: s.wechat.token,
    lambda s: s.wechat.encoding_aes_key, lambda s: s.admin, lambda s: s.admin.token,
], ids=["Settings", "WeChatSettings", "secret", "token", "aes_key", "AdminSettings", "admin_token"])
def test_secrets_never_show(secret_settings, pick, show):
    shown = show(pick(secret_settings))
    for value in (SECRET_TEXT, TOKEN_TEXT, AES_TEXT, ADMIN_TEXT):
        assert value not in shown


def test_secret_values_are_kept(secret_settings):
    assert secret_settings.wechat.secret.reveal() == SECRET_TEXT
    assert secret_settings.wechat.token.reveal() == TOKEN_TEXT
    assert secret_settings.wechat.encoding_aes_key.reveal() == AES_TEXT
    assert secret_settings.admin.token.reveal() == ADMIN_TEXT
    assert isinstance(secret_settings.wechat.secret, Secret)


@pytest.mark.parametrize(("value", "shown", "truthy"),
                         [("abc", "Secret('***')", True), ("", "Secret('')", False)])
def test_secret_repr_and_truth(value, shown, truthy):
    s = Secret(value)
    assert repr(s) == shown
    assert str(s) == shown
    assert f"{s}" == shown
    assert bool(s) is truthy
    assert s.reveal() == value


def test_secret_equality_and_hash():
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("pick", [lambda s: s.wechat.secret, lambda s: s.wechat, lambda s: s],
                         ids=["Secret", "WeChatSettings", "Settings"])
def test_secrets_cannot_be_pickled(secret_settings, pick, protocol):
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(pick(secret_settings), protocol=protocol)


def test_secret_never_in_error_messages():
    with pytest.raises(ConfigError) as info:
        parse(f"wechat:\n  secret: {SECRET_TEXT}\n  bogus: 1\nserver:\n  port: x\n")
    assert SECRET_TEXT not in str(info.value)


# ---- has_credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wechat", "expected"),
    [
        ("  appid: wx1\n  secret: s\n", True),
        ("  appid: wx1\n", False),
        ("  secret: s\n", False),
        ("  appid: ''\n  secret: s\n", False),
        ("  appid: wx1\n  secret: ''\n", False),
        ("  appid: wx1\n  secret: ${S:-}\n", False),
        ("  token: t\n", False),
    ],
)
def test_has_credentials(wechat, expected):
    assert parse("wechat:\n" + wechat).wechat.has_credentials is expected


# ---- load_settings ---------------------------------------------------------------------------------


def test_load_settings_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "bot.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing, env={})
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert problem.file == str(missing)
    assert "not found" in problem.message


def test_load_settings_errors_name_the_file(tmp_path):
    path = tmp_path / "bot.yaml"
    path.write_text("server:\n  port: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value).startswith(f"{path}:2: 'port'")


def test_load_settings_non_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "bot.yaml"
    path.write_bytes(b"vars:\n  x: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(path, env={})


def test_bundled_config_loads_without_environment():
    s = load_settings(Path(__file__).resolve().parent.parent / "bot.yaml", env={})
    assert s.wechat.token.reveal() == "kefu-demo-token"
    assert not s.wechat.has_credentials
    assert s.server.port == 8080
    assert s.rules.name == "rules"


def test_a_store_password_never_shows():
    from bot.config import redact_url

    settings = parse("store: memory://\n", {})
    assert "store" not in repr(settings)
    assert redact_url("redis://:hunter2@10.0.0.1:6379/0") == "redis://:***@10.0.0.1:6379/0"
    with pytest.raises(ConfigError) as info:
        parse("store: mysql://:hunter2@host/0\n", {})
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    settings = parse("store: 'redis://:hunter2@host:6379/0'\n", {})
    assert "hunter2" not in repr(settings) and settings.store_display == "redis://:***@host:6379/0"


# ---- proxy and CA ------------------------------------------------------------------------------------


def test_the_proxy_comes_from_the_environment_and_never_shows_its_password():
    s = parse("wechat:\n  proxy: ${KEFU_PROXY}\n", env={"KEFU_PROXY": "http://shop:pa55@10.0.0.8:3128"})
    assert s.wechat.proxy.reveal() == "http://shop:pa55@10.0.0.8:3128"
    assert "pa55" not in repr(s) + str(s.wechat)


@pytest.mark.parametrize("value", ["socks5://shop:pa55@10.0.0.8:1080", "10.0.0.8:3128", "http://shop:pa55@:3128",
                                   "http://shop:pa55@proxy:port", "http://shop:pa55@proxy:3128/path"])
def test_a_proxy_that_is_not_an_http_url_is_an_error_without_its_password(value):
    (problem,) = problems(f"wechat:\n  proxy: '{value}'\n")
    assert problem.startswith(f"{FILE}:2: 'proxy' must be a URL like http://user:password@host:3128")
    assert "pa55" not in problem


def test_the_ca_file_is_resolved_and_must_hold_pem_certificates(tmp_path):
    from .realproxy import private_ca

    ca_file, _ = private_ca(tmp_path)
    assert parse(f"wechat:\n  ca_file: {ca_file.name}\n", base=tmp_path).wechat.ca_file == ca_file
    assert parse("wechat:\n").wechat.ca_file is None
    (tmp_path / "not.pem").write_text("hello")
    with pytest.raises(ConfigError) as info:
        parse("wechat:\n  ca_file: not.pem\n", base=tmp_path)
    (problem,) = [str(p) for p in info.value.problems]
    assert problem.startswith(f"{FILE}:2: 'ca_file' {tmp_path / 'not.pem'} must be a file of PEM certificates")
