"""Real traffic for scripts/ops-test: leads through the API, Chatwoot deliveries (signed, or
forged), and background loads that keep sending while a fault lasts."""

import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid

from stack import http

_seq = itertools.count(1)


class Traffic:
    def __init__(self, api, api_key, slug, chatwoot_secret, chatwoot_account):
        self.api, self.key, self.slug = api, api_key, slug
        self.cw_secret, self.cw_account = chatwoot_secret, chatwoot_account
        self.statuses = {}
        self.lock = threading.Lock()

    def _count(self, what, status):
        with self.lock:
            k = (what, status)
            self.statuses[k] = self.statuses.get(k, 0) + 1

    def lead(self, hot=False):
        """POST /v1/leads: a hot lead with an email (qualified: crm_sync follows) or a cold
        one without (no CRM work)."""
        n = next(_seq)
        ext = "ops-%s-%d" % (uuid.uuid4().hex[:8], n)
        if hot:
            body = {"external_id": ext, "source": "telegram", "name": "Ada Lovelace",
                    "username": "ada%d" % n, "email": "ada+%s@example.com" % ext,
                    "answers": {"budget": "50k+", "timeline": "this_month",
                                "company_size": "51-200",
                                "need": "We need a CRM integration for our sales team"}}
        else:
            body = {"external_id": ext, "source": "telegram", "name": "Bob Cold",
                    "answers": {"budget": "none", "timeline": "someday"}}
        status, _ = http("POST", self.api + "/v1/leads", body,
                         {"Authorization": "Bearer " + self.key}, timeout=5)
        self._count("lead", status)
        return status

    def chatwoot(self, message_type="incoming", forged=False, conversation=3, contact=42):
        """POST /v1/webhooks/chatwoot/<slug> with a message_created body, signed as Chatwoot
        signs (HMAC-SHA256 over `<timestamp>.<body>`), or forged (a wrong secret)."""
        n = next(_seq)
        msg_id = int(time.time() * 1000) % 1_000_000_000 + n
        body = {
            "account": {"id": self.cw_account, "name": "Acme"},
            "additional_attributes": {}, "content_attributes": {}, "content_type": "text",
            "content": "Hello, we need a CRM" if message_type == "incoming"
            else "Hi! An agent here, how can we help?",
            "conversation": {
                "additional_attributes": {}, "can_reply": True, "channel": "Channel::WebWidget",
                "id": conversation, "inbox_id": 1, "messages": [], "labels": [],
                "meta": {"sender": {"email": "ada@example.com", "id": contact,
                                    "name": "Ada Lovelace", "phone_number": "+447700900123",
                                    "type": "contact"},
                         "assignee": None},
                "status": "open", "timestamp": int(time.time()), "created_at": int(time.time()),
                "updated_at": time.time(), "account": {"id": self.cw_account, "name": "Acme"}},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "id": msg_id, "inbox": {"id": 1, "name": "Website"},
            "message_type": message_type, "private": False,
            "sender": ({"account": {"id": self.cw_account, "name": "Acme"},
                        "email": "ada@example.com", "id": contact, "name": "Ada Lovelace",
                        "phone_number": "+447700900123", "type": "contact"}
                       if message_type == "incoming" else
                       {"id": 7, "name": "Agent Smith", "email": "agent@acme.example",
                        "type": "user"}),
            "source_id": None, "event": "message_created",
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        ts = str(int(time.time()))
        secret = (self.cw_secret + "-forged" if forged else self.cw_secret).encode()
        sig = "sha256=" + hmac.new(secret, ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        status, _ = http("POST", "%s/v1/webhooks/chatwoot/%s" % (self.api, self.slug), raw, {
            "Content-Type": "application/json", "X-Chatwoot-Delivery": str(uuid.uuid4()),
            "X-Chatwoot-Timestamp": ts, "X-Chatwoot-Signature": sig}, timeout=5)
        self._count("chatwoot-forged" if forged else "chatwoot-" + message_type, status)
        return status


class Load:
    """Calls fn() about `per_second` times a second in a thread until stopped."""

    def __init__(self, name, fn, per_second):
        self.name, self.fn, self.interval = name, fn, 1.0 / per_second
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-" + name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        nxt = time.time()
        while not self._stop.is_set():
            try:
                self.fn()
            except Exception:  # a refused request is part of the fault
                pass
            self.calls += 1
            nxt += self.interval
            self._stop.wait(max(0.0, nxt - time.time()))

    def stop(self):
        self._stop.set()
        self._thread.join(10)
