// The secrets backend named by SECRETS_PROVIDER: its SecretStore and
// KeyManager, and what they need to live (HTTP transport, AWS credentials).
#pragma once

#include <memory>

#include "backends/aws/aws_credentials.h"
#include "backends/key_manager.h"
#include "backends/secret_store.h"
#include "cloud/call_observer.h"
#include "core/clock.h"
#include "core/config.h"
#include "registry/sqlite_db.h"
#include "transport/http_transport.h"

namespace dyad {

struct Backend {
  // Declared first, destroyed last: the store and keys use them.
  std::unique_ptr<HttpTransport> credentials_http;
  std::unique_ptr<AwsCredentialSource> aws_credentials;
  std::unique_ptr<KeyManager> keys;
  std::unique_ptr<SecretStore> store;
  // Secrets a key rotation rewraps at once (a remote KMS: round trips add up).
  size_t rotation_parallelism = 1;
};

// `observer` (optional, must outlive the backend) hears of every call a
// cloud backend makes.
Result<Backend> OpenBackend(const Config& config, std::shared_ptr<SqliteDb> db, const Clock& clock,
                            CloudCallObserver* observer = nullptr);

}  // namespace dyad
