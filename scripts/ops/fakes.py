"""Fakes at the HTTP boundary for scripts/ops-test, speaking the real shapes.

FakeTelegram: the Bot API's sendMessage as Alertmanager's telegram receiver calls it
(`POST {api_url}/bot<token>/sendMessage`, JSON or form body), answered like Telegram
(docs/contracts/telegram.md): `{"ok":true,"result":<Message>}`, and exactly once (the first
call) a 429 `Too Many Requests: retry after 1` with `parameters.retry_after`. Every call is
logged with its arrival time, to memory and to a JSON-lines file.

It also answers getMe (leadq's alert_channel security check) and, at /deadmansswitch,
Alertmanager's webhook for the LeadqWatchdog heartbeat.

FakeHubSpot: the contacts batch upsert (docs/contracts/hubspot.md, tests/it/crm.rs), keyed by
email, with a switchable mode: "normal" (200/207 like HubSpot), "401" (credentials refused)
or "500" (HubSpot unavailable).

Python standard library only.
"""

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _start(server):
    t = threading.Thread(target=server.serve_forever, name=type(server).__name__, daemon=True)
    t.start()
    return t


class FakeTelegram:
    """A fake Telegram Bot API on 127.0.0.1:port."""

    def __init__(self, port, token, log_path, throttle_chat=None):
        self.token = token
        self.throttle_chat = throttle_chat  # the one 429 goes to this chat's first message
        self.log_path = log_path
        self.messages = []  # every call: {t, status, chat_id, text, parse_mode}
        self.lock = threading.Lock()
        self.next_id = 1000
        self.sent_429 = False
        self.get_me = 0          # getMe calls (leadq's alert_channel security check)
        self.watchdog_pings = []  # arrival times of the dead man's switch webhook
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                fake._handle(self)

            def do_GET(self):
                fake._handle(self)

        self.server = _Server(("127.0.0.1", port), Handler)
        open(log_path, "w").close()

    def start(self):
        _start(self.server)
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _params(req):
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
        query = urllib.parse.urlparse(req.path).query
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
        if ctype == "application/json" and raw:
            try:
                params.update(json.loads(raw))
            except ValueError:
                pass
        elif raw:
            params.update({k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode()).items()})
        return params

    def _answer(self, req, status, body):
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _handle(self, req):
        arrived = time.time()
        path = urllib.parse.urlparse(req.path).path
        params = self._params(req)
        if path == "/deadmansswitch":
            # Alertmanager's webhook receiver for LeadqWatchdog (a healthchecks-style ping).
            with self.lock:
                self.watchdog_pings.append(arrived)
            return self._answer(req, 200, {"ok": True})
        prefix = "/bot" + self.token + "/"
        if not path.startswith(prefix):
            # Telegram answers an unknown token with 401 (and a missing one with 404).
            return self._answer(req, 401, {"ok": False, "error_code": 401,
                                           "description": "Unauthorized"})
        method = path[len(prefix):]
        me = {"id": int(self.token.split(":")[0]), "is_bot": True,
              "first_name": "leadq alerts", "username": "leadq_alerts_bot"}
        if method.lower() == "getme":
            with self.lock:
                self.get_me += 1
            return self._answer(req, 200, {"ok": True, "result": dict(
                me, can_join_groups=True, can_read_all_group_messages=False,
                supports_inline_queries=False)})
        if method.lower() != "sendmessage":
            return self._answer(req, 404, {"ok": False, "error_code": 404,
                                           "description": "Not Found: method not found"})
        text = params.get("text")
        chat = params.get("chat_id")
        if not text or chat in (None, ""):
            return self._answer(req, 400, {"ok": False, "error_code": 400,
                                           "description": "Bad Request: message text is empty"
                                           if not text else "Bad Request: chat not found"})
        try:
            chat_id = int(chat)
        except (TypeError, ValueError):
            chat_id = chat
        with self.lock:
            first = not self.sent_429 and (self.throttle_chat is None
                                           or chat_id == self.throttle_chat)
            self.sent_429 = self.sent_429 or first
            entry = {"t": arrived, "status": 429 if first else 200, "chat_id": chat_id,
                     "parse_mode": params.get("parse_mode"), "text": text}
            if not first:
                self.next_id += 1
                entry["message_id"] = self.next_id
            self.messages.append(entry)
            with open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")
        if first:
            return self._answer(req, 429, {
                "ok": False, "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1}})
        chat_obj = {"id": chat_id, "type": "supergroup", "title": "leadq on-call"}
        if isinstance(chat_id, int) and chat_id > 0:
            chat_obj = {"id": chat_id, "type": "private", "first_name": "On-call"}
        self._answer(req, 200, {"ok": True, "result": {
            "message_id": entry["message_id"],
            "from": me,
            "chat": chat_obj,
            "date": int(arrived),
            "text": text,
        }})

    def delivered(self, since=0.0):
        """Messages Telegram accepted (status 200) at or after `since`."""
        with self.lock:
            return [m for m in self.messages if m["status"] == 200 and m["t"] >= since]

    def all_calls(self):
        with self.lock:
            return list(self.messages)


class FakeHubSpot:
    """A fake HubSpot contacts API on 127.0.0.1:port; `mode` is normal, 401 or 500."""

    UPSERT = "/crm/v3/objects/contacts/batch/upsert"

    def __init__(self, port, token):
        self.token = token
        self.mode = "normal"
        self.contacts = {}
        self.calls = {}  # status -> count
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                fake._handle(self)

        self.server = _Server(("127.0.0.1", port), Handler)

    def start(self):
        _start(self.server)
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def set_mode(self, mode):
        assert mode in ("normal", "401", "500"), mode
        self.mode = mode

    def _answer(self, req, status, body):
        data = json.dumps(body).encode()
        with self.lock:
            self.calls[status] = self.calls.get(status, 0) + 1
        req.send_response(status)
        req.send_header("Content-Type", "application/json;charset=utf-8")
        req.send_header("X-HubSpot-Correlation-Id", "c-%d-%d" % (status, time.time_ns()))
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    @staticmethod
    def _now():
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())

    def _handle(self, req):
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        if urllib.parse.urlparse(req.path).path != self.UPSERT:
            return self._answer(req, 404, {"status": "error", "message": "Not found",
                                           "category": "OBJECT_NOT_FOUND"})
        corr = "c-%d" % time.time_ns()
        if self.mode == "401" or req.headers.get("Authorization") != "Bearer " + self.token:
            return self._answer(req, 401, {
                "status": "error", "message": "Authentication credentials not found.",
                "correlationId": corr, "category": "INVALID_AUTHENTICATION"})
        if self.mode == "500":
            return self._answer(req, 500, {
                "status": "error", "message": "internal error", "correlationId": corr,
                "category": "INTERNAL_ERROR"})
        try:
            inputs = json.loads(raw).get("inputs") or []
        except ValueError:
            inputs = []
        if not inputs or len(inputs) > 100:
            return self._answer(req, 400, {"status": "error", "correlationId": corr,
                                           "message": "inputs must hold 1-100 items",
                                           "category": "VALIDATION_ERROR"})
        results, failed = [], []
        with self.lock:
            for i in inputs:
                props = dict(i.get("properties") or {})
                if any(not isinstance(v, str) for v in props.values()) or \
                        i.get("idProperty") != "email":
                    return self._answer(req, 400, {
                        "status": "error", "correlationId": corr,
                        "message": "Property values must be strings",
                        "category": "VALIDATION_ERROR"})
                ident = str(i.get("id") or "")
                if "invalid" in ident:
                    failed.append(ident)
                    continue
                new = ident not in self.contacts
                record = self.contacts.setdefault(ident, str(len(self.contacts) + 1001))
                props["email"] = ident
                results.append({"id": record, "properties": props, "new": new,
                                "createdAt": self._now(), "updatedAt": self._now(),
                                "archived": False})
        out = {"status": "COMPLETE", "results": results, "startedAt": self._now(),
               "completedAt": self._now()}
        if not failed:
            return self._answer(req, 200, out)
        out["numErrors"] = 1
        out["errors"] = [{"status": "error", "category": "VALIDATION_ERROR",
                          "message": "Property values were not valid",
                          "context": {"ids": failed},
                          "errors": [{"message": "INVALID_EMAIL", "code": "INVALID_EMAIL"}],
                          "links": {}}]
        self._answer(req, 207, out)
