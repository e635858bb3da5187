#include "backends/aws/secrets_manager_store.h"

#include <nlohmann/json.hpp>

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

Status CheckSize(const std::string& name, std::string_view value) {
  if (value.size() <= kMaxSecretString) return OkStatus();
  return MakeError(ErrorCode::kInvalidArgument, "secret '" + name + "' would be " + std::to_string(value.size()) +
                                                    " bytes; AWS Secrets Manager stores at most " +
                                                    std::to_string(kMaxSecretString));
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
      : options_(std::move(options)), client_(std::move(client)) {}

  const std::string& Name() const override { return name_; }

  Result<std::string> Get(const std::string& name) override {
    DYAD_ASSIGN_OR_RETURN(Current c, GetCurrent(name));
    return std::move(c.value);
  }

  Status Create(const std::string& name, std::string_view value) override {
    DYAD_RETURN_IF_ERROR(CheckSize(name, value));
    json req = {{"Name", name},
                {"SecretString", value},
                {"ClientRequestToken", NewUuid(DefaultRandom())},
                {"Description", "dyad-gateway provider credentials"},
                {"Tags", json::array({{{"Key", "managed-by"}, {"Value", "dyad-gateway"}}})}};
    if (!options_.kms_key_id.empty()) req["KmsKeyId"] = options_.kms_key_id;
    auto r = Send("CreateSecret", req);
    if (!r.ok() && r.code() == ErrorCode::kFailedPrecondition && Mentions(r.error(), "scheduled for deletion")) {
      return MakeError(ErrorCode::kAlreadyExists, r.error().message);
    }
    return r.ok() ? OkStatus() : Status(r.error());
  }

  Status Put(const std::string& name, std::string_view value) override {
    auto r = PutValue(name, value, nullptr);
    if (r.ok() || r.code() != ErrorCode::kNotFound) return r.ok() ? OkStatus() : Status(r.error());
    Status created = Create(name, value);
    if (created.ok() || created.code() != ErrorCode::kAlreadyExists) return created;
    auto again = PutValue(name, value, nullptr);  // created by someone else meanwhile
    return again.ok() ? OkStatus() : Status(again.error());
  }

  Status Delete(const std::string& name) override {
    return Remove(name, {{"SecretId", name}, {"RecoveryWindowInDays", options_.recovery_window_days}});
  }

  Status DeleteNow(const std::string& name) override {
    return Remove(name, {{"SecretId", name}, {"ForceDeleteWithoutRecovery", true}});
  }

  Result<std::vector<std::string>> List(std::string_view prefix) override {
    DYAD_ASSIGN_OR_RETURN(std::vector<Listed> listed, ListWithTimes(prefix));
    std::vector<std::string> names;
    for (auto& l : listed) names.push_back(std::move(l.name));
    return names;
  }

  // ListSecrets gives CreatedDate and LastChangedDate (epoch seconds); the
  // later of the two is the secret's age.
  Result<std::vector<Listed>> ListWithTimes(std::string_view prefix) override {
    std::vector<Listed> out;
    json req = {{"MaxResults", 100}, {"SortOrder", "asc"}};
    if (!prefix.empty()) req["Filters"] = json::array({{{"Key", "name"}, {"Values", json::array({prefix})}}});
    for (int page = 0; page < 100000; ++page) {
      DYAD_ASSIGN_OR_RETURN(json answer, Send("ListSecrets", req));
      if (auto list = answer.find("SecretList"); list != answer.end() && list->is_array()) {
        for (const auto& s : *list) {
          std::string n = StringField(s, "Name");
          // The service's name filter is a prefix match but not case-sensitive.
          if (n.starts_with(prefix)) out.push_back({std::move(n), ChangedAt(s)});
        }
      }
      std::string next = StringField(answer, "NextToken");
      if (next.empty()) return out;
      req["NextToken"] = next;
    }
    return MakeError(ErrorCode::kInternal, "ListSecrets: too many pages");
  }

  Result<std::vector<Result<std::string>>> GetMany(const std::vector<std::string>& names) override {
    std::vector<Result<std::string>> out(names.size(), Result<std::string>(std::string()));
    ParallelFor(names.size(), options_.parallelism, [&](size_t i) { out[i] = Get(names[i]); });
    return out;
  }

  // Compare-and-swap with version stages: the replacement is stored as a new
  // version labelled "dyad-rewrap", then AWSCURRENT moves to it only if it is
  // still on the version that held `expected` (UpdateSecretVersionStage
  // refuses otherwise), so a credential written meanwhile is never lost.
  Result<std::vector<bool>> ReplaceIfUnchanged(const std::vector<Swap>& items) override {
    std::vector<Status> outcome(items.size(), OkStatus());
    std::vector<char> replaced(items.size(), 0);
    ParallelFor(items.size(), options_.parallelism, [&](size_t i) {
      auto r = Swap1(items[i]);
      if (r.ok()) replaced[i] = *r;
      else outcome[i] = r.error();
    });
    for (const Status& s : outcome) {
      if (!s.ok()) return s.error();
    }
    return std::vector<bool>(replaced.begin(), replaced.end());
  }

 private:
  struct Current {
    std::string value;
    std::string version_id;
  };

  Result<bool> Swap1(const Swap& item) {
    auto current = GetCurrent(item.name);
    if (!current.ok()) {
      if (current.code() == ErrorCode::kNotFound) return false;
      return current.error();
    }
    if (current->value != item.expected) return false;
    std::string staged;
    auto put = PutValue(item.name, item.replacement, &staged);
    if (!put.ok()) return put.error();
    auto moved = Send("UpdateSecretVersionStage", {{"SecretId", item.name},
                                                   {"VersionStage", "AWSCURRENT"},
                                                   {"MoveToVersionId", staged},
                                                   {"RemoveFromVersionId", current->version_id}});
    if (moved.ok()) return true;
    // kInvalidArgument: AWSCURRENT moved on meanwhile; kNotFound: deleted.
    if (moved.code() == ErrorCode::kInvalidArgument || moved.code() == ErrorCode::kNotFound) return false;
    return moved.error();
  }

  Result<json> Send(const std::string& action, const json& request) {
    std::string body = request.dump();
    auto text = client_->Call(action, body);
    Cleanse(body);
    if (!text.ok()) return text.error();
    auto answer = ParseAnswer(action, *text);
    Cleanse(*text);
    return answer;
  }

  static Result<Current> FromValue(const std::string& name, json& v) {
    auto it = v.find("SecretString");
    if (it == v.end() || !it->is_string()) {
      return MakeError(ErrorCode::kFailedPrecondition, "secret '" + name + "' holds no SecretString");
    }
    Current c{it->get<std::string>(), StringField(v, "VersionId")};
    Cleanse(it->get_ref<std::string&>());
    return c;
  }

  Result<Current> GetCurrent(const std::string& name) {
    // AWSCURRENT named explicitly: the default, and moto resolves a label
    // moved by UpdateSecretVersionStage only when it is named.
    auto answer = Send("GetSecretValue", {{"SecretId", name}, {"VersionStage", "AWSCURRENT"}});
    if (!answer.ok()) return Gone(answer.error());
    return FromValue(name, *answer);
  }

  // PutSecretValue; with `staged`, the version gets only the label
  // "dyad-rewrap" (AWSCURRENT stays) and its id is returned there.
  Result<json> PutValue(const std::string& name, std::string_view value, std::string* staged) {
    DYAD_RETURN_IF_ERROR(CheckSize(name, value));
    json req = {{"SecretId", name}, {"SecretString", value}, {"ClientRequestToken", NewUuid(DefaultRandom())}};
    if (staged) req["VersionStages"] = json::array({"dyad-rewrap"});
    auto answer = Send("PutSecretValue", req);
    if (!answer.ok()) return Gone(answer.error());
    if (staged) *staged = StringField(*answer, "VersionId");
    return answer;
  }

  Status Remove(const std::string& name, const json& request) {
    auto r = Send("DeleteSecret", request);
    if (r.ok()) return OkStatus();
    if (r.code() == ErrorCode::kFailedPrecondition && Mentions(r.error(), "deletion")) return OkStatus();  // already
    return r.error();
  }

  const std::string name_ = "aws";
  SecretsManagerOptions options_;
  std::unique_ptr<AwsJsonClient> client_;
};

}  // namespace

std::unique_ptr<SecretStore> NewSecretsManagerStore(SecretsManagerOptions options,
                                                    std::unique_ptr<AwsJsonClient> client) {
  return std::make_unique<SecretsManagerStore>(std::move(options), std::move(client));
}

}  // namespace dyad
