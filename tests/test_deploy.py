"""The deployment files hold together: the Dockerfile, compose.yaml, the nginx front and the systemd unit
name files, ports and commands that exist. No container engine runs here, so the files are parsed and
checked; the image's install steps (deploy/install.sh) run in CI (.ci/run)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bot.__main__ import build_parser
from bot.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = "/etc/kefu"


def _dockerfile() -> list[tuple[int, str, str]]:
    """(stage, INSTRUCTION, arguments) of each instruction; continuation lines joined, comments left out."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out, stage = [], -1
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            stage += word.upper() == "FROM"
            out.append((stage, word.upper(), rest.strip()))
    return out


def _args(rest: str) -> list[str]:
    """An instruction's arguments: the exec (JSON) form or the shell form."""
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def _final(instruction: str) -> list[list[str]]:
    steps = _dockerfile()
    last = steps[-1][0]
    return [_args(rest) for stage, word, rest in steps if stage == last and word == instruction]


def _port() -> int:
    return load_settings(ROOT / "bot.yaml").server.port


def test_the_image_is_slim_python_and_runs_kefu_serve_as_a_user_not_root():
    steps = _dockerfile()
    bases = [rest for _, word, rest in steps if word == "FROM"]
    assert bases and all(re.match(r"python:3\.\d+-slim", base) for base in bases)
    assert len({base.split()[0] for base in bases}) == 1  # the virtualenv is built on the base it runs on
    users = _final("USER")
    assert users and users[-1][0] not in ("root", "0")
    entry, cmd = _final("ENTRYPOINT")[-1], _final("CMD")[-1]
    assert entry == ["/opt/kefu/bin/kefu"]
    args = build_parser().parse_args(cmd)  # a command line the CLI accepts
    assert args.command == "serve" and args.config == f"{CONFIG_DIR}/bot.yaml" and args.host == "0.0.0.0"
    env = dict(pair.split("=", 1) for args in _final("ENV") for pair in args)
    assert env["KEFU_CONFIG"] == args.config  # `docker exec kefu kefu log` reads the same bot.yaml


def test_every_file_the_dockerfile_copies_exists_and_the_config_lands_where_cmd_reads_it():
    copied: dict[str, str] = {}
    for _, word, rest in _dockerfile():
        if word in ("COPY", "ADD"):
            parts = _args(rest)
            if any(p.startswith("--from") for p in parts):
                continue
            *sources, dest = parts
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
                copied[source.rstrip("/")] = dest.rstrip("/")
    settings = load_settings(ROOT / "bot.yaml")
    for folder in (settings.rules, settings.templates, settings.media):  # relative to the config: beside it
        name = Path(folder).name
        assert copied.get(name) == f"{CONFIG_DIR}/{name}"
    assert copied["bot.yaml"] == f"{CONFIG_DIR}/bot.yaml"


def test_the_image_installs_with_the_script_ci_runs():
    runs = [" ".join(args) for stage, word, rest in _dockerfile() if word == "RUN" and stage == 0
            for args in [_args(rest)]]
    assert any("deploy/install.sh /opt/kefu" in run for run in runs)
    assert (ROOT / "deploy" / "install.sh").is_file()
    assert "deploy/install.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_image_exposes_the_port_it_serves_and_checks_healthz_there():
    port = _port()
    assert _final("EXPOSE") == [[str(port)]]
    health = " ".join(rest for _, word, rest in _dockerfile() if word == "HEALTHCHECK")
    assert f"http://127.0.0.1:{port}/healthz" in health
    assert "/opt/kefu/bin/python" in health  # the slim image has no curl
    workdir, volumes = _final("WORKDIR")[-1][0], [v for args in _final("VOLUME") for v in args]
    assert sorted(volumes) == sorted([CONFIG_DIR, workdir])  # the configuration, and the store:
    # sqlite:///kefu.db is relative to the working directory, so the store is kept in the volume


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_runs_two_kefu_on_one_redis_behind_nginx():
    services = _compose()["services"]
    kefus = [name for name, svc in services.items() if svc.get("build") == "."]
    assert len(kefus) == 2
    assert (ROOT / "Dockerfile").is_file()
    for name in kefus:
        svc = services[name]
        store = svc["environment"]["KEFU_STORE"]
        host, port = re.match(r"redis://([^:/]+):(\d+)/\d+$", store).groups()
        assert host in services and port == "6379"
        assert "redis" in svc["depends_on"]
        grace = int(svc["stop_grace_period"].rstrip("s"))
        assert grace > 10  # kefu exits within 10 s of SIGTERM
        assert [str(p) for p in svc["expose"]] == [str(_port())]
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis
    for name, svc in services.items():
        for dependency in svc.get("depends_on", []):
            assert dependency in services, f"{name} depends on {dependency}: no such service"


def test_compose_mounts_files_that_exist_where_the_image_reads_them():
    for name, svc in _compose()["services"].items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}: no such file"
            if svc.get("build") == ".":
                assert target.startswith(f"{CONFIG_DIR}/")
                assert source.lstrip("./") == target[len(CONFIG_DIR) + 1:]  # bot.yaml, rules, … as in the image


def test_the_nginx_front_sends_to_the_kefu_services_on_their_port():
    services = _compose()["services"]
    nginx = services["nginx"]
    conf_path = next(v.split(":")[0] for v in nginx["volumes"] if v.endswith("default.conf:ro"))
    conf = (ROOT / conf_path).read_text(encoding="utf-8")
    upstream = re.findall(r"^\s*server\s+([\w.-]+):(\d+);", conf, re.M)
    kefus = sorted(name for name, svc in services.items() if svc.get("build") == ".")
    assert sorted(host for host, _ in upstream) == kefus
    assert {int(port) for _, port in upstream} == {_port()}
    listen = re.search(r"^\s*listen\s+(\d+);", conf, re.M).group(1)
    assert any(str(p).endswith(f":{listen}") for p in nginx["ports"])
    path = load_settings(ROOT / "bot.yaml").server.path
    assert f"location {path} " in conf and "location = /healthz" in conf


def _unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in (ROOT / "deploy" / "kefu.service").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            sections[section] = {}
        else:
            key, _, value = line.partition("=")
            sections[section].setdefault(key, []).append(value)
    return sections


def test_the_systemd_unit_is_hardened_reloads_on_sighup_and_lets_the_outbox_drain():
    service = {key: values[-1] for key, values in _unit()["Service"].items()}
    args = build_parser().parse_args(shlex.split(service["ExecStart"])[1:])
    assert args.command == "serve" and args.config == f"{CONFIG_DIR}/bot.yaml"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert int(service["TimeoutStopSec"]) > 10  # kefu exits within 10 s (5 s for requests, 5 s for sends)
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes"}.items():
        assert service[key] == value, key
    assert service["WorkingDirectory"] == f"/var/lib/{service['StateDirectory']}"  # where kefu.db goes
    assert _unit()["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_accepts_the_unit(tmp_path):
    """systemd's own check of every key (an unknown or misspelt one is a warning), in a scratch root."""
    if shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system").is_dir():
        pytest.skip("systemd-analyze is not installed")
    units = tmp_path / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "kefu.service", units)
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr" / "lib" / "systemd" / "system", symlinks=True)
    for binary in ("opt/kefu/bin/kefu", "bin/kill"):  # ExecStart and ExecReload must name executables
        (tmp_path / binary).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / binary).write_text("#!/bin/sh\n")
        (tmp_path / binary).chmod(0o755)
    result = subprocess.run(["systemd-analyze", f"--root={tmp_path}", "verify", "kefu.service"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result.stderr
