"""EC2 instance metadata: the spot interruption / rebalance poller."""

import datetime
import json
import re
import threading
import time
import traceback

from .constants import IMDS_TIMEOUT_S, IMDS_TOKEN_TTL_S


_ISO_RE = re.compile(
    r"^\s*(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d)(?::(\d\d)(\.\d+)?)?\s*(Z|z|[+-]\d\d(?::?\d\d)?)?\s*$"
)


def parse_iso_utc(text):
    """Epoch seconds of an ISO 8601 time such as 2026-11-21T16:45:00Z (no zone: UTC); None if not one."""
    m = _ISO_RE.match(text) if isinstance(text, str) else None
    if not m:
        return None
    try:
        t = datetime.datetime(
            int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)), int(m.group(6) or 0),
            tzinfo=datetime.timezone.utc,
        ).timestamp()
    except ValueError:
        return None
    zone = m.group(8)
    if zone and zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        offset = int(digits[:2]) * 3600 + (int(digits[2:4]) * 60 if len(digits) >= 4 else 0)
        t -= offset if zone[0] == "+" else -offset
    return t + (float(m.group(7)) if m.group(7) else 0.0)


def iso_of_epoch(t):
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


class ImdsUnreachable(Exception):
    """Nothing answered (connection refused, timeout, no route): not an EC2 instance."""


class ImdsHttpError(Exception):
    """The metadata service answered, but not with what a poll needs."""


class InterruptionPoller:
    """Polls IMDSv2 for a spot interruption notice and a rebalance recommendation (docs/agent-protocol.md).

    Runs in its own thread from the start of the run. It only records: the first notice goes to
    Supervisor.on_interruption_notice, and the main thread acts on it (signals are sent there only).
    """

    def __init__(self, sup, cfg):
        import urllib.request  # here, not at the top: every other agent command starts faster without it

        self.sup = sup
        self.base = cfg["imdsEndpoint"]
        self.poll_s = max(50, cfg["pollMs"]) / 1000.0
        # Never through a proxy from the environment: the metadata service is link-local.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.token = None
        self.token_renew_at = 0.0
        self.answered = False  # the service has answered at least once
        self.rebalance_seen = False
        self.http_warned = False
        self.stop_event = threading.Event()
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self._loop, name="imds-poller", daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_event.set()

    def _request(self, method, path, headers):
        """(status, body, headers) of one request with a short timeout; ImdsUnreachable when nothing answered."""
        import http.client
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.base + path, data=b"" if method == "PUT" else None, headers=headers, method=method)
        try:
            with self.opener.open(req, timeout=IMDS_TIMEOUT_S) as resp:
                status, body, hdrs = resp.status, resp.read(65536), resp.headers
        except urllib.error.HTTPError as e:
            status, hdrs = e.code, e.headers
            try:
                body = e.read(65536)
            except Exception:
                body = b""
            e.close()
        except urllib.error.URLError as e:
            raise ImdsUnreachable(str(e.reason))
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise ImdsUnreachable("%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__)
        self.answered = True
        return status, body, hdrs

    def _token(self):
        if self.token is not None and time.monotonic() < self.token_renew_at:
            return self.token
        self.token = None
        status, body, hdrs = self._request(
            "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_S)}
        )
        token = body.decode("ascii", "replace").strip()
        if status != 200 or not token:
            raise ImdsHttpError("the token request (PUT /latest/api/token) answered HTTP %d" % status)
        ttl = IMDS_TOKEN_TTL_S
        try:
            ttl = max(1, min(ttl, int(hdrs.get("X-aws-ec2-metadata-token-ttl-seconds") or ttl)))
        except (TypeError, ValueError):
            pass
        # Renewed a little before it expires: a minute early, or a tenth of a short TTL.
        self.token = token
        self.token_renew_at = time.monotonic() + ttl - min(60.0, ttl / 10.0)
        return token

    def _get(self, path):
        """(status, body) of a GET with the session token; a 401 renews the token once."""
        for attempt in (0, 1):
            status, body, _hdrs = self._request("GET", path, {"X-aws-ec2-metadata-token": self._token()})
            if status == 401 and attempt == 0:
                self.token = None
                continue
            return status, body
        return status, body

    @staticmethod
    def _json(body):
        try:
            obj = json.loads(body.decode("utf-8"))
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    def poll_once(self):
        """One poll; False once there is nothing left to watch for (a notice was seen)."""
        if not self.rebalance_seen:
            path = "/latest/meta-data/events/recommendations/rebalance"
            status, body = self._get(path)
            if status == 200:
                obj = self._json(body) or {}
                self.rebalance_seen = True
                t = parse_iso_utc(obj.get("noticeTime"))
                self.sup.poller_emit("rebalance-recommendation", noticeTime=iso_of_epoch(t) if t is not None else None)
            elif status != 404:
                self.sup.debug("GET %s answered HTTP %d" % (path, status))
        path = "/latest/meta-data/spot/instance-action"
        status, body = self._get(path)
        if status == 200:
            notice = self._json(body)
            if notice is not None:
                self.sup.on_interruption_notice(notice)
                return False
            self.sup.debug("GET %s answered an unreadable notice: %r" % (path, body[:200]))
        elif status != 404:
            self.sup.debug("GET %s answered HTTP %d" % (path, status))
        return True

    def _loop(self):
        while not self.stop_event.is_set():
            try:
                if not self.poll_once():
                    return
            except ImdsUnreachable as e:
                if not self.answered:
                    self.sup.poller_emit(
                        "warning",
                        message="the instance metadata service at %s does not answer (%s): spot interruption notices"
                        " are not watched for in this run" % (self.base, e),
                    )
                    return
                self.sup.debug("instance metadata poll failed: %s" % e)
            except ImdsHttpError as e:
                if not self.http_warned:
                    self.http_warned = True
                    self.sup.poller_emit("warning", message="instance metadata at %s: %s; retrying every poll" % (self.base, e))
                else:
                    self.sup.debug("instance metadata poll failed: %s" % e)
            except Exception:
                self.sup.debug("instance metadata poll failed:\n" + traceback.format_exc())
            self.stop_event.wait(self.poll_s)
