#include "server/tls_context.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace dyad {
namespace {

// TLS 1.2 only: forward secrecy and AEAD; 1.3's suites are all AEAD.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr unsigned char kSessionIdContext[] = "dyad-gateway";

// OpenSSL's last queued error, as "reason" text (never a file's content),
// and the queue cleared.
std::string OpenSslReason() {
  unsigned long e = ERR_peek_last_error();
  const char* reason = e ? ERR_reason_error_string(e) : nullptr;
  std::string out = reason ? reason : "unknown OpenSSL error";
  ERR_clear_error();
  return out;
}

Error FileError(const char* variable, const std::string& path, const std::string& what) {
  return MakeError(ErrorCode::kInvalidArgument, std::string(variable) + ": '" + path + "' " + what);
}

// That the file opens for reading, so "cannot read" is told apart from "not
// PEM"; the stat is for the key file's mode.
Status CheckReadable(const char* variable, const std::string& path, struct stat* st = nullptr) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FileError(variable, path, std::string("cannot be read: ") + std::strerror(errno));
  struct stat local {};
  int rc = ::fstat(fd, st ? st : &local);
  ::close(fd);
  if (rc != 0 || !S_ISREG((st ? st : &local)->st_mode)) return FileError(variable, path, "is not a regular file");
  return OkStatus();
}

// Never prompts on a terminal for an encrypted key's passphrase.
int NoPassphrase(char*, int, int, void*) { return 0; }

void WarnIfOutsideValidity(const TlsFiles& files, SSL_CTX* ctx) {
  X509* cert = SSL_CTX_get0_certificate(ctx);
  if (!cert) return;
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
    spdlog::warn("GATEWAY_TLS_CERT_FILE: '{}' has expired: clients will refuse it", files.cert_file);
  } else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
    spdlog::warn("GATEWAY_TLS_CERT_FILE: '{}' is not valid yet: clients will refuse it", files.cert_file);
  }
}

Status LoadClientCa(const TlsFiles& files, SSL_CTX* ctx) {
  const char* var = "GATEWAY_TLS_CLIENT_CA_FILE";
  DYAD_RETURN_IF_ERROR(CheckReadable(var, files.client_ca_file));
  if (SSL_CTX_load_verify_locations(ctx, files.client_ca_file.c_str(), nullptr) != 1) {
    return FileError(var, files.client_ca_file, "holds no usable PEM certificate: " + OpenSslReason());
  }
  STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(files.client_ca_file.c_str());
  if (!names) return FileError(var, files.client_ca_file, "holds no usable PEM certificate: " + OpenSslReason());
  SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return OkStatus();
}

}  // namespace

Result<SslCtxPtr> NewTlsServerContext(const TlsFiles& files) {
  ERR_clear_error();
  DYAD_RETURN_IF_ERROR(CheckReadable("GATEWAY_TLS_CERT_FILE", files.cert_file));
  struct stat key_stat {};
  DYAD_RETURN_IF_ERROR(CheckReadable("GATEWAY_TLS_KEY_FILE", files.key_file, &key_stat));
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) return MakeError(ErrorCode::kInternal, "cannot create a TLS context: " + OpenSslReason());
  SSL_CTX* c = ctx.get();
  if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1 || SSL_CTX_set_cipher_list(c, kTls12Ciphers) != 1) {
    return MakeError(ErrorCode::kInternal, "cannot set the TLS protocol policy: " + OpenSslReason());
  }
  // Level 2 (112-bit security: RSA/DH of 2048 bits or more, no SHA-1
  // signatures) whatever the system's openssl.cnf says.
  SSL_CTX_set_security_level(c, 2);
  SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_clear_options(c, SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
  SSL_CTX_set_session_id_context(c, kSessionIdContext, sizeof kSessionIdContext - 1);
  SSL_CTX_set_default_passwd_cb(c, NoPassphrase);
  if (SSL_CTX_use_certificate_chain_file(c, files.cert_file.c_str()) != 1) {
    return FileError("GATEWAY_TLS_CERT_FILE", files.cert_file,
                     "holds no usable PEM certificate: " + OpenSslReason());
  }
  // OpenSSL checks the key against the certificate as it loads it.
  bool loaded = SSL_CTX_use_PrivateKey_file(c, files.key_file.c_str(), SSL_FILETYPE_PEM) == 1;
  unsigned long e = ERR_peek_last_error();
  bool mismatch = !loaded && ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
  if (!loaded && !mismatch) {
    return FileError("GATEWAY_TLS_KEY_FILE", files.key_file,
                     "holds no usable unencrypted PEM private key: " + OpenSslReason());
  }
  if (mismatch || SSL_CTX_check_private_key(c) != 1) {
    ERR_clear_error();
    return FileError("GATEWAY_TLS_KEY_FILE", files.key_file,
                     "does not match the certificate of GATEWAY_TLS_CERT_FILE '" + files.cert_file + "'");
  }
  if (!files.client_ca_file.empty()) DYAD_RETURN_IF_ERROR(LoadClientCa(files, c));
  if (key_stat.st_mode & 077) {
    spdlog::warn("GATEWAY_TLS_KEY_FILE: '{}' is readable or writable by group or others (mode {:04o}); chmod 600 it",
                 files.key_file, key_stat.st_mode & 07777);
  }
  WarnIfOutsideValidity(files, c);
  return ctx;
}

std::string NameRfc2253(const X509_NAME* name) {
  if (!name) return "";
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio) return "";
  std::string out;
  if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    if (n > 0 && data) out.assign(data, static_cast<size_t>(n));
  }
  BIO_free(bio);
  return out;
}

std::string PeerSubjectRfc2253(const SSL* ssl) {
  X509* cert = ssl ? SSL_get0_peer_certificate(ssl) : nullptr;
  // Only a certificate the client CA vouched for names anybody.
  if (!cert || SSL_get_verify_result(ssl) != X509_V_OK) return "";
  return NameRfc2253(X509_get_subject_name(cert));
}

}  // namespace dyad
