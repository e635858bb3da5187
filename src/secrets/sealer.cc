#include "secrets/sealer.h"

#include "core/parallel.h"
#include "secrets/aes_gcm.h"

namespace dyad {
namespace {

// The KMS context a stored DEK was wrapped with: the secret name, or none
// for an envelope written before names were bound.
std::string_view KeyContext(const Envelope& e, std::string_view secret_name) {
  return e.context_bound ? secret_name : std::string_view();
}

// The envelope AAD in a per-thread buffer: it is not secret (name and
// version), and reusing the buffer saves an allocation per seal and open.
std::string_view Aad(std::string_view secret_name, int64_t credentials_version) {
  thread_local std::string buf;
  buf.clear();
  AppendEnvelopeAad(buf, secret_name, credentials_version);
  return buf;
}

// The payload of `e` under its unwrapped DEK.
Result<SecretBytes> OpenPayload(const SecretBytes& dek, const Envelope& e, std::string_view secret_name) {
  auto payload = AesGcmOpen(dek, e.nonce, Aad(secret_name, e.credentials_version), e.ciphertext);
  if (!payload.ok()) {
    return MakeError(ErrorCode::kDataLoss, "envelope of '" + std::string(secret_name) +
                                               "': payload authentication failed (tampered, moved or corrupt)");
  }
  return payload;
}

}  // namespace

Status Sealer::CheckKey(const Envelope& e) const {
  if (e.kms != keys_.Kind() || e.key_id != keys_.KeyId()) {
    return MakeError(ErrorCode::kFailedPrecondition, "envelope was sealed by " + e.kms + " key '" + e.key_id +
                                                         "', not the configured " + keys_.Kind() + " key '" +
                                                         keys_.KeyId() + "'");
  }
  return OkStatus();
}

Result<std::string> Sealer::Seal(std::string_view secret_name, int64_t credentials_version,
                                 const SecretBytes& payload) {
  if (mode_ == SealMode::kProvider) return std::string(payload.view());
  DYAD_ASSIGN_OR_RETURN(DataKey dek, keys_.GenerateDataKey(secret_name));
  Envelope e;
  e.kms = keys_.Kind();
  e.key_id = keys_.KeyId();
  e.key_version = dek.version;
  e.credentials_version = credentials_version;
  e.wrapped_dek = std::move(dek.wrapped);
  e.context_bound = true;
  e.nonce.assign(kGcmNonceSize, '\0');
  DYAD_RETURN_IF_ERROR(random_.Fill(reinterpret_cast<uint8_t*>(e.nonce.data()), e.nonce.size()));
  DYAD_ASSIGN_OR_RETURN(e.ciphertext, AesGcmSeal(dek.plaintext, e.nonce, Aad(secret_name, credentials_version),
                                                 payload.view()));
  return SerializeEnvelope(e);
}

Result<OpenedSecret> Sealer::Open(std::string_view secret_name, std::string_view envelope_text) {
  if (mode_ == SealMode::kProvider) return OpenedSecret{SecretBytes(envelope_text), 0, 0};
  // Parsed into a per-thread envelope, whose buffers (wrapped key and
  // ciphertext: nothing in clear) are reused from one read to the next.
  thread_local Envelope parsed;
  if (parsed.ciphertext.capacity() > 64 * 1024) parsed = Envelope();  // keep no large buffer for good
  Envelope& e = parsed;
  DYAD_RETURN_IF_ERROR(ParseEnvelopeInto(envelope_text, e));
  DYAD_RETURN_IF_ERROR(CheckKey(e));
  DYAD_ASSIGN_OR_RETURN(SecretBytes dek, keys_.Decrypt(e.key_version, e.wrapped_dek, KeyContext(e, secret_name)));
  auto payload = OpenPayload(dek, e, secret_name);
  if (!payload.ok()) return payload.error();
  return OpenedSecret{std::move(payload).value(), e.credentials_version, e.key_version};
}

Result<std::string> Sealer::Rewrap(std::string_view secret_name, std::string_view envelope_text, uint32_t primary,
                                   bool force) {
  if (mode_ == SealMode::kProvider) return std::string(envelope_text);
  DYAD_ASSIGN_OR_RETURN(Envelope e, ParseEnvelope(envelope_text));
  if (e.key_version >= primary && e.context_bound && !force) {
    return MakeError(ErrorCode::kAlreadyExists, "already on the primary key version");
  }
  DYAD_ASSIGN_OR_RETURN(WrappedKey moved,
                        keys_.ReEncrypt(e.key_version, e.wrapped_dek, KeyContext(e, secret_name), secret_name));
  e.wrapped_dek = std::move(moved.wrapped);
  e.key_version = moved.version;
  e.context_bound = true;
  std::string text = SerializeEnvelope(e);
  DYAD_RETURN_IF_ERROR(Open(secret_name, text));  // verify before it replaces the old blob
  return text;
}

std::vector<Result<std::string>> Sealer::RewrapMany(const std::vector<RewrapItem>& items, uint32_t primary, bool force,
                                                    size_t parallelism) {
  std::vector<Result<std::string>> out(items.size(), Result<std::string>(std::string()));
  if (mode_ == SealMode::kProvider) {
    for (size_t i = 0; i < items.size(); ++i) out[i] = std::string(items[i].envelope_text);
    return out;
  }
  std::vector<Envelope> parsed(items.size());  // not resized below: the views into it stay valid
  std::vector<ReEncryptItem> moves;
  std::vector<size_t> at;
  for (size_t i = 0; i < items.size(); ++i) {
    auto e = ParseEnvelope(items[i].envelope_text);
    if (!e.ok()) {
      out[i] = e.error();
      continue;
    }
    parsed[i] = std::move(e).value();
    const Envelope& env = parsed[i];
    if (Status s = CheckKey(env); !s.ok()) {
      out[i] = s.error();
      continue;
    }
    if (env.key_version >= primary && env.context_bound && !force) {
      out[i] = MakeError(ErrorCode::kAlreadyExists, "already on the primary key version");
      continue;
    }
    moves.push_back({env.key_version, env.wrapped_dek, KeyContext(env, items[i].secret_name), items[i].secret_name});
    at.push_back(i);
  }
  if (moves.empty()) return out;
  std::vector<Result<WrappedKey>> moved = keys_.ReEncryptMany(moves, parallelism);
  // Verified before they replace the old blobs: every moved key unwrapped
  // again (one DecryptMany) and the payload opened under it.
  std::vector<DecryptItem> checks;
  std::vector<size_t> checked;
  for (size_t j = 0; j < at.size(); ++j) {
    const size_t i = at[j];
    if (!moved[j].ok()) {
      out[i] = moved[j].error();
      continue;
    }
    Envelope& e = parsed[i];
    e.wrapped_dek = std::move(moved[j]->wrapped);
    e.key_version = moved[j]->version;
    e.context_bound = true;
    checks.push_back({e.key_version, e.wrapped_dek, items[i].secret_name});
    checked.push_back(i);
  }
  if (checks.empty()) return out;
  std::vector<Result<SecretBytes>> deks = keys_.DecryptMany(checks, parallelism);
  ParallelFor(checked.size(), parallelism, [&](size_t k) {
    const size_t i = checked[k];
    if (!deks[k].ok()) {
      out[i] = deks[k].error();
      return;
    }
    auto opened = OpenPayload(*deks[k], parsed[i], items[i].secret_name);
    if (!opened.ok()) {
      out[i] = opened.error();
      return;
    }
    out[i] = SerializeEnvelope(parsed[i]);
  });
  return out;
}

}  // namespace dyad
