#include "backends/azure/secret_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "core/secret_bytes.h"
#include "core/parallel.h"
#include "secrets/envelope.h"

namespace dyad {
namespace {

using nlohmann::json;

constexpr size_t kMaxValueBytes = 25 * 1024;  // Key Vault's limit for a secret's value
constexpr size_t kMaxNameChars = 127;
constexpr std::string_view kEscaped = "x--";  // marks a hex-escaped provider id
constexpr const char* kRole = "Key Vault Secrets Officer";
// A recovery or a purge completes asynchronously: this many looks, waiting
// 250 ms, doubling, at most 4 s between them (about 35 s in all).
constexpr int kMaxWaits = 12;

Clock::Duration Backoff(int attempt) {
  auto d = std::chrono::milliseconds(250) * (1 << std::min(attempt, 4));
  return std::min<Clock::Duration>(d, std::chrono::seconds(4));
}

bool Mentions(const Error& e, std::string_view words) { return e.message.find(words) != std::string::npos; }

// Key Vault's 409 for a name a soft-deleted secret holds ("Secret X is
// currently in a deleted but recoverable state, and its name cannot be reused").
bool SoftDeleted(const Error& e) {
  return e.code == ErrorCode::kConflict && Mentions(e, "deleted but recoverable");
}

// Key Vault answers a read of a disabled secret with 403, inner error code
// SecretDisabled ("Operation get is not allowed on a disabled secret."). To
// the gateway it is not there. Decided on the inner code only: a firewall's
// 403 ("Public network access is disabled", ForbiddenByConnection) is an
// error, not a missing secret.
bool Disabled(const Error& e) {
  return e.code == ErrorCode::kPermissionDenied && AzureInnerCodeIs(e, "secrets.get", 403, "SecretDisabled");
}
// A List follows at most this many pages.
constexpr int kMaxPages = 1000;

std::string StringField(const json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// The last segment of an object id (https://VAULT/secrets/NAME/VERSION).
std::string LastSegment(const std::string& id) {
  auto slash = id.rfind('/');
  return slash == std::string::npos ? id : id.substr(slash + 1);
}

bool PlainId(std::string_view id) {
  if (id.empty() || id.starts_with(kEscaped)) return false;
  return std::all_of(id.begin(), id.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

// The value's credentials version, when it is an envelope.
std::string CredentialsVersionOf(std::string_view value) {
  auto envelope = ParseEnvelope(value);
  if (!envelope.ok()) return "";
  std::string cv = std::to_string(envelope->credentials_version);
  Cleanse(envelope->ciphertext);
  Cleanse(envelope->wrapped_dek);
  return cv;
}

class AzureSecretStore final : public SecretStore {
 public:
  AzureSecretStore(AzureSecretStoreOptions options, AzureClient& client)
      : naming_(options.prefix, "--"),
        options_(std::move(options)),
        client_(client),
        clock_(options_.clock ? *options_.clock : system_clock_) {}

  const std::string& Name() const override { return name_; }
  std::string SecretName(std::string_view provider_id) const override {
    return naming_.Name(KeyVaultNameOfId(provider_id));
  }
  std::optional<std::string> ProviderIdOf(std::string_view name) const override {
    auto part = naming_.IdOf(name);
    if (!part) return std::nullopt;
    return IdOfKeyVaultName(*part);
  }
  std::string ProbeName(std::string_view tag) const override { return naming_.Probe(tag); }
  bool HasConditionalWrites() const override { return false; }

  Result<StoredSecret> Get(const std::string& name) override {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    auto answer = Call("secrets.get", "GET", "/secrets/" + name, nullptr);
    if (!answer.ok()) return Gone(name, answer.error());
    return Read(name, *answer);
  }

  Result<std::string> Create(const std::string& name, std::string_view value) override {
    DYAD_RETURN_IF_ERROR(Check(name, value));
    auto live = Call("secrets.get", "GET", "/secrets/" + name, nullptr);
    if (live.ok()) {
      Wipe(*live);
      return MakeError(ErrorCode::kAlreadyExists, "secret '" + name + "' already exists");
    }
    if (Disabled(live.error())) {
      return MakeError(ErrorCode::kAlreadyExists, "secret '" + name + "' already exists (disabled)");
    }
    if (live.code() != ErrorCode::kNotFound) return live.error();
    return Set(name, value, /*revive=*/true);
  }

  Result<std::string> Replace(const std::string& name, std::string_view value, const std::string& version) override {
    (void)name, (void)value, (void)version;
    return MakeError(ErrorCode::kUnimplemented,
                     "Azure Key Vault has no conditional write: write under the provider's lease");
  }

  Result<std::string> Overwrite(const std::string& name, std::string_view value) override {
    DYAD_RETURN_IF_ERROR(Check(name, value));
    auto current = Get(name);
    if (!current.ok()) return current.error();
    Cleanse(current->value);
    auto written = Set(name, value, /*revive=*/false);
    if (!written.ok() && SoftDeleted(written.error())) {  // deleted since the read
      return MakeError(ErrorCode::kNotFound, "secret '" + name + "' was deleted: " + written.error().message);
    }
    return written;
  }

  Status Put(const std::string& name, std::string_view value) override {
    DYAD_RETURN_IF_ERROR(Check(name, value));
    auto written = Set(name, value, /*revive=*/true);
    return written.ok() ? OkStatus() : Status(written.error());
  }

  Status Delete(const std::string& name) override {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    auto r = Call("secrets.delete", "DELETE", "/secrets/" + name, nullptr);
    if (r.ok() || r.code() == ErrorCode::kNotFound) return OkStatus();
    return r.error();
  }

  Status DeleteNow(const std::string& name) override {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    auto deleted = Call("secrets.delete", "DELETE", "/secrets/" + name, nullptr);
    if (!deleted.ok() && deleted.code() != ErrorCode::kNotFound) return deleted.error();
    if (!options_.purge_on_delete) return OkStatus();
    // The soft delete completes asynchronously: until it has, the purge
    // answers 404 (not yet a deleted secret) or 409 (being deleted). A name
    // that held no live secret is purged once, in case a deleted one holds it.
    for (int attempt = 0;; ++attempt) {
      auto purged = Purge(name);
      if (purged.ok()) return OkStatus();
      if (purged.code() == ErrorCode::kPermissionDenied) return OkStatus();  // said once by Purge; soft-deleted
      if (purged.code() == ErrorCode::kNotFound && !deleted.ok()) return OkStatus();
      bool pending = purged.code() == ErrorCode::kNotFound || purged.code() == ErrorCode::kConflict;
      if (!pending) return purged;
      if (attempt + 1 >= kMaxWaits) {
        spdlog::warn("Azure Key Vault: secret '{}' is deleted but not purged: {}", name, purged.error().message);
        return OkStatus();
      }
      clock_.SleepFor(Backoff(attempt));
    }
  }

  Result<std::vector<Listed>> List() override {
    std::vector<Listed> out;
    AzureCall call;
    call.op = "secrets.list";
    call.path = "/secrets";
    call.query = "maxresults=25";
    call.role = kRole;
    auto page = client_.Call(call);
    std::set<std::string> followed;
    for (int pages = 1;; ++pages) {
      if (!page.ok()) return page.error();
      auto items = page->find("value");
      if (items != page->end() && !items->is_array()) {
        return MakeError(ErrorCode::kUnavailable, "secrets.list: the answer's value is not a list");
      }
      if (items != page->end()) {
        for (const auto& item : *items) {
          if (!item.is_object()) continue;
          std::string n = LastSegment(StringField(item, "id"));
          if (!ProviderIdOf(n)) continue;
          out.push_back({std::move(n), UpdatedAt(item)});
        }
      }
      std::string next = StringField(*page, "nextLink");
      if (next.empty()) return out;
      if (pages >= kMaxPages) break;
      if (!followed.insert(next).second) {
        return MakeError(ErrorCode::kUnavailable, "secrets.list: the answer's nextLink repeats a page already read");
      }
      page = client_.CallUrl(call, next);
    }
    return MakeError(ErrorCode::kUnavailable,
                     "secrets.list: more than " + std::to_string(kMaxPages) + " pages; the listing is refused");
  }

  Result<std::vector<Result<StoredSecret>>> GetMany(const std::vector<std::string>& names) override {
    std::vector<Result<StoredSecret>> out(names.size(), Result<StoredSecret>(StoredSecret{}));
    ParallelFor(names.size(), options_.parallelism, [&](size_t i) { out[i] = Get(names[i]); });
    return out;
  }

 private:
  Result<json> Call(const std::string& op, const char* method, const std::string& path, const json* body) {
    AzureCall call;
    call.op = op;
    call.method = method;
    call.path = path;
    call.body = body;
    call.role = kRole;
    return client_.Call(call);
  }

  static Status CheckName(const std::string& name) {
    if (!IsValidKeyVaultName(name)) {
      return MakeError(ErrorCode::kInvalidArgument, "'" + name.substr(0, 160) +
                                                        "' is not a Key Vault secret name (1-127 of letters, digits "
                                                        "and '-')");
    }
    return OkStatus();
  }

  // What a secret's value may be: UTF-8 text of at most 25 KiB. Refused
  // before it is sent, never mangled.
  static Status Check(const std::string& name, std::string_view value) {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    if (value.size() > kMaxValueBytes) {
      return MakeError(ErrorCode::kInvalidArgument, "secret '" + name + "' would be " + std::to_string(value.size()) +
                                                        " bytes; Azure Key Vault stores at most " +
                                                        std::to_string(kMaxValueBytes));
    }
    if (!IsValidUtf8(value)) {
      return MakeError(ErrorCode::kInvalidArgument, "secret '" + name + "' is not UTF-8 text, which is all a Key "
                                                                        "Vault secret holds");
    }
    return OkStatus();
  }

  static Error Gone(const std::string& name, Error e) {
    if (Disabled(e)) return MakeError(ErrorCode::kNotFound, "secret '" + name + "' is disabled");
    return e;
  }

  static Result<StoredSecret> Read(const std::string& name, json& answer) {
    auto value = answer.find("value");
    if (value == answer.end() || !value->is_string()) {
      Wipe(answer);
      return MakeError(ErrorCode::kUnavailable, "secrets.get: the answer for '" + name + "' has no value");
    }
    std::string version = LastSegment(StringField(answer, "id"));
    if (auto a = answer.find("attributes"); a != answer.end() && a->is_object() && a->contains("enabled") &&
                                            (*a)["enabled"] == false) {
      Wipe(answer);
      return MakeError(ErrorCode::kNotFound, "secret '" + name + "' is disabled");
    }
    if (version.empty()) {
      Wipe(answer);
      return MakeError(ErrorCode::kUnavailable, "secrets.get: the answer for '" + name + "' has no id");
    }
    StoredSecret out{value->get<std::string>(), std::move(version)};
    Wipe(answer);
    return out;
  }

  static void Wipe(json& answer) {
    if (auto v = answer.find("value"); v != answer.end() && v->is_string()) Cleanse(v->get_ref<std::string&>());
  }

  // PUT /secrets/{name}: a new version. While a delete, purge or recovery
  // of the name is still completing (409) the PUT is tried again, a bounded
  // number of times; a name a soft-deleted secret holds is, with `revive`,
  // recovered (or purged) first, once.
  Result<std::string> Set(const std::string& name, std::string_view value, bool revive) {
    json body = {{"value", value}, {"contentType", options_.content_type}};
    json tags = {{"managed-by", "dyad-gateway"}};
    if (auto id = ProviderIdOf(name)) tags["provider-id"] = *id;
    if (std::string cv = CredentialsVersionOf(value); !cv.empty()) tags["credentials-version"] = cv;
    body["tags"] = std::move(tags);
    Result<json> written = MakeError(ErrorCode::kInternal, "unset");
    bool revived = false, recovered = false;
    for (int attempt = 0;; ++attempt) {
      written = Call("secrets.set", "PUT", "/secrets/" + name, &body);
      if (written.ok() || written.code() != ErrorCode::kConflict) break;
      if (SoftDeleted(written.error())) {
        if (!revive || revived) break;
        revived = true;
        Status s = options_.purge_on_delete ? PurgeHeld(name) : Recover(name, recovered);
        if (!s.ok() && options_.purge_on_delete && s.code() == ErrorCode::kPermissionDenied) {
          // Purge protection (or no purge permission): recover instead.
          s = Recover(name, recovered);
        }
        if (!s.ok()) {
          written = s.error();
          break;
        }
        continue;
      }
      if (attempt + 1 >= kMaxWaits) break;
      clock_.SleepFor(Backoff(attempt));  // being deleted, purged or recovered
    }
    Cleanse(body["value"].get_ref<std::string&>());
    if (!written.ok() && recovered) return Undo(name, written.error());
    if (!written.ok()) return written.error();
    Wipe(*written);
    std::string version = LastSegment(StringField(*written, "id"));
    if (version.empty()) return MakeError(ErrorCode::kUnavailable, "secrets.set: the answer for '" + name + "' has no id");
    return version;
  }

  // A recovery made the deleted (old) value current again and the write
  // after it failed: the name is deleted again, so the credential deleted on
  // purpose does not come back. Best effort: one DELETE (the client's own
  // retries bound it); the error says what became of it.
  Error Undo(const std::string& name, Error e) {
    auto again = Call("secrets.delete", "DELETE", "/secrets/" + name, nullptr);
    if (again.ok() || again.code() == ErrorCode::kNotFound) {
      spdlog::warn("Azure Key Vault: secret '{}' was recovered to write a new version, the write failed; deleted "
                   "again", name);
      e.message += " (the soft-deleted secret recovered for this write was deleted again)";
    } else {
      spdlog::error("Azure Key Vault: secret '{}' was recovered to write a new version, the write failed and the "
                    "delete after it too: its old value is live again, delete it: {}", name, again.error().message);
      e.message += " (the soft-deleted secret recovered for this write could not be deleted again: its OLD value is "
                   "live; delete it: " + again.error().message + ")";
    }
    return e;
  }

  // POST /deletedsecrets/{name}/recover, then looks until the secret reads;
  // `recovered` is set once the recovery was accepted.
  Status Recover(const std::string& name, bool& recovered_out) {
    auto recovered = Call("secrets.recover", "POST", "/deletedsecrets/" + name + "/recover", nullptr);
    if (!recovered.ok()) return recovered.error();
    recovered_out = true;
    Wipe(*recovered);
    spdlog::warn("Azure Key Vault: secret '{}' was soft-deleted; recovered (its old value current again) to write a "
                 "new version", name);
    for (int attempt = 0; attempt < kMaxWaits; ++attempt) {
      auto read = Call("secrets.get", "GET", "/secrets/" + name, nullptr);
      if (read.ok()) {
        Wipe(*read);
        return OkStatus();
      }
      if (Disabled(read.error())) return OkStatus();  // recovered as it was deleted: disabled
      if (read.code() != ErrorCode::kNotFound) return read.error();
      clock_.SleepFor(Backoff(attempt));
    }
    return MakeError(ErrorCode::kUnavailable, "secrets.recover: secret '" + name + "' is still not readable after " +
                                                  std::to_string(kMaxWaits) + " looks");
  }

  // Purges the soft-deleted secret holding `name` (tried again while its
  // delete completes).
  Status PurgeHeld(const std::string& name) {
    for (int attempt = 0;; ++attempt) {
      auto purged = Purge(name);
      if (purged.ok() || purged.code() == ErrorCode::kNotFound) return OkStatus();
      if (purged.code() != ErrorCode::kConflict || attempt + 1 >= kMaxWaits) return purged;
      clock_.SleepFor(Backoff(attempt));
    }
  }

  // DELETE /deletedsecrets/{name}; a refusal is said once, naming what it needs.
  Status Purge(const std::string& name) {
    auto r = Call("secrets.purge", "DELETE", "/deletedsecrets/" + name, nullptr);
    if (r.ok()) return OkStatus();
    if (r.code() == ErrorCode::kPermissionDenied && !purge_warned_.exchange(true)) {
      spdlog::warn("Azure Key Vault: purging deleted secrets is not permitted ({}); deleted secrets stay soft-deleted "
                   "for the vault's retention period. Purging needs Microsoft.KeyVault/vaults/secrets/purge/action "
                   "(in the role '{}') and a vault without purge protection", r.error().message, kRole);
    }
    return r.error();
  }

  static std::optional<std::chrono::system_clock::time_point> UpdatedAt(const json& item) {
    auto a = item.find("attributes");
    if (a == item.end() || !a->is_object()) return std::nullopt;
    std::optional<int64_t> latest;
    for (const char* field : {"created", "updated"}) {
      auto it = a->find(field);
      if (it != a->end() && it->is_number_integer() && (!latest || it->get<int64_t>() > *latest)) {
        latest = it->get<int64_t>();
      }
    }
    if (!latest) return std::nullopt;
    return std::chrono::system_clock::time_point(std::chrono::seconds(*latest));
  }

  const std::string name_ = "azure";
  PrefixNaming naming_;
  AzureSecretStoreOptions options_;
  AzureClient& client_;
  SystemClock system_clock_;
  const Clock& clock_;
  std::atomic<bool> purge_warned_{false};
};

}  // namespace

bool IsValidKeyVaultName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameChars) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
  });
}

std::string KeyVaultNameOfId(std::string_view id) {
  if (PlainId(id)) return std::string(id);
  return std::string(kEscaped) + HexEncode(id);
}

std::optional<std::string> IdOfKeyVaultName(std::string_view part) {
  if (PlainId(part)) return std::string(part);
  if (!part.starts_with(kEscaped)) return std::nullopt;
  std::string_view hex = part.substr(kEscaped.size());
  if (hex.empty() || hex.find_first_not_of("0123456789abcdef") != std::string_view::npos) return std::nullopt;
  auto id = HexDecode(hex);
  // Only the form KeyVaultNameOfId makes: one name per id.
  if (!id || PlainId(*id)) return std::nullopt;
  return id;
}

std::unique_ptr<SecretStore> NewAzureSecretStore(AzureSecretStoreOptions options, AzureClient& client) {
  return std::make_unique<AzureSecretStore>(std::move(options), client);
}

}  // namespace dyad
