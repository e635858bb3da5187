// The admin listener's TLS server context, built from the GATEWAY_TLS_* files
// with OpenSSL alone (no Asio here, so it compiles fast and unit-tests alone).
//
// Policy: TLS 1.2 and 1.3 only; for 1.2 only ECDHE key exchange with AES-GCM
// or ChaCha20-Poly1305 (server order), 1.3 with OpenSSL's default (all AEAD)
// suites; OpenSSL security level 2; no compression, no renegotiation. With a client CA file, every
// client must present a certificate that CA issued (mTLS).
//
// NewTlsServerContext() reads the files each time it is called (a SIGHUP
// reload builds a fresh context); its errors name the variable and the file
// and never quote a file's content. Warnings (a key file readable by group or
// others, a certificate outside its validity period) go to the log and do not
// refuse: the key-file mode is the operator's call, and an expired
// certificate is refused by clients anyway. Thread-safe (no shared state).
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "core/config.h"
#include "core/result.h"

namespace dyad {

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

Result<SslCtxPtr> NewTlsServerContext(const TlsFiles& files);

// A distinguished name as RFC 2253 prints it (OpenSSL's XN_FLAG_RFC2253, as
// `openssl x509 -noout -subject -nameopt RFC2253` shows it): most specific
// RDN first, "," between RDNs, "+" inside a multi-valued one, special
// characters escaped. This exact string is what a tokens file's
// clientCertSubject is compared with. "" for a null name.
std::string NameRfc2253(const X509_NAME* name);

// The subject of the certificate the peer presented on `ssl` (verified
// during the handshake when a client CA is set), or "" when there is none.
std::string PeerSubjectRfc2253(const SSL* ssl);

}  // namespace dyad
