#include "node/start_checks.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <boost/system/system_error.hpp>
#include <cerrno>
#include <memory>
#include <stdexcept>
#include <utility>

#include "http/tls_context.hpp"
#include "inferllama/network.hpp"

namespace inferllama::node {
namespace {

std::string flag_of(std::string_view key) {
  for (const auto& k : config_keys()) {
    if (k.name == key) return std::string(k.flag);
  }
  return std::string(key);
}

bool is_address(const std::string& host) {
  in6_addr v6{};
  in_addr v4{};
  const std::string without_zone = host.substr(0, host.find('%'));
  return ::inet_pton(AF_INET, host.c_str(), &v4) == 1 || ::inet_pton(AF_INET6, without_zone.c_str(), &v6) == 1;
}

// A host name as the address it resolves to: the first IPv4 one, else the first IPv6 one.
std::string resolve(std::string_view key, const std::string& value, const HostPort& listen) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(listen.host.c_str(), nullptr, &hints, &found);
  if (rc != 0) {
    throw ConfigError(
        "invalid " + std::string(key) + " (" + flag_of(key) + " " + value + "): the host " + listen.host +
        " does not resolve (" + ::gai_strerror(rc) +
        "): give an address of this machine, e.g. 127.0.0.1 (loopback only) or 0.0.0.0 (every interface)");
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(found, ::freeaddrinfo);
  const addrinfo* chosen = nullptr;
  for (const addrinfo* a = found; a; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      chosen = a;
      break;
    }
    if (a->ai_family == AF_INET6 && !chosen) chosen = a;
  }
  if (!chosen) throw ConfigError("invalid " + std::string(key) + ": the host " + listen.host + " has no IP address");
  char text[INET6_ADDRSTRLEN] = {};  // NOLINT(modernize-avoid-c-arrays): inet_ntop writes a plain buffer
  const void* address =
      chosen->ai_family == AF_INET
          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(chosen->ai_addr)->sin_addr)
          : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(chosen->ai_addr)->sin6_addr);
  ::inet_ntop(chosen->ai_family, address, text, sizeof text);
  return HostPort{text, listen.port}.str();
}

}  // namespace

Config checked_for_start(Config config) {
  struct Listen {
    std::string_view key;
    std::string Config::*value;
  };
  static constexpr Listen kListeners[] = {{"listen", &Config::listen},
                                          {"tls_listen", &Config::tls_listen},
                                          {"bt_listen", &Config::bt_listen},
                                          {"tracker_udp", &Config::tracker_udp},
                                          {"metrics_listen", &Config::metrics_listen}};
  for (const Listen& l : kListeners) {
    std::string& value = config.*l.value;
    if (value.empty()) continue;
    const auto listen = HostPort::parse(value);  // load_config validated it
    if (!listen || is_address(listen->host)) continue;
    value = resolve(l.key, value, *listen);
  }
  if (config.tls_listen.empty()) {
    for (const auto& [key, file] : {std::pair{"tls_cert", &config.tls_cert}, std::pair{"tls_key", &config.tls_key}}) {
      if (!file->empty()) {
        throw ConfigError("invalid " + std::string(key) + " (" + flag_of(key) + " " + file->string() +
                          "): it needs tls_listen (--tls-listen HOST:PORT), the HTTPS listener it is for");
      }
    }
  } else if (config.tls_cert.empty() || config.tls_key.empty()) {
    throw ConfigError("invalid tls_listen (--tls-listen " + config.tls_listen +
                      "): it needs tls_cert and tls_key (--tls-cert FILE --tls-key FILE, PEM)");
  } else {
    http::make_tls_context(config);
  }
  return config;
}

void throw_bind_error(std::string_view key, const std::string& value, const std::exception& error) {
  std::string hint;
  int code = 0;
  if (const auto* system = dynamic_cast<const boost::system::system_error*>(&error)) code = system->code().value();
  const std::string what = error.what();
  if (code == EADDRINUSE || what.find("in use") != std::string::npos) {
    hint = ": another process listens there; stop it or choose another port (port 0 = any free port)";
  } else if (code == EACCES || what.find("ermission") != std::string::npos) {
    hint = ": ports below 1024 need privileges; choose a port above 1023";
  } else if (code == EADDRNOTAVAIL || what.find("not available") != std::string::npos) {
    hint = ": no interface of this machine has that address; use 127.0.0.1 or 0.0.0.0";
  }
  throw std::runtime_error(flag_of(key) + " " + value + ": " + what + hint);
}

}  // namespace inferllama::node
