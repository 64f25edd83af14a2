"""Names with `/` open like any other (issue 14: `/api/v1/guests/a%2Fb` was "no such route").

Guest names come from VMM command lines and host names from the hosts: a `/` is legal in both.
The dashboard encodes it as %2F (api.js, encodeURIComponent); uvicorn decodes the path before
routing, so the routes take the rest of the path as the name.
"""

from __future__ import annotations

import httpx
import pytest

from tests.app.conftest import Server, Tokens, assert_error
from tests.app.fill import T0, Filler, ev, state


@pytest.fixture
def fill(server: Server, tokens: Tokens) -> Filler:
    return Filler(server.url, tokens)


@pytest.mark.parametrize("name", ["team/db-1", "a/b/c", "x/", "/lead", "with%2Fencoded"])
def test_guest_whose_name_holds_a_slash_is_found_by_its_encoded_name(
    fill: Filler, viewer_client: httpx.Client, name: str
) -> None:
    fill.send("h1", events=[ev(T0, guest=name)])
    encoded = name.replace("%", "%25").replace("/", "%2F")
    params = {"since": "2026-11-24T00:00:00Z", "until": "2026-11-26T00:00:00Z"}
    r = viewer_client.get(f"/api/v1/guests/{encoded}", params=params)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == name
    assert r.json()["hosts"] == ["h1"]


def test_host_whose_name_holds_a_slash_is_found_and_an_unknown_one_is_a_404(
    fill: Filler, viewer_client: httpx.Client
) -> None:
    fill.send("rack-7/kvm-01", state=state(T0, mode="warn"), events=[ev(T0, guest="vm-1")])
    r = viewer_client.get("/api/v1/hosts/rack-7%2Fkvm-01")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "rack-7/kvm-01"
    assert_error(viewer_client.get("/api/v1/hosts/rack-7%2Fnone"), 404, "host_not_found")
    assert_error(viewer_client.get("/api/v1/guests/no%2Fsuch"), 404, "guest_not_found")
