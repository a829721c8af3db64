import urllib.error
import urllib.request

from prometheus_client import Counter

from mailintake.runtime.http_endpoint import Health, serve_http_endpoint

PROBE = Counter("mailintake_test_probe_total", "A counter only this test increments")


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_liveness_and_readiness():
    health = Health(stall_after_seconds=60)
    server = serve_http_endpoint("127.0.0.1", 0, health)
    try:
        port = server.server_port
        PROBE.inc()
        status, body = get(port, "/metrics")
        assert status == 200 and "mailintake_test_probe_total 1.0" in body
        assert get(port, "/readyz") == (503, "starting\n")
        health.set_ready(True)
        assert get(port, "/readyz") == (200, "ok\n")
        assert get(port, "/livez") == (200, "ok\n")
        health.stall_after_seconds = -1  # the loop has not beaten since: it counts as stalled
        assert get(port, "/livez")[0] == 503
        assert get(port, "/nope")[0] == 404
    finally:
        server.shutdown()
