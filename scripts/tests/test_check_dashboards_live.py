"""Tests of scripts/check-dashboards-live without a Prometheus: query extraction, variable
substitution, and the ok / empty / error verdicts against a tiny fake /api/v1/query.

Run from the repository root: python3 -m unittest discover -s scripts/tests
"""

import glob
import importlib.machinery
import importlib.util
import io
import json
import os
import threading
import unittest
import urllib.parse
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, HTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(ROOT, "scripts", "check-dashboards-live")


def load_script():
    loader = importlib.machinery.SourceFileLoader("check_dashboards_live", SCRIPT)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


cdl = load_script()

DS = {"type": "prometheus", "uid": "${datasource}"}
DASHBOARD = {
    "title": "t",
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus",
         "current": {"text": "Prometheus", "value": "prometheus"}},
        {"name": "kind", "type": "query", "datasource": DS, "allValue": ".*",
         "definition": "label_values(leadq_jobs_total, kind)",
         "query": {"query": "label_values(leadq_jobs_total, kind)", "qryType": 1},
         "current": {"text": ["All"], "value": ["$__all"]}},
        {"name": "tenant", "type": "query", "datasource": DS,
         "query": 'label_values(leadq_tenant_jobs_total{kind=~"a|b"}, tenant)',
         "current": {"text": ["acme", "globex"], "value": ["acme", "globex"]}},
        {"name": "names", "type": "query", "datasource": DS, "query": "label_names()"},
    ]},
    "panels": [
        {"type": "row", "title": "open row", "panels": []},
        {"type": "timeseries", "title": "top", "datasource": DS,
         "targets": [{"expr": 'sum(rate(leadq_jobs_total{kind=~"$kind"}[$__rate_interval]))'},
                     {"expr": "  "},
                     {"expr": "up", "datasource": {"type": "loki", "uid": "x"}}]},
        {"type": "row", "title": "collapsed", "collapsed": True, "panels": [
            {"type": "stat", "title": "nested", "datasource": DS,
             "targets": [{"expr": 'x{tenant=~"${tenant}"}[$__range] / $__range_s'}]},
        ]},
        {"type": "text", "title": "note", "datasource": {"type": "-- Dashboard --"},
         "targets": [{"expr": "ignored"}]},
    ],
}


class Extraction(unittest.TestCase):
    def test_targets_nested_and_variables(self):
        got = [(p, e, k) for _, p, e, k in cdl.extract_queries(DASHBOARD)]
        self.assertEqual(got, [
            ("top", 'sum(rate(leadq_jobs_total{kind=~"$kind"}[$__rate_interval]))', "target"),
            ("nested", 'x{tenant=~"${tenant}"}[$__range] / $__range_s', "target"),
            ("variable $kind", "count by (kind) (leadq_jobs_total)", "label_values:kind"),
            ("variable $tenant", 'count by (tenant) (leadq_tenant_jobs_total{kind=~"a|b"})',
             "label_values:tenant"),
        ])

    def test_legacy_rows(self):
        d = {"title": "old", "rows": [{"panels": [{"title": "p", "targets": [{"expr": "up"}]}]}]}
        self.assertEqual(cdl.extract_queries(d), [("old", "p", "up", "target")])

    def test_variable_queries(self):
        self.assertEqual(cdl.variable_query("query_result(topk(3, up))"), ("topk(3, up)", "query"))
        self.assertIsNone(cdl.variable_query("label_values(job)"))
        self.assertIsNone(cdl.variable_query("metrics(leadq_.*)"))
        self.assertEqual(cdl.variable_query('label_values(m{a="1,2"}, b)'),
                         ('count by (b) (m{a="1,2"})', "label_values:b"))

    def test_repository_dashboards_have_queries(self):
        files = glob.glob(os.path.join(ROOT, "dashboards", "*.json"))
        self.assertTrue(files)
        for f in files:
            with open(f, encoding="utf-8") as fh:
                d = json.load(fh)
            qs = cdl.extract_queries(d)
            self.assertTrue(qs, f)
            variables = {**cdl.builtin_variables(), **cdl.dashboard_variables(d)}
            for _, panel, expr, _ in qs:
                resolved, missing = cdl.substitute(expr, variables)
                self.assertEqual(missing, [], f"{f}: {panel}: {expr}")
                self.assertNotIn("$", resolved, f"{f}: {panel}")


class Substitution(unittest.TestCase):
    def setUp(self):
        self.vars = {**cdl.builtin_variables("2m", "30s", "6h"), **cdl.dashboard_variables(DASHBOARD)}

    def test_builtins(self):
        self.assertEqual(self.vars["__rate_interval"], "2m")
        self.assertEqual(self.vars["__interval_ms"], "30000")
        self.assertEqual(self.vars["__range_s"], "21600")

    def test_dashboard_variables(self):
        self.assertEqual(self.vars["kind"], ".*")  # All -> allValue
        self.assertEqual(self.vars["tenant"], "(acme|globex)")  # multi-value default
        self.assertEqual(self.vars["datasource"], "prometheus")
        self.assertEqual(cdl.dashboard_variables(
            {"templating": {"list": [{"name": "x", "type": "custom", "current": {"value": "$__all"}}]}}),
            {"x": ".*"})

    def test_forms(self):
        got, missing = cdl.substitute(
            'a{k=~"$kind",t=~"${tenant}",u=~"${tenant:regex}",v=~"[[kind]]"}[$__rate_interval] '
            "/ $__range_s", self.vars)
        self.assertEqual(got, 'a{k=~".*",t=~"(acme|globex)",u=~"(acme|globex)",v=~".*"}[2m] / 21600')
        self.assertEqual(missing, [])

    def test_longest_name_wins_and_unknown_reported(self):
        got, missing = cdl.substitute("$__range_ms $__range $kinds $kind", self.vars)
        self.assertEqual(got, "21600000 6h $kinds .*")
        self.assertEqual(missing, ["kinds"])

    def test_bad_duration(self):
        with self.assertRaises(ValueError):
            cdl.builtin_variables(rate_interval="1m", interval="soon")


class FakePrometheus(BaseHTTPRequestHandler):
    """`good` -> two series, `nan` -> one NaN, `scalar(…)` -> scalar, `empty` -> none, else 400."""

    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("query", [""])[0]
        code, body = 200, None
        if q in ("good", "vector(1)"):
            body = {"resultType": "vector", "result": [
                {"metric": {"kind": "a"}, "value": [0, "1"]}, {"metric": {"kind": "b"}, "value": [0, "2"]}]}
        elif q == "nan":
            body = {"resultType": "vector", "result": [{"metric": {}, "value": [0, "NaN"]}]}
        elif q.startswith("scalar("):
            body = {"resultType": "scalar", "result": [0, "3"]}
        elif q == "empty":
            body = {"resultType": "vector", "result": []}
        elif q == "count by (tenant) (nolabel)":
            body = {"resultType": "vector", "result": [{"metric": {}, "value": [0, "4"]}]}
        if body is None:
            code, payload = 400, {"status": "error", "errorType": "bad_data", "error": f"parse error in {q!r}"}
        else:
            payload = {"status": "success", "data": body}
        raw = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


class Verdicts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = HTTPServer(("127.0.0.1", 0), FakePrometheus)
        cls.url = f"http://127.0.0.1:{cls.server.server_address[1]}"
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def check(self, expr, kind="target", allow=()):
        return cdl.check_query(self.url, "d", "p", expr, kind, {"x": "good"}, list(allow), 5)

    def test_ok(self):
        r = self.check("$x")
        self.assertEqual((r["status"], r["series"], r["query"]), ("ok", 2, "good"))
        self.assertEqual(cdl.result_text(r), "ok 2 series")
        self.assertEqual(cdl.result_text(self.check("nan")), "ok 1 series (all NaN)")
        self.assertEqual(self.check("scalar(up)")["status"], "ok")

    def test_empty(self):
        r = self.check("empty")
        self.assertEqual(r["status"], "empty")
        self.assertTrue(cdl.failed(r))
        r = self.check("empty", allow=["d/p/"])
        self.assertEqual(r["status"], "empty (allowed)")
        self.assertFalse(cdl.failed(r))

    def test_label_values_without_the_label_is_empty(self):
        self.assertEqual(self.check("count by (tenant) (nolabel)", "label_values:tenant")["status"], "empty")

    def test_errors(self):
        r = self.check("sum(")
        self.assertEqual(r["status"], "error")
        self.assertIn("bad_data", r["error"])
        r = self.check("rate(m[$__rate_interval])")
        self.assertEqual(r["status"], "error")
        self.assertIn("$__rate_interval", r["error"])

    def test_main_exit_codes_table_and_json(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            dash = os.path.join(tmp, "d.json")
            out = os.path.join(tmp, "r.json")

            def run(exprs):
                with open(dash, "w") as f:
                    json.dump({"title": "D", "panels": [
                        {"title": f"P{i}", "targets": [{"expr": e}]} for i, e in enumerate(exprs)]}, f)
                buf = io.StringIO()
                with redirect_stdout(buf):
                    rc = cdl.main(["--prometheus", self.url, tmp, "--json", out])
                return rc, buf.getvalue()

            rc, text = run(["good"])
            self.assertEqual(rc, 0, text)
            self.assertIn("ok 2 series", text)
            rc, text = run(["good", "empty", "sum("])
            self.assertEqual(rc, 1)
            self.assertIn("empty", text)
            self.assertIn("error: bad_data", text)
            with open(out) as f:
                res = json.load(f)
            self.assertFalse(res["passed"])
            self.assertEqual([r["status"] for r in res["results"]], ["ok", "empty", "error"])
            with redirect_stdout(io.StringIO()):
                self.assertEqual(cdl.main(["--prometheus", "http://127.0.0.1:9", tmp]), 2)


if __name__ == "__main__":
    unittest.main()
