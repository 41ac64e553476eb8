#pragma once
#include <memory>

#include "inferllama/asio.hpp"  // first: see there

#include <boost/asio/ssl/context.hpp>

#include "inferllama/config.hpp"

namespace inferllama::http {

// The HTTPS listener's context from tls_cert and tls_key: TLS 1.2 and 1.3, forward-secret AEAD ciphers
// only. Throws ConfigError naming the setting and the file when a file cannot be read, is no PEM of the
// right kind, or the key does not belong to the certificate.
std::unique_ptr<asio::ssl::context> make_tls_context(const Config& config);

}  // namespace inferllama::http
