// For tests only: an in-memory Azure Key Vault behind the HttpTransport seam,
// answering the data-plane REST calls the store and the key manager make
// (secrets with soft delete, recover and purge; RSA and oct keys with
// versions, rotate, wrapkey/unwrapkey) the way Key Vault does, status codes
// and {"error":{"code","message"}} bodies included. Knobs make the
// asynchronous parts (recover, purge) and refusals (disabled objects, RBAC)
// observable. Thread-safe.
#pragma once

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "backends/azure/base64url.h"
#include "core/mutex.h"
#include "transport/http_transport.h"

namespace dyad::testing {

class FakeKeyVault final : public HttpTransport {
 public:
  using json = nlohmann::json;
  static constexpr const char* kUrl = "https://vault.test";

  struct SecretVersion {
    std::string version, value, content_type;
    json tags;
    int64_t updated = 0;
  };
  struct Secret {
    std::vector<SecretVersion> versions;
    bool enabled = true;
  };
  struct KeyVersion {
    std::string version;
    std::shared_ptr<EVP_PKEY> rsa;  // RSA keys
    std::string oct;                // oct keys: 32 bytes
    bool enabled = true;
    int64_t created = 0;
  };
  struct Key {
    std::string kty = "RSA";
    std::vector<KeyVersion> versions;
  };

  // Knobs and state; lock mu() to touch them while calls may run.
  std::map<std::string, Secret> secrets, deleted;
  std::map<std::string, Key> keys;
  int recover_lag = 0;       // GETs of a recovered secret answering 404 first
  int purge_lag = 0;         // PUTs answering 409 after a purge
  int delete_lag = 0;        // purges and PUTs answering 409 "being deleted" after a delete
  bool forbid_purge = false;
  int fail_puts_after_recover = 0;  // PUTs of a recovered secret answering 400 before it is written
  std::set<std::string> forbidden;  // "METHOD /path-prefix" answered 403 Forbidden (RBAC)
  std::deque<std::pair<int, std::string>> inject;  // next answers, whatever is asked
  size_t page_size = 2;
  int64_t now = 1767225600;
  std::vector<HttpCall> calls;

  Mutex& mu() { return mu_; }

  // Adds a key with one version; returns that version.
  std::string AddKey(const std::string& name, const std::string& kty = "RSA") {
    MutexLock lock(&mu_);
    keys[name].kty = kty;
    return NewKeyVersion(name);
  }
  std::string RotateKey(const std::string& name) {
    MutexLock lock(&mu_);
    return NewKeyVersion(name);
  }
  void SetKeyVersionEnabled(const std::string& name, const std::string& version, bool enabled) {
    MutexLock lock(&mu_);
    for (auto& v : keys[name].versions) {
      if (v.version == version) v.enabled = enabled;
    }
  }
  size_t CallsTo(const std::string& method, const std::string& path_prefix) {
    MutexLock lock(&mu_);
    size_t n = 0;
    for (const auto& c : calls) {
      auto [path, query] = Split(c.url);
      if (c.method == method && path.starts_with(path_prefix)) ++n;
    }
    return n;
  }

  Result<HttpReply> Send(const HttpCall& call) override {
    MutexLock lock(&mu_);
    calls.push_back(call);
    if (!inject.empty()) {
      auto [status, body] = inject.front();
      inject.pop_front();
      return HttpReply{status, {}, body};
    }
    auto [path, query] = Split(call.url);
    if (query.find("api-version=7.5") == std::string::npos) return Error(400, "BadParameter", "no api-version");
    for (const auto& f : forbidden) {
      if ((call.method + " " + path).starts_with(f)) {
        return Error(403, "Forbidden", "Caller is not authorized to perform action on resource.");
      }
    }
    std::vector<std::string> seg;
    for (size_t at = 1; at <= path.size();) {
      size_t slash = path.find('/', at);
      if (slash == std::string::npos) slash = path.size();
      seg.push_back(path.substr(at, slash - at));
      at = slash + 1;
    }
    json body;
    if (!call.body.empty()) {
      body = json::parse(call.body, nullptr, false);
      if (!body.is_object()) return Error(400, "BadParameter", "The request body is not JSON");
    }
    if (!seg.empty() && seg[0] == "secrets") return Secrets(call.method, seg, query, body);
    if (!seg.empty() && seg[0] == "deletedsecrets") return Deleted(call.method, seg);
    if (!seg.empty() && seg[0] == "keys") return Keys(call.method, seg, query, body);
    return Error(404, "NotFound", "no such route");
  }

  static std::string Version(int n) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%032x", n * 2654435761u);
    return buf;
  }

 private:
  static std::pair<std::string, std::string> Split(const std::string& url) {
    std::string rest = url.substr(std::string(kUrl).size());
    auto q = rest.find('?');
    if (q == std::string::npos) return {rest, ""};
    return {rest.substr(0, q), rest.substr(q + 1)};
  }
  static HttpReply Reply(int status, const json& body) { return HttpReply{status, {}, body.dump()}; }
  static HttpReply Error(int status, const std::string& code, const std::string& message,
                         const std::string& inner = "") {
    json e = {{"code", code}, {"message", message}};
    if (!inner.empty()) e["innererror"] = {{"code", inner}};
    return Reply(status, {{"error", e}});
  }
  static size_t Skip(const std::string& query) {
    auto at = query.find("$skiptoken=");
    return at == std::string::npos ? 0 : std::stoul(query.substr(at + 11));
  }

  json SecretBundle(const std::string& name, const Secret& s) {
    const SecretVersion& v = s.versions.back();
    return {{"value", v.value},
            {"id", std::string(kUrl) + "/secrets/" + name + "/" + v.version},
            {"contentType", v.content_type},
            {"tags", v.tags},
            {"attributes", {{"enabled", s.enabled}, {"created", v.updated}, {"updated", v.updated}}}};
  }

  HttpReply Secrets(const std::string& method, const std::vector<std::string>& seg, const std::string& query,
                    const json& body) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (seg.size() == 1 && method == "GET") {
      size_t skip = Skip(query);
      json items = json::array();
      size_t i = 0;
      for (const auto& [name, s] : secrets) {
        if (i++ < skip || items.size() >= page_size) continue;
        items.push_back({{"id", std::string(kUrl) + "/secrets/" + name},
                         {"attributes", {{"enabled", s.enabled}, {"updated", s.versions.back().updated}}}});
      }
      json out = {{"value", items}, {"nextLink", nullptr}};
      if (skip + page_size < secrets.size()) {
        out["nextLink"] = std::string(kUrl) + "/secrets?api-version=7.5&$skiptoken=" +
                          std::to_string(skip + page_size) + "&maxresults=25";
      }
      return Reply(200, out);
    }
    if (seg.size() != 2) return Error(404, "NotFound", "no such route");
    const std::string& name = seg[1];
    if (method == "GET") {
      auto it = secrets.find(name);
      if (it != secrets.end() && recovering_.count(name) && recover_lag > 0) {
        --recover_lag;
        return Error(404, "SecretNotFound", "A secret with (name/id) " + name + " was not found in this key vault.");
      }
      if (it == secrets.end()) {
        return Error(404, "SecretNotFound", "A secret with (name/id) " + name + " was not found in this key vault.");
      }
      if (!it->second.enabled) return Error(403, "Forbidden", "Operation get is not allowed on a disabled secret.",
                                                 "SecretDisabled");
      return Reply(200, SecretBundle(name, it->second));
    }
    if (method == "PUT") {
      if (recovering_.count(name) && fail_puts_after_recover > 0) {
        --fail_puts_after_recover;
        return Error(400, "BadParameter", "injected failure after a recovery");
      }
      if (deleted.count(name) && deleting_ > 0) {
        --deleting_;
        return Error(409, "Conflict", "Secret " + name + " is currently being deleted.");
      }
      if (deleted.count(name)) {
        return Error(409, "Conflict", "Secret " + name + " is currently in a deleted but recoverable state, and its "
                                      "name cannot be reused; in this state, the secret can only be recovered or purged.");
      }
      if (purge_lag > 0) {
        --purge_lag;
        return Error(409, "Conflict", "Secret " + name + " is currently being deleted.");
      }
      if (!body.contains("value") || !body["value"].is_string()) return Error(400, "BadParameter", "value is required");
      if (body["value"].get_ref<const std::string&>().size() > 25 * 1024) {
        return Error(400, "BadParameter", "Secret value is too large");
      }
      Secret& s = secrets[name];
      s.versions.push_back({Version(++counter_), body["value"], body.value("contentType", ""),
                            body.value("tags", json::object()), ++now});
      recovering_.erase(name);
      return Reply(200, SecretBundle(name, s));
    }
    if (method == "DELETE") {
      auto it = secrets.find(name);
      if (it == secrets.end()) {
        return Error(404, "SecretNotFound", "A secret with (name/id) " + name + " was not found in this key vault.");
      }
      json out = SecretBundle(name, it->second);
      out.erase("value");
      out["recoveryId"] = std::string(kUrl) + "/deletedsecrets/" + name;
      deleted[name] = std::move(it->second);
      secrets.erase(it);
      deleting_ = delete_lag;
      return Reply(200, out);
    }
    return Error(405, "BadRequest", "method");
  }

  HttpReply Deleted(const std::string& method, const std::vector<std::string>& seg) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (seg.size() < 2) return Error(404, "NotFound", "no such route");
    const std::string& name = seg[1];
    auto it = deleted.find(name);
    if (seg.size() == 3 && seg[2] == "recover" && method == "POST") {
      if (it == deleted.end()) return Error(404, "SecretNotFound", "Deleted Secret not found");
      secrets[name] = std::move(it->second);
      deleted.erase(it);
      recovering_.insert(name);
      json out = SecretBundle(name, secrets[name]);
      out.erase("value");
      return Reply(200, out);
    }
    if (seg.size() != 2) return Error(404, "NotFound", "no such route");
    if (method == "GET") {
      if (it == deleted.end()) return Error(404, "SecretNotFound", "Deleted Secret not found");
      json out = SecretBundle(name, it->second);
      out.erase("value");
      return Reply(200, out);
    }
    if (method == "DELETE") {
      if (forbid_purge) {
        return Error(403, "Forbidden", "Operation \"purge\" is not allowed because purge protection is enabled for "
                                       "this vault.");
      }
      if (deleting_ > 0) {
        --deleting_;
        return Error(409, "Conflict", "Secret is currently being deleted.");
      }
      if (it == deleted.end()) return Error(404, "SecretNotFound", "Deleted Secret not found");
      deleted.erase(it);
      return HttpReply{204, {}, ""};
    }
    return Error(405, "BadRequest", "method");
  }

  // --- keys ---

  std::string NewKeyVersion(const std::string& name) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Key& k = keys[name];
    KeyVersion v;
    v.version = Version(++counter_);
    v.created = ++now;
    if (k.kty == "RSA" || k.kty == "RSA-HSM") {
      v.rsa = RsaKey(k.versions.size());
    } else {
      v.oct = std::string(32, static_cast<char>(counter_));
    }
    k.versions.push_back(v);
    return v.version;
  }

  // RSA-2048 keys made once per process and shared: generating them is slow.
  static std::shared_ptr<EVP_PKEY> RsaKey(size_t i) {
    static Mutex pool_mu;
    static std::vector<std::shared_ptr<EVP_PKEY>> pool;
    MutexLock lock(&pool_mu);
    while (pool.size() <= i % 4) {
      EVP_PKEY* k = EVP_RSA_gen(2048);
      pool.emplace_back(k, EVP_PKEY_free);
    }
    return pool[i % 4];
  }

  static std::string Bn(const EVP_PKEY* k, const char* name) {
    BIGNUM* bn = nullptr;
    EVP_PKEY_get_bn_param(k, name, &bn);
    std::string out(BN_num_bytes(bn), '\0');
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
    BN_free(bn);
    return out;
  }

  json KeyBundle(const std::string& name, const Key& k, const KeyVersion& v) {
    json key = {{"kid", std::string(kUrl) + "/keys/" + name + "/" + v.version},
                {"kty", k.kty},
                {"key_ops", {"encrypt", "decrypt", "wrapKey", "unwrapKey"}}};
    if (v.rsa) {
      key["n"] = Base64UrlEncode(Bn(v.rsa.get(), OSSL_PKEY_PARAM_RSA_N));
      key["e"] = Base64UrlEncode(Bn(v.rsa.get(), OSSL_PKEY_PARAM_RSA_E));
    }
    return {{"key", key}, {"attributes", {{"enabled", v.enabled}, {"created", v.created}, {"updated", v.created}}}};
  }

  HttpReply Keys(const std::string& method, const std::vector<std::string>& seg, const std::string& query,
                 const json& body) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (seg.size() < 2) return Error(404, "NotFound", "no such route");
    const std::string& name = seg[1];
    auto it = keys.find(name);
    if (it == keys.end() || it->second.versions.empty()) {
      return Error(404, "KeyNotFound", "A key with (name/id) " + name + " was not found in this key vault.");
    }
    Key& k = it->second;
    if (seg.size() == 2 && method == "GET") {
      if (!k.versions.back().enabled) return Error(403, "Forbidden", "Operation get is not allowed on a disabled key.", "KeyDisabled");
      return Reply(200, KeyBundle(name, k, k.versions.back()));
    }
    if (seg.size() == 3 && seg[2] == "rotate" && method == "POST") {
      NewKeyVersion(name);
      return Reply(200, KeyBundle(name, k, k.versions.back()));
    }
    if (seg.size() == 3 && seg[2] == "versions" && method == "GET") {
      size_t skip = Skip(query);
      json items = json::array();
      for (size_t i = skip; i < k.versions.size() && items.size() < page_size; ++i) {
        const KeyVersion& v = k.versions[i];
        items.push_back({{"kid", std::string(kUrl) + "/keys/" + name + "/" + v.version},
                         {"attributes", {{"enabled", v.enabled}, {"created", v.created}}}});
      }
      json out = {{"value", items}};
      if (skip + page_size < k.versions.size()) {
        out["nextLink"] = std::string(kUrl) + "/keys/" + name + "/versions?api-version=7.5&$skiptoken=" +
                          std::to_string(skip + page_size);
      }
      return Reply(200, out);
    }
    KeyVersion* v = nullptr;
    for (auto& candidate : k.versions) {
      if (candidate.version == seg[2]) v = &candidate;
    }
    if (!v) return Error(404, "KeyNotFound", "A key with (name/id) " + name + "/" + seg[2] + " was not found.");
    if (seg.size() == 3 && method == "GET") {
      if (!v->enabled) return Error(403, "Forbidden", "Operation get is not allowed on a disabled key.", "KeyDisabled");
      return Reply(200, KeyBundle(name, k, *v));
    }
    if (seg.size() == 4 && method == "POST" && (seg[3] == "wrapkey" || seg[3] == "unwrapkey")) {
      const bool wrap = seg[3] == "wrapkey";
      if (!v->enabled) {
        return Error(403, "Forbidden", std::string("Operation ") + (wrap ? "wrapKey" : "unwrapKey") +
                                           " is not allowed on a disabled key.", "KeyDisabled");
      }
      std::string alg = body.value("alg", "");
      auto input = body.contains("value") && body["value"].is_string() ? Base64UrlDecode(body["value"].get<std::string>())
                                                                        : std::nullopt;
      if (!input) return Error(400, "BadParameter", "value is not base64url");
      std::optional<std::string> out;
      if (v->rsa && alg == "RSA-OAEP-256") out = Oaep(v->rsa.get(), *input, wrap);
      else if (!v->oct.empty() && alg == "A256KW") out = KeyWrap(v->oct, *input, wrap);
      else return Error(400, "BadParameter", "Invalid algorithm " + alg + " for key type " + k.kty);
      if (!out) return Error(400, "BadParameter", "The parameter is incorrect.");
      return Reply(200, {{"kid", std::string(kUrl) + "/keys/" + name + "/" + v->version}, {"value", Base64UrlEncode(*out)}});
    }
    return Error(404, "NotFound", "no such route");
  }

  static std::optional<std::string> Oaep(EVP_PKEY* key, const std::string& in, bool encrypt) {
    std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new(key, nullptr),
                                                                     EVP_PKEY_CTX_free);
    if ((encrypt ? EVP_PKEY_encrypt_init(ctx.get()) : EVP_PKEY_decrypt_init(ctx.get())) <= 0) return std::nullopt;
    EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING);
    EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256());
    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256());
    auto* from = reinterpret_cast<const unsigned char*>(in.data());
    size_t n = 0;
    int ok = encrypt ? EVP_PKEY_encrypt(ctx.get(), nullptr, &n, from, in.size())
                     : EVP_PKEY_decrypt(ctx.get(), nullptr, &n, from, in.size());
    if (ok <= 0) return std::nullopt;
    std::string out(n, '\0');
    auto* to = reinterpret_cast<unsigned char*>(out.data());
    ok = encrypt ? EVP_PKEY_encrypt(ctx.get(), to, &n, from, in.size())
                 : EVP_PKEY_decrypt(ctx.get(), to, &n, from, in.size());
    if (ok <= 0) return std::nullopt;
    out.resize(n);
    return out;
  }

  // AES key wrap (RFC 3394), A256KW.
  static std::optional<std::string> KeyWrap(const std::string& kek, const std::string& in, bool wrap) {
    std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
    EVP_CIPHER_CTX_set_flags(ctx.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    auto* k = reinterpret_cast<const unsigned char*>(kek.data());
    if (EVP_CipherInit_ex(ctx.get(), EVP_aes_256_wrap(), nullptr, k, nullptr, wrap ? 1 : 0) != 1) return std::nullopt;
    std::string out(in.size() + 16, '\0');
    int n = 0, tail = 0;
    if (EVP_CipherUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &n,
                         reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size())) != 1 ||
        EVP_CipherFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(out.data()) + n, &tail) != 1) {
      return std::nullopt;
    }
    out.resize(n + tail);
    return out;
  }

  Mutex mu_;
  int counter_ = 0;
  int deleting_ = 0;
  std::set<std::string> recovering_;
};

}  // namespace dyad::testing
