#include "inferllama/config.hpp"
#include "inferllama/network.hpp"

#include <toml++/toml.h>

#include "inferllama/user_name.hpp"

#include <sys/stat.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

namespace inferllama {
namespace {

__extension__ typedef unsigned __int128 u128;

constexpr std::uint64_t kU64Max = std::numeric_limits<std::uint64_t>::max();

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_space(char c) {
  return c == ' ' || c == '\t';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string quote_text(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[(static_cast<unsigned char>(c) >> 4) & 0xf];
      out += kHex[static_cast<unsigned char>(c) & 0xf];
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

// ---- numbers with an optional fraction and unit ------------------------------------------------

struct Decimal {
  std::uint64_t whole = 0;
  std::uint64_t frac = 0;        // digits after the point, as an integer
  std::uint64_t frac_scale = 1;  // 10^(number of fraction digits)
};

// Reads [0-9]+(\.[0-9]+)? from the front of `s`; returns false when no digits are there.
bool read_decimal(std::string_view& s, Decimal& d, std::string_view original, std::string_view what) {
  std::size_t i = 0;
  if (i >= s.size() || !is_digit(s[i])) return false;
  for (; i < s.size() && is_digit(s[i]); ++i) {
    if (__builtin_mul_overflow(d.whole, 10u, &d.whole) ||
        __builtin_add_overflow(d.whole, static_cast<std::uint64_t>(s[i] - '0'), &d.whole))
      throw ConfigError("invalid " + std::string(what) + " " + quote_text(original) + ": number too large");
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (i >= s.size() || !is_digit(s[i]))
      throw ConfigError("invalid " + std::string(what) + " " + quote_text(original) + ": expected digits after '.'");
    for (; i < s.size() && is_digit(s[i]); ++i) {
      if (d.frac_scale >= 1'000'000'000'000'000'000ull)
        throw ConfigError("invalid " + std::string(what) + " " + quote_text(original) + ": too many decimals");
      d.frac = d.frac * 10 + static_cast<std::uint64_t>(s[i] - '0');
      d.frac_scale *= 10;
    }
  }
  s.remove_prefix(i);
  return true;
}

// d * factor, exactly; throws when it is not whole or does not fit.
std::uint64_t scale(const Decimal& d, std::uint64_t factor, std::string_view original, std::string_view what,
                    std::string_view unit_name) {
  u128 whole = static_cast<u128>(d.whole) * factor;
  u128 frac = static_cast<u128>(d.frac) * factor;
  if (frac % d.frac_scale != 0)
    throw ConfigError("invalid " + std::string(what) + " " + quote_text(original) + ": not a whole number of " +
                      std::string(unit_name));
  u128 total = whole + frac / d.frac_scale;
  if (total > kU64Max) throw ConfigError("invalid " + std::string(what) + " " + quote_text(original) + ": too large");
  return static_cast<std::uint64_t>(total);
}

std::string_view read_unit(std::string_view& s) {
  std::size_t i = 0;
  while (i < s.size() && is_alpha(s[i])) ++i;
  std::string_view unit = s.substr(0, i);
  s.remove_prefix(i);
  return unit;
}

// ---- validators ---------------------------------------------------------------------------------

std::string validate_listen(std::string_view s) {
  std::string why;
  if (!HostPort::parse(s, &why)) throw ConfigError(quote_text(s) + ": " + why);
  return std::string(s);
}

// A URL as an error message shows it: a password in its user info stays out of the terminal and the logs.
std::string without_user_info(std::string_view url) {
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const std::size_t at = url.substr(0, url.find('/', scheme_end + 3)).rfind('@');
  if (at == std::string_view::npos || at < scheme_end) return std::string(url);
  return std::string(url.substr(0, scheme_end + 3)) + "***@" + std::string(url.substr(at + 1));
}

// http(s)://HOST[:PORT][/path]; strips one trailing '/'; scheme normalised to lower case.
std::string validate_url(std::string_view s) {
  std::string out(s);
  std::size_t scheme_len = 0;
  const std::string low = to_lower(s.substr(0, 8));
  if (low.starts_with("https://")) {
    scheme_len = 8;
  } else if (low.starts_with("http://")) {
    scheme_len = 7;
  } else {
    throw ConfigError(quote_text(without_user_info(s)) + ": must start with http:// or https://");
  }
  for (std::size_t i = 0; i < scheme_len; ++i) out[i] = lower(out[i]);
  for (char c : s) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      throw ConfigError(quote_text(without_user_info(s)) + ": URL must not contain spaces or control characters");
    if (c == '?' || c == '#')
      throw ConfigError(quote_text(without_user_info(s)) + ": URL must not have a query or fragment");
  }
  const std::string_view rest = std::string_view(out).substr(scheme_len);
  const std::string_view authority = rest.substr(0, rest.find('/'));
  const std::string_view host =
      authority.substr(authority.rfind('@') == std::string_view::npos ? 0 : authority.rfind('@') + 1);
  if (host.empty() || host.front() == ':') throw ConfigError(quote_text(without_user_info(s)) + ": URL has no host");
  if (out.ends_with('/')) out.pop_back();
  return out;
}

// One URL or several, comma-separated (spaces around commas ignored): at most kMaxUpstreamParents,
// none twice.
constexpr std::size_t kMaxUpstreamParents = 32;
std::vector<std::string> validate_url_list(std::string_view s) {
  std::vector<std::string> urls;
  for (std::size_t start = 0; start <= s.size();) {
    std::size_t comma = s.find(',', start);
    if (comma == std::string_view::npos) comma = s.size();
    std::string_view item = s.substr(start, comma - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    std::string url = validate_url(item);
    if (std::find(urls.begin(), urls.end(), url) != urls.end())
      throw ConfigError(quote_text(without_user_info(url)) + " is listed twice");
    urls.push_back(std::move(url));
    start = comma + 1;
  }
  if (urls.size() > kMaxUpstreamParents)
    throw ConfigError("at most " + std::to_string(kMaxUpstreamParents) + " upstream URLs");
  return urls;
}

// ---- one value from one source ------------------------------------------------------------------

struct OtherType {
  std::string type_name;
};
using RawValue = std::variant<std::string, std::int64_t, bool, OtherType>;

struct Input {
  std::string_view key;
  std::string origin;  // "flag --x", "environment variable INFERLLAMA_X", "config file F line N"
  RawValue value;
  bool secret = false;

  [[noreturn]] void fail(std::string_view reason) const {
    throw ConfigError("invalid " + std::string(key) + " (from " + origin + "): " + std::string(reason));
  }

  std::string type_name() const {
    if (std::holds_alternative<std::string>(value)) return "string";
    if (std::holds_alternative<std::int64_t>(value)) return "integer";
    if (std::holds_alternative<bool>(value)) return "boolean";
    return std::get<OtherType>(value).type_name;
  }

  const std::string& text() const {
    if (const auto* s = std::get_if<std::string>(&value)) return *s;
    fail("expected a string, got " + type_name());
  }

  template <typename F>
  auto checked(F&& f) const -> decltype(f()) {
    try {
      return f();
    } catch (const ConfigError& e) {
      if (secret) fail("rejected (value not shown)");
      fail(e.what());
    }
  }

  std::uint64_t integer(std::uint64_t min, std::uint64_t max) const {
    std::uint64_t v = 0;
    if (const auto* i = std::get_if<std::int64_t>(&value)) {
      if (*i < 0) fail(std::to_string(*i) + " is negative");
      v = static_cast<std::uint64_t>(*i);
    } else if (const auto* s = std::get_if<std::string>(&value)) {
      const std::string_view t = trim(*s);
      if (t.empty() || !std::all_of(t.begin(), t.end(), is_digit)) fail(quote_text(*s) + " is not a whole number");
      v = 0;
      for (char c : t) {
        if (__builtin_mul_overflow(v, 10u, &v) || __builtin_add_overflow(v, static_cast<std::uint64_t>(c - '0'), &v))
          fail(quote_text(*s) + " is too large");
      }
    } else {
      fail("expected an integer, got " + type_name());
    }
    if (v < min || v > max)
      fail(std::to_string(v) + " is out of range " + std::to_string(min) + ".." + std::to_string(max));
    return v;
  }

  // TOML true/false, or text: true/false, yes/no, on/off, 1/0; empty (a bare --flag) means true.
  bool boolean() const {
    if (const auto* b = std::get_if<bool>(&value)) return *b;
    if (const auto* s = std::get_if<std::string>(&value)) {
      std::string t(trim(*s));
      std::transform(t.begin(), t.end(), t.begin(), [](unsigned char ch) { return std::tolower(ch); });
      if (t.empty() || t == "true" || t == "yes" || t == "on" || t == "1") return true;
      if (t == "false" || t == "no" || t == "off" || t == "0") return false;
      fail(quote_text(*s) + " is not true or false");
    }
    fail("expected true or false, got " + type_name());
  }

  std::uint64_t size() const {
    if (const auto* i = std::get_if<std::int64_t>(&value)) {
      if (*i < 0) fail(std::to_string(*i) + " is negative");
      return static_cast<std::uint64_t>(*i);
    }
    if (const auto* s = std::get_if<std::string>(&value)) return checked([&] { return parse_size(*s); });
    fail("expected a size (integer bytes or a string like \"4MiB\"), got " + type_name());
  }

  std::chrono::milliseconds duration() const {
    if (const auto* i = std::get_if<std::int64_t>(&value)) {
      if (*i < 0) fail(std::to_string(*i) + " is negative");
      if (*i > std::numeric_limits<std::int64_t>::max() / 1000) fail(std::to_string(*i) + " is too large");
      return std::chrono::seconds(*i);
    }
    if (const auto* s = std::get_if<std::string>(&value)) return checked([&] { return parse_duration(*s); });
    fail("expected a duration (integer seconds or a string like \"30s\"), got " + type_name());
  }

  std::chrono::seconds whole_seconds(std::int64_t min, std::int64_t max) const {
    const auto ms = duration();
    if (ms.count() % 1000 != 0) fail(std::to_string(ms.count()) + "ms is not a whole number of seconds");
    const auto s = std::chrono::duration_cast<std::chrono::seconds>(ms);
    if (s.count() < min || s.count() > max)
      fail(std::to_string(s.count()) + "s is out of range " + std::to_string(min) + "s.." + std::to_string(max) + "s");
    return s;
  }
};

// ---- the table ----------------------------------------------------------------------------------

using Apply = void (*)(Config&, const Input&);

struct KeySpec {
  ConfigKey key;
  Apply apply;
  bool secret = false;
};

constexpr std::int64_t kMaxSeconds = std::numeric_limits<std::int64_t>::max() / 1000;

constexpr KeySpec kSpecs[] = {
    {{"listen", "--listen", "INFERLLAMA_LISTEN",
      "HOST:PORT of the plain HTTP listener ([::1]:8080 for IPv6; port 0 = any free port)", "0.0.0.0:8080"},
     [](Config& c, const Input& in) { c.listen = in.checked([&] { return validate_listen(in.text()); }); }},
    {{"data_dir", "--data-dir", "INFERLLAMA_DATA_DIR",
      "Directory for the chunk store and the RocksDB index (a relative path is used as given)", "./data"},
     [](Config& c, const Input& in) {
       if (in.text().empty()) in.fail("must not be empty");
       c.data_dir = in.text();
     }},
    {{"upstream", "--upstream", "INFERLLAMA_UPSTREAM",
      "Base URL to fetch from: the HuggingFace Hub or a parent InferLlama node (http:// or https://); or "
      "several parent nodes, comma-separated, each file fetched through the one rendezvous hashing picks",
      "https://huggingface.co"},
     [](Config& c, const Input& in) {
       auto urls = in.checked([&] { return validate_url_list(in.text()); });
       c.upstream = urls.front();
       c.upstream_parents = urls.size() > 1 ? std::move(urls) : std::vector<std::string>{};
     }},
    {{"upstream_fallback", "--upstream-fallback", "INFERLLAMA_UPSTREAM_FALLBACK",
      "Base URL tried when every upstream parent failed or is backing off (e.g. the Hub); empty = none", ""},
     [](Config& c, const Input& in) {
       c.upstream_fallback = in.text().empty() ? "" : in.checked([&] { return validate_url(in.text()); });
     }},
    {{"upstream_backoff", "--upstream-backoff", "INFERLLAMA_UPSTREAM_BACKOFF",
      "How long an upstream parent that failed is skipped for the next one (e.g. 10s), greater than 0", "10s"},
     [](Config& c, const Input& in) {
       const auto v = in.duration();
       if (v.count() <= 0) in.fail("must be greater than 0");
       c.upstream_backoff = v;
     }},
    {{"upstream_token", "--upstream-token", "INFERLLAMA_UPSTREAM_TOKEN",
      "Hub token for the node's own upstream calls (visibility checks, public repos); never opens a gated or "
      "private repo to a client. When unset everywhere, the HF_TOKEN environment variable is used",
      ""},
     [](Config& c, const Input& in) {
       for (char ch : in.text()) {
         if (static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7f)
           in.fail("must not contain spaces or control characters (value not shown)");
       }
       c.upstream_token = in.text();
     },
     true},
    {{"upstream_token_file", "--upstream-token-file", "INFERLLAMA_UPSTREAM_TOKEN_FILE",
      "File holding upstream_token (read at start; a trailing newline is ignored), so the token is in no "
      "process's arguments or environment; not together with upstream_token",
      ""},
     [](Config& c, const Input& in) { c.upstream_token_file = in.text(); }},
    {{"upstream_tokens_file", "--upstream-tokens-file", "INFERLLAMA_UPSTREAM_TOKENS_FILE",
      "File of more Hub tokens of the node's, one a line (mode 0600; empty lines and # comments skipped): with "
      "upstream_token one list, over which requests about public repos are spread by repo, past a token the "
      "Hub throttles",
      ""},
     [](Config& c, const Input& in) { c.upstream_tokens_file = in.text(); }},
    {{"upstream_throttle_max", "--upstream-throttle-max", "INFERLLAMA_UPSTREAM_THROTTLE_MAX",
      "The longest the node holds back the requests of a credential the Hub throttles (its 429 or 503 asking "
      "for longer is taken as this), whole seconds 1s..1d",
      "1h"},
     [](Config& c, const Input& in) { c.upstream_throttle_max = in.whole_seconds(1, 86400); }},
    {{"public_url", "--public-url", "INFERLLAMA_PUBLIC_URL",
      "URL this node uses for itself in links (http:// or https://); empty = from the request's Host header", ""},
     [](Config& c, const Input& in) {
       c.public_url = in.text().empty() ? std::string() : in.checked([&] { return validate_url(in.text()); });
     }},
    {{"log_level", "--log-level", "INFERLLAMA_LOG_LEVEL", "Log level: trace, debug, info, warn, error, critical or off",
      "info"},
     [](Config& c, const Input& in) {
       static constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
       const std::string level = to_lower(trim(in.text()));
       if (std::find(std::begin(kLevels), std::end(kLevels), level) == std::end(kLevels))
         in.fail(quote_text(in.text()) + " is not one of trace, debug, info, warn, error, critical, off");
       c.log_level = level;
     }},
    {{"chunk_size", "--chunk-size", "INFERLLAMA_CHUNK_SIZE",
      "Size of stored chunks: a power of two from 64KiB to 64MiB", "4MiB"},
     [](Config& c, const Input& in) {
       const std::uint64_t v = in.size();
       if (v < 64 * kKiB || v > 64 * kMiB || (v & (v - 1)) != 0)
         in.fail(std::to_string(v) + " bytes is not a power of two from 64KiB (65536) to 64MiB (67108864)");
       c.chunk_size = v;
     }},
    {{"upstream_connections", "--upstream-connections", "INFERLLAMA_UPSTREAM_CONNECTIONS",
      "Parallel Range connections per large file at most (added one at a time while each raises the rate), 1..32", "4"},
     [](Config& c, const Input& in) { c.upstream_connections = static_cast<unsigned>(in.integer(1, 32)); }},
    {{"parallel_threshold", "--parallel-threshold", "INFERLLAMA_PARALLEL_THRESHOLD",
      "Files at least this large are fetched with parallel Range connections", "32MiB"},
     [](Config& c, const Input& in) { c.parallel_threshold = in.size(); }},
    {{"swarm_threshold", "--swarm-threshold", "INFERLLAMA_SWARM_THRESHOLD",
      "Files at least this large are fetched from the swarm of an upstream that is a node (0 = never)", "256MiB"},
     [](Config& c, const Input& in) { c.swarm_threshold = in.size(); }},
    {{"upstream_retries", "--upstream-retries", "INFERLLAMA_UPSTREAM_RETRIES",
      "Retries per broken upstream connection, 0..100", "5"},
     [](Config& c, const Input& in) { c.upstream_retries = static_cast<unsigned>(in.integer(0, 100)); }},
    {{"upstream_timeout", "--upstream-timeout", "INFERLLAMA_UPSTREAM_TIMEOUT",
      "Upstream connect and stall timeout (e.g. 30s, 500ms; a bare number is seconds), greater than 0", "30s"},
     [](Config& c, const Input& in) {
       const auto v = in.duration();
       if (v.count() <= 0) in.fail("must be greater than 0");
       c.upstream_timeout = v;
     }},
    {{"ref_ttl", "--ref-ttl", "INFERLLAMA_REF_TTL",
      "How long a branch/tag -> commit resolution is cached, whole seconds (0 = always ask upstream)", "60s"},
     [](Config& c, const Input& in) { c.ref_ttl = in.whole_seconds(0, kMaxSeconds); }},
    {{"access_ttl", "--access-ttl", "INFERLLAMA_ACCESS_TTL",
      "How long a gated/private repository access decision is cached, 1s..60s", "60s"},
     [](Config& c, const Input& in) { c.access_ttl = in.whole_seconds(1, 60); }},
    {{"io_threads", "--io-threads", "INFERLLAMA_IO_THREADS", "Network I/O threads, 0..1024 (0 = number of cores)", "0"},
     [](Config& c, const Input& in) { c.io_threads = static_cast<unsigned>(in.integer(0, 1024)); }},
    {{"worker_threads", "--worker-threads", "INFERLLAMA_WORKER_THREADS",
      "Threads for hashing, disk and RocksDB work, 0..1024 (0 = number of cores)", "0"},
     [](Config& c, const Input& in) { c.worker_threads = static_cast<unsigned>(in.integer(0, 1024)); }},
    {{"tls_listen", "--tls-listen", "INFERLLAMA_TLS_LISTEN",
      "HOST:PORT of the HTTPS listener (TLS 1.2+; needs tls_cert and tls_key); empty = no TLS", ""},
     [](Config& c, const Input& in) {
       c.tls_listen = in.text().empty() ? "" : in.checked([&] { return validate_listen(in.text()); });
     }},
    {{"tls_cert", "--tls-cert", "INFERLLAMA_TLS_CERT", "PEM certificate chain for the HTTPS listener", ""},
     [](Config& c, const Input& in) { c.tls_cert = in.text(); }},
    {{"tls_key", "--tls-key", "INFERLLAMA_TLS_KEY", "PEM private key for the HTTPS listener", ""},
     [](Config& c, const Input& in) { c.tls_key = in.text(); }},
    {{"max_disk", "--max-disk", "INFERLLAMA_MAX_DISK",
      "Disk budget of the chunk store (e.g. \"500GiB\"); least recently used files are evicted to stay under "
      "it, pinned snapshots never; 0 = no budget",
      "0"},
     [](Config& c, const Input& in) { c.max_disk = in.size(); }},
    {{"hosted_quota", "--hosted-quota", "INFERLLAMA_HOSTED_QUOTA",
      "Bytes each namespace (a user's, an organisation's) may hold in hosted repos (e.g. \"50GiB\"); hosted files "
      "are never evicted and do not count against max_disk; 0 = no quota",
      "0"},
     [](Config& c, const Input& in) { c.hosted_quota = in.size(); }},
    {{"metadata_budget", "--metadata-budget", "INFERLLAMA_METADATA_BUDGET",
      "Bytes of Hub metadata answers (revision info, tree pages, paths-info) kept in the index, each entry "
      "charged 1KiB more than its size; the least recently used go first; 0 = keep none",
      "256MiB"},
     [](Config& c, const Input& in) { c.metadata_budget = in.size(); }},
    {{"idle_timeout", "--idle-timeout", "INFERLLAMA_IDLE_TIMEOUT",
      "Close a client connection that makes no progress this long: idle keep-alive, a request arriving too "
      "slowly (slowloris), or a client that stops reading; 1s..1h",
      "60s"},
     [](Config& c, const Input& in) { c.idle_timeout = in.whole_seconds(1, 3600); }},
    {{"max_connections", "--max-connections", "INFERLLAMA_MAX_CONNECTIONS",
      "Open client connections at most; further ones get a 503 at once, 1..1000000", "10000"},
     [](Config& c, const Input& in) { c.max_connections = static_cast<unsigned>(in.integer(1, 1000000)); }},
    {{"access_log", "--access-log", "INFERLLAMA_ACCESS_LOG",
      "JSON access log, one line a request: empty = off; \"-\" = stdout (the node's own log is on stderr); "
      "else a file, a relative path being in the data directory, created mode 0600 and opened again on SIGHUP",
      ""},
     [](Config& c, const Input& in) { c.access_log = in.text(); }},
    {{"access_log_retention", "--access-log-retention", "INFERLLAMA_ACCESS_LOG_RETENTION",
      "An access log file is rotated at each UTC midnight to <file>.YYYY-MM-DD, and rotated files are deleted "
      "once their day is this old; 1d..10000d, or 0 to leave rotation to logrotate (SIGHUP)",
      "30d"},
     [](Config& c, const Input& in) {
       const auto retention = in.whole_seconds(0, 10000LL * 86400);
       if (retention.count() != 0 && retention.count() < 86400)
         in.fail(std::to_string(retention.count()) + "s is neither 0 nor at least a day");
       c.access_log_retention = retention;
     }},
    {{"offline", "--offline", "INFERLLAMA_OFFLINE",
      "Never contact the upstream: serve cached commits (branch names at the last commit seen), refuse the rest",
      "false", true},
     [](Config& c, const Input& in) { c.offline = in.boolean(); }},
    {{"offline_grace", "--offline-grace", "INFERLLAMA_OFFLINE_GRACE",
      "While the upstream cannot be asked, keep serving a gated or private repo to a caller the Hub let in "
      "within this long; 0s = refuse them (at most 7 days)",
      "0s"},
     [](Config& c, const Input& in) { c.offline_grace = in.whole_seconds(0, 7 * 24 * 3600); }},
    {{"scan_policy", "--scan-policy", "INFERLLAMA_SCAN_POLICY",
      "Model files (pickles, PyTorch zips, safetensors, GGUF) are scanned as they are stored: off (not scanned), "
      "warn (the verdict is kept and shown in X-InferLlama-Scan) or deny (a file with findings, or that cannot be "
      "read as its format, is refused with 403); a repo rule's own scan action overrides it",
      "warn"},
     [](Config& c, const Input& in) {
       const std::string& action = in.text();
       if (action == "off") {
         c.scan_policy = ScanAction::off;
       } else if (action == "warn") {
         c.scan_policy = ScanAction::warn;
       } else if (action == "deny") {
         c.scan_policy = ScanAction::deny;
       } else {
         in.fail(quote_text(action) + " is not off, warn or deny");
       }
     }},
    {{"backup_dir", "--backup-dir", "INFERLLAMA_BACKUP_DIR",
      "Directory of the node's scheduled backups (inferllama-backup-<UTC time>.ilbk), outside the data directory; "
      "empty = none",
      ""},
     [](Config& c, const Input& in) { c.backup_dir = in.text(); }},
    {{"backup_key_file", "--backup-key-file", "INFERLLAMA_BACKUP_KEY_FILE",
      "File holding the key backups are sealed under (64 hex digits, mode 0600, outside the data directory; "
      "`inferllama backup --new-key FILE` makes one)",
      ""},
     [](Config& c, const Input& in) { c.backup_key_file = in.text(); }},
    {{"backup_interval", "--backup-interval", "INFERLLAMA_BACKUP_INTERVAL",
      "How often the node makes a backup into backup_dir, 1h..30d", "1d"},
     [](Config& c, const Input& in) { c.backup_interval = in.whole_seconds(3600, 30 * 86400); }},
    {{"backup_retention", "--backup-retention", "INFERLLAMA_BACKUP_RETENTION",
      "After each backup, the node's backups in its directory older than this (by the time in their name) are "
      "deleted, 1d..3650d",
      "35d"},
     [](Config& c, const Input& in) { c.backup_retention = in.whole_seconds(86400, 3650LL * 86400); }},
    {{"bt_listen", "--bt-listen", "INFERLLAMA_BT_LISTEN",
      "HOST:PORT of the BitTorrent peer-wire listener (TCP, and uTP on the same UDP port) that seeds every cached "
      "snapshot of a public repo; "
      "port 0 = any free port; empty = no seeding",
      "0.0.0.0:6881"},
     [](Config& c, const Input& in) {
       c.bt_listen = in.text().empty() ? "" : in.checked([&] { return validate_listen(in.text()); });
     }},
    {{"bt_port_fallback", "--bt-port-fallback", "INFERLLAMA_BT_PORT_FALLBACK",
      "When the bt_listen port is taken, listen on one of the next 10 ports instead of stopping (torrents then "
      "carry the port found)",
      "false", true},
     [](Config& c, const Input& in) { c.bt_port_fallback = in.boolean(); }},
    {{"bt_upload_rate", "--bt-upload-rate", "INFERLLAMA_BT_UPLOAD_RATE",
      "BitTorrent upload limit in bytes per second over all peers (e.g. \"100MiB\"); 0 = unlimited", "0"},
     [](Config& c, const Input& in) {
       const std::uint64_t v = in.size();
       if (v > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) in.fail("must be below 2GiB a second");
       c.bt_upload_rate = v;
     }},
    {{"bt_max_connections", "--bt-max-connections", "INFERLLAMA_BT_MAX_CONNECTIONS",
      "BitTorrent peer connections at most, over all torrents, 2..65535", "500"},
     [](Config& c, const Input& in) { c.bt_max_connections = static_cast<unsigned>(in.integer(2, 65535)); }},
    {{"bt_max_uploads", "--bt-max-uploads", "INFERLLAMA_BT_MAX_UPLOADS",
      "BitTorrent peers unchoked at once, 0..65535 (0 = unlimited)", "0"},
     [](Config& c, const Input& in) { c.bt_max_uploads = static_cast<unsigned>(in.integer(0, 65535)); }},
    {{"bt_dht", "--bt-dht", "INFERLLAMA_BT_DHT", "Join the BitTorrent DHT (off: peers come from trackers)", "false",
      true},
     [](Config& c, const Input& in) { c.bt_dht = in.boolean(); }},
    {{"bt_lsd", "--bt-lsd", "INFERLLAMA_BT_LSD", "BitTorrent local service discovery (LAN multicast)", "false", true},
     [](Config& c, const Input& in) { c.bt_lsd = in.boolean(); }},
    {{"tracker_udp", "--tracker-udp", "INFERLLAMA_TRACKER_UDP",
      "HOST:PORT of the UDP tracker (BEP 15); port 0 = any free port; empty = HTTP announces only", "0.0.0.0:6969"},
     [](Config& c, const Input& in) {
       c.tracker_udp = in.text().empty() ? "" : in.checked([&] { return validate_listen(in.text()); });
     }},
    {{"tracker_interval", "--tracker-interval", "INFERLLAMA_TRACKER_INTERVAL",
      "Announce interval the tracker tells clients, 10s..1d", "30m"},
     [](Config& c, const Input& in) { c.tracker_interval = in.whole_seconds(10, 24 * 3600); }},
    {{"tracker_min_interval", "--tracker-min-interval", "INFERLLAMA_TRACKER_MIN_INTERVAL",
      "The shortest announce interval the tracker allows, 1s..1d (at most tracker_interval)", "5m"},
     [](Config& c, const Input& in) { c.tracker_min_interval = in.whole_seconds(1, 24 * 3600); }},
    {{"tracker_numwant", "--tracker-numwant", "INFERLLAMA_TRACKER_NUMWANT",
      "Peers in a tracker reply when the client does not say, 0..1000", "50"},
     [](Config& c, const Input& in) { c.tracker_numwant = static_cast<unsigned>(in.integer(0, 1000)); }},
    {{"tracker_max_numwant", "--tracker-max-numwant", "INFERLLAMA_TRACKER_MAX_NUMWANT",
      "Peers in a tracker reply at most, 1..1000", "200"},
     [](Config& c, const Input& in) { c.tracker_max_numwant = static_cast<unsigned>(in.integer(1, 1000)); }},
    {{"tracker_open", "--tracker-open", "INFERLLAMA_TRACKER_OPEN",
      "Track any info-hash announced (default: only the node's own torrents)", "false", true},
     [](Config& c, const Input& in) { c.tracker_open = in.boolean(); }},
    {{"tracker_max_peers_per_swarm", "--tracker-max-peers-per-swarm", "INFERLLAMA_TRACKER_MAX_PEERS_PER_SWARM",
      "Peers the tracker keeps per swarm, 1..1000000; a new peer beyond it gets peers but is not stored", "5000"},
     [](Config& c, const Input& in) { c.tracker_max_peers_per_swarm = static_cast<unsigned>(in.integer(1, 1000000)); }},
    {{"tracker_max_peers_per_address", "--tracker-max-peers-per-address", "INFERLLAMA_TRACKER_MAX_PEERS_PER_ADDRESS",
      "Peers the tracker keeps per swarm from one IPv4 address or IPv6 /64, 1..65535; beyond it a new peer gets "
      "peers but is not stored",
      "16"},
     [](Config& c, const Input& in) { c.tracker_max_peers_per_address = static_cast<unsigned>(in.integer(1, 65535)); }},
    {{"tracker_max_swarms", "--tracker-max-swarms", "INFERLLAMA_TRACKER_MAX_SWARMS",
      "Swarms tracker_open tracks besides the node's own torrents (always tracked), 1..10000000; an announce "
      "that would start another gets a failure reason",
      "1000"},
     [](Config& c, const Input& in) { c.tracker_max_swarms = static_cast<unsigned>(in.integer(1, 10000000)); }},
    {{"tracker_full_scrape", "--tracker-full-scrape", "INFERLLAMA_TRACKER_FULL_SCRAPE",
      "Answer a scrape without info_hash with every swarm tracked (off: a failure reason)", "false", true},
     [](Config& c, const Input& in) { c.tracker_full_scrape = in.boolean(); }},
    {{"mirrors", "--mirrors", "INFERLLAMA_MIRRORS",
      "Snapshots kept in sync from mirror_from, comma-separated REPO[@REV] (datasets/NAME, spaces/NAME for "
      "other types; REV defaults to main)",
      ""},
     [](Config& c, const Input& in) { c.mirrors = in.text(); }},
    {{"mirror_from", "--mirror-from", "INFERLLAMA_MIRROR_FROM",
      "The InferLlama node mirrors fill from (its swarm and web seed); empty = the upstream", ""},
     [](Config& c, const Input& in) {
       c.mirror_from = in.text().empty() ? std::string() : in.checked([&] { return validate_url(in.text()); });
     }},
    {{"mirror_interval", "--mirror-interval", "INFERLLAMA_MIRROR_INTERVAL",
      "How often mirrored branches are checked for a new commit, 10s..1d", "5m"},
     [](Config& c, const Input& in) { c.mirror_interval = in.whole_seconds(10, 24 * 3600); }},
    {{"prefetch", "--prefetch", "INFERLLAMA_PREFETCH",
      "Snapshots kept current from the Hub without a client asking, comma-separated "
      "REPO[@REV][:PATTERN[;PATTERN...]] (datasets/NAME, spaces/NAME for other types; REV defaults to main; "
      "patterns are globs as huggingface_hub's allow_patterns, none = every file), e.g. "
      "\"acme/model@main:*.safetensors;config.json\"; `inferllama prefetch add` adds more at run time",
      ""},
     [](Config& c, const Input& in) { c.prefetch = in.checked([&] { return parse_prefetch_list(in.text()); }); }},
    {{"prefetch_interval", "--prefetch-interval", "INFERLLAMA_PREFETCH_INTERVAL",
      "How often prefetched revisions are asked of the Hub again and their new files fetched, 10s..1d", "1h"},
     [](Config& c, const Input& in) { c.prefetch_interval = in.whole_seconds(10, 24 * 3600); }},
    {{"repo_rules", "--repo-rules", "INFERLLAMA_REPO_RULES",
      "Which Hub repos the node proxies: rules \"ACTION [TYPE:]PATTERN [scan=off|warn|deny]\", one a line or "
      "comma-separated (a TOML array of strings too), first match wins, no match allows; ACTION is allow, deny "
      "(answered like a missing repo, never asked upstream) or pass (streamed, never stored); TYPE models, "
      "datasets, spaces or *; PATTERN a glob on owner/name (* within a segment, ** across, * alone = all)",
      ""},
     [](Config& c, const Input& in) { c.repo_rules = in.text(); }},
    {{"repo_rules_file", "--repo-rules-file", "INFERLLAMA_REPO_RULES_FILE",
      "File of more repo rules (one a line, # comments), matched after repo_rules; read again on SIGHUP and "
      "POST /api/inferllama/rules/reload, a bad rule keeping the rules in force",
      ""},
     [](Config& c, const Input& in) { c.repo_rules_file = in.text(); }},
    {{"require_auth", "--require-auth", "INFERLLAMA_REQUIRE_AUTH",
      "Refuse requests that carry no node API key (401); other bearers count as Hub tokens", "false", true},
     [](Config& c, const Input& in) { c.require_auth = in.boolean(); }},
    {{"cookie_secure", "--cookie-secure", "INFERLLAMA_COOKIE_SECURE",
      "Mark the console's cookies Secure (sent over HTTPS only); false only to develop over plain HTTP on a "
      "host other than localhost",
      "true", true},
     [](Config& c, const Input& in) { c.cookie_secure = in.boolean(); }},
    {{"admin_key", "--admin-key", "INFERLLAMA_ADMIN_KEY",
      "Bearer token of the admin API (users, keys, usage of everyone, pin, gc, mirror) over TCP, at least 16 "
      "characters; empty = the admin API is served on the admin socket only",
      ""},
     [](Config& c, const Input& in) {
       const std::string& key = in.text();
       if (!key.empty() && key.size() < 16) in.fail("must be at least 16 characters (value not shown)");
       if (key.starts_with("il_")) in.fail("must not look like a user's node key (il_...) (value not shown)");
       for (char ch : key) {
         if (static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7f)
           in.fail("must not contain spaces or control characters (value not shown)");
       }
       c.admin_key = key;
     },
     true},
    {{"admin_socket", "--admin-socket", "INFERLLAMA_ADMIN_SOCKET",
      "Unix socket (mode 0600) that serves the admin API to the node's own user, which the CLI uses beside the "
      "node; a relative path is in the data directory; empty = none",
      "admin.sock"},
     [](Config& c, const Input& in) { c.admin_socket = in.text(); }},
    {{"admin_key_file", "--admin-key-file", "INFERLLAMA_ADMIN_KEY_FILE",
      "File holding admin_key (read at start; a trailing newline is ignored); not together with admin_key", ""},
     [](Config& c, const Input& in) { c.admin_key_file = in.text(); }},
    {{"secret_key_file", "--secret-key-file", "INFERLLAMA_SECRET_KEY_FILE",
      "File with the key that seals users' Hub tokens at rest (created when missing); empty = DATA_DIR/secret.key", ""},
     [](Config& c, const Input& in) { c.secret_key_file = in.text(); }},
    {{"signup", "--signup", "INFERLLAMA_SIGNUP",
      "Let anyone create an account on the web console (an emailed link verifies the address first); off: "
      "admins create users or invite them by email",
      "false", true},
     [](Config& c, const Input& in) { c.signup = in.boolean(); }},
    {{"smtp_url", "--smtp-url", "INFERLLAMA_SMTP_URL",
      "SMTP server for the console's mail (address verification, password reset, invitations): "
      "smtp://HOST:PORT (STARTTLS when offered, required with credentials) or smtps://HOST:PORT; empty = no mail",
      ""},
     [](Config& c, const Input& in) {
       const std::string& url = in.text();
       if (!url.empty() && !url.starts_with("smtp://") && !url.starts_with("smtps://")) {
         in.fail("must start with smtp:// or smtps://");
       }
       c.smtp_url = url;
     }},
    {{"smtp_from", "--smtp-from", "INFERLLAMA_SMTP_FROM", "The address the console's mail comes from", ""},
     [](Config& c, const Input& in) { c.smtp_from = in.text(); }},
    {{"smtp_credentials_file", "--smtp-credentials-file", "INFERLLAMA_SMTP_CREDENTIALS_FILE",
      "File holding USER:PASSWORD for the SMTP server on its first line (mode 0600); empty = no AUTH", ""},
     [](Config& c, const Input& in) { c.smtp_credentials_file = in.text(); }},
    {{"token_size", "--token-size", "INFERLLAMA_TOKEN_SIZE", "Bytes of file content per rate-limit token, 1KiB..1GiB",
      "1MiB"},
     [](Config& c, const Input& in) {
       const std::uint64_t size = in.size();
       if (size < kKiB || size > kGiB) in.fail(std::to_string(size) + " is out of range 1KiB..1GiB");
       c.token_size = size;
     }},
    {{"limit_anonymous", "--limit-anonymous", "INFERLLAMA_LIMIT_ANONYMOUS",
      "Limits of callers without a node key, per address: \"requests=N/WINDOW burst=N tokens=N/WINDOW "
      "token_burst=N concurrent=N\"; empty = none",
      ""},
     [](Config& c, const Input& in) { c.limit_anonymous = in.checked([&] { return parse_limit_policy(in.text()); }); }},
    {{"limit_default", "--limit-default", "INFERLLAMA_LIMIT_DEFAULT",
      "Limits of each node user without an override (same form as limit_anonymous); empty = none", ""},
     [](Config& c, const Input& in) { c.limit_default = in.checked([&] { return parse_limit_policy(in.text()); }); }},
    {{"limit_users", "--limit-users", "INFERLLAMA_LIMIT_USERS",
      "Per-user overrides: \"alice: requests=1000/1m; bob: concurrent=8\" (in TOML also a table of "
      "name = \"policy\"); empty = none",
      ""},
     [](Config& c, const Input& in) { c.limit_users = in.checked([&] { return parse_user_limits(in.text()); }); }},
    {{"ratelimit_backend", "--ratelimit-backend", "INFERLLAMA_RATELIMIT_BACKEND",
      "Where limit state lives: local (this process) or redis://[:password@]HOST[:PORT][/DB] (shared by every "
      "node pointed at it)",
      "local"},
     [](Config& c, const Input& in) {
       const std::string& backend = in.text();
       if (backend != "local" && !backend.starts_with("redis://"))
         in.fail(quote_text(backend) + " is neither local nor a redis:// URL");
       c.ratelimit_backend = backend;
     },
     true},
    {{"ratelimit_backend_password_file", "--ratelimit-backend-password-file",
      "INFERLLAMA_RATELIMIT_BACKEND_PASSWORD_FILE",
      "File holding the Redis password (read at start; a trailing newline is ignored), for a ratelimit_backend "
      "URL without one",
      ""},
     [](Config& c, const Input& in) { c.ratelimit_backend_password_file = in.text(); }},
    {{"ratelimit_fallback", "--ratelimit-fallback", "INFERLLAMA_RATELIMIT_FALLBACK",
      "While Redis cannot be asked: local (decide in this process) or refuse (answer 503)", "local"},
     [](Config& c, const Input& in) {
       const std::string& fallback = in.text();
       if (fallback != "local" && fallback != "refuse") in.fail(quote_text(fallback) + " is not local or refuse");
       c.ratelimit_refuse_when_down = fallback == "refuse";
     }},
    {{"ratelimit_timeout", "--ratelimit-timeout", "INFERLLAMA_RATELIMIT_TIMEOUT",
      "How long a decision waits for Redis before it falls back, 1ms..10s", "200ms"},
     [](Config& c, const Input& in) {
       const auto timeout = in.duration();
       if (timeout.count() < 1 || timeout.count() > 10000)
         in.fail(std::to_string(timeout.count()) + "ms is out of range 1ms..10s");
       c.ratelimit_timeout = timeout;
     }},
    {{"session_backend", "--session-backend", "INFERLLAMA_SESSION_BACKEND",
      "Where console sessions live: auto (the Redis of ratelimit_backend when it is one, else local), local "
      "(this node's index) or redis://[:password@]HOST[:PORT][/DB] (shared: a sign-in holds on every node "
      "pointed at it)",
      "auto"},
     [](Config& c, const Input& in) {
       const std::string& backend = in.text();
       if (backend != "auto" && backend != "local" && !backend.starts_with("redis://"))
         in.fail(quote_text(backend) + " is neither auto, local nor a redis:// URL");
       c.session_backend = backend;
     },
     true},
    {{"session_backend_password_file", "--session-backend-password-file", "INFERLLAMA_SESSION_BACKEND_PASSWORD_FILE",
      "File holding the Redis password (read at start; a trailing newline is ignored), for a session_backend URL "
      "without one",
      ""},
     [](Config& c, const Input& in) { c.session_backend_password_file = in.text(); }},
    {{"usage_retention", "--usage-retention", "INFERLLAMA_USAGE_RETENTION",
      "Usage records older than this are deleted, 1d..10000d", "90d"},
     [](Config& c, const Input& in) { c.usage_retention = in.whole_seconds(86400, 10000LL * 86400); }},
    {{"usage_flush_interval", "--usage-flush-interval", "INFERLLAMA_USAGE_FLUSH_INTERVAL",
      "How often usage counters are written to the index (a crash loses at most this much), 1s..1h", "5s"},
     [](Config& c, const Input& in) { c.usage_flush_interval = in.whole_seconds(1, 3600); }},
    {{"tracker_private", "--tracker-private", "INFERLLAMA_TRACKER_PRIVATE",
      "Private tracker: announces need a user's passkey (/announce/PASSKEY) and count against that user; "
      "torrents handed to a user carry it",
      "false", true},
     [](Config& c, const Input& in) { c.tracker_private = in.boolean(); }},
    {{"trusted_proxies", "--trusted-proxies", "INFERLLAMA_TRUSTED_PROXIES",
      "Reverse proxies (CIDR list, e.g. \"127.0.0.1/32, 10.0.0.0/8\") whose X-Forwarded-For, Forwarded and "
      "X-Forwarded-Proto name the client; from any other peer these headers are ignored. Empty = trust none",
      ""},
     [](Config& c, const Input& in) {
       std::string bad;
       if (!parse_networks(in.text(), &bad)) in.fail(quote_text(bad) + " is not an address or ADDRESS/PREFIX network");
       c.trusted_proxies = in.text();
     }},
    {{"metrics_listen", "--metrics-listen", "INFERLLAMA_METRICS_LISTEN",
      "HOST:PORT of the listener that serves /metrics (and /healthz) and nothing else; empty = none. On the "
      "other listeners /metrics needs the admin key",
      "127.0.0.1:9464"},
     [](Config& c, const Input& in) {
       c.metrics_listen = in.text().empty() ? "" : in.checked([&] { return validate_listen(in.text()); });
     }},
    {{"auth_failure_limit", "--auth-failure-limit", "INFERLLAMA_AUTH_FAILURE_LIMIT",
      "Failed credentials (node keys, passkeys, the admin key) allowed per client address, as a limit policy; "
      "past it, requests with credentials get 429 until it recovers. \"none\" = no limit",
      "requests=20/1m burst=20"},
     [](Config& c, const Input& in) {
       c.auth_failure_limit = in.checked([&] { return parse_limit_policy(in.text()); });
       if (c.auth_failure_limit.tokens || c.auth_failure_limit.concurrent)
         in.fail("counts failed attempts only: give requests=N/WINDOW [burst=N]");
     }},
};

constexpr std::size_t kKeyCount = std::size(kSpecs);

constexpr std::array<ConfigKey, kKeyCount> kKeys = [] {
  std::array<ConfigKey, kKeyCount> keys{};
  for (std::size_t i = 0; i < kKeyCount; ++i) keys[i] = kSpecs[i].key;
  return keys;
}();

// The table's flag and env names are derived from the key; check that at compile time.
constexpr bool names_consistent() {
  for (const KeySpec& s : kSpecs) {
    const auto& k = s.key;
    if (k.flag.size() != k.name.size() + 2 || k.flag.substr(0, 2) != "--") return false;
    if (k.env.size() != k.name.size() + 11 || k.env.substr(0, 11) != "INFERLLAMA_") return false;
    for (std::size_t i = 0; i < k.name.size(); ++i) {
      const char c = k.name[i];
      if (k.flag[i + 2] != (c == '_' ? '-' : c)) return false;
      if (k.env[i + 11] != ((c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c)) return false;
    }
  }
  return true;
}
static_assert(names_consistent(), "config key table: flag/env names must be derived from the key name");

const KeySpec* find_spec(std::string_view name) {
  for (const KeySpec& s : kSpecs)
    if (s.key.name == name) return &s;
  return nullptr;
}

const KeySpec* find_spec_by_env(std::string_view env) {
  for (const KeySpec& s : kSpecs)
    if (s.key.env == env) return &s;
  return nullptr;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// " (did you mean X?)" for a near miss, else a list of the valid names.
template <typename Proj>
std::string suggestion(std::string_view unknown, Proj proj) {
  std::vector<std::string> names;
  for (const KeySpec& s : kSpecs) names.emplace_back(proj(s.key));
  if (auto best = closest_spelling(unknown, names)) return " (did you mean " + *best + "?)";
  std::string out = " (known: ";
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i) out += ", ";
    out += names[i];
  }
  return out + ")";
}

struct Applied {
  std::array<bool, kKeyCount> set{};
  std::array<std::string, kKeyCount> origin{};  // of the value that counts
  const std::string& origin_of(std::string_view key) const {
    return origin[static_cast<std::size_t>(find_spec(key) - kSpecs)];
  }
};

void apply(Config& c, Applied& applied, const KeySpec& spec, Input in) {
  in.secret = spec.secret;
  spec.apply(c, in);
  const auto at = static_cast<std::size_t>(&spec - kSpecs);
  applied.set[at] = true;
  applied.origin[at] = in.origin;
}

// The secrets given as files: each is read once every source is applied, and checked as its key would be.
void read_secret_files(Config& c, const Applied& applied) {
  struct SecretFile {
    std::string_view file_key;
    std::string_view key;
    const std::filesystem::path Config::*path;
    const std::string Config::*value;
  };
  static constexpr SecretFile kFiles[] = {
      {"admin_key_file", "admin_key", &Config::admin_key_file, &Config::admin_key},
      {"upstream_token_file", "upstream_token", &Config::upstream_token_file, &Config::upstream_token}};
  for (const SecretFile& f : kFiles) {
    const std::filesystem::path& path = c.*f.path;
    if (path.empty()) continue;
    const std::string from = std::string(f.file_key) + " (from " + applied.origin_of(f.file_key) + ")";
    const KeySpec* spec = find_spec(f.key);
    if (!(c.*f.value).empty())
      throw ConfigError("invalid " + from + ": " + std::string(f.key) + " is given too (from " +
                        applied.origin_of(f.key) + "); give the secret one way");
    Input in{f.file_key, applied.origin_of(f.file_key) + ", file " + path.string(), read_secret_file(path, from)};
    in.secret = true;
    spec->apply(c, in);
  }
  // The Redis passwords, for URLs that carry none.
  struct RedisPassword {
    std::string_view file_key;
    std::string_view url_key;
    const std::filesystem::path Config::*path;
    const std::string Config::*url;
    std::string Config::*password;
  };
  static constexpr RedisPassword kRedisPasswords[] = {
      {"ratelimit_backend_password_file", "ratelimit_backend", &Config::ratelimit_backend_password_file,
       &Config::ratelimit_backend, &Config::ratelimit_backend_password},
      {"session_backend_password_file", "session_backend", &Config::session_backend_password_file,
       &Config::session_backend, &Config::session_backend_password}};
  for (const RedisPassword& r : kRedisPasswords) {
    if ((c.*r.path).empty()) continue;
    const std::string from = std::string(r.file_key) + " (from " + applied.origin_of(r.file_key) + ")";
    const std::string_view backend = c.*r.url;
    const std::string_view authority = backend.substr(0, backend.find('/', std::string_view("redis://").size()));
    if (backend.starts_with("redis://") && authority.find('@') != std::string_view::npos)
      throw ConfigError("invalid " + from + ": " + std::string(r.url_key) + " carries a password too (from " +
                        applied.origin_of(r.url_key) + "); give the password one way");
    c.*r.password = read_secret_file(c.*r.path, from);
  }
}

// ---- TOML file ----------------------------------------------------------------------------------

std::string read_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError("cannot read config file " + path.string() + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    throw ConfigError("cannot read config file " + path.string() + ": " + (err ? std::strerror(err) : "cannot open"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw ConfigError("cannot read config file " + path.string() + ": read error");
  return std::move(ss).str();
}

std::string node_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "floating-point number";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    default:
      return "unknown type";
  }
}

void apply_file(Config& c, Applied& applied, const std::filesystem::path& path) {
  const std::string text = read_file(path);
  toml::table root;
  try {
    root = toml::parse(text, path.string());
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    throw ConfigError("TOML syntax error in config file " + path.string() + " line " + std::to_string(where.line) +
                      " column " + std::to_string(where.column) + ": " + std::string(e.description()));
  }
  for (auto&& [key, node] : root) {
    const std::string origin = "config file " + path.string() + " line " + std::to_string(key.source().begin.line);
    const KeySpec* spec = find_spec(key.str());
    if (!spec) {
      throw ConfigError("unknown key '" + std::string(key.str()) + "' in " + origin +
                        suggestion(key.str(), [](const ConfigKey& k) { return k.name; }));
    }
    RawValue raw;
    if (const auto* table = node.as_table(); table && spec->key.name == "limit_users") {
      // [limit_users] alice = "requests=..." reads as the flag's "alice: requests=...; ...".
      std::string users;
      for (auto&& [name, policy] : *table) {
        const auto* text = policy.as_string();
        if (!text)
          throw ConfigError("invalid limit_users (from " + origin + "): the policy of " + std::string(name.str()) +
                            " must be a string, got " + node_type_name(policy));
        users += std::string(name.str()) + ": " + text->get() + "; ";
      }
      raw = users;
    } else if (const auto* list = node.as_array(); list && spec->key.name == "repo_rules") {
      // repo_rules = ["deny models:acme/*", "allow *"] reads as one rule a line.
      std::string rules;
      for (auto&& rule : *list) {
        const auto* text = rule.as_string();
        if (!text)
          throw ConfigError("invalid repo_rules (from " + origin + "): each rule must be a string, got " +
                            node_type_name(rule));
        rules += text->get() + "\n";
      }
      raw = rules;
    } else if (const auto* s = node.as_string()) {
      raw = s->get();
    } else if (const auto* i = node.as_integer()) {
      raw = i->get();
    } else if (const auto* b = node.as_boolean()) {
      raw = b->get();
    } else {
      raw = OtherType{node_type_name(node)};
    }
    apply(c, applied, *spec, Input{spec->key.name, origin, std::move(raw)});
  }
}

}  // namespace

// ---- public API ---------------------------------------------------------------------------------

std::span<const ConfigKey> config_keys() {
  return kKeys;
}

std::span<const std::string_view> client_variables() {
  static constexpr std::string_view kClientVariables[] = {"INFERLLAMA_NODE"};
  return kClientVariables;
}

std::optional<std::string> closest_spelling(std::string_view unknown, std::span<const std::string> candidates) {
  const std::string* best = nullptr;
  std::size_t best_distance = 3;  // at most 2 edits away
  for (const auto& candidate : candidates) {
    const std::size_t d = edit_distance(unknown, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = &candidate;
    }
  }
  return best ? std::optional<std::string>(*best) : std::nullopt;
}

LimitPolicy parse_limit_policy(std::string_view text) {
  LimitPolicy policy;
  const std::string_view whole = trim(text);
  if (whole.empty() || to_lower(whole) == "none") return policy;
  auto fail = [&](const std::string& why) -> ConfigError {
    return ConfigError("invalid limit policy " + quote_text(text) + ": " + why);
  };
  auto count_of = [&](std::string_view name, std::string_view digits) {
    std::uint64_t v = 0;
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), is_digit))
      throw fail(std::string(name) + " needs a whole number");
    for (char c : digits) {
      if (__builtin_mul_overflow(v, 10u, &v) || __builtin_add_overflow(v, static_cast<std::uint64_t>(c - '0'), &v))
        throw fail(std::string(name) + " is too large");
    }
    if (v == 0) throw fail(std::string(name) + " must be at least 1 (leave the part out for no limit)");
    return v;
  };
  // "100/1m" or "100/m": a count per window of whole seconds (1s..366d).
  auto rate_of = [&](std::string_view name, std::string_view value, std::uint64_t& count,
                     std::chrono::seconds& window) {
    const auto slash = value.find('/');
    if (slash == std::string_view::npos) throw fail(std::string(name) + " needs COUNT/WINDOW, e.g. 100/1m");
    count = count_of(name, value.substr(0, slash));
    std::string span(value.substr(slash + 1));
    if (!span.empty() && is_alpha(span.front())) span.insert(0, "1");
    std::chrono::milliseconds ms;
    try {
      ms = parse_duration(span);
    } catch (const ConfigError& e) {
      throw fail(std::string(name) + ": " + e.what());
    }
    if (ms.count() % 1000 != 0 || ms < std::chrono::seconds(1) || ms > std::chrono::hours(24 * 366))
      throw fail(std::string(name) + "'s window must be whole seconds, 1s..366d");
    window = std::chrono::duration_cast<std::chrono::seconds>(ms);
  };
  std::string_view rest = whole;
  while (!rest.empty()) {
    const auto end = rest.find_first_of(", \t");
    const std::string_view part = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    if (part.empty()) continue;
    const auto eq = part.find('=');
    if (eq == std::string_view::npos) throw fail("expected NAME=VALUE, got " + quote_text(part));
    const std::string name = to_lower(part.substr(0, eq));
    const std::string_view value = part.substr(eq + 1);
    if (name == "requests") {
      rate_of(name, value, policy.requests, policy.request_window);
    } else if (name == "tokens") {
      rate_of(name, value, policy.tokens, policy.token_window);
      // Counted in bytes (tokens x token_size <= 1 GiB) without overflow.
      if (policy.tokens > (1ull << 32)) throw fail("tokens is at most 4294967296 per window");
    } else if (name == "burst") {
      policy.request_burst = count_of(name, value);
    } else if (name == "token_burst") {
      policy.token_burst = count_of(name, value);
      if (policy.token_burst > (1ull << 32)) throw fail("token_burst is at most 4294967296");
    } else if (name == "concurrent") {
      const std::uint64_t n = count_of(name, value);
      if (n > 100000) throw fail("concurrent is at most 100000");
      policy.concurrent = static_cast<unsigned>(n);
    } else {
      throw fail("unknown part " + quote_text(name) + " (requests, burst, tokens, token_burst, concurrent)");
    }
  }
  if (policy.request_burst && !policy.requests) throw fail("burst needs requests=COUNT/WINDOW");
  if (policy.token_burst && !policy.tokens) throw fail("token_burst needs tokens=COUNT/WINDOW");
  return policy;
}

std::map<std::string, LimitPolicy> parse_user_limits(std::string_view text) {
  std::map<std::string, LimitPolicy> users;
  std::string_view rest = text;
  while (!rest.empty()) {
    const auto end = rest.find(';');
    const std::string_view entry = trim(rest.substr(0, end));
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    if (entry.empty()) continue;
    const auto colon = entry.find(':');
    if (colon == std::string_view::npos)
      throw ConfigError("invalid user limits " + quote_text(entry) + ": expected NAME: POLICY");
    const std::string name(trim(entry.substr(0, colon)));
    if (!is_valid_user_name(name))
      throw ConfigError("invalid user limits: " + quote_text(name) +
                        " is not a user name (1..64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)");
    if (!users.emplace(name, parse_limit_policy(entry.substr(colon + 1))).second)
      throw ConfigError("invalid user limits: " + name + " is given twice");
  }
  return users;
}

std::string format_limit_policy(const LimitPolicy& policy) {
  std::string out;
  auto add = [&](const std::string& part) { out += (out.empty() ? "" : " ") + part; };
  if (policy.requests)
    add("requests=" + std::to_string(policy.requests) + "/" + std::to_string(policy.request_window.count()) + "s");
  if (policy.request_burst) add("burst=" + std::to_string(policy.request_burst));
  if (policy.tokens)
    add("tokens=" + std::to_string(policy.tokens) + "/" + std::to_string(policy.token_window.count()) + "s");
  if (policy.token_burst) add("token_burst=" + std::to_string(policy.token_burst));
  if (policy.concurrent) add("concurrent=" + std::to_string(policy.concurrent));
  return out;
}

std::uint64_t parse_size(std::string_view text) {
  constexpr std::string_view what = "size";
  std::string_view s = trim(text);
  Decimal d;
  if (s.empty()) throw ConfigError("invalid size: empty");
  if (!read_decimal(s, d, text, what))
    throw ConfigError("invalid size " + quote_text(text) + ": expected a number with an optional unit, e.g. 4MiB");
  s = trim(s);
  const std::string_view unit_text = read_unit(s);
  if (!s.empty())
    throw ConfigError("invalid size " + quote_text(text) + ": unexpected " + quote_text(s) +
                      " (units: B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)");
  const std::string unit = to_lower(unit_text);
  struct Unit {
    std::string_view name;
    std::uint64_t factor;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"b", 1},
      {"k", kKiB},
      {"kib", kKiB},
      {"kb", 1000ull},
      {"m", kMiB},
      {"mib", kMiB},
      {"mb", 1000'000ull},
      {"g", kGiB},
      {"gib", kGiB},
      {"gb", 1000'000'000ull},
      {"t", 1024 * kGiB},
      {"tib", 1024 * kGiB},
      {"tb", 1000'000'000'000ull},
  };
  for (const Unit& u : kUnits) {
    if (u.name == unit) return scale(d, u.factor, text, what, "bytes");
  }
  throw ConfigError("invalid size " + quote_text(text) + ": unknown unit " + quote_text(unit_text) +
                    " (units: B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)");
}

std::chrono::milliseconds parse_duration(std::string_view text) {
  constexpr std::string_view what = "duration";
  std::string_view s = trim(text);
  if (s.empty()) throw ConfigError("invalid duration: empty");
  struct Unit {
    std::string_view name;
    std::uint64_t ms;
  };
  static constexpr Unit kUnits[] = {{"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}, {"d", 86'400'000}};
  constexpr std::uint64_t kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t total = 0;
  bool first = true;
  while (!s.empty()) {
    Decimal d;
    if (!read_decimal(s, d, text, what))
      throw ConfigError("invalid duration " + quote_text(text) +
                        ": expected a number with a unit, e.g. 30s, 500ms, 2m, 1h");
    s = trim(s);
    const std::string_view unit_text = read_unit(s);
    s = trim(s);
    if (unit_text.empty()) {
      if (!first || !s.empty())
        throw ConfigError("invalid duration " + quote_text(text) + ": missing unit (ms, s, m, h, d)");
      const std::uint64_t ms = scale(d, 1000, text, what, "milliseconds");
      if (ms > kMax) throw ConfigError("invalid duration " + quote_text(text) + ": too large");
      return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
    }
    const std::string unit = to_lower(unit_text);
    const Unit* found = nullptr;
    for (const Unit& u : kUnits)
      if (u.name == unit) found = &u;
    if (!found)
      throw ConfigError("invalid duration " + quote_text(text) + ": unknown unit " + quote_text(unit_text) +
                        " (units: ms, s, m, h, d)");
    const std::uint64_t part = scale(d, found->ms, text, what, "milliseconds");
    if (__builtin_add_overflow(total, part, &total) || total > kMax)
      throw ConfigError("invalid duration " + quote_text(text) + ": too large");
    first = false;
  }
  return std::chrono::milliseconds(static_cast<std::int64_t>(total));
}

std::string read_secret_file(const std::filesystem::path& path, std::string_view key) {
  constexpr std::size_t kMaxSecret = 64 * 1024;  // a secret, not a data file
  auto fail = [&](const std::string& why) {
    return ConfigError("invalid " + std::string(key) + ": " + path.string() + " " + why);
  };
  // A regular file only: a FIFO or a device could block start-up or never end.
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
    throw fail("is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    throw fail(std::string("cannot be read: ") + (err ? std::strerror(err) : "cannot open"));
  }
  std::string secret(kMaxSecret + 1, '\0');
  in.read(secret.data(), static_cast<std::streamsize>(secret.size()));
  if (in.bad()) throw fail("cannot be read: read error");
  secret.resize(static_cast<std::size_t>(in.gcount()));
  if (secret.size() > kMaxSecret) throw fail("is larger than 64KiB: not a secret");
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.empty()) throw fail("is empty");
  return secret;
}

std::vector<std::string> read_token_list(const std::filesystem::path& path, std::string_view key) {
  auto fail = [&](const std::string& why) {
    return ConfigError("invalid " + std::string(key) + ": " + path.string() + " " + why);
  };
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0)
    throw fail("can be read by group or others: chmod 600 it");
  const std::string text = read_secret_file(path, key);
  std::vector<std::string> tokens;
  std::size_t line_number = 0;
  for (std::size_t start = 0; start <= text.size();) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    std::string_view line = std::string_view(text).substr(start, end - start);
    start = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    if (std::any_of(line.begin(), line.end(),
                    [](char ch) { return static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7f; }))
      throw fail("line " + std::to_string(line_number) + " holds spaces or control characters (value not shown)");
    if (std::ranges::find(tokens, line) != tokens.end()) continue;
    if (tokens.size() == kMaxNodeTokens) throw fail("holds more than " + std::to_string(kMaxNodeTokens) + " tokens");
    tokens.emplace_back(line);
  }
  if (tokens.empty()) throw fail("holds no token");
  return tokens;
}

std::map<std::string, std::string> environment_map(char** envp) {
  std::map<std::string, std::string> out;
  if (!envp) return out;
  for (char** p = envp; *p; ++p) {
    const std::string_view entry(*p);
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    out.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return out;
}

std::vector<std::string> split_config_list(std::string_view text) {
  std::vector<std::string> items;
  for (std::size_t start = 0; start <= text.size();) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string_view item = trim(text.substr(start, comma - start));
    if (!item.empty()) items.emplace_back(item);
    start = comma + 1;
  }
  return items;
}

std::filesystem::path admin_socket_path(const Config& config) {
  if (config.admin_socket.empty()) return {};
  const std::filesystem::path path(config.admin_socket);
  return path.is_absolute() ? path : config.data_dir / path;
}

Config load_config(const ConfigSources& sources) {
  Config config;
  Applied applied;

  // Normalised flags: "--data-dir" / "data-dir" / "data_dir" -> "data_dir".
  std::map<std::string, std::pair<std::string, std::string>> flags;  // key -> (as given, value)
  for (const auto& [given, value] : sources.flags) {
    std::string key = given.starts_with("--") ? given.substr(2) : given;
    std::replace(key.begin(), key.end(), '-', '_');
    if (!flags.emplace(key, std::pair{given, value}).second)
      throw ConfigError("flag " + given + " given twice (also as " + flags[key].first + ")");
  }

  // 1. The file.
  std::optional<std::filesystem::path> file = sources.file;
  if (!file) {
    if (auto it = flags.find("config"); it != flags.end()) {
      if (it->second.second.empty()) throw ConfigError("flag --config: empty path");
      file = it->second.second;
    } else if (auto env = sources.env.find("INFERLLAMA_CONFIG"); env != sources.env.end() && !env->second.empty()) {
      file = env->second;
    }
  }
  if (file) apply_file(config, applied, *file);

  // 2. The environment.
  for (const auto& [name, value] : sources.env) {
    if (!name.starts_with("INFERLLAMA_") || name == "INFERLLAMA_CONFIG") continue;
    if (std::ranges::find(client_variables(), name) != client_variables().end()) continue;
    const KeySpec* spec = find_spec_by_env(name);
    if (!spec)
      throw ConfigError("unknown environment variable " + name +
                        suggestion(name, [](const ConfigKey& k) { return k.env; }));
    apply(config, applied, *spec, Input{spec->key.name, "environment variable " + name, value});
  }

  // 3. The command line.
  for (const auto& [key, given_value] : flags) {
    if (key == "config") continue;
    const auto& [given, value] = given_value;
    const KeySpec* spec = find_spec(key);
    if (!spec) {
      std::string flag = "--" + key;
      std::replace(flag.begin(), flag.end(), '_', '-');
      throw ConfigError("unknown flag " + flag + suggestion(flag, [](const ConfigKey& k) { return k.flag; }));
    }
    // Every user of the machine can read a process's arguments (ps, /proc/PID/cmdline): no URL with
    // credentials in it either.
    for (auto scheme_end = value.find("://"); scheme_end != std::string::npos;
         scheme_end = value.find("://", scheme_end + 3)) {
      std::string_view rest = std::string_view(value).substr(scheme_end + 3);
      rest = rest.substr(0, rest.find(','));  // one URL of a list
      if (rest.substr(0, rest.find('/')).find('@') != std::string_view::npos)
        throw ConfigError("flag " + std::string(spec->key.flag) +
                          " carries credentials (user:password@), which every user of the machine can read (ps): give "
                          "the URL in the config file or " +
                          std::string(spec->key.env) + " instead");
    }
    if (const KeySpec* file = find_spec(std::string(spec->key.name) + "_file"); spec->secret && file && !value.empty())
      throw ConfigError("flag " + std::string(spec->key.flag) +
                        " would show the secret to every user of the machine (ps): give it as " +
                        std::string(file->key.flag) + " FILE or the environment variable " +
                        std::string(spec->key.env));
    apply(config, applied, *spec, Input{spec->key.name, "flag " + std::string(spec->key.flag), value});
  }

  // 4. HF_TOKEN, only when upstream_token was not given anywhere, nor as a file.
  const KeySpec* token = find_spec("upstream_token");
  if (!applied.set[static_cast<std::size_t>(token - kSpecs)] && config.upstream_token_file.empty()) {
    if (auto it = sources.env.find("HF_TOKEN"); it != sources.env.end())
      apply(config, applied, *token, Input{token->key.name, "environment variable HF_TOKEN", it->second});
  }

  // 5. Secrets kept in files.
  read_secret_files(config, applied);
  // The node's tokens, as one list: upstream_token first, then the file's, each once.
  if (!config.upstream_token.empty()) config.upstream_tokens.push_back(config.upstream_token);
  if (!config.upstream_tokens_file.empty()) {
    const std::string from = "upstream_tokens_file (from " + applied.origin_of("upstream_tokens_file") + ")";
    for (std::string& token : read_token_list(config.upstream_tokens_file, from)) {
      if (std::ranges::find(config.upstream_tokens, token) == config.upstream_tokens.end())
        config.upstream_tokens.push_back(std::move(token));
    }
  }

  // Settings that constrain each other.
  if (!config.upstream_fallback.empty() &&
      (config.upstream_fallback == config.upstream ||
       std::ranges::find(config.upstream_parents, config.upstream_fallback) != config.upstream_parents.end()))
    throw ConfigError("invalid upstream_fallback: " + quote_text(without_user_info(config.upstream_fallback)) +
                      " is one of the upstream URLs already");
  for (LimitPolicy* policy : {&config.limit_anonymous, &config.limit_default}) policy->token_bytes = config.token_size;
  for (auto& [name, policy] : config.limit_users) policy.token_bytes = config.token_size;
  if (config.tracker_min_interval > config.tracker_interval)
    throw ConfigError("invalid tracker_min_interval: " + std::to_string(config.tracker_min_interval.count()) +
                      "s is longer than tracker_interval (" + std::to_string(config.tracker_interval.count()) + "s)");
  if (config.tracker_numwant > config.tracker_max_numwant)
    throw ConfigError("invalid tracker_numwant: " + std::to_string(config.tracker_numwant) +
                      " is more than tracker_max_numwant (" + std::to_string(config.tracker_max_numwant) + ")");
  return config;
}

}  // namespace inferllama
