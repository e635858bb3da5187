#include "backends/aws/secrets_manager_store.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>

#include "backends/aws/secret_value_answer.h"
#include "core/encoding.h"
#include "core/mutex.h"
#include "core/parallel.h"
#include "core/random.h"

namespace dyad {
namespace {

using nlohmann::json;

Result<json> ParseAnswer(const std::string& action, const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  if (!j.is_object()) return MakeError(ErrorCode::kUnavailable, action + ": the answer is not a JSON object");
  return j;
}

std::string StringField(const json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

constexpr size_t kMaxSecretString = 65536;  // Secrets Manager's SecretString limit, in bytes

// What SecretString takes: UTF-8 text of at most 64 KiB. Refused before it
// is sent, never mangled.
Status CheckValue(const std::string& name, std::string_view value) {
  if (value.size() > kMaxSecretString) {
    return MakeError(ErrorCode::kInvalidArgument, "secret '" + name + "' would be " + std::to_string(value.size()) +
                                                      " bytes; AWS Secrets Manager stores at most " +
                                                      std::to_string(kMaxSecretString));
  }
  if (!IsValidUtf8(value)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "secret '" + name + "' is not UTF-8 text, which is all a SecretString holds");
  }
  return OkStatus();
}

// The later of CreatedDate and LastChangedDate (epoch seconds, fractional).
std::optional<std::chrono::system_clock::time_point> ChangedAt(const json& secret) {
  std::optional<double> latest;
  for (const char* field : {"CreatedDate", "LastChangedDate"}) {
    auto it = secret.find(field);
    if (it != secret.end() && it->is_number() && (!latest || it->get<double>() > *latest)) latest = it->get<double>();
  }
  if (!latest) return std::nullopt;
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(*latest)));
}

// GetSecretValue's request as nlohmann/json writes it, without building a
// document when the name needs no escaping (the gateway's names never do).
std::string GetSecretValueRequest(const std::string& name) {
  const bool plain = std::all_of(name.begin(), name.end(),
                                 [](char c) { return c >= 0x20 && c < 0x7F && c != '"' && c != '\\'; });
  if (!plain) return json{{"SecretId", name}, {"VersionStage", "AWSCURRENT"}}.dump();
  std::string body;
  body.reserve(name.size() + 48);
  body.append(R"({"SecretId":")").append(name).append(R"(","VersionStage":"AWSCURRENT"})");
  return body;
}

bool Mentions(const Error& e, std::string_view words) { return e.message.find(words) != std::string::npos; }

// A secret scheduled for deletion answers InvalidRequestException; to the
// gateway it is gone.
Error Gone(Error e) {
  if (e.code == ErrorCode::kFailedPrecondition && Mentions(e, "deletion")) e.code = ErrorCode::kNotFound;
  return e;
}

class SecretsManagerStore final : public SecretStore {
 public:
  SecretsManagerStore(SecretsManagerOptions options, std::unique_ptr<AwsJsonClient> client)
      : naming_(options.prefix, "/"), options_(std::move(options)), client_(std::move(client)) {}

  const std::string& Name() const override { return name_; }
  std::string SecretName(std::string_view provider_id) const override { return naming_.Name(provider_id); }
  std::optional<std::string> ProviderIdOf(std::string_view name) const override { return naming_.IdOf(name); }
  std::string ProbeName(std::string_view tag) const override { return naming_.Probe(tag); }
  bool HasConditionalWrites() const override { return conditional_.load(std::memory_order_acquire); }

  Result<StoredSecret> Get(const std::string& name) override {
    // AWSCURRENT named explicitly: the default, and moto resolves a label
    // moved by UpdateSecretVersionStage only when it is named.
    // The answer is read in one pass, without a document (secret_value_answer.h).
    auto text = client_->Call("GetSecretValue", GetSecretValueRequest(name));
    if (!text.ok()) return Gone(text.error());
    auto answer = ParseSecretValueAnswer(*text);
    Cleanse(*text);
    if (!answer.ok()) return answer.error();
    if (!answer->secret_string) {
      return MakeError(ErrorCode::kFailedPrecondition, "secret '" + name + "' holds no SecretString");
    }
    StoredSecret out{std::move(*answer->secret_string), std::move(answer->version_id)};
    Cleanse(*answer->secret_string);  // what a short value's move leaves behind
    return out;
  }

  Result<std::string> Create(const std::string& name, std::string_view value) override {
    DYAD_RETURN_IF_ERROR(CheckValue(name, value));
    const std::string version = NewUuid(DefaultRandom());
    json req = {{"Name", name},
                {"SecretString", value},
                {"ClientRequestToken", version},
                {"Description", "dyad-gateway provider credentials"}};
    if (!untagged_.load(std::memory_order_relaxed)) {
      req["Tags"] = json::array({{{"Key", "managed-by"}, {"Value", "dyad-gateway"}}});
    }
    if (!options_.kms_key_id.empty()) req["KmsKeyId"] = options_.kms_key_id;
    if (!options_.replica_regions.empty()) {
      // Each replica under its region's aws/secretsmanager key: in envelope
      // mode the value is sealed by ENCRYPTION_KEY_ID already.
      json replicas = json::array();
      for (const auto& region : options_.replica_regions) replicas.push_back({{"Region", region}});
      req["AddReplicaRegions"] = std::move(replicas);
    }
    auto r = Send("CreateSecret", req);
    if (!r.ok() && r.code() == ErrorCode::kPermissionDenied && Mentions(r.error(), "TagResource")) {
      // Tagging at create needs secretsmanager:TagResource, which the
      // minimal policy lacks: the tag is a courtesy, the secret is not.
      if (!untagged_.exchange(true)) {
        spdlog::warn("secretsmanager:TagResource is not permitted: secrets are created without the "
                     "managed-by=dyad-gateway tag ({})", r.error().message);
      }
      req.erase("Tags");
      r = Send("CreateSecret", req);
    }
    if (!r.ok() && r.code() == ErrorCode::kFailedPrecondition && Mentions(r.error(), "scheduled for deletion")) {
      return MakeError(ErrorCode::kAlreadyExists, r.error().message);
    }
    if (!r.ok()) return r.error();
    if (!options_.replica_regions.empty()) {
      MutexLock lock(&sample_mu_);
      last_created_ = name;
    }
    return VersionOf(*r, version);
  }

  bool KeepsReplicas() const override { return !options_.replica_regions.empty(); }

  Result<ReplicationReport> CheckReplication() override {
    if (!KeepsReplicas()) return SecretStore::CheckReplication();
    ReplicationReport report;
    {
      MutexLock lock(&sample_mu_);
      report.sample = last_created_;
    }
    if (report.sample.empty()) {
      // One page of one secret: the newest, as ListSecrets sorts by
      // CreatedDate. Replicas are made at create, so an older secret may
      // predate AWS_SECRETS_REPLICA_REGIONS and say nothing of the newer ones.
      auto answer = Send("ListSecrets", ListRequest(1, "desc"));
      if (!answer.ok()) return ListRefused(answer.error());
      const std::string& prefix = naming_.providers_prefix();
      if (auto list = answer->find("SecretList"); list != answer->end() && list->is_array() && !list->empty()) {
        std::string n = StringField(list->front(), "Name");
        if (n.starts_with(prefix)) report.sample = std::move(n);  // the filter ignores case; we do not
      }
      if (report.sample.empty()) return report;
      MutexLock lock(&sample_mu_);
      if (last_created_.empty()) last_created_ = report.sample;
    }
    auto described = Send("DescribeSecret", {{"SecretId", report.sample}});
    if (!described.ok()) {
      if (Gone(described.error()).code == ErrorCode::kNotFound) {  // deleted since: pick another next time
        MutexLock lock(&sample_mu_);
        if (last_created_ == report.sample) last_created_.clear();
      }
      return described.error();
    }
    auto status = described->find("ReplicationStatus");
    for (const auto& region : options_.replica_regions) {
      ReplicaStatus r{region, "Missing", "not a replica of this secret (created before the region was listed?)"};
      if (status != described->end() && status->is_array()) {
        for (const auto& entry : *status) {
          if (!entry.is_object() || StringField(entry, "Region") != region) continue;
          r.status = StringField(entry, "Status");
          r.message = StringField(entry, "StatusMessage");
        }
      }
      report.replicas.push_back(std::move(r));
    }
    return report;
  }

  Result<std::string> Replace(const std::string& name, std::string_view value, const std::string& version) override {
    DYAD_RETURN_IF_ERROR(CheckValue(name, value));
    if (!HasConditionalWrites()) return NotConditional();
    json put = {{"SecretId", name},
                {"SecretString", value},
                {"ClientRequestToken", NewUuid(DefaultRandom())},
                {"VersionStages", json::array({"dyad-pending"})}};
    auto staged = Send("PutSecretValue", put);
    if (!staged.ok()) return Unconditional(Gone(staged.error()), "PutSecretValue");
    const std::string next = StringField(*staged, "VersionId");
    auto moved = Send("UpdateSecretVersionStage", {{"SecretId", name},
                                                   {"VersionStage", "AWSCURRENT"},
                                                   {"MoveToVersionId", next},
                                                   {"RemoveFromVersionId", version}});
    if (moved.ok()) return next;
    // kInvalidArgument: AWSCURRENT is no longer on `version`.
    if (moved.code() == ErrorCode::kInvalidArgument) {
      return MakeError(ErrorCode::kConflict, "secret '" + name + "' was changed by another writer: " +
                                                 moved.error().message);
    }
    return Unconditional(Gone(moved.error()), "UpdateSecretVersionStage");
  }

  Result<std::string> Overwrite(const std::string& name, std::string_view value) override {
    DYAD_RETURN_IF_ERROR(CheckValue(name, value));
    return Update(name, value);
  }

  Status Put(const std::string& name, std::string_view value) override {
    DYAD_RETURN_IF_ERROR(CheckValue(name, value));
    Error last = MakeError(ErrorCode::kInternal, "unset");
    for (int attempt = 0; attempt < 2; ++attempt) {  // the second: created by someone else meanwhile
      json req = {{"SecretId", name}, {"SecretString", value}, {"ClientRequestToken", NewUuid(DefaultRandom())}};
      auto r = Send(HasConditionalWrites() ? "PutSecretValue" : "UpdateSecret", req);
      Cleanse(req["SecretString"].get_ref<std::string&>());
      if (r.ok()) return OkStatus();
      if (Error e = Gone(r.error()); e.code != ErrorCode::kNotFound) return e;
      auto created = Create(name, value);
      if (created.ok() || created.code() != ErrorCode::kAlreadyExists) {
        return created.ok() ? OkStatus() : Status(created.error());
      }
      last = created.error();
    }
    return last;
  }

  Status Delete(const std::string& name) override {
    return Remove(name, {{"SecretId", name}, {"RecoveryWindowInDays", options_.recovery_window_days}});
  }

  Status DeleteNow(const std::string& name) override {
    return Remove(name, {{"SecretId", name}, {"ForceDeleteWithoutRecovery", true}});
  }

  // ListSecrets gives CreatedDate and LastChangedDate (epoch seconds); the
  // later of the two is the secret's age.
  Result<std::vector<Listed>> List() override {
    const std::string& prefix = naming_.providers_prefix();
    std::vector<Listed> out;
    json req = ListRequest(100, "asc");
    for (int page = 0; page < 100000; ++page) {
      auto answer = Send("ListSecrets", req);
      if (!answer.ok()) return ListRefused(answer.error());
      if (auto list = answer->find("SecretList"); list != answer->end() && list->is_array()) {
        for (const auto& s : *list) {
          std::string n = StringField(s, "Name");
          // The service's name filter is a prefix match but not case-sensitive.
          if (n.starts_with(prefix)) out.push_back({std::move(n), ChangedAt(s)});
        }
      }
      std::string next = StringField(*answer, "NextToken");
      if (next.empty()) return out;
      req["NextToken"] = next;
    }
    return MakeError(ErrorCode::kInternal, "ListSecrets: too many pages");
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
      auto r = Replace(items[i].name, items[i].value, items[i].version);  // never unconditional
      if (r.ok()) replaced[i] = 1;
      else if (r.code() != ErrorCode::kConflict && r.code() != ErrorCode::kNotFound) outcome[i] = r.error();
    });
    for (const Status& s : outcome) {
      if (!s.ok()) return s.error();
    }
    return std::vector<bool>(replaced.begin(), replaced.end());
  }

 private:
  Result<json> Send(const std::string& action, const json& request) {
    std::string body = request.dump();
    auto text = client_->Call(action, body);
    Cleanse(body);
    if (!text.ok()) return text.error();
    auto answer = ParseAnswer(action, *text);
    Cleanse(*text);
    return answer;
  }

  // ListSecrets of this store's secrets, `max` a page, by CreatedDate in `order`.
  json ListRequest(int max, const char* order) const {
    json req = {{"MaxResults", max}, {"SortOrder", order}};
    req["Filters"] = json::array({{{"Key", "name"}, {"Values", json::array({naming_.providers_prefix()})}}});
    return req;
  }

  static Error ListRefused(Error e) {
    if (NotPermitted(e)) {
      e.message = "secretsmanager:ListSecrets is not permitted (`secrets gc`, counting orphans and the replica check "
                  "after a restart need it): " + e.message;
    }
    return e;
  }

  static std::string VersionOf(const json& answer, const std::string& requested) {
    std::string v = StringField(answer, "VersionId");
    return v.empty() ? requested : v;
  }

  // UpdateSecret: a new version that takes AWSCURRENT, whatever holds it.
  Result<std::string> Update(const std::string& name, std::string_view value) {
    const std::string version = NewUuid(DefaultRandom());
    auto r = Send("UpdateSecret", {{"SecretId", name}, {"SecretString", value}, {"ClientRequestToken", version}});
    if (!r.ok()) return Gone(r.error());
    return VersionOf(*r, version);
  }

  // A conditional write refused for want of `action`: the store goes on
  // without conditional writes, and says so once.
  Error Unconditional(Error e, const char* action) {
    // Only a policy that lacks the action: an expired token or a bad
    // signature is denied too, and says nothing about the policy.
    if (e.code != ErrorCode::kPermissionDenied || !Mentions(e, std::string("secretsmanager:") + action)) return e;
    if (conditional_.exchange(false)) {
      spdlog::warn("secretsmanager:{} is not permitted: credential writes and re-encryption now use UpdateSecret "
                   "under the registry's per-provider lease instead of a compare-and-swap ({})",
                   action, e.message);
    }
    return NotConditional();
  }

  static Error NotConditional() {
    return MakeError(ErrorCode::kUnimplemented, "no conditional write (secretsmanager:PutSecretValue or "
                                                "UpdateSecretVersionStage is not permitted): write under the lease");
  }

  Status Remove(const std::string& name, const json& request) {
    auto r = Send("DeleteSecret", request);
    if (!r.ok() && HasReplicasLeft(r.error())) {
      // A primary secret with replicas cannot be deleted: its replicas go
      // first (all of them: the ones listed now and any made before), then
      // the delete is made once more.
      DYAD_RETURN_IF_ERROR(RemoveReplicas(name));
      r = Send("DeleteSecret", request);
      if (!r.ok() && !(r.code() == ErrorCode::kFailedPrecondition && Mentions(r.error(), "deletion"))) {
        // Said, so that the state is known: the secret stays, unreplicated.
        Error e = r.error();
        e.message = "its replica regions were removed, but the delete then failed: " + e.message;
        return e;
      }
    }
    if (r.ok()) return OkStatus();
    if (r.code() == ErrorCode::kFailedPrecondition && Mentions(r.error(), "deletion")) return OkStatus();  // already
    return r.error();
  }

  // DeleteSecret's refusal of a secret that still has replicas: "You can't
  // delete secret <arn> that still has replica regions [r1, r2]." AWS answers
  // it as InvalidParameterException (moto too); InvalidRequestException is
  // taken as well. Any other refusal is not this one.
  static bool HasReplicasLeft(const Error& e) {
    return (e.code == ErrorCode::kInvalidArgument || e.code == ErrorCode::kFailedPrecondition) &&
           Mentions(e, "still has replica regions");
  }

  // DescribeSecret's ReplicationStatus names the replicas;
  // RemoveRegionsFromReplication removes them all.
  Status RemoveReplicas(const std::string& name) {
    auto described = Send("DescribeSecret", {{"SecretId", name}});
    if (!described.ok()) return Gone(described.error());
    json regions = json::array();
    if (auto status = described->find("ReplicationStatus"); status != described->end() && status->is_array()) {
      for (const auto& entry : *status) {
        if (!entry.is_object()) continue;
        std::string region = StringField(entry, "Region");
        if (!region.empty()) regions.push_back(std::move(region));
      }
    }
    if (regions.empty()) return OkStatus();  // removed meanwhile: the delete is tried again
    auto removed = Send("RemoveRegionsFromReplication", {{"SecretId", name}, {"RemoveReplicaRegions", regions}});
    if (removed.ok()) return OkStatus();
    Error e = Gone(removed.error());
    if (NotPermitted(e)) {
      e.message = "secretsmanager:RemoveRegionsFromReplication is not permitted (deleting a secret that has replicas "
                  "needs it): " + e.message;
    }
    return e;
  }

  const std::string name_ = "aws";
  PrefixNaming naming_;
  SecretsManagerOptions options_;
  std::unique_ptr<AwsJsonClient> client_;
  std::atomic<bool> conditional_{true};
  std::atomic<bool> untagged_{false};  // TagResource was refused
  Mutex sample_mu_;
  std::string last_created_ DYAD_GUARDED_BY(sample_mu_);  // CheckReplication's sample
};

}  // namespace

std::unique_ptr<SecretStore> NewSecretsManagerStore(SecretsManagerOptions options,
                                                    std::unique_ptr<AwsJsonClient> client) {
  return std::make_unique<SecretsManagerStore>(std::move(options), std::move(client));
}

}  // namespace dyad
