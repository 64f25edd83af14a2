"""The examples in docs/api.md are true: each is run against a live server (#17).

Every ```sh block of docs/api.md that starts with `curl` is an example: it ends with a comment
line `# <status>` and is followed by a ```json block, the answer. The test starts a real uvicorn
on a fresh SQLite database, creates an agent token for the payload's host and a viewer token,
runs each command with the real `curl` (in the docs' order: the ingest example feeds the reads),
with `$SPLITWATCH_URL`, `$AGENT_TOKEN` and `$VIEWER_TOKEN` set, and asserts the status and that
the answer has the documented shape: the same keys at every level, the same JSON types (a
documented null stands for any value), and the same `error` code. A file the command reads
(`--data-binary @payload.json`) is the ```json block that follows the line naming it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from tests.app.conftest import Server, Tokens, upgrade

API_MD = Path(__file__).resolve().parent.parent / "docs" / "api.md"
HOST = "kvm-fra-01"  # the host of the documented payload

_EXAMPLE = re.compile(r"```sh\n(curl .*?)```\s*\n```json\n(.*?)```", re.S)
_FILE = re.compile(r"`([\w.-]+\.json)`[^\n]*\n+```json\n(.*?)```", re.S)


@dataclass(frozen=True)
class Example:
    command: str
    status: int
    answer: Any


def examples(text: str) -> list[Example]:
    found = []
    for block, answer in _EXAMPLE.findall(text):
        lines = block.rstrip("\n").splitlines()
        status = re.fullmatch(r"# (\d{3})", lines[-1].strip())
        assert status, f"an example ends with `# <status>`: {block!r}"
        found.append(Example("\n".join(lines[:-1]), int(status.group(1)), json.loads(answer)))
    return found


def files(text: str) -> dict[str, str]:
    return {name: body for name, body in _FILE.findall(text)}


def shape_errors(doc: Any, real: Any, path: str = "$") -> list[str]:
    """Where `real` differs in shape from the documented `doc`."""
    if doc is None:
        return []
    if isinstance(doc, dict):
        if not isinstance(real, dict):
            return [f"{path}: documented an object, got {real!r}"]
        errors = []
        if set(doc) != set(real):
            errors.append(f"{path}: keys {sorted(doc)} documented, {sorted(real)} answered")
        for key in set(doc) & set(real):
            errors += shape_errors(doc[key], real[key], f"{path}.{key}")
        if "error" in doc and doc["error"] != real.get("error"):
            errors.append(f"{path}.error: {doc['error']!r} documented, {real.get('error')!r} answered")
        return errors
    if isinstance(doc, list):
        if not isinstance(real, list):
            return [f"{path}: documented a list, got {real!r}"]
        if doc and not real:
            return [f"{path}: documented items, answered none"]
        if len({type(item) for item in doc}) > 1:  # a tuple, e.g. a point [time, count]
            if len(doc) != len(real):
                return [f"{path}: {len(doc)} members documented, {len(real)} answered"]
            return [
                e
                for i, (d, r) in enumerate(zip(doc, real, strict=True))
                for e in shape_errors(d, r, f"{path}[{i}]")
            ]
        return [e for item in real for e in shape_errors(doc[0], item, f"{path}[]")] if doc else []
    kinds = (bool, int, float, str)
    doc_kind = next(k for k in kinds if isinstance(doc, k))
    real_kind = next((k for k in kinds if isinstance(real, k)), type(real))
    if doc_kind is float and real_kind is int:
        return []
    return [] if doc_kind is real_kind or real is None else [f"{path}: {doc!r} documented, {real!r} answered"]


def test_the_doc_has_examples_and_the_shape_check_catches_a_difference() -> None:
    found = examples(API_MD.read_text())
    assert len(found) >= 4 and any(e.status >= 400 for e in found)
    assert shape_errors({"a": 1, "b": [{"c": "x"}]}, {"a": 2, "b": [{"c": "y"}]}) == []
    assert shape_errors({"a": 1}, {"a": 1, "b": 2})
    assert shape_errors({"error": "validation_error"}, {"error": "invalid_request"})
    assert shape_errors({"b": [{"c": "x"}]}, {"b": [{"c": 1}]})
    assert shape_errors({"p": [["t", 0]]}, {"p": [["u", 3], ["v", 1]]}) == []
    assert shape_errors({"p": [["t", 0]]}, {"p": [["u", "3"]]})


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Tokens, Path]]:
    tmp = tmp_path_factory.mktemp("docs-examples")
    url = f"sqlite:///{tmp / 'splitwatch.db'}"
    upgrade(url)
    server = Server(Settings(database_url=url))
    server.start()
    try:
        yield server, Tokens(url), tmp
    finally:
        server.stop()


def test_every_curl_example_in_api_md_answers_what_the_doc_shows(live: tuple[Server, Tokens, Path]) -> None:
    curl = shutil.which("curl")
    assert curl, "curl runs the documented commands"
    server, tokens, tmp = live
    text = API_MD.read_text()
    for name, body in files(text).items():
        (tmp / name).write_text(body)
    env = {
        "PATH": str(Path(curl).parent),
        "SPLITWATCH_URL": server.url,
        "AGENT_TOKEN": tokens.create("agent", HOST),
        "VIEWER_TOKEN": tokens.create("viewer"),
    }
    failures = []
    for example in examples(text):
        out = tmp / "answer.json"
        run = subprocess.run(
            ["bash", "-c", f"{example.command} -o {out} -w '%{{http_code}}'"],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        answer = json.loads(out.read_text()) if out.is_file() and out.stat().st_size else None
        if run.returncode != 0 or run.stdout.strip() != str(example.status):
            failures.append(f"{example.command}\n  status {run.stdout!r} (doc: {example.status}), {answer}")
            continue
        failures += [f"{example.command}\n  {e}" for e in shape_errors(example.answer, answer)]
        out.unlink()
    assert not failures, "\n".join(failures)
