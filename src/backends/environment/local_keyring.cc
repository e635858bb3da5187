#include "backends/environment/local_keyring.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>

#include "core/mutex.h"
#include "core/time_format.h"
#include "secrets/aes_gcm.h"

namespace dyad {
namespace {

constexpr size_t kWrappedSize = kGcmNonceSize + kAesKeySize + kGcmTagSize;

std::string VersionAad(std::string_view label, const std::string& key_id, uint32_t version) {
  return std::string(label) + '\0' + key_id + '\0' + std::to_string(version);
}

// The AAD of a wrapped DEK. Without a context it is what it always was (so
// keys wrapped before contexts were bound still open); with one, the
// context is bound too, length-prefixed under a label of its own.
std::string DekAad(const std::string& key_id, uint32_t version, std::string_view context) {
  if (context.empty()) return VersionAad("dyad-dek-v1", key_id, version);
  std::string aad = VersionAad("dyad-dek-v2", key_id, version);
  aad += '\0' + std::to_string(context.size()) + ':';
  aad.append(context);
  return aad;
}

class LocalKeyring final : public KeyManager {
 public:
  LocalKeyring(LocalKeyringOptions options, std::shared_ptr<KeyVersionRepository> versions, Random& random,
               const Clock& clock)
      : options_(std::move(options)), repo_(std::move(versions)), random_(random), clock_(clock) {}

  const std::string& Kind() const override { return kind_; }
  const std::string& KeyId() const override { return options_.key_id; }

  // Loads every version, re-sealing those under a previous master; creates
  // version 1 on an empty keyring.
  Status Load() DYAD_LOCKS_EXCLUDED(mu_) {
    bool none = false;
    DYAD_RETURN_IF_ERROR(LoadVersions(&none));
    if (!none) return OkStatus();
    // No version at all: create version 1 unless another instance (process)
    // starting at the same time did so first, then load whichever won. A
    // plain Rotate() here made two fresh instances leave "1|active 2|active".
    DYAD_RETURN_IF_ERROR(CreateFirstVersion());
    DYAD_RETURN_IF_ERROR(LoadVersions(&none));
    if (none) return MakeError(ErrorCode::kInternal, "cannot create key version 1");
    return OkStatus();
  }

  Status LoadVersions(bool* none) DYAD_LOCKS_EXCLUDED(mu_) {
    last_refresh_ns_.store(clock_.Now().time_since_epoch().count(), std::memory_order_relaxed);
    const uint64_t ticket = NextTicket();
    DYAD_ASSIGN_OR_RETURN(std::vector<KeyVersionRecord> rows, repo_->List(options_.key_id));
    std::map<uint32_t, Version> loaded;
    std::optional<Error> unopened;  // the first version no master opens
    for (auto& row : rows) {
      auto key = Unseal(row.version, row.material);
      if (!key.ok() && key.code() != ErrorCode::kFailedPrecondition) return key.error();
      if (!key.ok()) {
        if (!unopened) unopened = key.error();
        continue;
      }
      loaded[row.version] = Version{std::move(key).value(), row.state, row.created_at, row.encryptions};
    }
    // The master opens some versions but not this one: the version is
    // damaged, not the master wrong (that would open none).
    if (unopened && !loaded.empty()) {
      return MakeError(ErrorCode::kDataLoss, "local keyring '" + options_.key_id + "' is damaged: " +
                                                 unopened->message.substr(0, unopened->message.find(';')) +
                                                 " although it opens the other versions; restore the registry "
                                                 "database from a backup");
    }
    if (unopened) return *unopened;
    bool empty;
    *none = rows.empty();
    {
      WriterMutexLock lock(&mu_);
      if (!Newest(ticket)) return OkStatus();  // a later view is in memory already
      versions_ = std::move(loaded);
      primary_ = 0;
      for (auto& [v, info] : versions_) {
        if (info.state == "active") primary_ = v;
      }
      empty = primary_ == 0;  // read under the lock: a Rotate() may set it once released
    }
    // Versions, but none active (all retired): a new primary, as before.
    if (empty && !*none) {
      return Rotate().ok() ? OkStatus() : Status(MakeError(ErrorCode::kInternal, "cannot create an active key version"));
    }
    return OkStatus();
  }

  // Inserts version 1 only while the key has no version at all (atomic:
  // KeyVersionRepository::CreateFirst).
  Status CreateFirstVersion() {
    SecretBytes key(kAesKeySize);
    DYAD_RETURN_IF_ERROR(random_.Fill(key.data(), kAesKeySize));
    KeyVersionRecord first;
    first.state = "active";
    first.created_at = FormatIso8601(clock_.WallNow());
    DYAD_ASSIGN_OR_RETURN(first.material, Seal(1, key));
    auto created = repo_->CreateFirst(options_.key_id, first);
    if (!created.ok()) return created.error();
    return OkStatus();
  }

  Result<DataKey> GenerateDataKey(std::string_view context) override {
    return FreshDataKey(random_, kAesKeySize, context);
  }

  Result<WrappedKey> WrapKey(const SecretBytes& key, std::string_view context) override {
    DYAD_RETURN_IF_ERROR(RefreshIfDue());
    ReaderMutexLock lock(&mu_);
    WrappedKey out;
    out.version = primary_;
    DYAD_RETURN_IF_ERROR(CountEncryption(out.version));
    DYAD_ASSIGN_OR_RETURN(out.wrapped, Wrap(versions_.at(primary_).key, primary_, key, context));
    return out;
  }

  Result<SecretBytes> Decrypt(uint32_t version, std::string_view wrapped, std::string_view context) override {
    if (wrapped.size() != kWrappedSize) {
      return MakeError(ErrorCode::kDataLoss, "local keyring: wrapped key has " + std::to_string(wrapped.size()) +
                                                 " bytes, expected " + std::to_string(kWrappedSize));
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
      {
        ReaderMutexLock lock(&mu_);
        auto it = versions_.find(version);
        if (it != versions_.end()) {
          if (it->second.state == "retired") {
            return MakeError(ErrorCode::kFailedPrecondition, "key version " + std::to_string(version) + " is retired");
          }
          auto dek = AesGcmOpen(it->second.key, wrapped.substr(0, kGcmNonceSize),
                                DekAad(options_.key_id, version, context), wrapped.substr(kGcmNonceSize));
          if (!dek.ok()) {
            return MakeError(ErrorCode::kDataLoss, "local keyring: wrapped key does not authenticate under version " +
                                                       std::to_string(version));
          }
          return dek;
        }
      }
      if (attempt == 0) DYAD_RETURN_IF_ERROR(Load());  // rotated by another process?
    }
    return MakeError(ErrorCode::kNotFound, "local keyring '" + options_.key_id + "' has no key version " +
                                               std::to_string(version));
  }

  Result<WrappedKey> ReEncrypt(uint32_t version, std::string_view wrapped, std::string_view from_context,
                               std::string_view to_context) override {
    DYAD_ASSIGN_OR_RETURN(SecretBytes dek, Decrypt(version, wrapped, from_context));
    return WrapKey(dek, to_context);
  }

  Result<uint32_t> Rotate() override {
    SecretBytes key(kAesKeySize);
    DYAD_RETURN_IF_ERROR(random_.Fill(key.data(), kAesKeySize));
    std::string created = FormatIso8601(clock_.WallNow());
    // The next version number and the insert in one transaction; the key
    // is sealed under it (the version is in the AAD).
    auto appended = repo_->Advance(options_.key_id, [&](const std::optional<KeyVersionRecord>& latest)
                                                        -> Result<KeyVersionChange> {
      KeyVersionChange change;
      change.next.emplace();
      change.next->state = "active";
      change.next->created_at = created;
      DYAD_ASSIGN_OR_RETURN(change.next->material, Seal((latest ? latest->version : 0) + 1, key));
      return change;
    });
    if (!appended.ok()) return appended.error();
    const uint32_t version = *appended;
    const uint64_t ticket = NextTicket();  // after the write: a read begun later sees the version
    WriterMutexLock lock(&mu_);
    applied_ = std::max(applied_, ticket);  // a read begun before the write is older than this
    // Only forward: a later read may have loaded it already (and seen it retiring).
    if (!versions_.count(version)) versions_[version] = Version{std::move(key), "active", created, 0};
    primary_ = std::max(primary_, version);
    return version;
  }

  Status Retire(uint32_t version) override { return SetState(version, "retired"); }
  Status BeginRetire(uint32_t version) override { return SetState(version, "retiring"); }

  // Reads the states from the database (never from memory), so a writer
  // that sealed under a version another process has since begun to retire
  // learns it, together with the new primary.
  Result<std::string> CurrentState(uint32_t version) override {
    DYAD_RETURN_IF_ERROR(Refresh());
    ReaderMutexLock lock(&mu_);
    auto it = versions_.find(version);
    if (it == versions_.end()) return MakeError(ErrorCode::kNotFound, "no key version " + std::to_string(version));
    return it->second.state;
  }

  // The next write (and Describe) reads the key epoch again.
  void MarkStale() override { last_refresh_ns_.store(INT64_MIN / 2, std::memory_order_relaxed); }

  Result<KeyState> Describe() override {
    DYAD_RETURN_IF_ERROR(RefreshIfDue());  // health and a rotation's start see other processes' versions
    ReaderMutexLock lock(&mu_);
    KeyState s{kind_, options_.key_id, primary_, {}};
    for (auto& [v, info] : versions_) {
      // Every process's reservations as last read, or this one's since.
      const uint64_t encryptions = std::max(info.recorded->load(std::memory_order_relaxed),
                                            info.reserved->load(std::memory_order_relaxed));
      s.versions.push_back({v, info.state, info.created_at, encryptions});
    }
    return s;
  }

 private:
  struct Version {
    Version() = default;
    Version(SecretBytes k, std::string s, std::string c, uint64_t recorded_count)
        : key(std::move(k)), state(std::move(s)), created_at(std::move(c)),
          used(std::make_shared<std::atomic<uint64_t>>(recorded_count)),
          reserved(std::make_shared<std::atomic<uint64_t>>(recorded_count)),
          recorded(std::make_shared<std::atomic<uint64_t>>(recorded_count)) {}
    SecretBytes key;
    std::string state;
    std::string created_at;
    // Encryptions made (counted from the database's bound at load), and the
    // bound this process has recorded in the database since.
    std::shared_ptr<std::atomic<uint64_t>> used = std::make_shared<std::atomic<uint64_t>>(0);
    std::shared_ptr<std::atomic<uint64_t>> reserved = std::make_shared<std::atomic<uint64_t>>(0);
    // The database's bound as last read: every process's reservations (for
    // the wear, Describe); never what this one reserves from (it would
    // count other processes' blocks as its own).
    std::shared_ptr<std::atomic<uint64_t>> recorded = std::make_shared<std::atomic<uint64_t>>(0);
  };

  // A writer learns a primary made by another process within this interval.
  static constexpr Clock::Duration kRefreshInterval = std::chrono::milliseconds(500);

  Status SetState(uint32_t version, const char* state) DYAD_LOCKS_EXCLUDED(mu_) {
    {
      ReaderMutexLock lock(&mu_);
      if (version == primary_) return MakeError(ErrorCode::kFailedPrecondition, "cannot retire the primary key version");
      if (!versions_.count(version)) return MakeError(ErrorCode::kNotFound, "no key version " + std::to_string(version));
    }
    DYAD_RETURN_IF_ERROR(repo_->SetState(options_.key_id, version, state));
    const uint64_t ticket = NextTicket();
    WriterMutexLock lock(&mu_);
    applied_ = std::max(applied_, ticket);
    // Only forward (active, retiring, retired): a later read may have a later state.
    if (StateRank(state) > StateRank(versions_[version].state)) ApplyState(versions_[version], state);
    return OkStatus();
  }

  static int StateRank(const std::string& state) { return state == "retired" ? 2 : state == "retiring" ? 1 : 0; }

  // Caller holds mu_ exclusively.
  static void ApplyState(Version& v, const std::string& state) {
    v.state = state;
    if (state == "retired") v.key.clear();  // a retired version cannot decrypt
  }

  // Every read of the versions takes a ticket before it reads, and every
  // change made here takes one after its write; memory takes a view only if
  // its ticket is newer than that of the view it holds (`applied_`).
  uint64_t NextTicket() { return tickets_.fetch_add(1, std::memory_order_relaxed) + 1; }
  bool Newest(uint64_t ticket) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ticket < applied_) return false;
    applied_ = ticket;
    return true;
  }

  Status RefreshIfDue() {
    const int64_t now = clock_.Now().time_since_epoch().count();
    if (now - last_refresh_ns_.load(std::memory_order_relaxed) < kRefreshInterval.count()) return OkStatus();
    return Refresh();
  }

  // The key epoch: every version's state as the database has it. A version
  // this process has not seen loads the whole keyring again; otherwise the
  // states and the primary are brought up to date in memory.
  Status Refresh() DYAD_LOCKS_EXCLUDED(mu_) {
    last_refresh_ns_.store(clock_.Now().time_since_epoch().count(), std::memory_order_relaxed);
    const uint64_t ticket = NextTicket();
    // In version order (the repository's List).
    DYAD_ASSIGN_OR_RETURN(const std::vector<KeyVersionRecord> rows, repo_->List(options_.key_id));
    {
      WriterMutexLock lock(&mu_);
      bool unseen = false;
      for (const KeyVersionRecord& row : rows) unseen = unseen || !versions_.count(row.version);
      if (!unseen) {
        // The bound only grows: any read's is applied, oldest or not.
        for (const KeyVersionRecord& row : rows) {
          std::atomic<uint64_t>& recorded = *versions_[row.version].recorded;
          recorded.store(std::max(recorded.load(std::memory_order_relaxed), row.encryptions), std::memory_order_relaxed);
        }
        // A read begun after this one (or a Rotate or state change made
        // here after it) is applied already: this older view would undo it
        // — set the primary back to the version another thread has just
        // rotated away from, under which a rotation then "re-encrypts".
        if (!Newest(ticket)) return OkStatus();
        uint32_t primary = 0;
        for (const KeyVersionRecord& row : rows) {
          Version& v = versions_[row.version];
          if (v.state != row.state) ApplyState(v, row.state);
          if (row.state == "active") primary = row.version;
        }
        if (primary != 0) primary_ = primary;
        return OkStatus();
      }
    }
    return Load();
  }

  // Counts one encryption under `version` (caller holds mu_ shared). The
  // database records a bound ahead of use, in blocks, so a crash can make
  // the count too high but never too low.
  Status CountEncryption(uint32_t version) DYAD_SHARED_LOCKS_REQUIRED(mu_) DYAD_LOCKS_EXCLUDED(reserve_mu_) {
    const uint64_t block = options_.reserve_block;
    Version& v = versions_.at(version);
    uint64_t n = v.used->fetch_add(1, std::memory_order_relaxed) + 1;
    if (n <= v.reserved->load(std::memory_order_acquire)) return OkStatus();
    MutexLock reserve(&reserve_mu_);
    const uint64_t reserved = v.reserved->load(std::memory_order_acquire);
    if (n <= reserved) return OkStatus();
    // Up to this encryption's number, in whole blocks: threads that took
    // numbers while this lock was held may come to it in any order, the
    // highest first (one block would then leave it unrecorded).
    const uint64_t amount = (n - reserved + block - 1) / block * block;
    DYAD_RETURN_IF_ERROR(repo_->ReserveEncryptions(options_.key_id, version, reserved, amount));
    v.reserved->fetch_add(amount, std::memory_order_release);
    return OkStatus();
  }

  Result<std::string> Wrap(const SecretBytes& key, uint32_t version, const SecretBytes& dek, std::string_view context) {
    std::string nonce(kGcmNonceSize, '\0');
    DYAD_RETURN_IF_ERROR(random_.Fill(reinterpret_cast<uint8_t*>(nonce.data()), nonce.size()));
    DYAD_ASSIGN_OR_RETURN(std::string ct, AesGcmSeal(key, nonce, DekAad(options_.key_id, version, context), dek.view()));
    return nonce + ct;
  }

  Result<std::string> Seal(uint32_t version, const SecretBytes& key) {
    std::string nonce(kGcmNonceSize, '\0');
    DYAD_RETURN_IF_ERROR(random_.Fill(reinterpret_cast<uint8_t*>(nonce.data()), nonce.size()));
    DYAD_ASSIGN_OR_RETURN(std::string ct, AesGcmSeal(options_.master, nonce,
                                                     VersionAad("dyad-keyring-v1", options_.key_id, version), key.view()));
    return nonce + ct;
  }

  // Opens a sealed version with the master, else with a previous master (and
  // then re-seals it under the current one).
  Result<SecretBytes> Unseal(uint32_t version, const std::string& sealed) {
    if (sealed.size() != kWrappedSize) {
      return MakeError(ErrorCode::kDataLoss, "local keyring '" + options_.key_id + "' is damaged: version " +
                                                 std::to_string(version) + " has " + std::to_string(sealed.size()) +
                                                 " bytes, expected " + std::to_string(kWrappedSize));
    }
    std::string aad = VersionAad("dyad-keyring-v1", options_.key_id, version);
    auto nonce = std::string_view(sealed).substr(0, kGcmNonceSize);
    auto ct = std::string_view(sealed).substr(kGcmNonceSize);
    if (auto key = AesGcmOpen(options_.master, nonce, aad, ct); key.ok()) return key;
    for (const auto& old : options_.previous_masters) {
      auto key = AesGcmOpen(old, nonce, aad, ct);
      if (!key.ok()) continue;
      DYAD_ASSIGN_OR_RETURN(std::string resealed, Seal(version, *key));
      DYAD_RETURN_IF_ERROR(repo_->SetMaterial(options_.key_id, version, resealed));
      return key;
    }
    return MakeError(ErrorCode::kFailedPrecondition,
                     "ENCRYPTION_KEY does not open keyring version " + std::to_string(version) + " of '" +
                         options_.key_id + "'; if the master key was changed, list the old one in ENCRYPTION_KEY_PREVIOUS");
  }

  const std::string kind_ = "local";
  LocalKeyringOptions options_;
  std::shared_ptr<KeyVersionRepository> repo_;
  Random& random_;
  const Clock& clock_;
  SharedMutex mu_;
  Mutex reserve_mu_ DYAD_ACQUIRED_AFTER(mu_);  // taken within mu_ (shared) by CountEncryption
  std::map<uint32_t, Version> versions_ DYAD_GUARDED_BY(mu_);
  uint32_t primary_ DYAD_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> tickets_{0};
  uint64_t applied_ DYAD_GUARDED_BY(mu_) = 0;  // the ticket of the view memory holds
  std::atomic<int64_t> last_refresh_ns_{INT64_MIN / 2};
};

}  // namespace

uint64_t ReserveBlockFor(uint64_t max_encryptions) {
  return std::clamp<uint64_t>(max_encryptions / 256, 1, 4096);
}

Result<std::unique_ptr<KeyManager>> NewLocalKeyring(LocalKeyringOptions options,
                                                    std::shared_ptr<KeyVersionRepository> versions, Random& random,
                                                    const Clock& clock) {
  if (options.master.size() != kAesKeySize) {
    return MakeError(ErrorCode::kInvalidArgument, "ENCRYPTION_KEY: must be a 256-bit key");
  }
  if (!versions) return MakeError(ErrorCode::kInvalidArgument, "local keyring: no key version repository");
  auto keyring = std::make_unique<LocalKeyring>(std::move(options), std::move(versions), random, clock);
  DYAD_RETURN_IF_ERROR(keyring->Load());
  return std::unique_ptr<KeyManager>(std::move(keyring));
}

}  // namespace dyad
