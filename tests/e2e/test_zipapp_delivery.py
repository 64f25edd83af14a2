"""The zipapp as a hypervisor runs it (issue 17): `python3.9 splitwatch-agent.pyz --once` with
nothing but the standard library sends a host's traps to a real backend, and a refused token
is a failed run, said once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.fakehost import FakeHost
from tests.app.conftest import Server, Tokens
from tests.conftest import require
from tests.e2e.conftest import Api
from tests.zipapp import build_pyz, interpreter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyz(tmp_path_factory.mktemp("dist") / "splitwatch-agent.pyz")


@pytest.mark.parametrize("version", ["3.9", "3.10"])
def test_the_zipapp_on_an_older_python_delivers_a_pass_and_fails_on_a_refused_token(
    pyz: Path,
    tmp_path: Path,
    backend: Server,
    tokens: Tokens,
    api: Api,
    version: str,
) -> None:
    python = interpreter(version)
    require(python is not None, f"no Python {version}: install it (pyenv install {version})")
    assert python is not None
    host = FakeHost(tmp_path / "host", hostname="host-1").cpus(2).mode("warn").boot_messages()
    vm = host.qemu("web-1", pid=4242, vcpus=2)
    written = [host.split_lock(vm.vcpu_comm(i % 2), vm.vcpu_tids[i % 2]) for i in range(4)]

    def once(token: str) -> subprocess.CompletedProcess[str]:
        argv = [
            python, "-I", "-S", str(pyz), "--server", backend.url, "--root", str(host.root),
            "--state-dir", str(tmp_path / "state"), "--no-tracefs", "--once",
        ]  # fmt: skip
        # -I ignores PYTHON* variables, not others: the token comes from the environment.
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env={"SPLITWATCH_AGENT_TOKEN": token}
        )

    refused = once("sw_not_a_real_token")
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.count("token rejected by") == 1, refused.stderr
    assert api.seqs("host-1") == []

    sent = once(tokens.agent("host-1"))
    assert sent.returncode == 0, sent.stderr
    assert api.seqs("host-1") == sorted(written)  # the refused pass's records were kept and sent
