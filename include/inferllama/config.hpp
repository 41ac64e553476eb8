// Node configuration: defaults < TOML file < INFERLLAMA_* environment < command-line flags.
//
// One table (config_keys()) names every setting: its TOML key, its --flag, its INFERLLAMA_* variable,
// a help line and the default's text. The CLI builds its flags from it, docs quote it, and
// load_config() validates every value against it.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "inferllama/limit_policy.hpp"
#include "inferllama/prefetch_spec.hpp"
#include "inferllama/repo_policy.hpp"

namespace inferllama {

inline constexpr std::uint64_t kKiB = 1024;
inline constexpr std::uint64_t kMiB = 1024 * kKiB;
inline constexpr std::uint64_t kGiB = 1024 * kMiB;

struct Config {
  std::string listen = "0.0.0.0:8080";                // HOST:PORT of the plain HTTP listener ([::1]:8080 for IPv6)
  std::filesystem::path data_dir = "./data";          // chunk store + RocksDB index; relative = as given
  std::string upstream = "https://huggingface.co";    // the Hub, or the first parent node (no trailing slash)
  std::vector<std::string> upstream_parents;          // every URL `upstream` lists, when several; else empty
  std::string upstream_fallback;                      // tried when every parent failed; "" = none
  std::chrono::milliseconds upstream_backoff{10000};  // a failed parent is skipped this long, > 0
  std::string upstream_token;                         // falls back to HF_TOKEN when unset everywhere
  std::filesystem::path upstream_token_file;          // upstream_token read from this file; "" = none
  std::filesystem::path upstream_tokens_file;         // more Hub tokens, one a line (mode 0600); "" = none
  std::vector<std::string> upstream_tokens;           // the node's tokens: upstream_token, then the file's
  std::chrono::seconds upstream_throttle_max{3600};   // the longest back-off a 429/503 of the Hub sets
  std::string public_url;                             // how the node names itself in links; empty = Host header
  std::string log_level = "info";                     // trace|debug|info|warn|error|critical|off
  std::uint64_t chunk_size = 4 * kMiB;                // power of two, 64 KiB .. 64 MiB
  unsigned upstream_connections = 4;                  // parallel Range connections per large file, 1..32
  std::uint64_t parallel_threshold = 32 * kMiB;       // files at least this large use parallel ranges
  std::uint64_t swarm_threshold = 256 * kMiB;         // files this large come from a parent node's swarm; 0 = never
  unsigned upstream_retries = 5;                      // retries per broken connection, 0..100
  std::chrono::milliseconds upstream_timeout{30000};  // connect and stall timeout, > 0
  std::chrono::seconds ref_ttl{60};                   // branch/tag -> commit cache; 0 = always ask upstream
  std::chrono::seconds access_ttl{60};                // cached gated/private access decisions; 1..60 s
  unsigned io_threads = 0;                            // 0 = number of cores; at most 1024
  unsigned worker_threads = 0;                        // 0 = number of cores (hashing, disk, RocksDB); at most 1024
  std::string tls_listen;                             // HOST:PORT of the HTTPS listener; empty = none
  std::filesystem::path tls_cert;                     // PEM certificate chain
  std::filesystem::path tls_key;                      // PEM private key
  std::uint64_t max_disk = 0;                         // chunk store budget in bytes; 0 = no budget
  std::uint64_t hosted_quota = 0;                     // bytes per namespace in hosted repos; 0 = no quota
  std::uint64_t metadata_budget = 256ull << 20;       // stored Hub metadata answers, LRU; 0 = none kept
  std::chrono::seconds idle_timeout{60};              // a client that makes no progress this long is dropped
  unsigned max_connections = 10000;                   // further connections get a 503
  std::string access_log;                             // JSON lines: "" off, "-" stdout, else a file (in data_dir)
  std::chrono::seconds access_log_retention{30 * 86400};  // a file rotates daily; rotations kept this long; 0 = off
  bool offline = false;                                   // never contact the upstream: serve what is cached
  std::chrono::seconds offline_grace{0};      // gated/private repos while the Hub can't be asked; 0 = refuse
  ScanAction scan_policy = ScanAction::warn;  // model files scanned on ingest: off | warn | deny (findings: 403)

  // Backups of the index (src/backup/), sealed under a key kept outside data_dir.
  std::filesystem::path backup_dir;                   // scheduled backups go here; "" = none
  std::filesystem::path backup_key_file;              // the backup key (64 hex digits, 0600)
  std::chrono::seconds backup_interval{86400};        // 1h..30d
  std::chrono::seconds backup_retention{35 * 86400};  // older backups in backup_dir are deleted after each one

  // BitTorrent: the node seeds every cached snapshot of a public repo and runs its own tracker.
  std::string bt_listen = "0.0.0.0:6881";          // HOST:PORT of the peer-wire (TCP) listener; empty = no seeding
  bool bt_port_fallback = false;                   // a taken bt_listen port moves to one of the next 10
  std::uint64_t bt_upload_rate = 0;                // bytes per second over all peers; 0 = unlimited
  unsigned bt_max_connections = 500;               // peer connections at most, over all torrents
  unsigned bt_max_uploads = 0;                     // peers unchoked at once; 0 = unlimited
  bool bt_dht = false;                             // join the DHT (off: the node's tracker finds peers)
  bool bt_lsd = false;                             // local service discovery (multicast on the LAN)
  std::string tracker_udp = "0.0.0.0:6969";        // HOST:PORT of the UDP tracker (BEP 15); empty = none
  std::chrono::seconds tracker_interval{1800};     // announce interval told to clients
  std::chrono::seconds tracker_min_interval{300};  // the least interval a client may use
  unsigned tracker_numwant = 50;                   // peers per reply when the client asks for none
  unsigned tracker_max_numwant = 200;              // peers per reply at most
  bool tracker_open = false;                       // track any info-hash (false: only the node's own torrents)
  unsigned tracker_max_peers_per_swarm = 5000;     // a new peer beyond it is answered but not stored
  unsigned tracker_max_peers_per_address = 16;     // of one IPv4 address or IPv6 /64 in one swarm
  unsigned tracker_max_swarms = 1000;              // open mode, the node's own torrents not counted
  bool tracker_full_scrape = false;                // answer a scrape without info_hash with every swarm
  std::string mirrors;                             // "REPO[@REV],..." kept in sync from mirror_from; "" = none
  std::string mirror_from;                         // node to mirror from; "" = the upstream (when it is a node)
  std::chrono::seconds mirror_interval{300};       // how often mirrored branches are checked for a new commit

  // Snapshots the node keeps current from the Hub without a client asking (src/prefetch/).
  std::vector<PrefetchSpec> prefetch;            // REPO[@REV][:PATTERN;...],...; more are added at run time
  std::chrono::seconds prefetch_interval{3600};  // how often each entry's revision is asked of the Hub again
  // Repo rules (src/policy/): which Hub repos are proxied and kept, refused, or passed through unkept.
  std::string repo_rules;                          // "ACTION [TYPE:]PATTERN [scan=...]", a line or comma apart
  std::filesystem::path repo_rules_file;           // more rules, after repo_rules; read again on SIGHUP

  // Users, limits and usage records.
  bool require_auth = false;  // refuse requests without a node key (401)
  bool cookie_secure = true;  // the console's cookies carry Secure
  bool signup = false;        // anyone may create an account on the console
  std::string smtp_url;       // smtp:// or smtps://; "" = the node sends no mail
  std::string smtp_from;
  std::filesystem::path smtp_credentials_file;            // USER:PASSWORD; "" = no AUTH
  std::string admin_key;                                  // bearer of the admin API over TCP; "" = not served over TCP
  std::string admin_socket = "admin.sock";                // admin API's Unix socket; relative = in data_dir; "" = none
  std::filesystem::path admin_key_file;                   // admin_key read from this file; "" = none
  std::filesystem::path secret_key_file;                  // key that seals users' Hub tokens; "" = data_dir/secret.key
  std::uint64_t token_size = kMiB;                        // bytes of file content per token
  LimitPolicy limit_anonymous;                            // callers without a node key, per address
  LimitPolicy limit_default;                              // node users without an override
  std::map<std::string, LimitPolicy> limit_users;         // user name -> override
  std::string ratelimit_backend = "local";                // "local", or "redis://[:password@]host[:port][/db]"
  std::filesystem::path ratelimit_backend_password_file;  // the Redis password; "" = none (or in the URL)
  std::string ratelimit_backend_password;                 // read from that file
  bool ratelimit_refuse_when_down = false;                // Redis unreachable: refuse (503) instead of deciding locally
  std::chrono::milliseconds ratelimit_timeout{200};       // wait for Redis at most this long per decision
  std::string session_backend = "auto";                   // "auto", "local" or "redis://..." (config.cpp)
  std::filesystem::path session_backend_password_file;    // its Redis password; "" = none (or in the URL)
  std::string session_backend_password;                   // read from that file
  std::chrono::seconds usage_retention{90 * 86400};       // usage records older than this are deleted
  std::chrono::seconds usage_flush_interval{5};  // counters reach RocksDB this often (a crash loses at most one)
  bool tracker_private = false;                  // announces need a user's passkey (/announce/{passkey})

  // Trust.
  std::string trusted_proxies;                    // CIDR list whose X-Forwarded-For/Forwarded are believed; "" = none
  std::string metrics_listen = "127.0.0.1:9464";  // HOST:PORT serving /metrics (and /healthz) only; "" = none
  LimitPolicy auth_failure_limit{20, std::chrono::seconds(60), 20};  // failed credentials per address

  friend bool operator==(const Config&, const Config&) = default;
};

// Invalid configuration. The message names the key and where the value came from
// (flag --x, environment variable INFERLLAMA_X, config file PATH line N). Token values are never echoed.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ConfigSources {
  // key -> value from the command line. Keys are snake_case as in TOML ("data_dir"); "data-dir" and
  // "--data-dir" are accepted too. The key "config" names the config file when `file` is unset.
  std::map<std::string, std::string> flags;
  std::map<std::string, std::string> env;     // the process environment (NAME -> value), see environment_map()
  std::optional<std::filesystem::path> file;  // --config FILE; else flags["config"]; else INFERLLAMA_CONFIG
};

// Precedence per key: flag > env (INFERLLAMA_<UPPER_SNAKE>) > TOML file > default. Every value given by
// any source is validated, even one a higher source overrides. upstream_token falls back to env HF_TOKEN
// only when no flag, INFERLLAMA_UPSTREAM_TOKEN or file value is given (an explicit empty value counts as given).
// Throws ConfigError on: unknown TOML key, unknown flag, unknown INFERLLAMA_* variable (INFERLLAMA_CONFIG
// and the client variables excepted), a secret given as a flag (argv is public: its _file key or
// variable instead), wrong TOML type, unparsable or out-of-range value, unreadable file, TOML syntax error (with line).
// No file is read unless one is named; an empty INFERLLAMA_CONFIG counts as unset.
Config load_config(const ConfigSources& sources);

// Variables the CLI's client commands read (the node they ask), which are no node settings: load_config
// leaves them alone, so one environment can serve both.
std::span<const std::string_view> client_variables();

// The candidate closest to a misspelt `unknown` (case-insensitive, at most two edits away); nullopt if none.
std::optional<std::string> closest_spelling(std::string_view unknown, std::span<const std::string> candidates);

// The items of a comma-separated list setting (`mirrors`, `prefetch`): each trimmed of spaces, empty ones left out.
std::vector<std::string> split_config_list(std::string_view text);

// Where the admin socket of `config` is (admin_socket, inside data_dir when relative); empty = none.
std::filesystem::path admin_socket_path(const Config& config);

// A secret kept in a file (admin_key_file, upstream_token_file, ...): its content without the trailing
// newline. Throws ConfigError naming `key` when the file cannot be read or is empty.
std::string read_secret_file(const std::filesystem::path& path, std::string_view key);

// The Hub tokens of an upstream_tokens_file: one a line, empty lines and lines starting with '#' skipped,
// each once. Throws ConfigError naming `key` (never a token) when the file is open to group or others, cannot
// be read, holds no token, more than kMaxNodeTokens, or a line that is no token.
std::vector<std::string> read_token_list(const std::filesystem::path& path, std::string_view key);
inline constexpr std::size_t kMaxNodeTokens = 64;

// Parses a NULL-terminated "NAME=value" array (environ / main's envp). Entries without '=' are skipped;
// for a duplicated NAME the first entry wins (as getenv). A null envp gives an empty map.
std::map<std::string, std::string> environment_map(char** envp);

struct ConfigKey {
  std::string_view name;          // TOML key, snake_case: "data_dir"
  std::string_view flag;          // "--data-dir"
  std::string_view env;           // "INFERLLAMA_DATA_DIR"
  std::string_view help;          // one line: what it does and what is allowed
  std::string_view default_text;  // the default as one would write it in a flag ("" = empty)
  bool is_switch = false;         // a yes/no setting: `--flag` alone means true
};
std::span<const ConfigKey> config_keys();  // in a stable, documented order

// A limit policy: "requests=100/1m burst=20 tokens=10000/1h token_burst=500 concurrent=4" (commas or
// spaces between parts; a window is a duration, "1m", or a bare unit, "m"; "" or "none" = no limits).
// Throws ConfigError. token_bytes is left at its default (load_config sets it from token_size).
LimitPolicy parse_limit_policy(std::string_view text);
// Per-user policies: "alice: requests=1000/1m; bob: concurrent=8". Throws ConfigError.
std::map<std::string, LimitPolicy> parse_user_limits(std::string_view text);
// The canonical text of a policy, which parse_limit_policy reads back ("" for no limits).
std::string format_limit_policy(const LimitPolicy& policy);

// "4MiB", "64 KiB", "1GiB", "123", "2GB" (= 2'000'000'000), "1.5GiB". Units, case-insensitive:
// B; KiB MiB GiB TiB (and bare K M G T) are powers of 1024; kB MB GB TB are powers of 1000.
// The result must be a whole number of bytes that fits in 64 bits. Throws ConfigError.
std::uint64_t parse_size(std::string_view text);

// "30s", "500ms", "2m", "1h", "1d", "1m30s", "1.5s"; a bare number is seconds. Units (case-insensitive):
// ms s m h d. The result must be a whole number of milliseconds. Throws ConfigError.
std::chrono::milliseconds parse_duration(std::string_view text);

}  // namespace inferllama
