#include "secrets/envelope.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "backends/environment/local_keyring.h"
#include "core/encoding.h"
#include "secrets/aes_gcm.h"
#include "secrets/sealer.h"
#include "registry/sqlite_key_version_repository.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

class EnvelopeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = SqliteDb::Open(dir_.File("t.db"));
    ASSERT_TRUE(db.ok()) << db.error().message;
    db_ = *db;
    auto keys = NewLocalKeyring({"test-key", SecretBytes(std::string(32, 'm')), {}},
                                NewSqliteKeyVersionRepository(db_), DefaultRandom(), clock_);
    ASSERT_TRUE(keys.ok()) << keys.error().message;
    keys_ = std::move(keys).value();
    sealer_ = std::make_unique<Sealer>(*keys_, DefaultRandom());
  }

  std::string Seal(const std::string& name = "p/1", int64_t cv = 3) {
    auto s = sealer_->Seal(name, cv, payload_);
    EXPECT_TRUE(s.ok());
    return *s;
  }

  // Rewrites one JSON field of a sealed envelope.
  std::string With(const std::string& text, const std::string& field, nlohmann::json value) {
    auto j = nlohmann::json::parse(text);
    if (value.is_null()) j.erase(field);
    else j[field] = value;
    return j.dump();
  }

  std::string OpenError(const std::string& text, const std::string& name = "p/1") {
    auto r = sealer_->Open(name, text);
    EXPECT_FALSE(r.ok());
    return r.ok() ? "" : r.error().message;
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::shared_ptr<SqliteDb> db_;
  std::unique_ptr<KeyManager> keys_;
  std::unique_ptr<Sealer> sealer_;
  SecretBytes payload_{std::string(R"({"api_key":"sk-canary-0123456789"})")};
};

TEST_F(EnvelopeTest, RoundTrip) {
  std::string text = Seal();
  EXPECT_EQ(text.find("canary"), std::string::npos);
  auto opened = sealer_->Open("p/1", text);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened->payload, payload_);
  EXPECT_EQ(opened->credentials_version, 3);
  EXPECT_EQ(opened->key_version, 1u);
}

TEST_F(EnvelopeTest, FreshDekAndNonceEveryWrite) {
  auto a = *ParseEnvelope(Seal());
  auto b = *ParseEnvelope(Seal());
  EXPECT_NE(a.wrapped_dek, b.wrapped_dek);
  EXPECT_NE(a.nonce, b.nonce);
  EXPECT_NE(a.ciphertext, b.ciphertext);
}

TEST_F(EnvelopeTest, AadBindsNameAndCredentialsVersion) {
  std::string text = Seal("p/1", 3);
  EXPECT_EQ(sealer_->Open("p/2", text).code(), ErrorCode::kDataLoss);  // the DEK is bound to the name, too
  EXPECT_NE(OpenError(With(text, "cv", 4)).find("authentication failed"), std::string::npos);
}

TEST_F(EnvelopeTest, EveryTamperedFieldFails) {
  std::string text = Seal();
  auto e = *ParseEnvelope(text);
  auto flip = [](std::string s) {
    s[s.size() / 2] ^= 0x01;
    return Base64Encode(s);
  };
  EXPECT_FALSE(sealer_->Open("p/1", With(text, "ct", flip(e.ciphertext))).ok());
  EXPECT_FALSE(sealer_->Open("p/1", With(text, "iv", flip(e.nonce))).ok());
  EXPECT_FALSE(sealer_->Open("p/1", With(text, "dek", flip(e.wrapped_dek))).ok());
  EXPECT_NE(OpenError(With(text, "kver", 7)).find("no key version 7"), std::string::npos);
  EXPECT_NE(OpenError(With(text, "kid", "other")).find("other"), std::string::npos);
  EXPECT_NE(OpenError(With(text, "kms", "aws-kms")).find("aws-kms"), std::string::npos);
  EXPECT_NE(OpenError(With(text, "v", 2)).find("\"v\""), std::string::npos);
}

TEST_F(EnvelopeTest, ParserNamesTheBadField) {
  std::string text = Seal();
  EXPECT_NE(OpenError(With(text, "iv", nullptr)).find("\"iv\" is missing"), std::string::npos);
  EXPECT_NE(OpenError(With(text, "iv", "AAAA")).find("\"iv\" has a bad decoded length"), std::string::npos);
  EXPECT_NE(OpenError(With(text, "ct", "not base64!")).find("\"ct\" is not valid base64"), std::string::npos);
  EXPECT_NE(OpenError(With(text, "kver", "1")).find("\"kver\" must be an integer"), std::string::npos);
  EXPECT_NE(OpenError(With(text, "kver", 0)).find("\"kver\" is out of range"), std::string::npos);
  EXPECT_NE(OpenError(With(text, "extra", 1)).find("\"extra\" is unknown"), std::string::npos);
  EXPECT_NE(OpenError(With(text, "ct", Base64Encode("short"))).find("\"ct\""), std::string::npos);
  EXPECT_NE(OpenError("[1,2]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(OpenError(std::string(kMaxEnvelopeBytes + 1, ' ')).find("larger than"), std::string::npos);
}

TEST_F(EnvelopeTest, TruncationFailsAtEveryLength) {
  std::string text = Seal();
  for (size_t n = 0; n < text.size(); n += 7) {
    EXPECT_FALSE(sealer_->Open("p/1", text.substr(0, n)).ok()) << n;
  }
}

TEST_F(EnvelopeTest, RewrapMovesToThePrimaryVersionAndStillOpens) {
  std::string text = Seal();
  ASSERT_TRUE(keys_->Rotate().ok());
  auto moved = sealer_->Rewrap("p/1", text, 2, false);
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  auto opened = sealer_->Open("p/1", *moved);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(opened->key_version, 2u);
  EXPECT_EQ(opened->payload, payload_);
  EXPECT_EQ(sealer_->Rewrap("p/1", *moved, 2, false).code(), ErrorCode::kAlreadyExists);
  ASSERT_TRUE(keys_->Retire(1).ok());
  EXPECT_EQ(sealer_->Open("p/1", text).code(), ErrorCode::kFailedPrecondition);
}

TEST_F(EnvelopeTest, KeyringNeedsItsMasterOrAPreviousOne) {
  std::string text = Seal();
  auto wrong = NewLocalKeyring({"test-key", SecretBytes(std::string(32, 'x')), {}},
                               NewSqliteKeyVersionRepository(db_), DefaultRandom(), clock_);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message.find("ENCRYPTION_KEY_PREVIOUS"), std::string::npos);
  // A master change with the old master listed re-seals the keyring.
  auto moved = NewLocalKeyring({"test-key", SecretBytes(std::string(32, 'x')), {SecretBytes(std::string(32, 'm'))}},
                               NewSqliteKeyVersionRepository(db_), DefaultRandom(), clock_);
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  auto after = NewLocalKeyring({"test-key", SecretBytes(std::string(32, 'x')), {}},
                               NewSqliteKeyVersionRepository(db_), DefaultRandom(), clock_);
  ASSERT_TRUE(after.ok()) << after.error().message;
  Sealer s(**after, DefaultRandom());
  EXPECT_TRUE(s.Open("p/1", text).ok());
}

// An envelope as this build wrote it before DEKs were bound to names: the
// DEK wrapped with no context, and no "ctx" field.
std::string LegacyEnvelope(KeyManager& keys, const std::string& name, int64_t cv, const SecretBytes& payload) {
  auto dk = keys.GenerateDataKey();
  EXPECT_TRUE(dk.ok());
  Envelope e;
  e.kms = keys.Kind();
  e.key_id = keys.KeyId();
  e.key_version = dk->version;
  e.credentials_version = cv;
  e.wrapped_dek = dk->wrapped;
  e.nonce = std::string(kGcmNonceSize, '\x5a');
  e.ciphertext = *AesGcmSeal(dk->plaintext, e.nonce, EnvelopeAad(name, cv), payload.view());
  return SerializeEnvelope(e);
}

TEST_F(EnvelopeTest, SealBindsTheDekToTheSecretName) {
  std::string text = Seal("p/1", 3);
  auto e = *ParseEnvelope(text);
  EXPECT_TRUE(e.context_bound);
  EXPECT_NE(text.find("\"ctx\":1"), std::string::npos);
  EXPECT_TRUE(keys_->Decrypt(e.key_version, e.wrapped_dek, "p/1").ok());
  // The DEK itself does not unwrap under another secret's name, nor under none.
  EXPECT_EQ(keys_->Decrypt(e.key_version, e.wrapped_dek, "p/2").code(), ErrorCode::kDataLoss);
  EXPECT_EQ(keys_->Decrypt(e.key_version, e.wrapped_dek).code(), ErrorCode::kDataLoss);
  // Dropping "ctx" does not get it opened without its context either.
  EXPECT_FALSE(sealer_->Open("p/1", With(text, "ctx", nullptr)).ok());
}

TEST_F(EnvelopeTest, EnvelopeWithoutContextOpensAndRewrapBindsIt) {
  std::string old = LegacyEnvelope(*keys_, "p/1", 3, payload_);
  EXPECT_EQ(old.find("\"ctx\""), std::string::npos);  // quoted: base64 may hold the letters
  auto opened = sealer_->Open("p/1", old);
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_EQ(opened->payload, payload_);
  // Already on the primary version, but not bound to its name: moved anyway.
  auto moved = sealer_->Rewrap("p/1", old, 1, false);
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  auto e = *ParseEnvelope(*moved);
  EXPECT_TRUE(e.context_bound);
  EXPECT_EQ(e.ciphertext, ParseEnvelope(old)->ciphertext);  // the payload is untouched
  EXPECT_EQ(sealer_->Open("p/1", *moved)->payload, payload_);
  EXPECT_EQ(keys_->Decrypt(e.key_version, e.wrapped_dek, "p/2").code(), ErrorCode::kDataLoss);
  EXPECT_EQ(sealer_->Rewrap("p/1", *moved, 1, false).code(), ErrorCode::kAlreadyExists);
}

TEST_F(EnvelopeTest, ContextFieldIsOptionalAndStrict) {
  std::string text = Seal();
  EXPECT_NE(OpenError(With(text, "ctx", 2)).find("\"ctx\" is out of range"), std::string::npos);
  EXPECT_NE(OpenError(With(text, "ctx", "1")).find("\"ctx\" must be an integer"), std::string::npos);
  auto e = *ParseEnvelope(text);
  EXPECT_EQ(SerializeEnvelope(e), text);
  e.context_bound = false;
  EXPECT_FALSE(ParseEnvelope(SerializeEnvelope(e))->context_bound);
}

// Envelopes written by the build before the envelope code was made fast
// (commit 9d0736c), byte for byte: with "ctx" and, as written before names
// were bound, without. The keyring draws from ConstantRandom(0x11), so its
// version 1 key is the same in every fresh database.
constexpr char kFixedBound[] =
    R"({"v":1,"kms":"local","kid":"fixed-key","kver":1,"cv":7,"dek":"ERERERERERERERERB8ZLEyflfByFI8WAutPzkanFK9MCS2vH/KV7UCjoWjAtd7jWpEVm26VdqXCabrEP","iv":"ERERERERERERERER","ct":"bfU7cl+rBmjtEO6z2KnP49m6W7Bqd0rn34dedA/OcxhuywYZwjKC2ax7ISgCV3+qQdc=","ctx":1})";
constexpr char kFixedLegacy[] =
    R"({"v":1,"kms":"local","kid":"fixed-key","kver":1,"cv":7,"dek":"ERERERERERERERERB8ZLEyflfByFI8WAutPzkanFK9MCS2vH/KV7UCjoWjAsS7fRFFUdiY5wm1diBM1p","iv":"WlpaWlpaWlpaWlpa","ct":"hZf0CCLDS867BpJqQTcUDXp25ttqu/QDBQLkwQg77yuLfuzXujW9KNYlzy+8hLWbGvI="})";

TEST(EnvelopeCompatibility, BlobsWrittenBeforeStillOpen) {
  testing::TempDir dir;
  FakeClock clock;
  testing::ConstantRandom random(0x11);
  auto db = SqliteDb::Open(dir.File("f.db")).value();
  auto keys = NewLocalKeyring({"fixed-key", SecretBytes(std::string(32, 'm')), {}}, NewSqliteKeyVersionRepository(db), random, clock);
  ASSERT_TRUE(keys.ok()) << keys.error().message;
  Sealer sealer(**keys, random);
  const std::string name = "dyad-gateway/providers/p1";
  const SecretBytes payload(std::string(R"({"api_key":"sk-canary-0123456789"})"));
  for (const char* blob : {kFixedBound, kFixedLegacy}) {
    auto opened = sealer.Open(name, blob);
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    EXPECT_EQ(opened->payload, payload);
    EXPECT_EQ(opened->credentials_version, 7);
    EXPECT_EQ(opened->key_version, 1u);
    EXPECT_FALSE(sealer.Open("dyad-gateway/providers/p2", blob).ok());
    EXPECT_EQ(SerializeEnvelope(*ParseEnvelope(blob)), blob);  // the writer still writes the same bytes
  }
  // What this build writes today is what it wrote then.
  EXPECT_EQ(*sealer.Seal(name, 7, payload), kFixedBound);
  auto moved = sealer.Rewrap(name, kFixedLegacy, 1, false);
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_TRUE(ParseEnvelope(*moved)->context_bound);
  EXPECT_EQ(sealer.Open(name, *moved)->payload, payload);
}

// ParseEnvelope reads the canonical document in place and everything else
// through the general parser; both must answer alike (the fuzz target checks
// the same on every input it makes).
TEST(EnvelopeParser, InPlaceAndGeneralAgree) {
  const std::string canonical = kFixedBound;
  auto replace = [&](std::string from, std::string to) {
    std::string t = canonical;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  const std::vector<std::string> texts = {
      canonical,
      kFixedLegacy,
      replace("{\"v\":1,", "{ \"v\" : 1 ,"),                        // whitespace
      replace("\"kid\":\"fixed-key\"", "\"kid\":\"fixed\\u002dkey\""),  // an escape
      replace("\"kver\":1", "\"kver\":01"),                          // not JSON
      replace("\"kver\":1", "\"kver\":1.0"),
      replace("\"kver\":1", "\"kver\":-1"),
      replace("\"kver\":1", "\"kver\":18446744073709551615"),
      replace("\"cv\":7", "\"cv\":9223372036854775807"),
      replace("\"cv\":7", "\"cv\":7,\"cv\":8"),                       // repeated key
      replace("\"ctx\":1", "\"ctx\":true"),
      replace("\"ctx\":1", "\"ctx\":1,\"x\":1"),
      replace("\"iv\":\"ERERERERERERERER\"", "\"iv\":\"ERERERERERERER==\""),
      replace("\"iv\":\"ERERERERERERERER\"", "\"iv\":\"ERERERERERER=ERE\""),
      replace("\"iv\":\"ERERERERERERERER\"", "\"iv\":\"ERERERERERERERE\""),
      replace("\"kms\":\"local\"", "\"kms\":\"lo\x7f" "cal\""),
      replace("\"kms\":\"local\"", "\"kms\":[\"local\"]"),
      canonical + " ",
      canonical + "{}",
      "{}",
      "{\"v\":1}",
  };
  for (const auto& t : texts) {
    auto fast = ParseEnvelope(t);
    auto general = ParseEnvelopeGeneralForTesting(t);
    ASSERT_EQ(fast.ok(), general.ok()) << t;
    if (!fast.ok()) {
      EXPECT_EQ(fast.error().message, general.error().message) << t;
      continue;
    }
    EXPECT_EQ(SerializeEnvelope(*fast), SerializeEnvelope(*general)) << t;
    EXPECT_EQ(fast->context_bound, general->context_bound) << t;
  }
  EXPECT_TRUE(ParseEnvelope(texts[2]).ok());  // whitespace and escapes still read
  EXPECT_TRUE(ParseEnvelope(texts[3]).ok());
  EXPECT_NE(ParseEnvelope(texts[11]).error().message.find("\"x\" is unknown"), std::string::npos);
}

}  // namespace
}  // namespace dyad
