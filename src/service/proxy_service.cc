#include "service/proxy_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <boost/json/basic_parser_impl.hpp>
#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "core/parse_int.h"
#include "core/secret_bytes.h"
#include "core/time_format.h"
#include "transport/upstream_target.h"
#include "transport/upstream_wire.h"

namespace dyad {
namespace {

using nlohmann::json;

// ASCII only (header names are tokens), without the locale's tolower():
// every header of every /v1 call is compared with a dozen names.
char AsciiLowerChar(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (AsciiLowerChar(a[i]) != AsciiLowerChar(b[i])) return false;
  }
  return true;
}

bool StartsWithI(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && IEquals(s.substr(0, prefix.size()), prefix);
}

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

// How deep a /v1 body may nest. Boost.JSON's parser recurses per level, so
// the limit keeps a hostile body off the call stack; OpenAI's own schemas
// nest a handful of levels.
constexpr size_t kMaxBodyDepth = 256;

// Counts the top-level "model" keys of a JSON object and keeps the first
// one's value, without building a document: a Boost.JSON basic_parser
// handler, about 7x faster per byte than nlohmann's SAX lexer (dyad_bench).
class ModelHandler {
 public:
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  bool on_document_begin(boost::json::error_code&) { return true; }
  bool on_document_end(boost::json::error_code&) { return true; }
  bool on_object_begin(boost::json::error_code&) {
    if (depth_ == 0) root_object = true;
    return Open();
  }
  bool on_object_end(std::size_t, boost::json::error_code&) { return Close(); }
  bool on_array_begin(boost::json::error_code&) { return Open(); }
  bool on_array_end(std::size_t, boost::json::error_code&) { return Close(); }
  // `n` counts the key's bytes so far: only a key of five can be "model".
  bool on_key_part(boost::json::string_view s, std::size_t n, boost::json::error_code&) {
    if (depth_ == 1 && n <= 5) key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(boost::json::string_view s, std::size_t n, boost::json::error_code&) {
    if (depth_ == 1) {
      at_model_ = n == 5 && key_.append(s.data(), s.size()) == "model";
      if (at_model_) ++models;
    }
    key_.clear();
    return true;
  }
  bool on_string_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    if (TakesModel()) value_.append(s.data(), s.size());
    return true;
  }
  bool on_string(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    if (TakesModel()) model = value_.append(s.data(), s.size());
    value_.clear();
    return Value(true);
  }
  bool on_number_part(boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_int64(int64_t, boost::json::string_view, boost::json::error_code&) { return Value(false); }
  bool on_uint64(uint64_t, boost::json::string_view, boost::json::error_code&) { return Value(false); }
  bool on_double(double, boost::json::string_view, boost::json::error_code&) { return Value(false); }
  bool on_bool(bool, boost::json::error_code&) { return Value(false); }
  bool on_null(boost::json::error_code&) { return Value(false); }
  bool on_comment_part(boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_comment(boost::json::string_view, boost::json::error_code&) { return true; }

  bool root_object = false;
  int models = 0;
  std::optional<std::string> model;  // the first top-level "model" when it is a string
  bool model_not_string = false;

 private:
  // The first top-level "model" only: a second is refused anyway.
  bool TakesModel() const { return depth_ == 1 && at_model_ && models == 1 && !model; }
  bool Open() {
    Value(false);
    ++depth_;
    return true;
  }
  bool Close() {
    --depth_;
    return true;
  }
  bool Value(bool is_string) {
    if (depth_ == 1 && at_model_ && !is_string) model_not_string = true;
    if (depth_ == 1) at_model_ = false;
    return true;
  }
  size_t depth_ = 0;
  bool at_model_ = false;
  std::string key_, value_;
};

size_t SkipSpace(std::string_view s, size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

// The end (past the closing quote) of the string token at `i` (a '"').
size_t SkipString(std::string_view s, size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return s.size();
}

// The end of the value at `i` in valid JSON.
size_t SkipValue(std::string_view s, size_t i) {
  if (i >= s.size()) return i;
  if (s[i] == '"') return SkipString(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      char c = s[i];
      if (c == '"') {
        i = SkipString(s, i);
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    return i;
  }
  while (i < s.size() && std::string_view(",}] \t\r\n").find(s[i]) == std::string_view::npos) ++i;
  return i;
}

// The decoded text of a string token (quotes included).
std::string DecodeString(std::string_view token) {
  if (token.find('\\') == std::string_view::npos) return std::string(token.substr(1, token.size() - 2));
  json j = json::parse(token, nullptr, false);
  return j.is_string() ? j.get<std::string>() : std::string();
}

const std::vector<std::pair<std::string, std::string>> kNoHeaders;

bool Listed(const std::vector<std::string>* list, std::string_view name) {
  return !list || std::find(list->begin(), list->end(), name) != list->end();
}

}  // namespace

Result<ModelField> FindModel(std::string_view body) {
  // JSON text exchanged between systems carries no byte order mark (RFC
  // 8259 §8.1), and OpenAI refuses one; named rather than skipped.
  if (body.starts_with("\xEF\xBB\xBF")) {
    return Invalid("the request body starts with a UTF-8 byte order mark (EF BB BF); send the JSON without it");
  }
  if (SkipSpace(body, 0) == body.size()) return Invalid("the request body is empty; send a JSON object");
  boost::json::parse_options options;
  options.max_depth = kMaxBodyDepth;
  boost::json::basic_parser<ModelHandler> parser(options);
  boost::json::error_code ec;
  const size_t parsed = parser.write_some(false, body.data(), body.size(), ec);
  if (ec == boost::json::error::too_deep) {
    return Invalid("the request body is nested deeper than " + std::to_string(kMaxBodyDepth) + " levels");
  }
  if (ec || parsed != body.size()) {
    return Invalid("the request body is not valid JSON (at byte " + std::to_string(parsed) + ")");
  }
  ModelHandler& sax = parser.handler();
  if (!sax.root_object) return Invalid("the request body must be a JSON object");
  if (sax.models == 0) return Invalid("model: required");
  if (sax.models > 1) return Invalid("model: given more than once");
  if (sax.model_not_string || !sax.model || sax.model->empty()) return Invalid("model: must be a non-empty string");
  // The body is valid JSON: find the token of that one top-level "model".
  ModelField field;
  field.value = std::move(*sax.model);
  size_t i = SkipSpace(body, 0) + 1;  // past '{'
  while (true) {
    i = SkipSpace(body, i);
    if (i >= body.size() || body[i] != '"') break;
    size_t key_end = SkipString(body, i);
    bool is_model = DecodeString(body.substr(i, key_end - i)) == "model";
    i = SkipSpace(body, key_end) + 1;  // past ':'
    i = SkipSpace(body, i);
    size_t value_end = SkipValue(body, i);
    // The token found must be the value the parser read: ReplaceModel
    // rewrites it, so a disagreement must not pick another one.
    if (is_model) {
      if (DecodeString(body.substr(i, value_end - i)) != field.value) break;
      field.begin = i;
      field.end = value_end;
      return field;
    }
    i = SkipSpace(body, value_end);
    if (i < body.size() && body[i] == ',') ++i;
  }
  // The parser and this scan disagree: refused as the client's, never a 500.
  return Invalid("the request body is not JSON this gateway can forward");
}

std::string ReplaceModel(std::string_view body, const ModelField& field, std::string_view model) {
  std::string token = json(std::string(model)).dump(-1, ' ', false, json::error_handler_t::replace);
  std::string out;
  out.reserve(body.size() - (field.end - field.begin) + token.size());
  out.append(body.substr(0, field.begin));
  out.append(token);
  out.append(body.substr(field.end));
  return out;
}

namespace {

// The header names a Connection header lists: hop-by-hop too (RFC 9110 §7.6.1).
std::vector<std::string_view> ConnectionNamed(const std::vector<std::pair<std::string, std::string>>& headers) {
  std::vector<std::string_view> named;
  for (const auto& [name, value] : headers) {
    if (IEquals(name, "connection")) ForEachListElement(value, [&](std::string_view token) { named.push_back(token); });
  }
  return named;
}

}  // namespace

HttpHeaders ForwardableHeaders(const std::vector<std::pair<std::string, std::string>>& client,
                               const HttpHeaders& injected) {
  const std::vector<std::string_view> named = ConnectionNamed(client);
  HttpHeaders out;
  out.reserve(client.size() + injected.size());  // room for the injected ones, added after
  for (const auto& [name, value] : client) {
    const LowerName lower(name);
    const std::string_view n = lower.view();
    // (A name longer than the buffer can only be a proxy-* one of them.)
    bool drop = lower.full() ? n.starts_with("proxy-") : IsSetByClient(n) || n == "authorization" || n == "cookie";
    for (std::string_view c : named) drop = drop || IEquals(name, c);
    for (const auto& [inj, unused] : injected) drop = drop || IEquals(name, inj);
    if (!drop) out.emplace_back(name, value);
  }
  return out;
}

bool IsPassableUpstreamHeader(std::string_view name, std::string_view value) {
  static constexpr std::string_view kNever[] = {
      // hop-by-hop (RFC 9110 §7.6.1) and framing: the gateway's own connection's
      "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "content-length",
      // the gateway's origin is not the upstream's: its cookies, CORS, HSTS,
      // alternative services and site data are not the upstream's to set
      "set-cookie", "set-cookie2", "strict-transport-security", "alt-svc", "clear-site-data"};
  if (!IsHttpToken(name) || !IsHttpFieldValue(value)) return false;
  if (StartsWithI(name, "proxy-") || StartsWithI(name, "access-control-")) return false;
  for (std::string_view never : kNever) {
    if (IEquals(name, never)) return false;
  }
  return true;
}


HttpHeaders PassableUpstreamHeaders(const HttpHeaders& upstream) {
  const std::vector<std::string_view> named = ConnectionNamed(upstream);
  HttpHeaders out;
  out.reserve(upstream.size());
  for (const auto& [name, value] : upstream) {
    if (!IsPassableUpstreamHeader(name, value) || IEquals(name, "content-type")) continue;
    bool connection_named = false;
    for (std::string_view n : named) connection_named = connection_named || IEquals(name, n);
    if (connection_named) continue;
    // The gateway's own X-Request-Id names this request; the upstream's is kept beside it.
    out.emplace_back(IEquals(name, "x-request-id") ? std::string("x-upstream-request-id") : name, value);
  }
  return out;
}

struct ProxyService::Catalog {
  struct Model {
    std::string dyad_id, adapter_id;
  };
  struct Entry {
    std::string id, slug, type;
    bool enabled = false;
    int64_t created = 0;
    std::vector<Model> models;
    std::optional<AdapterConfig> adapter;  // http-sdk and proxy, when it parses
    bool preparable = false;  // Prepare may make its calls (ProxyOptions::prepare)
    std::string adapter_error;
    // Every header the credential may set (the adapter's auth header and
    // credentialHeaders), values empty: never taken from the client.
    HttpHeaders reserved;
    const Model* Find(std::string_view dyad_id) const {
      for (const auto& m : models) {
        if (m.dyad_id == dyad_id) return &m;
      }
      return nullptr;
    }
  };
  std::vector<Entry> providers;                                     // creation order
  std::unordered_map<std::string, std::vector<size_t>> by_model;    // dyadModelId → enabled providers
  std::unordered_map<std::string, size_t> by_slug;
  Clock::Instant loaded;  // coarse: for catalog_ttl
  Clock::Instant began;   // when its registry read began (precise: Credentials::read_at)
  uint64_t epoch = 0;     // catalog_epoch_ when the read began
};

ProxyService::ProxyService(ProxyOptions options, ProviderRepository& repo, SecretsService& secrets,
                           UpstreamClient& upstream, Metrics& metrics, const Clock& clock)
    : options_(std::move(options)),
      repo_(repo),
      secrets_(secrets),
      upstream_(upstream),
      metrics_(metrics),
      clock_(clock) {}

ProxyService::~ProxyService() = default;

void ProxyService::InvalidateCatalog() {
  MutexLock lock(&mu_);
  catalog_.reset();
  ++catalog_epoch_;
}

int ProxyService::CatalogWaiters() {
  MutexLock lock(&mu_);
  return catalog_waiters_;
}

namespace {

using Catalog = ProxyService::Catalog;

Status LoadCatalog(ProviderRepository& repo, const ProxyOptions& options, Catalog& cat) {
  const UpstreamPolicy& policy = options.policy;
  return ForEachProvider(repo, [&](const Provider& p) {
    Catalog::Entry e;
    e.id = p.id;
    e.slug = p.slug;
    e.type = p.type;
    e.enabled = p.enabled;
    if (auto t = ParseIso8601(p.created_at)) {
      e.created = std::chrono::duration_cast<std::chrono::seconds>(t->time_since_epoch()).count();
    }
    json models = json::parse(p.models_json, nullptr, false);
    if (models.is_array()) {
      for (const auto& m : models) {
        if (!m.is_object() || !m.contains("dyadModelId") || !m["dyadModelId"].is_string()) continue;
        std::string dyad = m["dyadModelId"].get<std::string>();
        std::string adapter = m.contains("adapterModelId") && m["adapterModelId"].is_string()
                                  ? m["adapterModelId"].get<std::string>()
                                  : dyad;
        e.models.push_back({std::move(dyad), std::move(adapter)});
      }
    }
    if (UsesUpstream(p.type)) {
      auto adapter = ParseAdapterConfig(p.adapter_config_json, policy);
      if (adapter.ok()) {
        e.adapter = std::move(adapter).value();
        auto target = ParseUpstreamTarget(e.adapter->base_url);
        e.preparable = options.prepare && target.ok() && IsPlainNumericTarget(*target);
        e.reserved.emplace_back(e.adapter->auth.header, "");
        for (const auto& [field, header] : e.adapter->credential_headers) e.reserved.emplace_back(header, "");
      } else {
        e.adapter_error = adapter.error().message;
      }
    }
    size_t index = cat.providers.size();
    cat.by_slug[e.slug] = index;
    if (e.enabled) {
      for (const auto& m : e.models) {
        auto& list = cat.by_model[m.dyad_id];
        if (std::find(list.begin(), list.end(), index) == list.end()) list.push_back(index);
      }
    }
    cat.providers.push_back(std::move(e));
    return true;
  });
}

}  // namespace

bool ProxyService::CatalogFresh(Clock::Instant now) const {
  return catalog_ && catalog_->epoch == catalog_epoch_ && now - catalog_->loaded < options_.catalog_ttl;
}

Result<std::shared_ptr<const ProxyService::Catalog>> ProxyService::Snapshot(
    std::optional<Clock::Instant> begun_after) {
  const auto now = clock_.CoarseNow();
  uint64_t epoch = 0;
  Clock::Instant began;
  {
    MutexLock lock(&mu_);
    // Fresh; or, asked for one begun after a key's read, one whose registry
    // read began after it (a read in flight that began before it is waited
    // for, then another made).
    auto usable = [&]() DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (!begun_after) return CatalogFresh(now);
      return catalog_ && catalog_->epoch == catalog_epoch_ && catalog_->began > *begun_after;
    };
    // Single flight: while one request reads the registry, the others wait
    // for its result (its catalog, or its error) rather than read it too.
    while (!usable() && catalog_loading_) {
      const uint64_t loads = catalog_loads_;
      ++catalog_waiters_;
      while (catalog_loading_ && catalog_loads_ == loads) catalog_loaded_.Wait(&mu_);
      --catalog_waiters_;
      if (catalog_loads_ != loads && !usable() && catalog_error_) return *catalog_error_;
    }
    if (usable()) return catalog_;
    catalog_loading_ = true;
    began = clock_.Now();
    epoch = catalog_epoch_;
  }
  auto cat = std::make_shared<Catalog>();
  cat->loaded = now;
  cat->began = began;
  cat->epoch = epoch;
  Status listed = OkStatus();
  try {  // whatever happens, the waiters hear of it (a throw would leave them waiting)
    listed = LoadCatalog(repo_, options_, *cat);
  } catch (const std::exception& e) {
    listed = MakeError(ErrorCode::kInternal, std::string("reading the provider catalog failed: ") + e.what());
  }
  MutexLock lock(&mu_);
  catalog_loading_ = false;
  ++catalog_loads_;
  catalog_loaded_.SignalAll();
  if (!listed.ok()) {
    catalog_error_ = listed.error();
    return listed.error();
  }
  catalog_error_.reset();
  catalog_ = cat;
  return std::shared_ptr<const Catalog>(cat);
}

bool ProxyService::ClaimForcedRefresh(const std::string& provider_id, const std::string& fingerprint) {
  const Clock::Instant now = clock_.Now();
  std::string key;
  key.reserve(provider_id.size() + 1 + fingerprint.size());
  key.append(provider_id).append("\n").append(fingerprint);
  MutexLock lock(&mu_);
  auto [it, added] = last_forced_refresh_.try_emplace(std::move(key), now);
  if (!added) {
    if (now - it->second < options_.forced_refresh_interval) return false;
    it->second = now;
  }
  // Inside the claim: a request that finds the window used also finds the
  // entry dropped (its next read is the fresh one, or joins it).
  secrets_.cache().Invalidate(provider_id);
  if (last_forced_refresh_.size() > 4096) {  // old credentials' windows
    std::erase_if(last_forced_refresh_,
                  [&](const auto& e) { return now - e.second >= options_.forced_refresh_interval; });
  }
  return true;
}

bool ProxyService::AnotherCredential(const std::string& provider_id, const std::string& slug, const Credentials& used,
                                     const Caller* read_as) {
  const std::string used_fingerprint = secrets_.Fingerprint(used.fields);
  const bool claimed = ClaimForcedRefresh(provider_id, used_fingerprint);
  if (claimed) spdlog::info("v1: provider {} answered 401 to its credential; reading it again", slug);
  if (!read_as) {
    // On an I/O thread, no store read: after the claim, the retry on the
    // pool reads it (Forward), once, and may find the same key (a second
    // 401, passed on). An empty cache is held too: the entry may have been
    // dropped by the window's claim for another call that met the same 401
    // (whose read the retry joins), by a change another instance made, or it
    // expired. Passing this 401 on would fail a client mid-rotation.
    if (claimed) return true;
    CredentialsPtr now_cached = secrets_.GetCached(provider_id);
    return !now_cached || secrets_.Fingerprint(now_cached->fields) != used_fingerprint;
  }
  // The store's answer after a claim (the entry is dropped), else what the
  // cache holds now (another call's forced read, or a rotation here), or
  // the read that fills it. Without a cache, only the claim reads: at most
  // one store read per window, as with one. By value, not by pointer: the
  // same key again would only earn a second 401.
  if (!claimed && !secrets_.cache_enabled()) return false;
  auto now = secrets_.Get(provider_id, *read_as);
  return now.ok() && secrets_.Fingerprint(now->credentials->fields) != used_fingerprint;
}

Result<std::vector<ListedModel>> ProxyService::Models(const std::vector<std::string>* allowed_providers,
                                                      const std::vector<std::string>* allowed_models) {
  DYAD_ASSIGN_OR_RETURN(auto cat, Snapshot());
  std::vector<ListedModel> out;
  std::unordered_map<std::string_view, bool> seen;
  for (const auto& p : cat->providers) {
    if (!p.enabled || !Listed(allowed_providers, p.slug)) continue;
    for (const auto& m : p.models) {
      if (!Listed(allowed_models, m.dyad_id) || !seen.emplace(m.dyad_id, true).second) continue;
      out.push_back({m.dyad_id, p.slug, p.created});
    }
  }
  return out;
}

Result<ListedModel> ProxyService::Model(std::string_view id, const std::vector<std::string>* allowed_providers,
                                        const std::vector<std::string>* allowed_models) {
  DYAD_ASSIGN_OR_RETURN(auto cat, Snapshot());
  // The list's first entry of that id, as Models() lists it.
  for (const auto& p : cat->providers) {
    if (!p.enabled || !Listed(allowed_providers, p.slug) || !Listed(allowed_models, id)) continue;
    if (p.Find(id)) return ListedModel{std::string(id), p.slug, p.created};
  }
  return MakeError(ErrorCode::kNotFound, "model '" + std::string(id) + "' does not exist");
}

namespace {

// Hands the upstream's answer on: streamed as it comes (event streams, large
// bodies), else kept whole.
class ForwardSink final : public UpstreamSink {
 public:
  // `hold_401`, if given, is asked on a 401: true holds it back (retried).
  ForwardSink(ProxyOutput& out, size_t max_buffered, const std::function<bool()>* hold_401, const Clock& clock)
      : out_(out), max_buffered_(max_buffered), hold_401_(hold_401), clock_(clock), sent_(clock.Now()) {}

  bool OnHead(const UpstreamHead& head) override {
    upstream_seconds = std::chrono::duration<double>(clock_.Now() - sent_).count();
    if (head.status == 401 && hold_401_ && (*hold_401_)()) {
      retry = true;  // cancelled: the 401 never reaches the client
      return false;
    }
    answer.status = head.status;
    size_t length = 0;
    for (const auto& [name, value] : head.headers) {
      if (IEquals(name, "content-type") && IsPassableUpstreamHeader(name, value)) {
        answer.content_type = value;
      } else if (IEquals(name, "content-length")) {
        if (auto n = ParseInt<size_t>(value)) length = *n;
      }
    }
    answer.headers = PassableUpstreamHeaders(head.headers);
    if (StartsWithI(answer.content_type, "text/event-stream")) return StartStream();
    answer.body.reserve(std::min(length, max_buffered_));
    return true;
  }

  bool OnBody(std::string_view piece) override {
    bytes += piece.size();
    if (!answer.streamed && answer.body.size() + piece.size() > max_buffered_ && !StartStream()) return false;
    if (!answer.streamed) {
      answer.body.append(piece);
      return true;
    }
    if (!out_.Write(piece)) client_gone = true;
    return !client_gone;
  }

  // The pieces of one read go to the client together (StartStream holds).
  bool OnFlush(bool last) override {
    if (answer.streamed && !client_gone && !out_.Flush(last)) client_gone = true;
    return !client_gone;
  }

  void OnFailure(UpstreamFailure kind) override { failure = kind; }

  ProxyAnswer answer;
  UpstreamFailure failure = UpstreamFailure::kNone;
  std::optional<double> upstream_seconds;
  bool retry = false;
  bool client_gone = false;
  uint64_t bytes = 0;

 private:
  bool StartStream() {
    answer.streamed = true;
    out_.Hold();
    if (!out_.Begin(answer.status, answer.content_type, answer.headers) ||
        (!answer.body.empty() && !out_.Write(answer.body))) {
      client_gone = true;
      return false;
    }
    std::string().swap(answer.body);  // its memory too: up to max_buffered_bytes, and the output may hold a copy
    return true;
  }

  ProxyOutput& out_;
  size_t max_buffered_;
  const std::function<bool()>* hold_401_;
  const Clock& clock_;
  Clock::Instant sent_;
};

int StatusOf(const Error& e) {
  switch (e.code) {
    case ErrorCode::kInvalidArgument: return 400;
    case ErrorCode::kPermissionDenied: return 403;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kUnimplemented: return 501;
    case ErrorCode::kUnavailable: return 502;
    case ErrorCode::kFailedPrecondition: return 503;
    case ErrorCode::kDeadlineExceeded: return 504;
    case ErrorCode::kCancelled: return 499;
    default: return 500;
  }
}

// Where a model goes: its provider, its entry there (if listed) and the
// name sent upstream. What the client's allow-lists do not pass does not
// exist for it: the unknown model's answer, never a name outside its lists.
struct Routed {
  const Catalog::Entry* provider = nullptr;
  const Catalog::Model* listed = nullptr;
  std::string_view upstream_model;
};

// Whether the client's model allow-list passes `model` as asked (unless
// `as_asked` is false), or the provider's catalog entry it names (`listed`).
// A model the provider does not list passes only as asked: with the
// provider's prefix, for a list that names the pair. Its bare name would
// pass it at any provider, with that provider's credentials.
bool ModelAllowed(const ProxyRequest& request, std::string_view model, const Catalog::Model* listed,
                  bool as_asked = true) {
  if (!request.allowed_models || (as_asked && Listed(request.allowed_models, model))) return true;
  return listed && Listed(request.allowed_models, listed->dyad_id);
}

Result<Routed> Route(const Catalog& cat, const std::string& model, const ProxyRequest& request) {
  auto unknown = [&] {
    return MakeError(ErrorCode::kNotFound, "model '" + model + "' is not offered by any enabled provider");
  };
  auto visible = [&](const Catalog::Entry& p) { return Listed(request.allowed_providers, p.slug); };
  // The providers offering `model` as a catalog id that this client may use
  // it at. Only those count: an ambiguity among others would tell it that a
  // model outside its lists exists.
  std::vector<size_t> offering;
  if (auto it = cat.by_model.find(model); it != cat.by_model.end()) {
    for (size_t i : it->second) {
      const Catalog::Entry& p = cat.providers[i];
      if (visible(p) && ModelAllowed(request, model, p.Find(model))) offering.push_back(i);
    }
  }
  Routed r;
  r.upstream_model = model;
  // `<slug>/<model>` names the provider when it lists that model, or when no
  // catalog entry offers the whole name (a model passed through unlisted).
  // Otherwise the whole name is an id (`openai/gpt-4o` at an aggregator,
  // beside a provider `openai` that does not list `gpt-4o`). So every
  // provider's listed model keeps a name that reaches it.
  bool id_elsewhere = false;  // the whole name is another visible provider's id
  if (size_t slash = model.find('/'); slash != std::string::npos) {
    auto it = cat.by_slug.find(model.substr(0, slash));
    const Catalog::Entry* named = it != cat.by_slug.end() ? &cat.providers[it->second] : nullptr;
    if (named && visible(*named) && (offering.empty() || named->Find(std::string_view(model).substr(slash + 1)))) {
      if (auto ids = cat.by_model.find(model); ids != cat.by_model.end()) {
        for (size_t i : ids->second) id_elsewhere |= &cat.providers[i] != named && visible(cat.providers[i]);
      }
      r.provider = named;
      r.upstream_model = std::string_view(model).substr(slash + 1);
      if (!r.provider->enabled) {
        return MakeError(ErrorCode::kNotFound, "model '" + model + "': provider '" + r.provider->slug +
                                                   "' is disabled");
      }
      if (r.upstream_model.empty()) {
        return Invalid("model: nothing after the provider prefix '" + r.provider->slug + "/'");
      }
      r.listed = r.provider->Find(r.upstream_model);
    }
  }
  if (!r.provider) {
    if (offering.empty()) return unknown();
    if (offering.size() > 1) {
      std::string slugs;
      for (size_t i : offering) slugs += (slugs.empty() ? "" : ", ") + cat.providers[i].slug;
      return Invalid("model '" + model + "' is offered by more than one provider (" + slugs +
                     "); name one as '<provider-slug>/" + model + "'");
    }
    r.provider = &cat.providers[offering.front()];
    r.listed = r.provider->Find(model);
  }
  if (r.listed) r.upstream_model = r.listed->adapter_id;
  // As asked, the whole name would pass a list that names the other
  // provider's id: only the listed model's own id does.
  if (!ModelAllowed(request, model, r.listed, !id_elsewhere)) return unknown();
  return r;
}

}  // namespace

// One call's state, from its route to its answer (Forward's, or one
// driven by the caller: ProxyCall).
struct ProxyCall::State {
  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  // The credential's copies are wiped on every way out, as the client wipes
  // its own (a short value moved out stays in the moved-from string's own
  // buffer: wiped too).
  ~State() { WipeInjected(); }
  void WipeInjected() {
    for (size_t i = injected_from; i < up.headers.size(); ++i) Cleanse(up.headers[i].second);
  }

  std::shared_ptr<const Catalog> cat;  // holds `provider`
  const Catalog::Entry* provider = nullptr;
  std::string_view metric_model;
  std::string rewritten;  // the body, when the model sent upstream is another string
  UpstreamRequest up;
  size_t injected_from = 0;  // up.headers from here on are the credential's
  CredentialsPtr used;
  std::string request_id;  // the caller's, for the log
  Clock::Instant t0;       // the client call's start (a held 401's retry keeps it)
  Clock::Instant give_up;  // one total deadline for the client's call, the 401 retry included
  std::optional<double> held_upstream;  // a held 401's upstream seconds, when this is its retry
  std::optional<double> overhead;
  std::function<bool()> hold_401;
  std::optional<ForwardSink> sink;
};

namespace {

// The call's upstream time: the request sent to the answer's head, a held
// attempt's included (none when no attempt had a head).
std::optional<double> UpstreamSeconds(const ProxyCall::State& s) {
  const std::optional<double> last = s.sink ? s.sink->upstream_seconds : std::nullopt;
  if (!s.held_upstream) return last;
  return *s.held_upstream + last.value_or(0);
}

// What a held 401's retry keeps of the attempt (ProxyRequest::after_401).
ProxyRequest::HeldAttempt Held(const ProxyCall::State& s) {
  return {s.t0, s.give_up, UpstreamSeconds(s).value_or(0)};
}

// The call's time so far less its held attempt's upstream time.
double Overhead(const ProxyCall::State& s, const Clock& clock) {
  const double elapsed = std::chrono::duration<double>(clock.Now() - s.t0).count();
  return std::max(0.0, elapsed - s.held_upstream.value_or(0));
}

}  // namespace

ProxyCall::ProxyCall(std::unique_ptr<State> state) : s_(std::move(state)) {}
ProxyCall::~ProxyCall() = default;
const UpstreamRequest& ProxyCall::request() const { return s_->up; }
UpstreamSink& ProxyCall::sink() { return *s_->sink; }
bool ProxyCall::retry() const { return s_->sink->retry; }
ProxyRequest::HeldAttempt ProxyCall::held() const { return Held(*s_); }

std::shared_ptr<const ProxyService::Catalog> ProxyService::FreshSnapshot() {
  const auto now = clock_.CoarseNow();
  MutexLock lock(&mu_);
  return CatalogFresh(now) ? catalog_ : nullptr;
}

Result<bool> ProxyService::Resolve(const ProxyRequest& request, ProxyCall::State& s, bool may_wait,
                                   const Reroute* reroute) {
  const auto& held = request.after_401;
  s.t0 = reroute ? reroute->started : held ? held->started : clock_.Now();
  s.give_up = held ? held->give_up : s.t0 + options_.timeouts.total;  // one total per client call
  if (held) s.held_upstream = held->upstream_seconds;
  s.request_id = request.caller.request_id;
  DYAD_ASSIGN_OR_RETURN(ModelField field, FindModel(request.body));
  if (reroute) {
    DYAD_ASSIGN_OR_RETURN(s.cat, Snapshot(reroute->read.credentials->read_at));
  } else if (may_wait) {
    DYAD_ASSIGN_OR_RETURN(s.cat, Snapshot());
  } else if (!(s.cat = FreshSnapshot())) {
    return false;
  }
  DYAD_ASSIGN_OR_RETURN(Routed routed, Route(*s.cat, field.value, request));
  const Catalog::Entry* provider = s.provider = routed.provider;
  const std::string_view upstream_model = routed.upstream_model;
  if (provider->type != "http-sdk" && provider->type != "proxy") {
    return MakeError(ErrorCode::kUnimplemented, "provider '" + provider->slug + "' has type '" + provider->type +
                                                    "', which the /v1 proxy does not serve (http-sdk and proxy only)");
  }
  if (!provider->adapter) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "provider '" + provider->slug + "' cannot be called: " + provider->adapter_error);
  }
  s.metric_model = routed.listed ? std::string_view(routed.listed->dyad_id) : std::string_view("other");
  // The body as received, unless the model sent upstream is another string.
  s.up.body = request.body;
  if (upstream_model != field.value) {
    s.rewritten = ReplaceModel(request.body, field, upstream_model);
    s.up.body = s.rewritten;
  }
  s.up.method = "POST";
  std::string& url = s.up.url;
  url.reserve(provider->adapter->base_url.size() + request.endpoint.size() + request.query.size() + 2);
  url.append(provider->adapter->base_url).append("/").append(request.endpoint);
  if (!request.query.empty()) url.append("?").append(request.query);
  s.up.timeouts = options_.timeouts;
  return true;
}

Status ProxyService::Inject(const ProxyRequest& request, ProxyCall::State& s, CredentialsPtr credentials) {
  s.WipeInjected();
  auto injected = CredentialHeaders(*s.provider->adapter, credentials->fields);
  if (!injected.ok()) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "provider '" + s.provider->slug + "' cannot be called: " + injected.error().message);
  }
  // Every header the credential may set is the gateway's, set or not: a
  // client never supplies one the stored credentials happen to lack.
  s.up.headers = ForwardableHeaders(request.headers ? *request.headers : kNoHeaders, s.provider->reserved);
  s.injected_from = s.up.headers.size();
  for (auto& h : *injected) {
    s.up.headers.push_back(std::move(h));
    Cleanse(h.second);
  }
  s.used = std::move(credentials);
  return OkStatus();
}

std::optional<Error> ProxyService::Arm(ProxyCall::State& s, ProxyOutput& output, bool may_hold) {
  s.sink.emplace(output, options_.max_buffered_bytes, may_hold ? &s.hold_401 : nullptr, clock_);
  if (!s.overhead) s.overhead = Overhead(s, clock_);
  const auto now = clock_.Now();
  if (now >= s.give_up) {
    Error e = MakeError(ErrorCode::kDeadlineExceeded, "upstream '" + s.provider->slug +
                                                          "' timed out: the total timeout (" +
                                                          std::to_string(options_.timeouts.total.count()) +
                                                          " ms) passed");
    metrics_.ObserveV1(s.provider->slug, s.metric_model, StatusOf(e), UpstreamSeconds(s), *s.overhead, 0);
    return e;
  }
  s.up.timeouts.total = std::chrono::ceil<std::chrono::milliseconds>(s.give_up - now);
  return std::nullopt;
}

Result<ProxyAnswer> ProxyService::Conclude(ProxyCall::State& s, const Status& sent) {
  ForwardSink& sink = *s.sink;
  const Catalog::Entry* provider = s.provider;
  ProxyAnswer answer = std::move(sink.answer);
  // Gone while a piece was written to it, or while the upstream was awaited.
  const bool client_gone = sink.client_gone || (!sent.ok() && sent.code() == ErrorCode::kCancelled);
  if (!sent.ok() && !answer.streamed) {
    Error e = client_gone ? MakeError(ErrorCode::kCancelled, "the client went away") : sent.error();
    metrics_.ObserveV1(provider->slug, s.metric_model, StatusOf(e), UpstreamSeconds(s), *s.overhead, 0);
    if (e.code == ErrorCode::kCancelled) return e;
    // The client's words (B6): the provider and the kind of failure. The
    // error's own name the upstream's URL, and curl's its host, port and
    // address, which a /v1 client must not learn: they go to the log.
    spdlog::warn("v1: request {}: the call to provider {} failed: {}", s.request_id, provider->slug, e.message);
    // The timeouts as configured: the call's total is what was left of it
    // (Arm), less than the configured one after a held 401's retry.
    const std::string kind = DescribeUpstreamFailure(sink.failure, options_.timeouts);
    const std::string named = "upstream '" + provider->slug + "'";
    switch (e.code) {
      case ErrorCode::kUnavailable: e.message = named + " unreachable: " + kind; break;
      case ErrorCode::kDeadlineExceeded: e.message = named + " timed out: " + kind; break;
      case ErrorCode::kInvalidArgument: e.message = named + " was not called: " + kind; break;
      default: e.message = named + " was not called: internal error (request id " + s.request_id + ")";
    }
    return e;
  }
  if (!sent.ok()) {
    answer.cut_short = true;
    spdlog::warn("v1: the answer of provider {} was cut short: {}", provider->slug,
                 client_gone ? std::string("the client went away") : sent.error().message);
  }
  metrics_.ObserveV1(provider->slug, s.metric_model, client_gone ? 499 : answer.status, UpstreamSeconds(s),
                     *s.overhead, sink.bytes);
  return answer;
}

Result<ProxyAnswer> ProxyService::Forward(const ProxyRequest& request, ProxyOutput& output) {
  return Forward(request, output, nullptr);
}

Result<ProxyAnswer> ProxyService::Forward(const ProxyRequest& request, ProxyOutput& output,
                                          const Reroute* reroute) {
  ProxyCall::State s;
  DYAD_RETURN_IF_ERROR(Resolve(request, s, /*may_wait=*/true, reroute));
  s.up.hang_up_fd = output.HangUpFd();
  // A call refused before its upstream call, counted.
  auto refuse = [&](Error e) {
    metrics_.ObserveV1(s.provider->slug, s.metric_model, StatusOf(e), UpstreamSeconds(s), Overhead(s, clock_), 0);
    return e;
  };
  CredentialRead read;
  if (reroute && reroute->provider_id == s.provider->id) {
    read = reroute->read;  // the key this catalog was read after: not read again (it may be newer by now)
  } else {
    auto got = secrets_.Get(s.provider->id, request.caller);
    if (!got.ok()) {
      return refuse(MakeError(ErrorCode::kFailedPrecondition, "the credentials of provider '" + s.provider->slug +
                                                                  "' cannot be read (" +
                                                                  std::string(ErrorCodeName(got.code())) + ")"));
    }
    read = std::move(got).value();
  }
  // A key read from the store after this catalog's registry read began (up
  // to catalog_ttl ago) goes only where a catalog read after it says: a
  // baseUrl changed before a rotation began never gets the rotated key.
  // The call is resolved again with that key (one catalog read after each
  // store read of a key; with the cache off, after every call's), within
  // its one total deadline (from its start). Again only if the route moved
  // to another provider meanwhile, a few times at most.
  if (read.credentials->read_at > s.cat->began) {
    const int reroutes = reroute ? reroute->count + 1 : 1;
    if (reroutes > kMaxReroutes) {
      return refuse(MakeError(ErrorCode::kFailedPrecondition,
                              "provider '" + s.provider->slug + "' cannot be called: its catalog entry kept changing "
                              "while its key was read; retry"));
    }
    const Reroute again{std::move(read), s.provider->id, s.t0, reroutes};
    return Forward(request, output, &again);
  }
  DYAD_RETURN_IF_ERROR(Inject(request, s, read.credentials));
  // A 401 (first attempt only) is held back and retried when a fresh read
  // finds another credential: one rotated by another instance since the
  // cache was filled, or since this very store read. Not after a read the
  // store did not answer (stale, fallback) or without a store (environment).
  s.hold_401 = [&] { return AnotherCredential(s.provider->id, s.provider->slug, *s.used, &request.caller); };
  const bool may_hold = !request.after_401 && (read.source == "cache" || read.source == "store");
  if (auto late = Arm(s, output, may_hold)) return *late;
  Status sent = upstream_.Send(s.up, *s.sink);
  if (s.sink->retry) {
    // The retry resolves anew, as Prepare's does (RunOnPool): it goes where
    // the catalog says now, not where it said when this attempt began (an
    // upstream may hold its 401 for the first-byte timeout, meanwhile its
    // provider's baseUrl changed and its key rotated).
    ProxyRequest retry = request;
    retry.after_401 = Held(s);
    return Forward(retry, output, nullptr);
  }
  return Conclude(s, sent);
}

Result<std::unique_ptr<ProxyCall>> ProxyService::Prepare(const ProxyRequest& request, ProxyOutput& output) {
  auto s = std::make_unique<ProxyCall::State>();
  DYAD_ASSIGN_OR_RETURN(bool resolved, Resolve(request, *s, /*may_wait=*/false));
  if (!resolved || request.after_401 || !s->provider->preparable) return std::unique_ptr<ProxyCall>();
  CredentialsPtr cached = secrets_.GetCached(s->provider->id);
  // A key read after the catalog: Forward reads the catalog again.
  if (!cached || cached->read_at > s->cat->began) return std::unique_ptr<ProxyCall>();
  DYAD_RETURN_IF_ERROR(Inject(request, *s, std::move(cached)));
  // Forward's hold, without its store read (see AnotherCredential).
  ProxyCall::State* state = s.get();
  s->hold_401 = [this, state] {
    return AnotherCredential(state->provider->id, state->provider->slug, *state->used, nullptr);
  };
  if (auto late = Arm(*s, output, /*may_hold=*/true)) return *late;
  return std::unique_ptr<ProxyCall>(new ProxyCall(std::move(s)));
}

Result<ProxyAnswer> ProxyService::Finish(ProxyCall& call, const Status& sent) { return Conclude(*call.s_, sent); }

}  // namespace dyad
