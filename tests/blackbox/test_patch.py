"""PATCH /admin/providers/{id}: JSON Merge Patch (RFC 7396) of a provider and of its stored credentials."""
import contextlib
import json
import sqlite3
import threading

import requests

from conftest import ADMIN_TOKEN, VIEWER_TOKEN, canary, data, provider_body
from test_vault import bao, kv_path, vault_gateway  # noqa: F401 (the bao fixture)

MERGE = {"Content-Type": "application/merge-patch+json"}


def patch(gw, pid, body, headers=MERGE, **kw):
    text = body if isinstance(body, str) else json.dumps(body)
    return gw.call("PATCH", f"/admin/providers/{pid}", data=text, headers=dict(headers), **kw)


def create(gw, slug, creds, **over):
    body = provider_body(slug=slug, credentials=creds,
                         adapterConfig={"baseUrl": "https://api.example", "headers": {"a": "1", "b": "2"}})
    body.update(over)
    return data(gw.call("POST", "/admin/providers", json=body), 201)


def fingerprint(gw, pid):
    return data(gw.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))["fingerprint"]


def error(r, status):
    assert r.status_code == status, r.text
    return r.json()["error"]


def test_fields_left_out_are_kept_and_objects_merge(gateway):
    key = canary()
    p = create(gateway, "openai", {"api_key": key, "org": "o-1"}, description="first")
    got = data(patch(gateway, p["id"], {"description": "second", "adapterConfig": {"headers": {"a": None, "c": "3"}}}))
    assert got["description"] == "second"
    assert got["name"] == p["name"] and got["slug"] == p["slug"] and got["models"] == p["models"]
    assert got["adapterConfig"] == {"baseUrl": "https://api.example", "headers": {"b": "2", "c": "3"}}
    assert got["credentials"] == p["credentials"] and got["credentialsVersion"] == p["credentialsVersion"]
    assert data(gateway.call("GET", f"/admin/providers/{p['id']}")) == got
    # The credentials were not touched: the same stored set as a twin with the same values.
    twin = create(gateway, "twin", {"api_key": key, "org": "o-1"})
    assert fingerprint(gateway, p["id"]) == fingerprint(gateway, twin["id"])


def test_credentials_merge_with_the_stored_values(gateway):
    key, new = canary(), canary()
    p = create(gateway, "openai", {"api_key": key, "org": "o-1"})
    before = fingerprint(gateway, p["id"])
    r = patch(gateway, p["id"], {"credentials": {"org": None, "project": new}})
    got = data(r)
    assert got["credentials"] == {"api_key": "[STORED_EXTERNALLY]", "project": "[STORED_EXTERNALLY]"}
    assert got["credentialsVersion"] == p["credentialsVersion"] + 1
    assert key not in r.text and new not in r.text
    after = data(gateway.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert after["valid"] is True and after["credentialsVersion"] == got["credentialsVersion"]
    assert after["fingerprint"] != before
    # Exactly the merged set: api_key kept, org removed, project added.
    twin = create(gateway, "twin", {"api_key": key, "project": new})
    assert after["fingerprint"] == fingerprint(gateway, twin["id"])
    assert key not in gateway.logs() and new not in gateway.logs()
    audit = (gateway.data_dir / "audit.log").read_text()
    assert key not in audit and new not in audit
    line = [json.loads(x) for x in audit.splitlines() if r.headers["X-Request-Id"] in x]
    assert [e["action"] for e in line if e["action"] == "credentials.rotate"] == ["credentials.rotate"]
    assert [e["fields"] for e in line if e["action"] == "credentials.rotate"] == [["api_key", "project"]]


def test_null_removes_every_credential(gateway):
    p = create(gateway, "local-one", {"token": canary()}, type="local")
    got = data(patch(gateway, p["id"], {"credentials": None}))
    assert got["credentials"] == {}
    report = data(gateway.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert report["valid"] is True and report["source"] == "none"


def test_an_invalid_result_is_refused_naming_the_field(gateway):
    key = canary()
    p = create(gateway, "openai", {"api_key": key})
    cases = [({"name": None}, "field 'name' is required"),
             ({"models": [{"dyadModelId": "m"}]}, "field 'models[0].adapterModelId' is required"),
             ({"type": "grpc"}, "field 'type' must be one of"),
             ({"adapterConfig": [1]}, "field 'adapterConfig' must be an object"),
             ({"credentials": {"API-KEY": canary()}}, "field 'credentials.api_key' clashes with credentials.API-KEY"),
             ({"credentials": {"api_key": "[STORED_EXTERNALLY]"}}, "field 'credentials.api_key' holds the placeholder"),
             ({"colour": "red"}, "field 'colour' is unknown")]
    for body, message in cases:
        e = error(patch(gateway, p["id"], body), 400)
        assert e["code"] == "VALIDATION_ERROR" and e["message"].startswith(message), (body, e)
    assert data(gateway.call("GET", f"/admin/providers/{p['id']}")) == p
    other = create(gateway, "other", {"api_key": canary()})
    assert error(patch(gateway, other["id"], {"slug": "openai"}), 409)["code"] == "CONFLICT"


def test_unknown_id_viewer_malformed_and_media_type(gateway):
    p = create(gateway, "openai", {"api_key": canary()})
    assert error(patch(gateway, "no-such-provider", {"description": "x"}), 404)["code"] == "NOT_FOUND"
    assert error(patch(gateway, p["id"], {"description": "x"}, token=VIEWER_TOKEN), 403)["code"] == "FORBIDDEN"
    assert error(patch(gateway, p["id"], {"description": "x"}, token=None), 401)["code"] == "UNAUTHORIZED"
    assert error(patch(gateway, p["id"], '{"description":'), 400)["message"] == \
        "malformed JSON in the request body (at byte 16)"
    assert error(patch(gateway, p["id"], '"x"'), 400)["message"] == "the request body must be a JSON object"
    e = error(patch(gateway, p["id"], {"description": "x"}, headers={"Content-Type": "text/plain"}), 415)
    assert e["code"] == "UNSUPPORTED_MEDIA_TYPE" and "application/merge-patch+json" in e["message"]
    assert data(patch(gateway, p["id"], {"description": "x"}, headers={"Content-Type": "application/json"}))[
        "description"] == "x"
    # requests' own json= sends application/json
    assert data(gateway.call("PATCH", f"/admin/providers/{p['id']}", json={"enabled": False}))["enabled"] is False


def test_concurrent_patches_of_different_fields_all_land(gateway):
    key = canary()
    p = create(gateway, "openai", {"api_key": key})
    values = {f"field_{i}": canary() for i in range(6)}
    assert concurrent_patches(gateway, p["id"], values) == {f: 200 for f in values}
    got = data(gateway.call("GET", f"/admin/providers/{p['id']}"))
    assert sorted(got["credentials"]) == sorted(["api_key", *values])
    assert got["credentialsVersion"] == 1 + len(values)
    twin = create(gateway, "twin", {"api_key": key, **values})
    assert fingerprint(gateway, p["id"]) == fingerprint(gateway, twin["id"])


def concurrent_patches(gw, pid, values):
    """One PATCH per field, all released at once; returns their status codes by field."""
    start = threading.Barrier(len(values))
    results = {}

    def one(field, value):
        start.wait()
        with requests.Session() as s:
            r = s.patch(f"{gw.url}/admin/providers/{pid}", data=json.dumps({"credentials": {field: value}}),
                        headers={**MERGE, "Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
        results[field] = r.status_code

    threads = [threading.Thread(target=one, args=kv) for kv in values.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_on_vault_the_merge_is_what_kv_holds(make_gateway, bao):
    """Vault KV v2 writes with cas: in provider mode hvac reads back exactly the merged set."""
    gw = vault_gateway(make_gateway, bao, mode="provider")
    key = canary()
    p = create(gw, "openai", {"api_key": key, "org": "o-1"})
    data(patch(gw, p["id"], {"credentials": {"org": None, "project": "pr-1"}}))
    assert bao.kv_read(kv_path(p["id"])) == {"api_key": key, "project": "pr-1"}
    values = {f"field_{i}": canary() for i in range(4)}
    assert concurrent_patches(gw, p["id"], values) == {f: 200 for f in values}
    assert bao.kv_read(kv_path(p["id"])) == {"api_key": key, "project": "pr-1", **values}
    assert data(gw.call("GET", f"/admin/providers/{p['id']}"))["credentialsVersion"] == 2 + len(values)


def audit_of(gw, request_id):
    lines = (gw.data_dir / "audit.log").read_text().splitlines()
    return [json.loads(x) for x in lines if request_id in x]


def test_repeated_patches_cannot_grow_adapter_config_past_what_a_body_may_hold(gateway):
    """Each PATCH body is within the JSON limits (10000 members); the merged provider is held to them too, so
    that what PATCH leaves behind is always a document a create or PUT would take."""
    p = create(gateway, "openai", {"api_key": canary()})
    assert patch(gateway, p["id"], {"adapterConfig": {f"a{i}": 1 for i in range(6000)}}).status_code == 200
    e = error(patch(gateway, p["id"], {"adapterConfig": {f"b{i}": 1 for i in range(6000)}}), 400)
    assert e["code"] == "VALIDATION_ERROR" and e["message"].startswith(
        "field 'adapterConfig' would leave the provider with more than 10000 object members in all"), e
    doc = data(gateway.call("GET", f"/admin/providers/{p['id']}"))
    assert len(doc["adapterConfig"]) == 6002  # baseUrl, headers and the first 6000: the refused PATCH wrote nothing
    body = {k: doc[k] for k in ("name", "slug", "type", "description", "enabled", "models", "adapterConfig")}
    assert gateway.call("PUT", f"/admin/providers/{p['id']}", json=body).status_code == 200


def test_repeated_patches_cannot_grow_credentials_past_the_body_limit(make_gateway):
    """GATEWAY_MAX_BODY_BYTES holds for the merged provider, its stored credential values counted: two PATCHes
    that each fit cannot together store a set that no PUT could send."""
    gw = make_gateway({"GATEWAY_MAX_BODY_BYTES": "4096"}).start()
    p = create(gw, "openai", {"api_key": canary()})
    first = data(patch(gw, p["id"], {"credentials": {"a": "x" * 3000}}))
    before = fingerprint(gw, p["id"])
    e = error(patch(gw, p["id"], {"credentials": {"b": "y" * 3000}}), 400)
    assert e["message"].startswith("field 'credentials' would make the provider ") and "4096" in e["message"], e
    assert "x" * 100 not in e["message"] and "y" * 100 not in e["message"]
    assert fingerprint(gw, p["id"]) == before
    assert data(gw.call("GET", f"/admin/providers/{p['id']}")) == first
    # What PUT says of the same document: too large a body.
    whole = {"credentials": {"api_key": canary(), "a": "x" * 3000, "b": "y" * 3000}}
    assert gw.call("PUT", f"/admin/providers/{p['id']}", json=whole).status_code == 413
    # Removing a field makes room again.
    assert data(patch(gw, p["id"], {"credentials": {"a": None, "b": "y" * 3000}}))["credentials"] == {
        "api_key": "[STORED_EXTERNALLY]", "b": "[STORED_EXTERNALLY]"}


def test_null_enabled_does_not_reenable_a_disabled_provider(gateway):
    """{"enabled": null} would put back the default, true: a disabled provider back in service through a
    removal. Refused, naming enabled, as null is for name."""
    p = create(gateway, "openai", {"api_key": canary()}, enabled=False)
    e = error(patch(gateway, p["id"], {"enabled": None}), 400)
    assert e["code"] == "VALIDATION_ERROR" and e["message"].startswith("field 'enabled' cannot be removed"), e
    assert data(gateway.call("GET", f"/admin/providers/{p['id']}")) == p
    # The members whose default is empty are removed to it.
    got = data(patch(gateway, p["id"], {"description": None, "models": None}))
    assert (got["description"], got["models"], got["enabled"]) == ("", [], False)
    # adapterConfig too, but an http-sdk provider needs its baseUrl (issue 16).
    e = error(patch(gateway, p["id"], {"adapterConfig": None}), 400)
    assert e["message"].startswith("adapterConfig.baseUrl: is required"), e
    local = create(gateway, "local", {"api_key": canary()}, type="local")
    assert data(patch(gateway, local["id"], {"adapterConfig": None}))["adapterConfig"] == {}


def test_a_failed_rotate_or_patch_of_credentials_is_audited_as_a_credentials_rotation(gateway):
    """An attempt on credentials stays visible as one in the audit log, with the field names, also when it
    fails before the write (here: unknown id)."""
    r = gateway.call("POST", "/admin/providers/no-such-provider/credentials/rotate",
                     json={"credentials": {"api_key": canary()}})
    assert r.status_code == 404, r.text
    events = audit_of(gateway, r.headers["X-Request-Id"])
    assert [(e["action"], e.get("fields", [])) for e in events] == [("credentials.rotate", ["api_key"])], events
    r = gateway.call("PUT", "/admin/providers/no-such-provider", json={"credentials": {"org": canary()}})
    assert r.status_code == 404, r.text
    assert [(e["action"], e.get("fields", [])) for e in audit_of(gateway, r.headers["X-Request-Id"])] == [
        ("credentials.rotate", ["org"])]
    r = patch(gateway, "no-such-provider", {"credentials": {"org": None, "project": canary()}})
    assert r.status_code == 404, r.text
    assert [(e["action"], e.get("fields", [])) for e in audit_of(gateway, r.headers["X-Request-Id"])] == [
        ("credentials.rotate", ["org", "project"])]
    r = patch(gateway, "no-such-provider", {"description": "x"})
    assert [(e["action"], e.get("fields", [])) for e in audit_of(gateway, r.headers["X-Request-Id"])] == [
        ("provider.update", [])]


def test_patch_of_credentials_read_from_the_environment_is_refused(make_gateway):
    """SECRETS_PROVIDER=environment: a provider with nothing stored reads DYAD_PROVIDER_<SLUG>_API_KEY. A merge
    would store only the fields it names and lose that key (the provider then reads only the store); the
    environment's values are never copied into the store implicitly: 409, pointing to PUT with the whole set."""
    key = canary()
    gw = make_gateway({"DYAD_PROVIDER_OPENAI_API_KEY": key}).start()
    p = data(gw.call("POST", "/admin/providers", json=provider_body()), 201)
    before = data(gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert before["valid"] is True and before["source"] == "environment", before
    r = patch(gw, p["id"], {"credentials": {"org": "o-1"}})
    e = error(r, 409)
    assert e["code"] == "FAILED_PRECONDITION", e
    assert "DYAD_PROVIDER_OPENAI_*" in e["message"] and "PUT" in e["message"], e
    assert key not in r.text and key not in gw.logs()
    after = data(gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert after["valid"] is True and after["fingerprint"] == before["fingerprint"], after
    assert data(gw.call("GET", f"/admin/providers/{p['id']}")) == p
    audit = audit_of(gw, r.headers["X-Request-Id"])
    assert [(x["action"], x["fields"]) for x in audit] == [("credentials.rotate", ["org"])], audit
    # A patch that names no credentials still applies; PUT with the whole set stores it.
    assert data(patch(gw, p["id"], {"description": "d"}))["description"] == "d"
    assert data(gw.call("PUT", f"/admin/providers/{p['id']}",
                        json={"credentials": {"api_key": key, "org": "o-1"}}))["credentialsVersion"] == 1
    twin = data(gw.call("POST", "/admin/providers",
                        json=provider_body(slug="twin", credentials={"api_key": key, "org": "o-1"})), 201)
    assert fingerprint(gw, p["id"]) == fingerprint(gw, twin["id"])
    # Once stored, PATCH merges with the store as anywhere else.
    assert data(patch(gw, p["id"], {"credentials": {"org": None}}))["credentials"] == {
        "api_key": "[STORED_EXTERNALLY]"}
    # No DYAD_PROVIDER_<SLUG>_* set: nothing to lose, the PATCH stores what it names.
    other = data(gw.call("POST", "/admin/providers", json=provider_body(slug="other")), 201)
    assert data(patch(gw, other["id"], {"credentials": {"api_key": canary()}}))["credentialsVersion"] == 1


def test_stored_control_characters_do_not_block_a_patch_of_another_member(gateway):
    """A description and model ids stored with control characters (before they were refused, or by an older instance
    sharing the database) still let a PATCH change another member and keep them; a PATCH that sets them is checked."""
    p = create(gateway, "old", {"api_key": "sk-old-123"})
    models = [{"dyadModelId": "x\u0000y", "adapterModelId": "gpt\u007f"}]
    with contextlib.closing(sqlite3.connect(gateway.data_dir / "gateway.db")) as db, db:
        db.execute("UPDATE providers SET description = ?, models = ? WHERE id = ?",
                   ("bad\u0007desc", json.dumps(models), p["id"]))
    got = data(patch(gateway, p["id"], {"enabled": False}))
    assert got["enabled"] is False and got["description"] == "bad\u0007desc" and got["models"] == models
    got = data(patch(gateway, p["id"], {"description": "fixed", "credentials": {"api_key": "sk-new-456"}}))
    assert got["description"] == "fixed" and got["models"] == models
    r = patch(gateway, p["id"], {"models": [{"dyadModelId": "ok", "adapterModelId": "b\u001bad"}]})
    assert error(r, 400)["message"] == "field 'models[0].adapterModelId' must not contain control characters"
    assert data(gateway.call("GET", f"/admin/providers/{p['id']}"))["models"] == models
