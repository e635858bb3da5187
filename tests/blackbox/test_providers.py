"""Provider registry CRUD through the API, persistence and conflicts."""
import json
import os
import stat
import subprocess

from conftest import BINARY, data, provider_body


def test_crud_round_trip(gateway):
    created = data(gateway.call("POST", "/admin/providers", json=provider_body(description="first")), 201)
    pid = created["id"]
    assert created["slug"] == "openai" and created["type"] == "http-sdk" and created["enabled"] is True
    assert created["models"][0]["adapterModelId"] == "gpt-4o-2024"
    assert created["adapterConfig"] == {"baseUrl": "https://192.0.2.1"}
    assert created["credentials"] == {}
    assert created["createdAt"].endswith("Z")

    got = data(gateway.call("GET", f"/admin/providers/{pid}"))
    assert got == created

    updated = data(gateway.call("PUT", f"/admin/providers/{pid}", json={"description": "second", "enabled": False}))
    assert updated["description"] == "second" and updated["enabled"] is False
    assert updated["name"] == "OpenAI"

    assert data(gateway.call("DELETE", f"/admin/providers/{pid}"))["deleted"] is True
    assert gateway.call("GET", f"/admin/providers/{pid}").status_code == 404


def test_list_is_paginated(gateway):
    for i in range(5):
        data(gateway.call("POST", "/admin/providers", json=provider_body(slug=f"p-{i}")), 201)
    page = data(gateway.call("GET", "/admin/providers?limit=2&offset=1"))
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [p["slug"] for p in page["items"]] == ["p-1", "p-2"]
    assert len(data(gateway.call("GET", "/admin/providers"))["items"]) == 5


def test_duplicate_slug_is_409(gateway):
    data(gateway.call("POST", "/admin/providers", json=provider_body()), 201)
    r = gateway.call("POST", "/admin/providers", json=provider_body(name="Other"))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "CONFLICT"
    assert "openai" in r.json()["error"]["message"]
    other = data(gateway.call("POST", "/admin/providers", json=provider_body(slug="other")), 201)
    r = gateway.call("PUT", f"/admin/providers/{other['id']}", json={"slug": "openai"})
    assert r.status_code == 409


def test_control_characters_in_model_ids_and_description_are_refused(gateway):
    """A model id is matched against clients' `model`, listed by GET /v1/models and sent upstream; a description is
    free text (tabs and line breaks kept). A NUL or an escape sequence in either is a 400 naming the field, on create
    and on update, and nothing is stored."""
    for field, bad in (("models[0].dyadModelId", {"models": [{"dyadModelId": "gpt\u0000x", "adapterModelId": "g"}]}),
                       ("models[0].adapterModelId", {"models": [{"dyadModelId": "g", "adapterModelId": "gpt\x1b[2J"}]}),
                       ("description", {"description": "line\u0000cut"})):
        r = gateway.call("POST", "/admin/providers", json=provider_body(**bad))
        assert r.status_code == 400, r.text
        assert f"field '{field}' must not contain control characters" in r.json()["error"]["message"]
    assert data(gateway.call("GET", "/admin/providers"))["total"] == 0
    p = data(gateway.call("POST", "/admin/providers", json=provider_body(description="one\ttwo\r\nthree")), 201)
    assert p["description"] == "one\ttwo\r\nthree"
    r = gateway.call("PUT", f"/admin/providers/{p['id']}", json={"description": "\u007f"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == \
        "field 'description' must not contain control characters other than tabs and line breaks"
    assert data(gateway.call("GET", f"/admin/providers/{p['id']}"))["description"] == "one\ttwo\r\nthree"


def test_data_persists_across_restart(gateway):
    created = data(gateway.call("POST", "/admin/providers", json=provider_body()), 201)
    gateway.restart()
    assert data(gateway.call("GET", f"/admin/providers/{created['id']}")) == created


def test_dev_mode_generates_token_once_with_0600(make_gateway):
    gw = make_gateway({"GATEWAY_ADMIN_API_KEY": None, "ENCRYPTION_KEY": None, "GATEWAY_ADMIN_TOKENS_FILE": None},
                      args=("serve", "--dev"))
    gw.start()
    token_file = gw.data_dir / "dev-admin-token"
    token = token_file.read_text().strip()
    assert token in gw.stdout
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(gw.data_dir / "dev-encryption-key").st_mode) == 0o600
    assert gw.call("GET", "/admin/providers", token=token).status_code == 200
    gw.restart()
    assert token not in gw.stdout.split("listening on")[-1]  # announced once only
    assert token not in gw.logs()
    assert gw.call("GET", "/admin/providers", token=token).status_code == 200


def test_without_token_outside_dev_refuses_to_start(tmp_path):
    r = subprocess.run([BINARY, "serve"], env={"PATH": "/usr/bin:/bin", "ENCRYPTION_KEY": "ab" * 32,
                                               "GATEWAY_DATA_DIR": str(tmp_path)},
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "GATEWAY_ADMIN_API_KEY" in r.stderr


def test_credential_names_for_one_variable_and_slugs_without_letters_are_400(gateway):
    """Issue 9 item 13: api_key and API_KEY (api.key, api-key) are one DYAD_PROVIDER_<SLUG>_API_KEY variable."""
    witness = data(gateway.call("POST", "/admin/providers", json=provider_body(slug="witness",
                                                                                 credentials={"api_key": "sk-w"})), 201)
    for other in ["API_KEY", "api.key", "api-key"]:
        r = gateway.call("POST", "/admin/providers",
                         json=provider_body(slug="clash", credentials={"api_key": "sk-1", other: "sk-2"}))
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert "clashes" in message and other in message and "API_KEY" in message and "sk-" not in message
        r = gateway.call("POST", f"/admin/providers/{witness['id']}/credentials/rotate",
                         json={"credentials": {"api_key": "sk-1", other: "sk-2"}})
        assert r.status_code == 400 and "clashes" in r.json()["error"]["message"], r.text
    for slug in ["-", "--"]:
        r = gateway.call("POST", "/admin/providers", json=provider_body(slug=slug))
        assert r.status_code == 400 and "slug" in r.json()["error"]["message"], r.text
        r = gateway.call("PUT", f"/admin/providers/{witness['id']}", json={"slug": slug})
        assert r.status_code == 400, r.text
    assert [p["slug"] for p in data(gateway.call("GET", "/admin/providers"))["items"]] == ["witness"]
    v = data(gateway.call("POST", f"/admin/secrets/providers/{witness['id']}/credentials/validate"))
    assert v["valid"] is True


def test_a_control_character_in_a_name_is_400_at_create_put_and_patch(gateway):
    """A NUL, an escape or a DEL in a provider's name would hide or forge text wherever the name is shown (listings,
    logs, a terminal): refused at every write, naming the field, and nothing is stored."""
    for name in ("Open\u0000AI", "Open\u001b[2JAI", "OpenAI\n", "Open\u007fAI"):
        r = gateway.call("POST", "/admin/providers", json=provider_body(name=name))
        assert r.status_code == 400, (name, r.text)
        assert r.json()["error"]["message"] == "field 'name' must not contain control characters", r.text
    assert data(gateway.call("GET", "/admin/providers"))["total"] == 0
    created = data(gateway.call("POST", "/admin/providers", json=provider_body(name="Open AI \u00e9")), 201)
    pid = created["id"]
    r = gateway.call("PUT", f"/admin/providers/{pid}", json={"name": "a\u0000b"})
    assert r.status_code == 400 and "'name' must not contain control characters" in r.text, r.text
    r = gateway.call("PATCH", f"/admin/providers/{pid}", data='{"name": "a\\u0007b"}',
                     headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 400 and "'name' must not contain control characters" in r.text, r.text
    assert data(gateway.call("GET", f"/admin/providers/{pid}"))["name"] == "Open AI \u00e9"


def test_credentials_without_a_field_auth_template_sends_are_400_at_every_write(gateway):
    """auth.template's {field}s are sent on every /v1 call: credentials that lack one (or an adapterConfig naming one
    the stored credentials lack) are refused when written, naming the field and the fields held, never a value; a
    provider with no stored credentials (it reads the environment's) is not judged."""
    def refused(r, field):
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["error"]["code"] == "VALIDATION_ERROR", r.text
        assert f"adapterConfig.auth.template: sends credential field '{field}'" in body["error"]["message"], r.text
        assert "SECRETVALUE" not in r.text, r.text

    default_config = {"baseUrl": "https://192.0.2.1"}
    refused(gateway.call("POST", "/admin/providers", json=provider_body(
        adapterConfig=default_config, credentials={"token": "tok-SECRETVALUE"})), "api_key")
    r = gateway.call("POST", "/admin/providers", json=provider_body(
        adapterConfig={"baseUrl": "https://192.0.2.1", "auth": {"template": "{user}:{api_key}"}},
        credentials={"api_key": "sk-SECRETVALUE"}))
    refused(r, "user")
    assert "(they hold 'api_key')" in r.json()["error"]["message"], r.text
    assert data(gateway.call("GET", "/admin/providers"))["total"] == 0

    p = data(gateway.call("POST", "/admin/providers", json=provider_body(
        adapterConfig=default_config, credentials={"api_key": "sk-SECRETVALUE", "organization": "org-1"})), 201)
    pid = p["id"]
    refused(gateway.call("PUT", f"/admin/providers/{pid}", json={"credentials": {"organization": "org-2"}}), "api_key")
    refused(gateway.call("PATCH", f"/admin/providers/{pid}", data=json.dumps({"credentials": {"api_key": None}}),
                         headers={"Content-Type": "application/merge-patch+json"}), "api_key")
    refused(gateway.call("PATCH", f"/admin/providers/{pid}", data=json.dumps(
        {"adapterConfig": {"baseUrl": "https://192.0.2.1", "auth": {"header": "x-api-key", "template": "{key}"}}}),
        headers={"Content-Type": "application/merge-patch+json"}), "key")
    refused(gateway.call("PUT", f"/admin/providers/{pid}", json={
        "adapterConfig": {"baseUrl": "https://192.0.2.1", "auth": {"template": "Bearer {secret}"}}}), "secret")
    for validate in (False, True):
        refused(gateway.call("POST", f"/admin/providers/{pid}/credentials/rotate",
                             json={"credentials": {"organization": "org-3"}, "validate": validate}), "api_key")
    after = data(gateway.call("GET", f"/admin/providers/{pid}"))
    assert after["credentialsVersion"] == 1 and after["adapterConfig"] == default_config, after
    # The template and the credentials changed together are judged together.
    both = data(gateway.call("PUT", f"/admin/providers/{pid}", json={
        "adapterConfig": {"baseUrl": "https://192.0.2.1", "auth": {"header": "x-api-key", "template": "{key}"}},
        "credentials": {"key": "k-1"}}))
    assert both["credentialsVersion"] == 2 and both["credentials"] == {"key": "[STORED_EXTERNALLY]"}, both

    # Nothing stored: the environment's variables are read at use (DYAD_PROVIDER_ENV_ONLY_TOKEN here).
    bare = data(gateway.call("POST", "/admin/providers", json=provider_body(slug="env-only")), 201)
    changed = data(gateway.call("PUT", f"/admin/providers/{bare['id']}", json={
        "adapterConfig": {"baseUrl": "https://192.0.2.1", "auth": {"template": "Bearer {token}"}}}))
    assert changed["adapterConfig"]["auth"] == {"template": "Bearer {token}"}, changed
    assert "SECRETVALUE" not in gateway.logs()


def test_a_header_bound_credential_with_cr_lf_or_nul_is_400_at_every_write(gateway):
    """A credential value the /v1 path sends in a header (auth.template's fields, credentialHeaders) cannot hold a
    CR, LF or NUL: refused when written (create, PUT, PATCH, rotate, with or without validate), naming the field,
    never the value; a field that is not sent as a header (a PEM key) keeps its line breaks."""
    bad = "sk-SECRETVALUE\r\nX-Evil: 1"

    def refused(r, field):
        assert r.status_code == 400, r.text
        assert f"'credentials.{field}'" in r.text, r.text
        assert "SECRETVALUE" not in r.text and "X-Evil" not in r.text, r.text

    refused(gateway.call("POST", "/admin/providers", json=provider_body(credentials={"api_key": bad})), "api_key")
    refused(gateway.call("POST", "/admin/providers", json=provider_body(
        credentials={"api_key": "sk-ok", "organization": "org-SECRETVALUE\n"})), "organization")
    refused(gateway.call("POST", "/admin/providers", json=provider_body(
        adapterConfig={"baseUrl": "https://192.0.2.1", "auth": {"header": "x-api-key", "template": "{token}"}},
        credentials={"token": "tok-SECRETVALUE\u0000"})), "token")
    assert data(gateway.call("GET", "/admin/providers"))["total"] == 0
    assert "SECRETVALUE" not in gateway.logs()

    pem = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
    p = data(gateway.call("POST", "/admin/providers", json=provider_body(
        credentials={"api_key": "sk-ok", "private_key": pem})), 201)
    local = data(gateway.call("POST", "/admin/providers", json=provider_body(
        slug="local-one", type="local", credentials={"api_key": "line\nbreak"})), 201)
    assert local["credentials"] == {"api_key": "[STORED_EXTERNALLY]"}

    pid = p["id"]
    refused(gateway.call("PUT", f"/admin/providers/{pid}", json={"credentials": {"api_key": bad}}), "api_key")
    refused(gateway.call("PATCH", f"/admin/providers/{pid}", data=json.dumps({"credentials": {"api_key": bad}}),
                         headers={"Content-Type": "application/merge-patch+json"}), "api_key")
    for validate in (False, True):
        refused(gateway.call("POST", f"/admin/providers/{pid}/credentials/rotate",
                             json={"credentials": {"api_key": bad}, "validate": validate}), "api_key")
    assert data(gateway.call("GET", f"/admin/providers/{pid}"))["credentialsVersion"] == 1
    assert "SECRETVALUE" not in gateway.logs()
