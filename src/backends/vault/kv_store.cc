#include "backends/vault/kv_store.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <map>
#include <vector>
#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "core/mutex.h"
#include "core/parallel.h"
#include "core/secret_bytes.h"
#include "core/time_format.h"

namespace dyad {
namespace {

using nlohmann::json;

constexpr size_t kMaxValueBytes = 1 << 20;
// The one key of the object a value that is not a JSON object is kept in.
constexpr const char* kTextKey = "dyad_gateway_text";
// The one key of a tombstone: what a delete writes before it soft-deletes.
constexpr const char* kTombstoneKey = "dyad_gateway_deleted";

bool IsReserved(const json& data) {
  return data.is_object() && data.size() == 1 && (data.contains(kTextKey) || data.contains(kTombstoneKey));
}
constexpr int kAttempts = 3;  // writes that race another writer: read and try again

// Deeper documents are kept as text (a value) or refused (an answer):
// dump() recurses, and a Vault answer may nest 10^6 levels in 2 MB.
constexpr size_t kMaxDepth = 32;

// Every string in `j` zeroed: the parsed document may hold credentials.
// Without recursion, however deep it is.
void WipeJson(json& j) {
  std::vector<json*> todo = {&j};
  while (!todo.empty()) {
    json* next = todo.back();
    todo.pop_back();
    if (next->is_string()) {
      Cleanse(next->get_ref<std::string&>());
    } else if (next->is_structured()) {
      for (auto& child : *next) todo.push_back(&child);
    }
  }
}

bool DeeperThan(const json& j, size_t limit) {
  std::vector<std::pair<const json*, size_t>> todo = {{&j, 1}};
  while (!todo.empty()) {
    auto [next, depth] = todo.back();
    todo.pop_back();
    if (!next->is_structured()) continue;
    if (depth > limit) return true;
    for (const auto& child : *next) todo.emplace_back(&child, depth + 1);
  }
  return false;
}

// Wipes a document when it goes out of scope.
class Wiped {
 public:
  explicit Wiped(json& j) : j_(j) {}
  ~Wiped() { WipeJson(j_); }
  Wiped(const Wiped&) = delete;
  Wiped& operator=(const Wiped&) = delete;

 private:
  json& j_;
};

// Names are '/'-separated segments of URL-safe characters, no empty segment
// and no "." or "..": a name never reaches another path of the mount.
Status CheckName(const std::string& name) {
  auto bad = [&](const char* why) {
    return MakeError(ErrorCode::kInvalidArgument, "secret name '" + name + "' " + why);
  };
  if (name.empty() || name.size() > 512) return bad("must be 1-512 characters");
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string_view seg(name.data() + start, end - start);
    if (seg.empty() || seg == "." || seg == "..") return bad("has an empty, '.' or '..' segment");
    start = end + 1;
  }
  for (unsigned char c : name) {
    if (!std::isalnum(c) && c != '/' && c != '-' && c != '_' && c != '.' && c != '~' && c != ':' && c != '@') {
      return bad("may hold only letters, digits and '/-_.~:@'");
    }
  }
  return OkStatus();
}

// The KV `data` object for a value: a JSON object as it is; anything else
// (and an object that looks like the wrapper or a tombstone) wrapped as
// {kTextKey: value}.
Result<json> DataOf(const std::string& name, std::string_view value) {
  if (value.size() > kMaxValueBytes) {
    return MakeError(ErrorCode::kInvalidArgument, "secret '" + name + "' would be " + std::to_string(value.size()) +
                                                      " bytes; the Vault KV store takes at most " +
                                                      std::to_string(kMaxValueBytes));
  }
  if (!IsValidUtf8(value)) {
    return MakeError(ErrorCode::kInvalidArgument, "secret '" + name + "' is not UTF-8 text, which is all KV holds");
  }
  json j = json::parse(value, nullptr, false);
  if (j.is_object() && !IsReserved(j) && !DeeperThan(j, kMaxDepth)) return j;
  WipeJson(j);
  json wrapped = json::object();
  wrapped[kTextKey] = std::string(value);  // moved in: no copy left behind
  return wrapped;
}

// The value a KV `data` object holds (DataOf's inverse, up to key order).
std::string ValueOf(const json& data) {
  if (data.size() == 1) {
    auto it = data.find(kTextKey);
    if (it != data.end() && it->is_string()) return it->get<std::string>();
  }
  return data.dump();
}

Result<uint64_t> ParseVersion(const std::string& version) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(version.data(), version.data() + version.size(), v);
  if (ec != std::errc() || end != version.data() + version.size() || v == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "'" + version.substr(0, 40) + "' is not a KV version");
  }
  return v;
}

// "version N is deleted|destroyed" in a 404's message (vault_client.cc).
// Text, not structure: VaultClient::Call returns no body with an error.
// Whatever answers at VAULT_ADDR could steer N, as it could any answer;
// a wrong N only makes the next cas write conflict or be read back.
std::optional<uint64_t> DeletedVersion(const Error& e) {
  const std::string& m = e.message;
  size_t at = m.rfind(": version ");
  if (e.code != ErrorCode::kNotFound || at == std::string::npos) return std::nullopt;
  at += 10;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(m.data() + at, m.data() + m.size(), v);
  if (ec != std::errc() || v == 0) return std::nullopt;
  std::string_view rest(end, m.data() + m.size() - end);
  if (rest != " is deleted" && rest != " is destroyed") return std::nullopt;
  return v;
}

// The latest version of a name as read: live (with its value), deleted or
// destroyed at `version`, or absent (never written, or no version known).
struct Latest {
  enum State { kLive, kDeleted, kAbsent } state = kAbsent;
  uint64_t version = 0;
  StoredSecret secret;
};

class KvStore final : public SecretStore {
 public:
  KvStore(KvStoreOptions options, VaultClient& client)
      : options_(std::move(options)), naming_(options_.prefix, "/"), client_(client) {
    while (options_.mount.ends_with('/')) options_.mount.pop_back();
    while (options_.mount.starts_with('/')) options_.mount.erase(0, 1);
  }

  const std::string& Name() const override { return name_; }
  std::string SecretName(std::string_view provider_id) const override { return naming_.Name(provider_id); }
  std::optional<std::string> ProviderIdOf(std::string_view name) const override { return naming_.IdOf(name); }
  std::string ProbeName(std::string_view tag) const override { return naming_.Probe(tag); }
  bool HasConditionalWrites() const override { return true; }

  Result<StoredSecret> Get(const std::string& name) override {
    DYAD_ASSIGN_OR_RETURN(Latest latest, Read(name));
    if (latest.state != Latest::kLive) {
      return MakeError(ErrorCode::kNotFound, "secret '" + name + "' " +
                                                 (latest.state == Latest::kDeleted ? "is deleted" : "does not exist"));
    }
    return std::move(latest.secret);
  }

  Result<std::string> Create(const std::string& name, std::string_view value) override {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    DYAD_ASSIGN_OR_RETURN(json data, DataOf(name, value));
    Wiped wipe(data);
    uint64_t cas = 0;
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      auto written = Write(name, data, cas);
      if (written.ok()) return Annotated(name, data, *written);
      if (written.code() != ErrorCode::kConflict) return written.error();
      // Taken: by our own write (its answer lost, the retry conflicted), by
      // a live version, or by a deleted one we may write over.
      DYAD_ASSIGN_OR_RETURN(Latest latest, Read(name));
      if (IsOurs(latest, data, cas)) return Annotated(name, data, latest.version);
      if (latest.state == Latest::kLive) {
        Cleanse(latest.secret.value);
        return MakeError(ErrorCode::kAlreadyExists,
                         "secret '" + name + "' already exists (version " + latest.secret.version + ")");
      }
      cas = latest.version;  // the deleted version, or 0 when it is gone altogether
    }
    return MakeError(ErrorCode::kAlreadyExists, "secret '" + name + "' was written by another writer meanwhile");
  }

  Result<std::string> Replace(const std::string& name, std::string_view value, const std::string& version) override {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    DYAD_ASSIGN_OR_RETURN(uint64_t cas, ParseVersion(version));
    DYAD_ASSIGN_OR_RETURN(json data, DataOf(name, value));
    Wiped wipe(data);
    auto written = Write(name, data, cas);
    if (written.ok()) return Annotated(name, data, *written);
    if (written.code() != ErrorCode::kConflict) return written.error();
    DYAD_ASSIGN_OR_RETURN(Latest latest, Read(name));
    if (IsOurs(latest, data, cas)) return Annotated(name, data, latest.version);
    Cleanse(latest.secret.value);
    if (latest.state != Latest::kLive) return MakeError(ErrorCode::kNotFound, "secret '" + name + "' does not exist");
    return MakeError(ErrorCode::kConflict, "secret '" + name + "' is at version " + latest.secret.version +
                                               ", not " + version + ": " + written.error().message);
  }

  Result<std::string> Overwrite(const std::string& name, std::string_view value) override {
    return Upsert(name, value, false);
  }

  Status Put(const std::string& name, std::string_view value) override {
    auto r = Upsert(name, value, true);
    return r.ok() ? OkStatus() : Status(r.error());
  }

  // Deletes write a tombstone over the version read and soft-delete it:
  // KV's cas compares with the latest version number, deleted or not, so
  // a plain soft delete would let a token read before it write the secret
  // back; after a tombstone that token conflicts and reads as deleted.
  Status Delete(const std::string& name) override {
    auto r = Remove(name);
    return r.ok() ? OkStatus() : Status(r.error());
  }

  // A probe goes with its history (metadata/ DELETE) where permitted. A
  // provider's secret is removed as by Delete, then the version it held is
  // destroyed where destroy/ is permitted: never a metadata/ DELETE, which
  // restarts versions at 1 so that an old token would match again (ABA).
  Status DeleteNow(const std::string& name) override {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    if (!naming_.IdOf(name) && metadata_delete_.load(std::memory_order_relaxed)) {
      auto r = client_.Call({"kv.delete-all", "DELETE", Path("metadata", name), nullptr, "", "delete"});
      if (r.ok() || r.code() == ErrorCode::kNotFound) return OkStatus();
      if (r.code() != ErrorCode::kPermissionDenied) return r.error();
      Refused(metadata_delete_, r.error(), "deleting probes with their history");
    }
    DYAD_ASSIGN_OR_RETURN(uint64_t held, Remove(name));
    if (held > 0 && destroy_.load(std::memory_order_relaxed)) {
      json body = {{"versions", json::array({held})}};
      auto r = client_.Call({"kv.destroy", "POST", Path("destroy", name), &body, "", "update"});
      if (!r.ok() && r.code() == ErrorCode::kPermissionDenied) {
        Refused(destroy_, r.error(), "destroying a removed secret's data at once (it stays in KV's history)");
      } else if (!r.ok()) {
        spdlog::debug("kv.destroy of '{}' failed: {}", name, r.error().message);
      }
    }
    return OkStatus();
  }

  // The tombstone's cas is the check: atomic under the seed's policy.
  Status DeleteIfVersion(const std::string& name, const std::string& version) override {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    DYAD_ASSIGN_OR_RETURN(uint64_t v, ParseVersion(version));
    auto buried = Bury(name, v);
    if (buried.ok() || buried.code() != ErrorCode::kConflict) return buried.ok() ? OkStatus() : buried.error();
    DYAD_ASSIGN_OR_RETURN(Latest latest, Read(name));
    Cleanse(latest.secret.value);
    if (latest.state == Latest::kLive) {
      return MakeError(ErrorCode::kConflict,
                       "secret '" + name + "' is at version " + latest.secret.version + ", not " + version);
    }
    return OkStatus();  // already gone
  }

  // metadata/ LIST of the providers' folder, then each key's metadata
  // (data/ where metadata/ read is refused) to leave out deleted secrets
  // and to date the others by their latest version's created_time.
  Result<std::vector<Listed>> List() override {
    const std::string folder = naming_.providers_prefix();
    auto r = client_.Call({"kv.list", "GET", Path("metadata", folder), nullptr, "list=true", "list"});
    if (!r.ok() && r.code() == ErrorCode::kNotFound) return std::vector<Listed>{};
    if (!r.ok()) {
      Error e = r.error();
      if (e.code == ErrorCode::kPermissionDenied) {
        e.message = "listing provider secrets (`secrets gc` and counting orphans need it): " + e.message;
      }
      return e;
    }
    std::vector<std::string> names;
    const json* keys = nullptr;
    if (auto d = r->find("data"); d != r->end() && d->is_object()) {
      if (auto k = d->find("keys"); k != d->end() && k->is_array()) keys = &*k;
    }
    if (!keys) return MakeError(ErrorCode::kUnavailable, "kv.list: the answer has no data.keys list");
    for (const auto& k : *keys) {
      if (!k.is_string()) continue;
      std::string name = folder + k.get<std::string>();
      if (name.ends_with('/') || !CheckName(name).ok()) continue;  // a folder, or no name of ours
      names.push_back(std::move(name));
    }
    std::vector<Result<std::optional<Listed>>> dated(names.size(), Result<std::optional<Listed>>(std::nullopt));
    ParallelFor(names.size(), options_.parallelism, [&](size_t i) { dated[i] = Dated(names[i]); });
    std::vector<Listed> out;
    for (auto& d : dated) {
      if (!d.ok()) return d.error();
      if (*d) out.push_back(std::move(**d));
    }
    return out;
  }

  Result<std::vector<Result<StoredSecret>>> GetMany(const std::vector<std::string>& names) override {
    std::vector<Result<StoredSecret>> out(names.size(), Result<StoredSecret>(StoredSecret{}));
    ParallelFor(names.size(), options_.parallelism, [&](size_t i) { out[i] = Get(names[i]); });
    return out;
  }

  Result<std::vector<bool>> ReplaceMany(const std::vector<Swap>& items) override {
    std::vector<Status> outcome(items.size(), OkStatus());
    std::vector<char> replaced(items.size(), 0);
    ParallelFor(items.size(), options_.parallelism, [&](size_t i) {
      auto r = Replace(items[i].name, items[i].value, items[i].version);
      if (r.ok()) replaced[i] = 1;
      else if (r.code() != ErrorCode::kConflict && r.code() != ErrorCode::kNotFound) outcome[i] = r.error();
    });
    for (const Status& s : outcome) {
      if (!s.ok()) return s.error();
    }
    return std::vector<bool>(replaced.begin(), replaced.end());
  }

 private:
  std::string Path(const char* kind, const std::string& name) const {
    return options_.mount + "/" + kind + "/" + name;
  }

  // GET data/<name>: the latest version, whatever its state.
  Result<Latest> Read(const std::string& name) {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    auto r = client_.Call({"kv.read", "GET", Path("data", name), nullptr, "", "read"});
    Latest out;
    if (!r.ok()) {
      if (r.code() != ErrorCode::kNotFound) return r.error();
      if (auto v = DeletedVersion(r.error())) {
        out.state = Latest::kDeleted;
        out.version = *v;
      }
      return out;
    }
    json& answer = *r;
    Wiped wipe(answer);
    if (DeeperThan(answer, kMaxDepth + 3)) {  // {"data":{"data":<value>}}
      return MakeError(ErrorCode::kUnavailable, "kv.read of '" + name + "': the answer is nested too deeply");
    }
    auto malformed = [&](const char* what) {
      return MakeError(ErrorCode::kUnavailable, "kv.read of '" + name + "': the answer " + what);
    };
    auto d = answer.find("data");
    if (d == answer.end() || !d->is_object()) return malformed("has no data object");
    auto meta = d->find("metadata");
    if (meta == d->end() || !meta->is_object()) return malformed("has no data.metadata object");
    auto version = meta->find("version");
    if (version == meta->end() || !version->is_number_unsigned() || version->get<uint64_t>() == 0) {
      return malformed("has no data.metadata.version number");
    }
    out.version = version->get<uint64_t>();
    auto deletion = meta->find("deletion_time");
    auto destroyed = meta->find("destroyed");
    auto data = d->find("data");
    if ((deletion != meta->end() && deletion->is_string() && !deletion->get<std::string>().empty()) ||
        (destroyed != meta->end() && destroyed->is_boolean() && destroyed->get<bool>()) || data == d->end() ||
        data->is_null()) {
      out.state = Latest::kDeleted;
      return out;
    }
    if (!data->is_object()) return malformed("has a data.data that is not an object");
    if (data->size() == 1 && data->contains(kTombstoneKey)) {
      out.state = Latest::kDeleted;
      return out;
    }
    out.state = Latest::kLive;
    out.secret = StoredSecret{ValueOf(*data), std::to_string(out.version)};
    return out;
  }

  // POST data/<name> with cas: the version written.
  Result<uint64_t> Write(const std::string& name, json& data, uint64_t cas) {
    json body = {{"options", {{"cas", cas}}}, {"data", json()}};
    body["data"].swap(data);  // no copy of the plaintext; swapped back below
    auto r = client_.Call({"kv.write", "POST", Path("data", name), &body, "", cas == 0 ? "create" : "update"});
    body["data"].swap(data);
    if (!r.ok()) return r.error();
    auto d = r->find("data");
    if (d != r->end() && d->is_object()) {
      auto v = d->find("version");
      if (v != d->end() && v->is_number_unsigned() && v->get<uint64_t>() > 0) return v->get<uint64_t>();
    }
    return MakeError(ErrorCode::kInternal, "kv.write of '" + name + "': written, but the answer has no data.version");
  }

  // Delete's work: the live version it removed (0 when there was none).
  Result<uint64_t> Remove(const std::string& name) {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    Error last = MakeError(ErrorCode::kConflict, "secret '" + name + "' kept changing while it was deleted");
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      DYAD_ASSIGN_OR_RETURN(Latest latest, Read(name));
      Cleanse(latest.secret.value);
      if (latest.state != Latest::kLive) return uint64_t{0};
      auto buried = Bury(name, latest.version);
      if (buried.ok()) return latest.version;
      if (buried.code() != ErrorCode::kConflict) return buried.error();
      last = buried.error();
    }
    return last;
  }

  // The tombstone written with cas=`version`, then the version it buries
  // and the tombstone soft-deleted by number where delete/ is permitted.
  // Never KV's unversioned DELETE of the latest version: another writer may
  // have written over the tombstone meanwhile, and it would gain nothing
  // (the tombstone holds nothing and reads as deleted as it is). Returns
  // the tombstone's version; a conflict whose read-back shows a deleted
  // version at version+1 is our tombstone, written though its answer was
  // lost (or an identical one: the version is buried either way).
  Result<uint64_t> Bury(const std::string& name, uint64_t version) {
    json tomb = {{kTombstoneKey, true}};
    auto written = Write(name, tomb, version);
    if (!written.ok() && written.code() == ErrorCode::kConflict) {
      DYAD_ASSIGN_OR_RETURN(Latest latest, Read(name));
      Cleanse(latest.secret.value);
      if (latest.state != Latest::kDeleted || latest.version != version + 1) return written.error();
      written = latest.version;
    }
    if (!written.ok()) return written.error();
    const uint64_t t = *written;
    if (delete_versions_.load(std::memory_order_relaxed)) {
      json body = {{"versions", json::array({version, t})}};
      auto r = client_.Call({"kv.delete-versions", "POST", Path("delete", name), &body, "", "update"});
      if (!r.ok() && r.code() == ErrorCode::kPermissionDenied) {
        Refused(delete_versions_, r.error(), "soft-deleting the version a delete removes (it stays readable by "
                                             "number in KV's history)");
      } else if (!r.ok()) {
        spdlog::debug("kv.delete-versions of '{}' failed (the tombstone stands): {}", name, r.error().message);
      }
    }
    return t;
  }

  // Overwrite (`create` false: the name must hold a live version) or Put.
  Result<std::string> Upsert(const std::string& name, std::string_view value, bool create) {
    DYAD_RETURN_IF_ERROR(CheckName(name));
    DYAD_ASSIGN_OR_RETURN(json data, DataOf(name, value));
    Wiped wipe(data);
    Error last = MakeError(ErrorCode::kConflict, "secret '" + name + "' kept changing while it was written");
    std::optional<uint64_t> tried;  // the cas of the write that conflicted
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      DYAD_ASSIGN_OR_RETURN(Latest latest, Read(name));
      if (tried && IsOurs(latest, data, *tried)) return Annotated(name, data, latest.version);
      Cleanse(latest.secret.value);
      if (latest.state != Latest::kLive && !create) {
        return MakeError(ErrorCode::kNotFound, "secret '" + name + "' does not exist");
      }
      auto written = Write(name, data, latest.version);
      if (written.ok()) return Annotated(name, data, *written);
      if (written.code() != ErrorCode::kConflict) return written.error();
      last = written.error();
      tried = latest.version;
    }
    return last;
  }

  // Whether the latest version read after a cas conflict is our own write
  // of `data` over `cas`: JsonClient retries a POST that failed as
  // kUnavailable (reset, timeout, 502-504), also after Vault applied it,
  // and the retry then conflicts with our own version. The documents are
  // compared as the store writes them; an envelope's nonce makes each
  // sealed value unique. Wipes the value read when it says yes.
  static bool IsOurs(Latest& latest, const json& data, uint64_t cas) {
    if (latest.state != Latest::kLive || latest.version != cas + 1) return false;
    std::string ours = ValueOf(data);
    const bool same = ours == latest.secret.value;
    Cleanse(ours);
    if (same) Cleanse(latest.secret.value);
    return same;
  }

  // The version written, after custom metadata where permitted: a
  // courtesy for operators, never a reason to fail the write.
  // Written once per name and credentials version in this process: a
  // re-encryption (same cv) costs no extra call.
  std::string Annotated(const std::string& name, const json& data, uint64_t version) {
    auto id = naming_.IdOf(name);
    if (!id || !annotate_.load(std::memory_order_relaxed)) return std::to_string(version);
    std::optional<int64_t> cv;
    if (auto it = data.find("cv"); it != data.end() && it->is_number_integer()) cv = it->get<int64_t>();
    {
      MutexLock lock(&mu_);
      auto seen = annotated_.find(name);
      if (seen != annotated_.end() && seen->second == cv) return std::to_string(version);
    }
    json custom = {{"provider_id", *id}, {"managed_by", "dyad-gateway"}};
    if (cv) custom["credentials_version"] = std::to_string(*cv);
    json body = {{"custom_metadata", std::move(custom)}};
    auto r = client_.Call({"kv.metadata-write", "POST", Path("metadata", name), &body, "", "update"});
    if (r.ok()) {
      MutexLock lock(&mu_);
      annotated_[name] = cv;
    } else if (r.code() == ErrorCode::kPermissionDenied) {
      Refused(annotate_, r.error(), "custom metadata (provider id, credentials version) on each secret");
    } else {
      spdlog::debug("custom metadata of '{}' not written: {}", name, r.error().message);
    }
    return std::to_string(version);
  }

  // A listed name: nullopt when its latest version is deleted.
  Result<std::optional<Listed>> Dated(const std::string& name) {
    if (metadata_read_.load(std::memory_order_relaxed)) {
      auto r = client_.Call({"kv.metadata-read", "GET", Path("metadata", name), nullptr, "", "read"});
      if (r.ok()) {
        auto listed = FromMetadata(name, *r);
        // Without delete/ a tombstone is a live version to metadata/.
        if (!listed || delete_versions_.load(std::memory_order_relaxed)) return listed;
        DYAD_ASSIGN_OR_RETURN(Latest latest, Read(name));
        Cleanse(latest.secret.value);
        if (latest.state != Latest::kLive) return std::optional<Listed>();
        return listed;
      }
      if (r.code() == ErrorCode::kNotFound) return std::optional<Listed>();
      if (r.code() != ErrorCode::kPermissionDenied) return r.error();
      Refused(metadata_read_, r.error(), "dating listed secrets without reading their data");
    }
    DYAD_ASSIGN_OR_RETURN(Latest latest, Read(name));
    Cleanse(latest.secret.value);
    if (latest.state != Latest::kLive) return std::optional<Listed>();
    return std::optional<Listed>(Listed{name, std::nullopt});
  }

  static std::optional<Listed> FromMetadata(const std::string& name, const json& answer) {
    Listed out{name, std::nullopt};
    auto d = answer.find("data");
    if (d == answer.end() || !d->is_object()) return out;  // cannot tell: listed, undated
    auto current = d->find("current_version");
    auto versions = d->find("versions");
    if (current == d->end() || !current->is_number_unsigned() || versions == d->end() || !versions->is_object()) {
      return out;
    }
    if (current->get<uint64_t>() == 0) return std::nullopt;  // metadata alone, never a version
    auto latest = versions->find(std::to_string(current->get<uint64_t>()));
    if (latest == versions->end() || !latest->is_object()) return out;
    auto deletion = latest->find("deletion_time");
    auto destroyed = latest->find("destroyed");
    if ((deletion != latest->end() && deletion->is_string() && !deletion->get<std::string>().empty()) ||
        (destroyed != latest->end() && destroyed->is_boolean() && destroyed->get<bool>())) {
      return std::nullopt;
    }
    if (auto created = latest->find("created_time"); created != latest->end() && created->is_string()) {
      out.changed_at = ParseIso8601(created->get<std::string>());
    }
    return out;
  }

  // A permission the policy lacks: not asked for again, said once.
  static void Refused(std::atomic<bool>& flag, const Error& e, const char* feature) {
    if (flag.exchange(false)) spdlog::warn("Vault KV: {} is off: {}", feature, e.message);
  }

  const std::string name_ = "vault";
  KvStoreOptions options_;
  const PrefixNaming naming_;
  VaultClient& client_;
  // Optional capabilities, each turned off by its first refusal.
  std::atomic<bool> annotate_{true};         // update on metadata/<name>
  std::atomic<bool> metadata_delete_{true};  // delete on metadata/<name>
  std::atomic<bool> metadata_read_{true};    // read on metadata/<name>
  std::atomic<bool> destroy_{true};          // update on destroy/<name>
  std::atomic<bool> delete_versions_{true};  // update on delete/<name>
  Mutex mu_;
  // The credentials version last written to each name's custom metadata.
  std::map<std::string, std::optional<int64_t>> annotated_ DYAD_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<SecretStore> NewVaultKvStore(KvStoreOptions options, VaultClient& client) {
  return std::make_unique<KvStore>(std::move(options), client);
}

}  // namespace dyad
