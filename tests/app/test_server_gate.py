"""Every HTTP request and WebSocket upgrade is checked against the server's host and origin allowlist
before any Bokeh handler runs (DNS rebinding, foreign pages asking for /autoload.js)."""

from __future__ import annotations

import base64
import http.client
import os

import pytest

from conftest import running_server


@pytest.fixture(scope="module")
def server(app_data):
    with running_server(app_data, start_timeout=30) as srv:
        yield srv


def request(port: int, path: str, headers: dict) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def sessions(srv) -> int:
    return len(srv.get_sessions())


def test_loopback_names_are_served(server):
    port = server.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        status, page = request(port, "/", {"Host": host})
        assert status == 200 and "<title>LSTMVis</title>" in page


def test_rebound_host_gets_403_and_no_session(server):
    port = server.port
    before = sessions(server)
    for path in ("/", "/?project=small&brush=110,112", f"/autoload.js?bokeh-autoload-element=x&bokeh-app-path=/"
                 f"&bokeh-absolute-url=http://rebind.example:{port}/"):
        status, body = request(port, path, {"Host": f"rebind.example:{port}"})
        assert status == 403 and "does not answer for this host" in body
    key = base64.b64encode(os.urandom(16)).decode()
    status, _ = request(port, "/ws", {"Host": f"rebind.example:{port}", "Origin": f"http://rebind.example:{port}",
                                      "Upgrade": "websocket", "Connection": "Upgrade",
                                      "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"})
    assert status == 403
    assert sessions(server) == before


def test_foreign_origin_gets_403_and_no_session(server):
    port = server.port
    before = sessions(server)
    status, _ = request(port, f"/autoload.js?bokeh-autoload-element=x&bokeh-app-path=/&bokeh-absolute-url="
                              f"http://127.0.0.1:{port}/", {"Host": f"127.0.0.1:{port}",
                                                            "Origin": "http://evil.example"})
    assert status == 403
    assert sessions(server) == before
    # The same request from the server's own origin is answered.
    status, body = request(port, f"/autoload.js?bokeh-autoload-element=x&bokeh-app-path=/&bokeh-absolute-url="
                                 f"http://127.0.0.1:{port}/", {"Host": f"127.0.0.1:{port}",
                                                               "Origin": f"http://127.0.0.1:{port}"})
    assert status == 200 and "Bokeh" in body


def test_catalogue_keeps_a_bounded_number_of_projects_open(tmp_path):
    from bokeh_app.catalogue import Catalogue
    from conftest import make_app_project

    for i in range(40):
        make_app_project(tmp_path / f"p{i:02d}", 200, 8, seed=i, tracks=False, second_source=False,
                         mean_sequence=50)
    fds = lambda: len(os.listdir("/proc/self/fd"))        # noqa: E731
    before = fds()
    catalogue = Catalogue(tmp_path, "numpy", max_open=4)
    summaries = catalogue.summaries()
    assert len(summaries) == 40 and all("error" not in s for s in summaries)
    assert catalogue.open_count == 0 and fds() - before <= 2        # the landing view opened and closed each
    engines = [catalogue.engine(f"p{i:02d}") for i in range(10)]
    assert catalogue.open_count == 4
    assert engines[-1].project.summary() == summaries[9]
    del engines
    import gc
    gc.collect()
    assert fds() - before <= 4 * 3 + 2                               # a few files per open project


def test_a_very_long_url_gets_a_page_saying_why_and_no_session(server):
    """Tornado drops a request over its header limit without a word; ours answer 414 with a message."""
    port = server.port
    before = sessions(server)
    long_query = "/?project=small&add=" + ",".join(str(i % 48) for i in range(40_000))    # ~100 KB
    status, body = request(port, long_query, {"Host": f"127.0.0.1:{port}"})
    assert status == 414 and "address is" in body and "at most 65,536 bytes" in body
    assert sessions(server) == before
    # A long but reasonable scenario (hand edits of many cells) is still served.
    query = "/?project=small&add=" + ",".join(str(i % 48) for i in range(5_000))          # ~15 KB
    status, page = request(port, query, {"Host": f"127.0.0.1:{port}"})
    assert status == 200 and "<title>LSTMVis</title>" in page


def test_default_ports_are_implied_as_a_browser_sends_them():
    """Behind a proxy on port 80 a browser sends ``Host: example.org`` and ``Origin: http://example.org``."""
    from types import SimpleNamespace

    from bokeh_app.server import RefusedRequest

    gate = RefusedRequest(["example.org:80", "127.0.0.1:5006"])

    def refused(headers):
        return gate.match(SimpleNamespace(protocol="http", headers=headers)) is not None

    assert not refused({"Host": "example.org", "Origin": "http://example.org"})
    assert not refused({"Host": "EXAMPLE.org:80"})
    assert refused({"Host": "example.org", "Origin": "https://example.org"})          # port 443: not allowed
    assert refused({"Host": "evil.example"}) and refused({"Host": "127.0.0.1:5006", "Origin": "http://evil"})
