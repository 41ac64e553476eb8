#include "http/tls_context.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

namespace inferllama::http {
namespace {

// OpenSSL's reasons for the last failure, oldest first, and the error queue emptied.
std::string openssl_reasons() {
  std::string out;
  while (const unsigned long code = ERR_get_error()) {
    char text[256];  // NOLINT(modernize-avoid-c-arrays): OpenSSL writes into a plain buffer
    ERR_error_string_n(code, text, sizeof text);
    if (!out.empty()) out += "; ";
    out += text;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

void check_readable(const char* key, const std::filesystem::path& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError(std::string("invalid ") + key + " " + path.string() + ": is a directory, not " + what);
  std::ifstream file(path);
  if (!file)
    throw ConfigError(std::string("invalid ") + key + " " + path.string() + ": cannot read it (" +
                      std::strerror(errno) + "): give the path of " + what);
}

}  // namespace

std::unique_ptr<asio::ssl::context> make_tls_context(const Config& config) {
  check_readable("tls_cert", config.tls_cert, "a PEM certificate chain (the server's certificate first)");
  check_readable("tls_key", config.tls_key, "the certificate's PEM private key");
  auto tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                   asio::ssl::context::single_dh_use);
  SSL_CTX* native = tls->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_cipher_list(native,
                          "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                          "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305");
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(native, config.tls_cert.c_str()) != 1)
    throw ConfigError("invalid tls_cert " + config.tls_cert.string() + ": not a PEM certificate chain (" +
                      openssl_reasons() + ")");
  // OpenSSL checks the key against the certificate as it loads it.
  const bool loaded = SSL_CTX_use_PrivateKey_file(native, config.tls_key.c_str(), SSL_FILETYPE_PEM) == 1;
  const bool mismatch = !loaded && ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
  if (!loaded && !mismatch)
    throw ConfigError("invalid tls_key " + config.tls_key.string() + ": not a PEM private key (" + openssl_reasons() +
                      ")");
  if (mismatch || SSL_CTX_check_private_key(native) != 1)
    throw ConfigError("invalid tls_key " + config.tls_key.string() +
                      ": it does not belong to the certificate in tls_cert " + config.tls_cert.string() + " (" +
                      openssl_reasons() + "): give the key the certificate was made for");
  return tls;
}

}  // namespace inferllama::http
