"""imds.InterruptionPoller against a local IMDSv2 stand-in (http.server on 127.0.0.1)."""

import http.server
import json
import threading
import unittest

from runctl_agent.imds import InterruptionPoller, ImdsHttpError, ImdsUnreachable, iso_of_epoch, parse_iso_utc


class FakeImds(http.server.BaseHTTPRequestHandler):
    """Answers like IMDSv2: PUT /latest/api/token, then GETs that need the token header."""

    server_version = "FakeImds"

    def log_message(self, *_args):
        pass

    def do_PUT(self):
        s = self.server
        s.requests.append(("PUT", self.path, self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")))
        if s.token_status != 200:
            return self.answer(s.token_status, b"")
        s.tokens_issued += 1
        self.answer(200, ("tok%d" % s.tokens_issued).encode(), {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})

    def do_GET(self):
        s = self.server
        token = self.headers.get("X-aws-ec2-metadata-token")
        s.requests.append(("GET", self.path, token))
        if token != "tok%d" % s.tokens_issued or token in s.revoked:
            return self.answer(401, b"")
        body = s.paths.get(self.path)
        self.answer(404, b"") if body is None else self.answer(200, body)

    def answer(self, status, body, headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeSupervisor:
    def __init__(self):
        self.emitted = []
        self.notices = []

    def poller_emit(self, type_, **fields):
        self.emitted.append(dict(fields, type=type_))

    def on_interruption_notice(self, notice):
        self.notices.append(notice)

    def debug(self, _text):
        pass


class PollerTest(unittest.TestCase):
    def setUp(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
        self.server.requests, self.server.paths, self.server.revoked = [], {}, set()
        self.server.tokens_issued, self.server.token_status = 0, 200
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.sup = FakeSupervisor()
        self.poller = InterruptionPoller(self.sup, {"imdsEndpoint": "http://127.0.0.1:%d" % self.server.server_port, "pollMs": 50})

    def test_no_notice_keeps_polling_with_one_token(self):
        self.assertTrue(self.poller.poll_once())
        self.assertTrue(self.poller.poll_once())
        self.assertEqual(self.server.tokens_issued, 1)
        self.assertEqual(self.server.requests[0], ("PUT", "/latest/api/token", "21600"))
        self.assertEqual([r[1] for r in self.server.requests[1:3]],
                         ["/latest/meta-data/events/recommendations/rebalance", "/latest/meta-data/spot/instance-action"])
        self.assertEqual(self.sup.emitted, [])

    def test_rebalance_once_then_the_notice_ends_polling(self):
        self.server.paths["/latest/meta-data/events/recommendations/rebalance"] = b'{"noticeTime": "2026-11-21T16:45:00Z"}'
        self.assertTrue(self.poller.poll_once())
        self.assertTrue(self.poller.poll_once())
        self.assertEqual(self.sup.emitted, [{"type": "rebalance-recommendation", "noticeTime": "2026-11-21T16:45:00.000Z"}])
        notice = {"action": "terminate", "time": "2026-11-21T16:47:00Z"}
        self.server.paths["/latest/meta-data/spot/instance-action"] = json.dumps(notice).encode()
        self.assertFalse(self.poller.poll_once())
        self.assertEqual(self.sup.notices, [notice])

    def test_a_revoked_token_is_renewed_once(self):
        self.poller.poll_once()
        self.server.revoked.add("tok1")
        self.assertTrue(self.poller.poll_once())
        self.assertEqual(self.server.tokens_issued, 2)

    def test_a_refused_token_is_an_http_error(self):
        self.server.token_status = 403
        self.assertRaises(ImdsHttpError, self.poller.poll_once)

    def test_the_loop_warns_once_when_nothing_answers(self):
        self.server.shutdown()
        self.server.server_close()
        self.assertRaises(ImdsUnreachable, self.poller.poll_once)
        self.poller._loop()  # returns at once: no metadata service, nothing to watch for
        (warning,) = self.sup.emitted
        self.assertEqual(warning["type"], "warning")
        self.assertIn("does not answer", warning["message"])


class IsoTimes(unittest.TestCase):
    def test_parse_and_format(self):
        self.assertEqual(parse_iso_utc("1970-01-01T00:01:00Z"), 60.0)
        self.assertEqual(parse_iso_utc("1970-01-01T01:00:00+01:00"), 0.0)
        self.assertEqual(parse_iso_utc("1970-01-01 00:00:01.5"), 1.5)
        for bad in ("", "yesterday", None, "1970-13-01T00:00:00Z"):
            self.assertIsNone(parse_iso_utc(bad))
        self.assertEqual(iso_of_epoch(61.25), "1970-01-01T00:01:01.250Z")


if __name__ == "__main__":
    unittest.main()
