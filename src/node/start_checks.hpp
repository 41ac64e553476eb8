// What `serve` checks before it binds a port or prints a line, and how a listener that cannot bind is named.
#pragma once
#include <exception>
#include <string>
#include <string_view>

#include "inferllama/config.hpp"

namespace inferllama::node {

// Every listen setting's host resolves (a name becomes the address it resolves to, IPv4 first), the TLS
// settings come together (tls_listen with tls_cert and tls_key), and the TLS files load and belong together. Throws
// ConfigError naming the setting, the value and what to do.
Config checked_for_start(Config config);

// "--listen 127.0.0.1:8080: address already in use (...)": a bind that failed, named by its setting.
[[noreturn]] void throw_bind_error(std::string_view key, const std::string& value, const std::exception& error);

// Runs `bind`, naming the setting in what it throws.
template <class Bind>
auto bind_named(std::string_view key, const std::string& value, Bind&& bind) {
  try {
    return bind();
  } catch (const std::exception& e) {
    throw_bind_error(key, value, e);
  }
}

}  // namespace inferllama::node
