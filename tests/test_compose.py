"""docker-compose.yml and the Dockerfile, checked against the code by reading them.

No Docker engine runs in the test environment, so these files can only be proven right by
what they name: every `splitwatch` command and option they run exists (its real `--help`),
every `SPLITWATCH_*` variable is a real setting, ports agree with each other, the agent gets
exactly the privileges docs/agent.md asks for and no more, and everything the Dockerfile
copies is in the repository and not excluded by .dockerignore.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def _interpolate(value: str) -> str:
    """Compose variable substitution with every variable unset: `${X:-d}` → d, `$$` → `$`."""
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", value)
    return value.replace("$$", "$")


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}: {sorted(services)}"
    svc = services[name]
    assert isinstance(svc, dict)
    return svc


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _interpolate(str(v)) for k, v in env.items()}


def splitwatch_commands(command: list[str] | str) -> list[list[str]]:
    """Every `splitwatch ...` invocation in a service command, `sh -c "a && exec b"` included;
    `splitwatch-agent ARGS` (the agent image's zipapp) is `splitwatch agent ARGS`."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if argv[:1] == ["splitwatch-agent"]:
        return [["splitwatch", "agent", *argv[1:]]]
    if argv[:2] == ["sh", "-c"]:
        script = _interpolate(argv[2])
        runs: list[list[str]] = []
        for part in re.split(r"&&|\|\||;", script):
            words = shlex.split(part)
            if words and words[0] == "exec":
                words = words[1:]
            if words and words[0] == "splitwatch":
                runs.append(words)
        return runs
    return [argv] if argv and argv[0] == "splitwatch" else []


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage, by the stage's `AS` name (or its index)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            current = stages.setdefault(name, [])
        current.append((keyword, rest))
    return stages


def dockerfile_cmd() -> list[str]:
    cmds = [rest for keyword, rest in dockerfile_instructions() if keyword == "CMD"]
    assert len(cmds) == 1, f"Dockerfile needs exactly one CMD, has {len(cmds)}"
    argv = json.loads(cmds[0])
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def option_value(argv: list[str], option: str) -> str | None:
    for i, word in enumerate(argv):
        if word == option and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


@cache
def splitwatch_help(*subcommand: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli.main", *subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, (
        f"`splitwatch {' '.join(subcommand)} --help` failed ({result.returncode}): {result.stderr}"
    )
    return result.stdout


def split_subcommand(argv: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(`db`, `upgrade`), [options...] for `splitwatch db upgrade --x y`."""
    words = argv[1:]
    sub: list[str] = []
    while words and not words[0].startswith("-"):
        sub.append(words.pop(0))
    return tuple(sub), words


def all_invocations() -> list[tuple[str, list[str]]]:
    found = [("Dockerfile CMD", dockerfile_cmd())]
    for name, svc in compose()["services"].items():
        if "command" in svc:
            found += [(f"service {name}", argv) for argv in splitwatch_commands(svc["command"])]
    return found


# ------------------------------------------------------------------------------- commands


def test_every_splitwatch_command_run_by_compose_and_the_dockerfile_is_a_real_subcommand() -> None:
    invocations = all_invocations()
    # backend: db upgrade + serve; agent: agent; Dockerfile: serve.
    assert len(invocations) >= 4, invocations
    for where, argv in invocations:
        sub, _ = split_subcommand(argv)
        assert sub, f"{where}: `{' '.join(argv)}` names no subcommand"
        help_text = splitwatch_help(*sub)
        assert "Usage:" in help_text, f"{where}: `splitwatch {' '.join(sub)} --help` printed no usage"


def test_every_option_passed_to_a_splitwatch_command_is_in_its_help() -> None:
    for where, argv in all_invocations():
        sub, rest = split_subcommand(argv)
        help_text = splitwatch_help(*sub)
        for word in rest:
            if word.startswith("--"):
                option = word.split("=", 1)[0]
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text), (
                    f"{where}: `splitwatch {' '.join(sub)}` has no option {option}:\n{help_text}"
                )


def test_backend_migrates_before_it_serves_on_all_interfaces() -> None:
    runs = splitwatch_commands(service("backend")["command"])
    subs = [split_subcommand(argv)[0] for argv in runs]
    assert subs == [("db", "upgrade"), ("serve",)], subs
    script = service("backend")["command"][2]
    assert "&&" in script, "serve must not start when the upgrade failed: join them with &&"
    assert option_value(runs[1], "--host") == "0.0.0.0"


def test_dockerfile_serves_on_all_interfaces() -> None:
    argv = dockerfile_cmd()
    assert split_subcommand(argv)[0] == ("serve",), argv
    assert option_value(argv, "--host") == "0.0.0.0", argv


# ------------------------------------------------------------------------------- settings


def test_every_splitwatch_variable_of_the_backend_is_a_real_setting() -> None:
    from app.settings import Settings

    fields = set(Settings.model_fields)
    env = environment("backend")
    named = [k for k in env if k.startswith("SPLITWATCH_")]
    assert "SPLITWATCH_DATABASE_URL" in named
    for key in named:
        assert key.removeprefix("SPLITWATCH_").lower() in fields, f"{key} is not a Settings field"
    # And they are valid values for those fields, not only valid names.
    Settings(**{k.removeprefix("SPLITWATCH_").lower(): v for k, v in env.items() if k in named})


def test_backend_database_url_names_the_postgres_service_with_its_user_and_database() -> None:
    from app.store.engine import make_engine

    url = environment("backend")["SPLITWATCH_DATABASE_URL"]
    pg = environment("postgres")
    parts = urlsplit(url)
    assert parts.scheme == "postgresql+psycopg", url
    assert parts.hostname == "postgres" and (parts.port or 5432) == 5432, url
    assert parts.username == pg["POSTGRES_USER"] and parts.password == pg["POSTGRES_PASSWORD"], url
    assert parts.path.lstrip("/") == pg["POSTGRES_DB"], url
    make_engine(url).dispose()  # the URL is one splitwatch accepts (driver psycopg 3)


def test_agent_environment_holds_only_variables_the_agent_command_reads() -> None:
    help_text = splitwatch_help("agent")
    env = environment("agent")
    assert "SPLITWATCH_AGENT_TOKEN" in env
    for key in env:
        assert re.search(rf"env var:\s+{key}\b", help_text), f"`splitwatch agent` does not read {key}"


# ------------------------------------------------------------------------------- ports, health


def test_backend_port_mapping_serve_port_and_healthcheck_agree() -> None:
    serve = splitwatch_commands(service("backend")["command"])[1]
    port = option_value(serve, "--port")
    assert port is not None
    assert [_interpolate(p) for p in service("backend")["ports"]] == [f"127.0.0.1:{port}:{port}"]
    health = " ".join(service("backend")["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)['\"]", health)
    assert match, health
    assert match.group(1) == port and match.group(2) == "/readyz", health
    # The Dockerfile's own default agrees too.
    assert option_value(dockerfile_cmd(), "--port") == port
    assert f"EXPOSE {port}" in DOCKERFILE.read_text()


def test_no_service_publishes_a_port_on_every_interface_by_default() -> None:
    # issue 14: /metrics (every host and guest name) and the API were published on 0.0.0.0.
    for name, svc in compose()["services"].items():
        for mapping in svc.get("ports") or []:
            published = _interpolate(str(mapping))
            assert published.count(":") == 2, f"{name}: {mapping} binds every interface"
            assert published.split(":")[0] == "127.0.0.1", f"{name}: {mapping}"


def test_agent_sends_to_the_backend_service_on_its_port() -> None:
    agent = splitwatch_commands(service("agent")["command"])[0]
    serve = splitwatch_commands(service("backend")["command"])[1]
    server = urlsplit(option_value(agent, "--server") or "")
    assert server.hostname == "backend" and str(server.port) == option_value(serve, "--port")


def test_readyz_used_by_the_healthcheck_is_a_route_of_the_app(tmp_path: Path) -> None:
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    assert "get" in app.openapi()["paths"].get("/readyz", {}), sorted(app.openapi()["paths"])


def test_postgres_and_backend_have_healthchecks_and_start_in_order() -> None:
    assert service("postgres")["image"] == "postgres:15"
    assert "pg_isready" in " ".join(service("postgres")["healthcheck"]["test"])
    assert service("backend")["healthcheck"]["test"]
    assert service("backend")["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_postgres_data_lives_on_a_named_volume() -> None:
    volumes = service("postgres")["volumes"]
    assert any(
        v.endswith(":/var/lib/postgresql/data") and v.split(":")[0] in compose()["volumes"] for v in volumes
    )


# ------------------------------------------------------------------------------- the agent


def test_agent_has_exactly_sys_rawio_and_syslog_and_nothing_else() -> None:
    agent = service("agent")
    assert agent["cap_drop"] == ["ALL"]
    assert sorted(agent["cap_add"]) == ["SYSLOG", "SYS_RAWIO"]
    assert "privileged" not in agent or agent["privileged"] is False
    assert "no-new-privileges:true" in agent.get("security_opt", [])


def test_agent_gets_the_kmsg_device_read_only_and_the_msr_devices_read_only() -> None:
    agent = service("agent")
    assert agent["devices"] == ["/dev/kmsg:/dev/kmsg:r"]
    # msr is character major 202: read, never write (the agent never writes an MSR).
    assert agent["device_cgroup_rules"] == ["c 202:* r"]
    assert "/dev/cpu:/host/dev/cpu:ro" in agent["volumes"]


def test_agent_reads_the_host_root_read_only_in_the_host_pid_namespace() -> None:
    agent = service("agent")
    assert "/:/host:ro" in agent["volumes"]
    assert agent["pid"] == "host"  # a trap's TID must resolve under /host/proc
    assert agent["uts"] == "host"  # proc/sys/kernel/hostname is the reader's UTS namespace
    argv = splitwatch_commands(agent["command"])[0]
    assert option_value(argv, "--root") == "/host"


def test_agent_spool_and_state_are_on_a_named_volume_and_the_token_is_not_in_the_file() -> None:
    agent = service("agent")
    argv = splitwatch_commands(agent["command"])[0]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in agent["volumes"]}
    for option in ("--spool", "--state-dir"):
        path = option_value(argv, option)
        assert path is not None, option
        holder = [m for m in mounts if path.startswith(m.rstrip("/") + "/")]
        assert holder and mounts[holder[0]] in compose()["volumes"], f"{option} {path} is not on a volume"
    # Not on the command line: with pid: host, any user of the host reads an argv in `ps`.
    assert option_value(argv, "--token") is None, "the agent token must come from the environment"
    assert "sw_" not in COMPOSE.read_text().replace("sw_...", "")


# ------------------------------------------------------------------------------- the image


def test_dockerfile_builds_from_python_311_slim_and_installs_the_server_extra() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "server", "the backend is the last stage: what `docker build .` makes"
    assert stages["server"][0] == ("FROM", "python:3.11-slim AS server")
    instructions = stages["server"]
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install [^&]*\.\[server\]", runs), runs


def test_dockerfile_runs_the_backend_as_a_non_root_user() -> None:
    users = [rest for keyword, rest in dockerfile_instructions() if keyword == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), users
    runs = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    assert "useradd" in runs and users[-1] in runs, "the USER must be created in the image"


def test_compose_builds_the_dockerfile_of_this_repository() -> None:
    for name in ("backend", "agent"):
        build = service(name)["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    assert service("agent")["build"]["target"] == "agent"
    assert "target" not in service("backend")["build"] or service("backend")["build"]["target"] == "server"


def test_the_agent_image_is_a_slim_python_and_the_zipapp_alone() -> None:
    """Issue 17: no server code and no third-party package in the image every host pulls."""
    stages = dockerfile_stages()
    agent = stages["agent"]
    assert agent[0][0] == "FROM" and re.fullmatch(r"python:3\.\d+-slim AS agent", agent[0][1]), agent[0]
    assert not [rest for keyword, rest in agent if keyword == "RUN"], "nothing installed in the agent image"
    copies = [rest.split() for keyword, rest in agent if keyword == "COPY"]
    assert copies == [["--from=agent-build", "/splitwatch-agent.pyz", "/usr/local/bin/splitwatch-agent"]]
    entry = [json.loads(rest) for keyword, rest in agent if keyword == "ENTRYPOINT"]
    assert entry == [["splitwatch-agent"]]
    assert splitwatch_commands(service("agent")["command"])[0][:2] == ["splitwatch", "agent"]
    assert service("agent")["command"][0] == "splitwatch-agent"

    build = stages["agent-build"]
    build_copies = [rest.split() for keyword, rest in build if keyword == "COPY"]
    assert build_copies == [["agent", "./agent"], ["scripts/build-agent", "./scripts/build-agent"]]
    runs = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert "scripts/build-agent /splitwatch-agent.pyz" in runs and "chmod 0755 /splitwatch-agent.pyz" in runs
    for needed in ("agent", "scripts/build-agent"):
        assert not dockerignored(needed), f".dockerignore excludes {needed}, which the agent image copies"


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins; `!` keeps."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in dockerignore_patterns():
        keep = pattern.startswith("!")
        if any(fnmatch.fnmatch(c, pattern.lstrip("!")) for c in candidates):
            excluded = not keep
    return excluded


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


@pytest.mark.parametrize("needed", ["pyproject.toml", "README.md", "agent", "app", "migrations", "frontend"])
def test_dockerfile_copies_what_the_installed_backend_needs_and_dockerignore_keeps_it(needed: str) -> None:
    copies = [rest.split() for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    sources = {src for words in copies for src in words[:-1] if not src.startswith("--")}
    assert needed in sources, f"the Dockerfile does not copy {needed}: {sorted(sources)}"
    assert (ROOT / needed).exists(), f"{needed} is not in the repository"
    assert not dockerignored(needed), f".dockerignore excludes {needed}"


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image() -> None:
    patterns = dockerignore_patterns()
    for private in (".git", ".venv", ".env", "splitwatch-demo", "*.db"):
        assert private in patterns, f".dockerignore must exclude {private}"


def test_dashboard_files_are_built_into_the_package_the_dockerfile_installs() -> None:
    # The dashboard is package data of app (app/frontend links to frontend/ in the repository,
    # pyproject.toml lists it), so the image copies both for the build and installs normally;
    # tests/test_packaging.py builds the wheel and serves the dashboard from it.
    from app.api import frontend

    assert (ROOT / "frontend").resolve() == frontend.FRONTEND_DIR
    assert (ROOT / "app" / "frontend").resolve() == frontend.FRONTEND_DIR
    copies = [rest.split() for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    targets = {words[0]: words[-1] for words in copies if len(words) == 2}
    assert targets["app"] == "./app" and targets["frontend"] == "./frontend", targets
    runs = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    assert 'pip install ".[server]"' in runs, runs
