"""GET /admin/openapi.json, and schemathesis against the live server: every answer it gets must conform to the
document (status code, content type, response schema) and none may be a 5xx."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

from conftest import ADMIN_TOKEN, VIEWER_TOKEN, canary, create_provider, data

CHECKS = "status_code_conformance,content_type_conformance,response_schema_conformance,not_a_server_error"


def schemathesis_bin():
    found = shutil.which("schemathesis") or str(pathlib.Path(sys.executable).parent / "schemathesis")
    assert os.path.exists(found), "schemathesis is missing: pip install -r tests/blackbox/requirements.txt"
    return found


def junit(report):
    """Totals of a JUnit report (testsuites, or a single testsuite)."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors")}


def run_schemathesis(gw, token, tmp_path, examples, extra=()):
    """One bounded run: a fixed seed (the same cases every time), a few examples per operation, one worker."""
    report = tmp_path / f"junit-{token[:6]}.xml"
    args = [schemathesis_bin(), "run", f"{gw.url}/admin/openapi.json", "--url", gw.url,
            "-H", f"Authorization: Bearer {token}", "--checks", CHECKS, "--max-examples", str(examples),
            "--seed", "1", "--workers", "1", "--request-timeout", "30", "--report", "junit",
            "--report-junit-path", str(report), *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=150, cwd=tmp_path,  # its cache stays there
                       env={**os.environ, "NO_COLOR": "1"})
    return r, report


def test_the_document_is_served_to_viewers_and_describes_every_route(gateway):
    r = gateway.call("GET", "/admin/openapi.json", token=VIEWER_TOKEN)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]["/admin/providers/{id}"]) == {"get", "put", "patch", "delete"}
    assert "full replace" in doc["paths"]["/admin/providers/{id}"]["put"]["description"]
    patch = doc["paths"]["/admin/providers/{id}"]["patch"]
    assert set(patch["requestBody"]["content"]) == {"application/merge-patch+json", "application/json"}
    assert "RFC 7396" in patch["summary"]
    assert gateway.call("GET", "/admin/openapi.json", token=None).status_code == 401
    assert gateway.call("POST", "/admin/openapi.json").status_code == 405
    # Every documented operation exists on the server: none answers 404 "no route" or 405.
    for path, item in doc["paths"].items():
        for method in item:
            target = path.replace("{id}", "no-such-provider")
            got = gateway.call(method.upper(), target, token=VIEWER_TOKEN)
            assert got.status_code not in (404, 405) or "no route" not in got.text, (method, path, got.text)


def test_schemathesis_finds_every_answer_conforming(gateway, tmp_path):
    for i in range(3):  # something to list, get, patch and validate besides what the run creates
        create_provider(gateway, f"seed-{i}", {"api_key": canary()})
    r, report = run_schemathesis(gateway, ADMIN_TOKEN, tmp_path, examples=25)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    suite = junit(report)
    assert suite["failures"] == 0 and suite["errors"] == 0, report.read_text()[-4000:]
    assert suite["tests"] >= 18, suite  # every operation was exercised
    assert re.search(r"Test cases:\s+(\d{3,}) generated, \1 passed", r.stdout), r.stdout[-3000:]
    # The server's own access log agrees: no 5xx answered.
    assert len(re.findall(r" 2\d\d [0-9.]+ms id=", gateway.logs())) > 100, "the access log format changed"
    assert not re.search(r" 5\d\d [0-9.]+ms id=", gateway.logs()), "a 5xx in the access log"


def test_schemathesis_as_a_viewer_gets_documented_refusals(gateway, tmp_path):
    create_provider(gateway, "seed", {"api_key": canary()})
    r, report = run_schemathesis(gateway, VIEWER_TOKEN, tmp_path, examples=5)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    suite = junit(report)
    assert suite["failures"] == 0 and suite["errors"] == 0 and suite["tests"] >= 18, suite
    # What a viewer may not do, it did not do.
    assert len(data(gateway.call("GET", "/admin/providers"))["items"]) == 1
