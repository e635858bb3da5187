// Test certificates: a self-signed P-256 certificate for 127.0.0.1 and its
// key, written as PEM files in the test's temporary directory. The
// certificate is its own CA: a client trusting that file verifies a server
// presenting it (the name is the CN; curl and OpenSSL match an IP host
// against the CN when there is no subjectAltName). Test code only.
#pragma once

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cstdio>
#include <string>

#include "core/config.h"

namespace dyad {

inline TlsFiles MakeCertAndKey(const std::string& stem) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 7);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());
  TlsFiles files{::testing::TempDir() + "/" + stem + "_cert.pem", ::testing::TempDir() + "/" + stem + "_key.pem", ""};
  FILE* f = std::fopen(files.cert_file.c_str(), "w");
  PEM_write_X509(f, cert);
  std::fclose(f);
  f = std::fopen(files.key_file.c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  ::chmod(files.key_file.c_str(), 0600);
  X509_free(cert);
  EVP_PKEY_free(key);
  return files;
}

}  // namespace dyad
