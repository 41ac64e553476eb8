#include "hub/hub_service.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "cache/hashing.hpp"
#include "hub/hub_protocol.hpp"
#include "hub/metadata_query.hpp"
#include "inferllama/metrics.hpp"
#include "policy/repo_rules.hpp"
#include "util/rendezvous.hpp"
#include "util/url.hpp"

namespace inferllama::hub {
namespace {

using Json = nlohmann::json;
constexpr std::size_t kMaxMemoEntries = 100000;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::optional<std::uint64_t> parse_u64(std::string_view text) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return v;
}

bool is_hex(std::string_view s, std::size_t length) {
  return s.size() == length &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// The Hub throttles the credential the request went with: it answered 429 or 503, or the node held the
// request back (see upstream/throttle.hpp).
bool throttled(const UpstreamResponse& r) {
  return r.retry_after.count() > 0;
}

// The Hub could not answer: no connection, a timeout, or a server error; or it throttles the node. Its
// refusals (4xx) are answers, and so is an answer too large to read: that one is relayed as a 502, never
// answered from the store. A loop of upstreams (508, from the node that saw its own name in Via) is an
// answer too: it is relayed.
bool unreachable(const UpstreamResponse& r) {
  return !r.too_large && r.status != kLoopDetected &&
         (!r.error.empty() || r.status >= 500 || r.status == 0 || throttled(r));
}

std::string describe_failure(const UpstreamResponse& r) {
  return r.error.empty() ? "HTTP " + std::to_string(r.status) : r.error;
}

// The Hub throttles the node: 503, and when it may ask again (until then the node holds such requests
// back). `what` ends the message's first part.
Reply throttled_reply(const UpstreamResponse& r, const std::string& what) {
  const std::string wait = std::to_string(r.retry_after.count());
  Reply reply = error_reply(503, "the upstream Hub is throttling this node's requests" +
                                     (r.held_back ? std::string() : " (" + describe_failure(r) + ")") + what +
                                     "; retry in " + wait + " s");
  reply.headers.emplace_back("Retry-After", wait);
  return reply;
}

Reply outage_reply(const std::string& what, const UpstreamResponse& failure) {
  if (throttled(failure)) return throttled_reply(failure, " and " + what + " is not cached");
  return error_reply(
      504, "the upstream Hub is unreachable (" + describe_failure(failure) + ") and " + what + " is not cached");
}

// An upstream that names bytes by a hash the node holds, with another size, lies about one or the other.
// (The true size is not told: the bytes may be another repo's.)
Reply size_mismatch_reply(const FileEntry& claimed) {
  return error_reply(502, "the upstream claims " + std::to_string(claimed.size) + " bytes for " + claimed.etag +
                              ", which is not the size of the bytes with that hash");
}

Reply restricted_outage_reply(const UpstreamResponse& failure) {
  static const std::string kWhy = "; gated and private repositories are not served without its confirmation";
  if (throttled(failure)) return throttled_reply(failure, kWhy);
  return error_reply(503, "the upstream Hub is unreachable (" + describe_failure(failure) + ")" + kWhy);
}

std::string credential_key(const std::string& authorization) {
  if (authorization.empty()) return "anonymous";
  return cache::sha256(authorization).hex();
}

std::string with_query(std::string url, std::string_view query) {
  if (!query.empty()) {
    url += '?';
    url += query;
  }
  return url;
}

}  // namespace

const std::string& via_name() {
  static const std::string name = [] {
    std::random_device random;
    std::string bytes(8, '\0');
    for (auto& b : bytes) b = static_cast<char>(random());
    return "inferllama-" + hex(bytes);
  }();
  return name;
}

std::vector<std::string_view> node_hops(std::string_view via) {
  static constexpr std::string_view kPrefix = "1.1 inferllama-";
  std::vector<std::string_view> hops;
  while (!via.empty()) {
    const auto comma = via.find(',');
    std::string_view entry = via.substr(0, comma);
    via = comma == std::string_view::npos ? std::string_view() : via.substr(comma + 1);
    while (!entry.empty() && (entry.front() == ' ' || entry.front() == '\t')) entry.remove_prefix(1);
    while (!entry.empty() && (entry.back() == ' ' || entry.back() == '\t')) entry.remove_suffix(1);
    if (entry.size() == kPrefix.size() + 16 && entry.starts_with(kPrefix) && is_hex(entry.substr(kPrefix.size()), 16)) {
      hops.push_back(entry);
    }
  }
  return hops;
}

std::string via_for_upstream(const Caller& caller) {
  std::string chain;
  for (const auto hop : node_hops(caller.via)) chain.append(hop).append(", ");
  return chain + "1.1 " + via_name();
}

HubService::HubService(const Config& config, Index& index, Upstream& upstream, cache::Downloads& downloads,
                       cache::Evictor& evictor, const Clock& clock)
    : config_(config),
      clock_(clock),
      index_(index),
      upstream_(upstream),
      downloads_(downloads),
      evictor_(evictor),
      passes_(upstream, config.upstream_retries),
      own_metadata_(std::make_unique<MetadataStore>(index, config.metadata_budget)),
      metadata_(*own_metadata_) {
  adopt_node_tokens();
}

HubService::HubService(const Config& config, Index& index, Upstream& upstream, cache::Downloads& downloads,
                       cache::Evictor& evictor, MetadataStore& shared_metadata, const Clock& clock)
    : config_(config),
      clock_(clock),
      index_(index),
      upstream_(upstream),
      downloads_(downloads),
      evictor_(evictor),
      passes_(upstream, config.upstream_retries),
      metadata_(shared_metadata) {
  adopt_node_tokens();
}

void HubService::adopt_node_tokens() {
  for (const std::string& token : config_.upstream_tokens) {
    node_authorizations_.push_back("Bearer " + token);
    node_token_names_.push_back(cache::sha256(token).hex());
  }
}

RepoDecision HubService::decide(const RepoId& repo) const {
  if (!policy_ || hosts(repo)) return RepoDecision{};
  return policy_->decide(repo);
}

Reply HubService::refusal(const RepoDecision& decision, unsigned status, const std::string& message) {
  std::string label = "rule=\"";
  for (char c : decision.rule) {
    if (c == '\\' || c == '"') label += '\\';
    label += c;
  }
  refusals_.with(label + '"').add();
  return error_reply(status, message, status == 404 ? "RepoNotFound" : "");
}

Reply HubService::denied(const RepoDecision& decision) {
  return refusal(decision, 404, policy::refusal_message(decision));
}

std::optional<Reply> HubService::refused(const RepoId& repo, bool keeping) {
  const RepoDecision decision = decide(repo);
  if (decision.access == RepoAccess::deny) return denied(decision);
  if (keeping && decision.access == RepoAccess::pass) {
    return refusal(decision, 403,
                   repo.key() + " passes through this node without being kept (repo rule \"" + decision.rule +
                       "\"): nothing of it is stored, pinned, mirrored or seeded");
  }
  return std::nullopt;
}

std::variant<HubService::PinOutcome, Reply> HubService::pin(const RepoId& repo, const std::string& rev, bool pinned) {
  // Unpinning lets go of what a rule no longer lets the node keep; pinning keeps it.
  if (auto refusal = refused(repo, pinned)) return std::move(*refusal);
  std::string stale;
  Credentials credentials = credentials_for(Caller{}, repo, true);
  auto resolved = resolve_commit(repo, rev, Caller{}, credentials, stale);
  if (auto* reply = std::get_if<Reply>(&resolved)) return std::move(*reply);
  PinOutcome outcome{std::get<std::string>(resolved)};
  std::set<std::string> cached;
  for (const auto& etag : index_.etags_of(repo, outcome.commit)) {
    if (index_.get_blob(etag)) cached.insert(etag);
  }
  // A file whose every byte arrived and matched is cached, if still being stored: a client that just read
  // it whole may pin it at once.
  for (auto& etag : downloads_.verified_for(repo, outcome.commit)) cached.insert(std::move(etag));
  outcome.cached_files = cached.size();
  const auto all = index_.pinned();
  const bool was = std::find(all.begin(), all.end(), std::pair{repo, outcome.commit}) != all.end();
  if (pinned && !was && outcome.cached_files == 0) {
    return error_reply(409, "nothing of " + repo.key() + "@" + outcome.commit +
                                " is cached: fetch it first (inferllama pull), then pin it");
  }
  outcome.changed = was != pinned;
  if (outcome.changed) index_.set_pinned(repo, outcome.commit, pinned);
  return outcome;
}

std::variant<std::string, Reply> HubService::commit_of(const RepoId& repo, const std::string& rev, std::string* stale,
                                                       RefLookup lookup) {
  if (auto refusal = refused(repo)) return std::move(*refusal);
  std::string why;
  Credentials credentials = credentials_for(Caller{}, repo, is_public(repo));
  auto commit = resolve_commit(repo, rev, Caller{}, credentials, why, lookup);
  if (stale) *stale = why;
  return commit;
}

std::optional<std::string> HubService::forget_ref(const RepoId& repo, const std::string& rev) {
  if (is_commit_sha(rev)) return std::nullopt;  // a commit names the same files forever
  std::optional<std::string> named = last_known_commit(repo, rev);
  for (const std::string& name : {rev, std::string()}) {
    {
      std::lock_guard lock(mutex_);
      refs_.erase(repo.key() + '\0' + name);
    }
    // Kept with its history for outages and eviction, but too old for fresh_ref.
    if (auto stored = index_.get_ref(repo, name); stored && stored->fetched_at_ms != 0) {
      stored->fetched_at_ms = 0;
      index_.put_ref(repo, name, *stored);
    }
  }
  return named;
}

std::variant<std::vector<HubService::SnapshotEntry>, Reply> HubService::snapshot_files(const RepoId& repo,
                                                                                       const std::string& commit,
                                                                                       bool stored_only) {
  if (auto refusal = refused(repo)) return std::move(*refusal);
  if (hosts(repo)) {
    auto listed = hosted_->files(repo, commit);
    if (!listed) return error_reply(404, "Invalid rev id: " + commit, "RevisionNotFound");
    std::vector<SnapshotEntry> files;
    files.reserve(listed->size());
    for (auto& f : *listed) files.push_back({std::move(f.path), std::move(f.file)});
    return files;
  }
  // Pages are asked for as a client would, so that their answers are the stored tree answers too. The
  // base only marks where the next page's path starts in the Link header.
  static constexpr std::string_view kBase = "inferllama:";
  std::vector<SnapshotEntry> files;
  std::string query = "recursive=true";
  for (int page = 0; page < 100000; ++page) {
    std::optional<Reply> kept;
    if (stored_only) kept = stored_tree_page(repo, commit, "", query, std::string(kBase));
    if (stored_only && !kept && page == 0) return stored_siblings(repo, commit);
    if (stored_only && !kept) return error_reply(404, "the tree of " + repo.key() + "@" + commit + " is not kept");
    Reply reply = kept ? std::move(*kept) : tree(repo, commit, "", query, Caller{}, std::string(kBase));
    if (reply.status != 200) return reply;
    auto entries = Json::parse(reply.body, nullptr, false);
    if (!entries.is_array()) return error_reply(502, "the upstream tree answer is not a list");
    for (const auto& entry : entries) {
      if (!entry.is_object() || entry.value("type", "") != "file" || !entry.contains("path") ||
          !entry["path"].is_string()) {
        continue;
      }
      SnapshotEntry item;
      item.path = entry["path"].get<std::string>();
      if (entry.contains("lfs") && entry["lfs"].is_object()) {
        item.file.lfs = true;
        item.file.etag = entry["lfs"].value("oid", "");
        item.file.size = entry["lfs"].value("size", std::uint64_t{0});
      } else {
        item.file.etag = entry.value("oid", "");
        item.file.size = entry.value("size", std::uint64_t{0});
      }
      if (!is_hex(item.file.etag, item.file.lfs ? 64 : 40) || !url::is_safe_relative_path(item.path)) {
        return error_reply(502, "the upstream tree lists " + item.path + " without a usable etag or path");
      }
      files.push_back(std::move(item));
    }
    std::string next;
    for (const auto& [name, value] : reply.headers) {
      if (name == "Link" && value.starts_with("<" + std::string(kBase))) next = value;
    }
    auto question = next.find('?');
    auto close = next.find('>');
    if (question == std::string::npos || close == std::string::npos || close < question) return files;
    query = next.substr(question + 1, close - question - 1);
  }
  return error_reply(502, "the upstream tree of " + repo.name + " does not end");
}

void HubService::assume_public_for(const RepoId& repo, std::chrono::seconds how_long) {
  std::lock_guard lock(mutex_);
  visibility_[repo.key()] = Memo<RepoVisibility>{RepoVisibility::open, clock_.now() + how_long};
}

void HubService::adopt_mirrored(const RepoId& repo, const std::string& rev, const std::string& commit) {
  // Only a repo the node knows nothing about takes the source's word; the Hub's answers stay as they are.
  if (!recorded_visibility(repo)) record_visibility(repo, RepoVisibility::open);
  store_ref(repo, rev, commit);
}

std::string HubService::api_url(const RepoId& repo) const {
  return config_.upstream + "/api/" + std::string(repo.api_segment()) + "/" + repo.name;
}

std::string HubService::resolve_url(const RepoId& repo, const std::string& rev, const std::string& path) const {
  return config_.upstream + "/" + std::string(repo.url_prefix()) + repo.name + "/resolve/" + url::encode(rev) + "/" +
         url::encode(path, true);
}

UpstreamResponse HubService::call(const std::string& method, const std::string& url, const Caller& caller,
                                  Credentials& credentials, const HeaderList& extra, const std::string& body) {
  for (std::size_t tried = 1;; ++tried) {
    auto response = call_once(method, url, caller, credentials.authorization, extra, body);
    // One of the node's tokens that the upstream throttles is passed over for another that is free, each
    // tried once at most; when none is free, the caller hears when the first one will be.
    if (!throttled(response) || credentials.node_token_for.empty() || tried >= node_authorizations_.size()) {
      return response;
    }
    std::string other = node_authorization(credentials.node_token_for);
    if (other == credentials.authorization || (throttle_ && throttle_->held_for(other).count() > 0)) return response;
    credentials.authorization = std::move(other);
  }
}

UpstreamResponse HubService::call_once(const std::string& method, const std::string& url, const Caller& caller,
                                       const std::string& authorization, const HeaderList& extra,
                                       const std::string& body) {
  UpstreamRequest request{method, url, extra, body};
  if (!authorization.empty()) request.headers.emplace_back("Authorization", authorization);
  request.headers.emplace_back("Via", via_for_upstream(caller));
  auto response = upstream_.fetch(request);
  // Held back while the upstream throttles this credential: never sent, and logged once per episode.
  if (response.held_back) return response;
  ++counters_.upstream_requests;
  if (!response.error.empty()) {
    ++counters_.upstream_transport_errors;
    spdlog::warn("upstream {} {}: {}", method, url::redact(url), response.error);
  } else if (response.status == kLoopDetected) {
    spdlog::error(
        "upstream {} {} came back to this node: upstream ({}) leads to a node whose upstream leads back "
        "here; point it at the Hub or at a parent node",
        method, url::redact(url), url::redact(config_.upstream));
  } else if (response.status >= 500) {
    ++counters_.upstream_server_errors;
  }
  if (spdlog::should_log(spdlog::level::debug)) {
    const auto location = response.header("location");
    spdlog::debug("upstream {} {}: HTTP {}{}{}", method, url::redact(url), response.status, location ? " to " : "",
                  location ? url::redact(*location) : std::string());
  }
  return response;
}

HubService::Credentials HubService::credentials_for(const Caller& caller, const RepoId& repo, bool is_public) const {
  if (!caller.authorization.empty() || !is_public) return Credentials{caller.authorization, ""};
  return node_credentials(repo);
}

HubService::Credentials HubService::node_credentials(const RepoId& repo) const {
  if (node_authorizations_.empty()) return Credentials{};
  return Credentials{node_authorization(repo.key()), repo.key()};
}

std::string HubService::node_authorization(const std::string& repo_key) const {
  std::vector<std::pair<std::uint64_t, std::size_t>> ranked;
  for (std::size_t i = 0; i < node_token_names_.size(); ++i) {
    ranked.emplace_back(rendezvous_weight(node_token_names_[i], repo_key), i);
  }
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::size_t soonest = ranked.front().second;
  auto soonest_free = std::chrono::seconds::max();
  for (const auto& [weight, i] : ranked) {
    const auto held = throttle_ ? throttle_->held_for(node_authorizations_[i]) : std::chrono::seconds(0);
    if (held.count() == 0) return node_authorizations_[i];
    if (held < soonest_free) {
      soonest = i;
      soonest_free = held;
    }
  }
  return node_authorizations_[soonest];
}

bool HubService::is_public(const RepoId& repo, const Caller& caller) {
  return visibility(repo, caller).open;
}

std::optional<RepoVisibility> HubService::recorded_visibility(const RepoId& repo) {
  if (hosts(repo)) return hosted_->visibility(repo);
  auto stored = index_.get_meta("visibility|" + repo.key());
  if (!stored) return std::nullopt;
  return parse_stored_visibility(*stored);
}

void HubService::record_visibility(const RepoId& repo, RepoVisibility visibility) {
  index_.put_meta("visibility|" + repo.key(), std::string(stored_text(visibility)));
}

HubService::Visibility HubService::visibility(const RepoId& repo, const Caller& caller) {
  if (hosts(repo)) return Visibility{hosted_->visibility(repo) == RepoVisibility::open, true, true};
  const auto now = clock_.now();
  std::optional<RepoVisibility> known;
  {
    std::lock_guard lock(mutex_);
    if (auto it = visibility_.find(repo.key()); it != visibility_.end()) {
      if (it->second.expires > now) return Visibility{it->second.value == RepoVisibility::open, true, true};
      known = it->second.value;
    }
  }
  // The repo's own info says whether it is private or gated; anyone may read it for public and gated
  // repos. Asked with the node's token so that it counts against the node's quota, not the client's.
  Credentials token = node_credentials(repo);
  // The caller's Via chain goes along (not its credentials): a loop of nodes shows here first.
  auto response = call("GET", api_url(repo) + "?expand=private&expand=gated", Caller{"", caller.via}, token);
  if (unreachable(response) || response.status == kLoopDetected) {
    // What the node learnt last, in memory or in the index; unknown repos count as restricted.
    if (!known) known = recorded_visibility(repo);
    return Visibility{known == RepoVisibility::open, known.has_value(), false};
  }
  bool open = false;
  if (response.status == 200) {
    auto info = Json::parse(response.body, nullptr, false);
    open = info.is_object() && info.value("private", true) == false && info.contains("gated") &&
           info["gated"].is_boolean() && info["gated"].get<bool>() == false;
  }
  const RepoVisibility visibility = open ? RepoVisibility::open : RepoVisibility::restricted;
  record_visibility(repo, visibility);
  std::lock_guard lock(mutex_);
  if (visibility_.size() > kMaxMemoEntries) visibility_.clear();
  visibility_[repo.key()] = Memo<RepoVisibility>{visibility, now + config_.access_ttl};
  return Visibility{open, true, true};
}

bool HubService::access_granted(const RepoId& repo, const Caller& caller) {
  std::lock_guard lock(mutex_);
  auto it = access_.find(repo.key() + '\0' + credential_key(caller.authorization));
  return it != access_.end() && it->second > clock_.now();
}

bool HubService::granted_within_grace(const RepoId& repo, const Caller& caller) {
  if (config_.offline_grace.count() == 0) return false;
  // Grants are kept in the index too, so that a node restarted during an outage still knows them.
  auto granted = index_.get_meta("access|" + repo.key() + '|' + credential_key(caller.authorization));
  if (!granted) return false;
  const auto age = std::chrono::milliseconds(now_ms() - std::stoll(*granted));
  return age >= std::chrono::milliseconds(0) && age < config_.offline_grace;
}

void HubService::remember_access(const RepoId& repo, const Caller& caller) {
  const std::string key = repo.key() + '\0' + credential_key(caller.authorization);
  index_.put_meta("access|" + repo.key() + '|' + credential_key(caller.authorization), std::to_string(now_ms()));
  std::lock_guard lock(mutex_);
  if (access_.size() > kMaxMemoEntries) access_.clear();
  access_[key] = clock_.now() + config_.access_ttl;
}

std::optional<std::string> HubService::last_known_commit(const RepoId& repo, const std::string& rev) {
  if (is_commit_sha(rev)) return rev;
  {
    std::lock_guard lock(mutex_);
    if (auto it = refs_.find(repo.key() + '\0' + rev); it != refs_.end()) return it->second.value;
  }
  if (auto stored = index_.get_ref(repo, rev)) return stored->commit;
  return std::nullopt;
}

std::string HubService::stale_note(const std::string& rev, const std::string& commit,
                                   const UpstreamResponse& failure) const {
  if (is_commit_sha(rev)) return "";
  return std::string(throttled(failure) ? "upstream throttling this node; " : "upstream unreachable; ") +
         (rev.empty() ? std::string("the default branch") : rev) + " answered with the last commit seen, " + commit;
}

std::optional<std::string> HubService::fresh_ref(const RepoId& repo, const std::string& rev) {
  if (is_commit_sha(rev)) return rev;
  const std::string key = repo.key() + '\0' + rev;
  {
    std::lock_guard lock(mutex_);
    if (auto it = refs_.find(key); it != refs_.end() && it->second.expires > clock_.now()) return it->second.value;
  }
  auto stored = index_.get_ref(repo, rev);
  if (!stored) return std::nullopt;
  auto age = std::chrono::milliseconds(now_ms() - stored->fetched_at_ms);
  if (age < std::chrono::milliseconds(0) || age >= config_.ref_ttl) return std::nullopt;
  std::lock_guard lock(mutex_);
  refs_[key] = Memo<std::string>{stored->commit, clock_.now() + (config_.ref_ttl - age)};
  return stored->commit;
}

void HubService::store_ref(const RepoId& repo, const std::string& rev, const std::string& commit) {
  if (is_commit_sha(rev) || !is_commit_sha(commit)) return;
  RefEntry entry{commit, now_ms(), {}};
  // The commits the name left behind: eviction takes what only they hold first.
  if (auto stored = index_.get_ref(repo, rev)) {
    entry.before = std::move(stored->before);
    if (stored->commit != commit) entry.before.push_back(std::move(stored->commit));
    std::erase(entry.before, commit);  // a branch moved back to a commit it named before
    if (entry.before.size() > kRefHistory) entry.before.erase(entry.before.begin(), entry.before.end() - kRefHistory);
  }
  index_.put_ref(repo, rev, entry);
  std::lock_guard lock(mutex_);
  if (refs_.size() > kMaxMemoEntries) refs_.clear();
  refs_[repo.key() + '\0' + rev] = Memo<std::string>{commit, clock_.now() + config_.ref_ttl};
}

std::variant<std::string, Reply> HubService::resolve_commit(const RepoId& repo, const std::string& rev,
                                                            const Caller& caller, Credentials& credentials,
                                                            std::string& stale, RefLookup lookup) {
  if (hosts(repo)) {
    if (auto commit = hosted_->commit_of(repo, rev)) return *commit;
    if (!hosted_->visibility(repo)) return error_reply(404, "Repository not found", "RepoNotFound");
    return error_reply(404, "Invalid rev id: " + rev, "RevisionNotFound");
  }
  if (is_commit_sha(rev)) return rev;
  if (lookup == RefLookup::remembered) {
    if (auto commit = fresh_ref(repo, rev)) return *commit;
  }
  auto response = call("GET", api_url(repo) + "/revision/" + url::encode(rev) + "?expand=sha", caller, credentials);
  if (unreachable(response)) {
    auto commit = last_known_commit(repo, rev);
    if (!commit) return outage_reply("revision " + rev + " of " + repo.name, response);
    stale = stale_note(rev, *commit, response);
    if (!stale.empty()) spdlog::warn("{}: {}", repo.key(), stale);
    return *commit;
  }
  if (response.status != 200) return relay(response);
  auto info = Json::parse(response.body, nullptr, false);
  if (!info.is_object() || !info.contains("sha") || !info["sha"].is_string() ||
      !is_commit_sha(info["sha"].get<std::string>())) {
    return error_reply(502, "the upstream revision answer carries no commit sha");
  }
  std::string commit = info["sha"].get<std::string>();
  store_ref(repo, rev, commit);
  return commit;
}

std::variant<FileAnswer, Reply> HubService::hosted_file(const RepoId& repo, const std::string& rev,
                                                        const std::string& path) {
  std::string stale;
  Credentials none;
  auto resolved = resolve_commit(repo, rev, Caller{}, none, stale);
  if (auto* refused = std::get_if<Reply>(&resolved)) return std::move(*refused);
  const std::string& commit = std::get<std::string>(resolved);
  const auto file = hosted_->file(repo, commit, path);
  if (!file) return error_reply(404, path + " does not exist at " + commit + " of " + repo.name, "EntryNotFound");
  auto blob = index_.get_blob(file->etag);
  auto lease = evictor_.lease(file->etag);
  // Hosted bytes are never evicted: a blob gone is a damaged store, not a miss to fetch again.
  if (!blob || !lease) return error_reply(500, "the node lost the bytes of " + path + "; see its log");
  FileAnswer answer{commit, "", *file, std::make_shared<const BlobEntry>(std::move(*blob)), nullptr, nullptr};
  answer.lease = std::move(lease);
  return answer;
}

std::optional<FileAnswer> HubService::stored_file(const RepoId& repo, const std::string& commit,
                                                  const std::string& path) {
  const std::string key = repo.key() + '@' + commit + '\0' + path;
  {
    std::lock_guard lock(mutex_);
    if (auto it = files_.find(key); it != files_.end()) {
      FileAnswer answer = it->second;
      answer.lease = evictor_.lease(answer.file.etag);
      if (answer.lease) return answer;
      files_.erase(it);  // evicted: fetch again
      return std::nullopt;
    }
  }
  auto file = index_.get_file(repo, commit, path);
  if (!file) return std::nullopt;
  auto blob = index_.get_blob(file->etag);
  // A blob that has not answered for this repo yet is fetched from the repo's own upstream first.
  if (!blob || !index_.blob_serves(file->etag, repo)) return std::nullopt;
  if (file->size != blob->size) {
    // Sizes come from the stored blob (an entry may have kept an upstream's lie).
    file->size = blob->size;
    index_.put_file(repo, commit, path, *file);
  }
  FileAnswer answer{commit, "", *file, std::make_shared<const BlobEntry>(std::move(*blob)), nullptr, nullptr};
  {
    std::lock_guard lock(mutex_);
    if (files_.size() > kMaxMemoEntries) files_.clear();
    files_[key] = answer;
  }
  answer.lease = evictor_.lease(answer.file.etag);
  if (!answer.lease) return std::nullopt;  // being evicted: fetch it again
  return answer;
}

std::optional<FileAnswer> HubService::resolve_fast(const RepoId& repo, const std::string& rev,
                                                   const std::string& path) {
  if (hosts(repo)) return std::nullopt;
  // A repo its rule refuses or passes through is never answered from the store; the slow path says why.
  if (policy_ && policy_->decide(repo).access != RepoAccess::allow) return std::nullopt;
  // One key string, grown into each table's key in turn: this is every hit's path.
  std::string key = repo.key();
  const std::size_t repo_key_size = key.size();
  key.reserve(repo_key_size + 2 + std::max<std::size_t>(rev.size(), 40) + path.size());
  std::lock_guard lock(mutex_);
  const auto now = clock_.now();
  auto vis = visibility_.find(key);
  if (vis == visibility_.end() || vis->second.expires <= now || vis->second.value != RepoVisibility::open)
    return std::nullopt;
  std::string_view commit = rev;
  if (!is_commit_sha(rev)) {
    ((key += '\0') += rev);
    auto ref = refs_.find(key);
    if (ref == refs_.end() || ref->second.expires <= now) return std::nullopt;
    commit = ref->second.value;
    key.resize(repo_key_size);
  }
  (((key += '@') += commit) += '\0') += path;
  auto it = files_.find(key);
  if (it == files_.end()) return std::nullopt;
  FileAnswer answer = it->second;
  answer.lease = evictor_.lease(answer.file.etag);
  if (!answer.lease) {
    files_.erase(it);  // evicted: the slow path fetches it again
    return std::nullopt;
  }
  ++counters_.hits;
  return answer;
}

std::variant<FileAnswer, Reply> HubService::resolve(const RepoId& repo, const std::string& rev, const std::string& path,
                                                    const Caller& caller, bool want_body) {
  if (hosts(repo)) return hosted_file(repo, rev, path);
  const RepoDecision decision = decide(repo);
  if (decision.access == RepoAccess::deny) return denied(decision);
  // A pass repo's files are never taken from the store nor put in it.
  const bool pass = decision.access == RepoAccess::pass;
  const bool open = is_public(repo, caller);
  Credentials credentials = credentials_for(caller, repo, open);
  // A stored file needs no upstream call when the repo is public, or the Hub recently let this caller in.
  if (!pass && (open || access_granted(repo, caller))) {
    if (auto commit = fresh_ref(repo, rev)) {
      if (auto stored = stored_file(repo, *commit, path)) {
        ++counters_.hits;
        return *stored;
      }
    }
  }
  // Ask the Hub with the caller's own credentials: this is the access check and the file's metadata.
  auto head = call("HEAD", resolve_url(repo, rev, path), caller, credentials);
  if (unreachable(head)) {
    if (pass) return outage_reply(path + " of " + repo.name + " (passed through, never kept)", head);
    return stored_during_outage(repo, rev, path, caller, open, head);
  }
  if (head.status >= 300 && head.status != 302) return relay(head);
  if (head.status != 200 && head.status != 302) return relay(head);
  if (!open) remember_access(repo, caller);

  FileAnswer answer;
  answer.commit = std::string(head.header("x-repo-commit").value_or(""));
  if (!is_commit_sha(answer.commit)) {
    if (!is_commit_sha(rev)) return error_reply(502, "the upstream answer carries no X-Repo-Commit");
    answer.commit = rev;
  }
  store_ref(repo, rev, answer.commit);
  if (auto stored = pass ? std::nullopt : stored_file(repo, answer.commit, path)) {
    ++counters_.hits;
    return *stored;
  }

  std::string source_url = resolve_url(repo, answer.commit, path);
  if (auto linked = head.header("x-linked-etag")) {
    answer.file.lfs = true;
    answer.file.etag = unquote_etag(*linked);
    auto size = parse_u64(head.header("x-linked-size").value_or(""));
    if (!size || !is_hex(answer.file.etag, 64)) return error_reply(502, "the upstream answer has no usable LFS etag");
    answer.file.size = *size;
    if (head.status == 302) {
      std::string location(head.header("location").value_or(""));
      if (location.starts_with("/")) location = config_.upstream + location;
      if (location.empty()) return error_reply(502, "the upstream redirect has no Location");
      if (!url::http_origin(location)) {
        return error_reply(502, "the upstream redirect leads to a URL that is not http(s)");
      }
      source_url = location;
    }
  } else {
    answer.file.lfs = false;
    answer.file.etag = unquote_etag(head.header("etag").value_or(""));
    auto size = parse_u64(head.header("content-length").value_or(""));
    if (!size || !is_hex(answer.file.etag, 40)) return error_reply(502, "the upstream answer has no usable etag");
    answer.file.size = *size;
  }
  ++counters_.misses;
  if (auto held = index_.get_blob(answer.file.etag); held && held->size != answer.file.size) {
    return size_mismatch_reply(answer.file);
  }
  if (!want_body) return answer;

  // The caller's credentials go to the Hub's own origin only: the download decides again for every URL
  // it uses (this one, a refreshed one, each redirect), so a CDN or any other host never sees them.
  cache::BlobSource source;
  source.url = source_url;
  if (!credentials.authorization.empty()) {
    source.headers.emplace_back("Authorization", credentials.authorization);
    source.credentials_origin = url::http_origin(config_.upstream).value_or("");
  }
  source.etag = answer.file.etag;
  source.lfs = answer.file.lfs;
  source.size = answer.file.size;
  // The credential the download's requests go with: the refresh asks with that one too.
  source.refresh_url = [this, repo, commit = answer.commit, path, caller,
                        authorization = credentials.authorization]() -> std::optional<std::string> {
    Credentials same{authorization, ""};
    auto again = call("HEAD", resolve_url(repo, commit, path), caller, same);
    auto location = again.header("location");
    if (again.status != 302 || !location) return std::nullopt;
    std::string fresh = location->starts_with("/") ? config_.upstream + std::string(*location) : std::string(*location);
    if (!url::http_origin(fresh)) {
      spdlog::warn("{}: the refreshed URL of {} is not http(s); not followed", repo.key(), path);
      return std::nullopt;
    }
    return fresh;
  };
  if (pass) {
    answer.pass = std::make_shared<const cache::BlobSource>(std::move(source));
    return answer;
  }
  answer.download =
      downloads_.get_or_start(source, cache::FileClaim{repo, answer.commit, path, open}, &answer.started_download);
  if (answer.download && answer.download->size() != answer.file.size) {
    return size_mismatch_reply(answer.file);
  }
  if (!answer.download) {
    // Stored meanwhile by a download that just finished, or stored under another path and proven for this
    // repo already (a blob of another restricted repo is fetched and verified instead): record this path.
    auto blob = index_.get_blob(answer.file.etag);
    answer.lease = evictor_.lease(answer.file.etag);
    if (!blob || !answer.lease || !index_.blob_serves(answer.file.etag, repo)) {
      return error_reply(503, "the file is being evicted or the node is stopping; retry");
    }
    if (blob->size != answer.file.size) return size_mismatch_reply(answer.file);
    index_.put_file(repo, answer.commit, path, answer.file);
    answer.blob = std::make_shared<const BlobEntry>(std::move(*blob));
  }
  return answer;
}

std::variant<FileAnswer, Reply> HubService::stored_during_outage(const RepoId& repo, const std::string& rev,
                                                                 const std::string& path, const Caller& caller,
                                                                 bool open, const UpstreamResponse& failure) {
  if (!open && !granted_within_grace(repo, caller)) {
    // A repo the node never saw has nothing cached; one it knows as gated or private is refused.
    if (!recorded_visibility(repo)) return outage_reply(repo.name, failure);
    return restricted_outage_reply(failure);
  }
  auto commit = last_known_commit(repo, rev);
  std::optional<FileAnswer> stored;
  if (commit) stored = stored_file(repo, *commit, path);
  if (!stored) return outage_reply(path + " at " + rev + " of " + repo.name, failure);
  stored->stale = stale_note(rev, *commit, failure);
  if (!stored->stale.empty()) spdlog::warn("{}: {}", repo.key(), stored->stale);
  ++counters_.hits;
  return *stored;
}

Reply HubService::relay(const UpstreamResponse& response, const std::string& public_base, Relayed what) const {
  if (response.too_large) return error_reply(502, response.error);
  if (!response.error.empty()) return error_reply(502, "the upstream Hub is unreachable: " + response.error);
  if (throttled(response)) return throttled_reply(response, "");
  Reply r;
  r.status = static_cast<unsigned>(response.status);
  r.content_type = std::string(response.header("content-type").value_or("application/json"));
  r.body = what == Relayed::content ? response.body : strip_xet(response.body);
  for (const auto& [name, value] : response.headers) {
    if (name == "x-error-code" || name == "x-error-message" || name == "x-repo-commit") {
      r.headers.emplace_back(name, value);
    } else if (name == "location") {
      // Renamed repos: the Hub answers with a relative Location, which works against the node as is. One
      // to another origin would make the node's address a redirector to wherever the upstream says.
      std::string location = value;
      if (location.starts_with(config_.upstream + "/")) location = location.substr(config_.upstream.size());
      if (!location.starts_with("/") || location.starts_with("//")) {
        return error_reply(502, "the upstream redirected to another origin (" + url::redact(value) +
                                    "); the node passes on redirects within the upstream only");
      }
      r.headers.emplace_back("Location", location);
    } else if (name == "link" && !public_base.empty()) {
      if (auto next = next_link_path(value))
        r.headers.emplace_back("Link", "<" + public_base + *next + ">; rel=\"next\"");
    } else if (what != Relayed::metadata &&
               (name == "etag" || name == "last-modified" || name == "cache-control" || name == "content-disposition" ||
                name == "content-range" || name == "retry-after")) {
      r.headers.emplace_back(name, value);
    }
  }
  return r;
}

Reply HubService::forward(const std::string& method, const std::string& target, const HeaderList& headers,
                          const std::string& body, const Caller& caller, const std::optional<RepoId>& repo,
                          bool reads_content, const std::string& public_base) {
  if (repo) {
    if (auto refusal = refused(*repo)) return std::move(*refusal);
  }
  const std::optional<RepoId> content_of = reads_content ? repo : std::nullopt;
  // Listings can be slow at the Hub: they never hold more than half the blocking threads, which the node's
  // own file and metadata routes need.
  if (forwarding_.fetch_add(1) >= kMaxForwarding) {
    --forwarding_;
    Reply busy = error_reply(503, "the node is passing on as many requests to the upstream as it may; retry shortly");
    busy.headers.emplace_back("Retry-After", "1");
    return busy;
  }
  struct Done {
    std::atomic<int>& count;
    ~Done() { --count; }
  } done{forwarding_};
  const bool read = method == "GET" || method == "HEAD";
  // Asking whether the repo is public costs a request: only when the node's token could go along.
  const bool open = read && content_of && caller.authorization.empty() && !node_authorizations_.empty() &&
                    is_public(*content_of, caller);
  Credentials credentials = open ? node_credentials(*content_of) : Credentials{caller.authorization, ""};
  auto response = call(read ? "GET" : method, config_.upstream + target, caller, credentials, headers, body);
  // The API's JSON loses its Xet markers; a file's bytes (/raw/) are the file's, whatever keys they hold.
  Reply reply = relay(response, public_base, target.starts_with("/api/") ? Relayed::api : Relayed::content);
  // An answer to someone's credentials is theirs: no shared cache in front of the node may keep it.
  if (!credentials.authorization.empty() && reply.status < 300) {
    std::erase_if(reply.headers, [](const auto& h) { return h.first == "cache-control"; });
    reply.headers.emplace_back("Cache-Control", "private");
  }
  reply.headers.emplace_back("Vary", "Authorization");
  return reply;
}

Reply HubService::info(const RepoId& repo, const std::optional<std::string>& rev, std::string_view query,
                       const Caller& caller) {
  const RepoDecision decision = decide(repo);
  if (decision.access == RepoAccess::deny) return denied(decision);
  const bool open = is_public(repo, caller);
  Credentials credentials = credentials_for(caller, repo, open);
  const auto canonical = canonical_info_query(query);
  const std::string url =
      with_query(api_url(repo) + (rev ? "/revision/" + url::encode(*rev) : ""), canonical ? *canonical : query);
  if (!open) {
    auto response = call("GET", url, caller, credentials);
    if (!unreachable(response)) return relay(response);
    // Only a repo the node knows as gated or private is refused as one; of the rest nothing is cached.
    if (!recorded_visibility(repo)) return outage_reply(repo.name, response);
    return restricted_outage_reply(response);
  }
  // A pass repo's answers are relayed and not kept, as are requests of parameters real clients do not send.
  if (!canonical || decision.access == RepoAccess::pass) {
    if (!canonical) ++counters_.metadata_unstored;
    auto response = call("GET", url, caller, credentials);
    if (unreachable(response)) return outage_reply("this revision info of " + repo.name, response);
    return relay(response);
  }
  // The default branch has no name in the URL; remember it under the empty name.
  const std::string ref_name = rev.value_or("");
  auto key_of = [&](const std::string& commit) { return "info|" + repo.key() + '@' + commit + '|' + *canonical; };
  if (auto commit = fresh_ref(repo, ref_name)) {
    if (auto body = metadata_.get(key_of(*commit))) {
      Reply r;
      r.body = std::move(*body);
      return r;
    }
  }
  auto response = call("GET", url, caller, credentials);
  if (unreachable(response)) {
    auto commit = last_known_commit(repo, ref_name);
    std::optional<std::string> body;
    if (commit) body = metadata_.get(key_of(*commit));
    if (!body) return outage_reply("the revision info of " + repo.name, response);
    Reply r;
    r.body = std::move(*body);
    if (auto note = stale_note(ref_name, *commit, response); !note.empty()) r.headers.emplace_back(kStaleHeader, note);
    return r;
  }
  Reply r = relay(response);
  if (response.status == 200) {
    auto parsed = Json::parse(r.body, nullptr, false);
    if (parsed.is_object() && parsed.contains("sha") && parsed["sha"].is_string()) {
      std::string commit = parsed["sha"].get<std::string>();
      if (is_commit_sha(commit)) {
        store_ref(repo, ref_name, commit);
        metadata_.put(key_of(commit), r.body);
      }
    }
  }
  return r;
}

// A snapshot listed by the revision info the node keeps (what the Python client asks before a
// snapshot_download), with each file as the index knows it: complete only if it knows every one.
std::variant<std::vector<HubService::SnapshotEntry>, Reply> HubService::stored_siblings(const RepoId& repo,
                                                                                        const std::string& commit) {
  for (const std::string_view query : {"", "blobs=True"}) {
    const auto canonical = canonical_info_query(query);
    if (!canonical) continue;
    auto body = metadata_.get("info|" + repo.key() + '@' + commit + '|' + *canonical);
    if (!body) continue;
    auto info = Json::parse(*body, nullptr, false);
    if (!info.is_object() || !info.contains("siblings") || !info["siblings"].is_array()) continue;
    std::vector<SnapshotEntry> files;
    for (const auto& sibling : info["siblings"]) {
      const std::string path = sibling.is_object() ? sibling.value("rfilename", "") : "";
      auto file = path.empty() ? std::nullopt : index_.get_file(repo, commit, path);
      if (!file) return error_reply(404, "the node does not know every file of " + repo.key() + "@" + commit);
      files.push_back(SnapshotEntry{path, *file});
    }
    return files;
  }
  return error_reply(404, "no listing of " + repo.key() + "@" + commit + " is kept");
}

std::optional<Reply> HubService::stored_tree_page(const RepoId& repo, const std::string& sha, const std::string& path,
                                                  std::string_view query, const std::string& public_base) {
  const auto canonical = canonical_tree_query(query);
  if (!canonical) return std::nullopt;
  auto stored = metadata_.get("tree|" + repo.key() + '@' + sha + '|' + path + '|' + canonical->canonical);
  if (!stored) return std::nullopt;
  auto record = Json::parse(*stored, nullptr, false);
  if (!record.is_object()) return std::nullopt;
  Reply r;
  r.body = record.value("body", "");
  std::string next = record.value("next", "");
  if (!next.empty()) r.headers.emplace_back("Link", "<" + public_base + next + ">; rel=\"next\"");
  return r;
}

Reply HubService::tree(const RepoId& repo, const std::string& rev, const std::string& path, std::string_view query,
                       const Caller& caller, const std::string& public_base) {
  const RepoDecision decision = decide(repo);
  if (decision.access == RepoAccess::deny) return denied(decision);
  const bool open = is_public(repo, caller);
  Credentials credentials = credentials_for(caller, repo, open);
  const std::string suffix = path.empty() ? "" : "/" + url::encode(path, true);
  const auto canonical = canonical_tree_query(query);
  if (!open) {
    return relay(
        call("GET", with_query(api_url(repo) + "/tree/" + url::encode(rev) + suffix, query), caller, credentials),
        public_base);
  }
  std::string stale;
  auto commit = resolve_commit(repo, rev, caller, credentials, stale);
  if (auto* refused = std::get_if<Reply>(&commit)) return *refused;
  const std::string& sha = std::get<std::string>(commit);
  if (!canonical || decision.access == RepoAccess::pass) {
    if (!canonical) ++counters_.metadata_unstored;
    auto response = call("GET", with_query(api_url(repo) + "/tree/" + sha + suffix, query), caller, credentials);
    if (unreachable(response)) return outage_reply("this tree listing of " + repo.name, response);
    return relay(response, public_base);
  }
  const std::string page_prefix = "tree|" + repo.key() + '@' + sha + '|' + path + '|';
  const std::string key = page_prefix + canonical->canonical;
  if (auto kept = stored_tree_page(repo, sha, path, query, public_base)) {
    if (!stale.empty()) kept->headers.emplace_back(kStaleHeader, stale);
    return *kept;
  }
  auto response =
      call("GET", with_query(api_url(repo) + "/tree/" + sha + suffix, canonical->canonical), caller, credentials);
  if (unreachable(response)) return outage_reply("this tree listing of " + repo.name, response);
  Reply r = relay(response, public_base);
  // A page after the first is kept only when its cursor came from a page the node kept: cursors are
  // opaque, and made-up ones must not fill the store.
  const bool issued = !canonical->has_cursor || metadata_.get("cursor|" + key).has_value();
  if (response.status == 200 && issued) {
    std::string next;
    if (auto link = response.header("link")) next = next_link_path(*link).value_or("");
    metadata_.put(key, Json{{"body", r.body}, {"next", next}}.dump());
    const auto question = next.find('?');
    if (question != std::string::npos) {
      auto next_query = canonical_tree_query(next.substr(question + 1));
      if (next_query && next_query->has_cursor) metadata_.put("cursor|" + page_prefix + next_query->canonical, "");
    }
  }
  return r;
}

Reply HubService::paths_info(const RepoId& repo, const std::string& rev, const std::string& content_type,
                             const std::string& body, const Caller& caller) {
  const RepoDecision decision = decide(repo);
  if (decision.access == RepoAccess::deny) return denied(decision);
  const bool open = is_public(repo, caller);
  Credentials credentials = credentials_for(caller, repo, open);
  HeaderList headers{{"Content-Type", content_type.empty() ? "application/x-www-form-urlencoded" : content_type}};
  if (!open) {
    return relay(call("POST", api_url(repo) + "/paths-info/" + url::encode(rev), caller, credentials, headers, body));
  }
  std::string stale;
  auto commit = resolve_commit(repo, rev, caller, credentials, stale);
  if (auto* refused = std::get_if<Reply>(&commit)) return *refused;
  const std::string& sha = std::get<std::string>(commit);
  const auto canonical = canonical_paths_query(content_type, body);
  if (!canonical || decision.access == RepoAccess::pass) {
    if (!canonical) ++counters_.metadata_unstored;
    auto response = call("POST", api_url(repo) + "/paths-info/" + sha, caller, credentials, headers, body);
    if (unreachable(response)) return outage_reply("this paths-info answer of " + repo.name, response);
    return relay(response);
  }
  const std::string key = "paths|" + repo.key() + '@' + sha + '|' + canonical->body;
  if (auto stored = metadata_.get(key)) {
    Reply r;
    r.body = std::move(*stored);
    if (!stale.empty()) r.headers.emplace_back(kStaleHeader, stale);
    return r;
  }
  const HeaderList form{{"Content-Type", "application/x-www-form-urlencoded"}};
  auto response = call("POST", api_url(repo) + "/paths-info/" + sha, caller, credentials, form, canonical->body);
  if (unreachable(response)) return outage_reply("this paths-info answer of " + repo.name, response);
  Reply r = relay(response);
  if (response.status == 200 && describes_every_path(r.body, canonical->paths)) metadata_.put(key, r.body);
  return r;
}

Reply HubService::refs(const RepoId& repo, std::string_view query, const Caller& caller) {
  if (auto refusal = refused(repo)) return std::move(*refusal);
  Credentials credentials = credentials_for(caller, repo, is_public(repo, caller));
  return relay(call("GET", with_query(api_url(repo) + "/refs", query), caller, credentials));
}

namespace {
constexpr metrics::FamilySpec kCacheRequests{"inferllama_cache_requests_total", "counter",
                                             "File requests answered from the store (hit) or not"};
constexpr metrics::FamilySpec kUpstreamRequests{"inferllama_upstream_requests_total", "counter",
                                                "Metadata requests sent upstream"};
constexpr metrics::FamilySpec kMetadataEntries{"inferllama_metadata_entries", "gauge",
                                               "Hub metadata answers stored (revision info, tree pages, paths-info)"};
constexpr metrics::FamilySpec kMetadataBytes{"inferllama_metadata_bytes", "gauge",
                                             "Bytes charged to the stored metadata answers"};
constexpr metrics::FamilySpec kMetadataBudget{"inferllama_metadata_budget_bytes", "gauge",
                                              "Budget of the stored metadata answers"};
constexpr metrics::FamilySpec kMetadataEvictions{"inferllama_metadata_evictions_total", "counter",
                                                 "Stored metadata answers dropped for the budget"};
constexpr metrics::FamilySpec kMetadataUnstored{
    "inferllama_metadata_unstored_total", "counter",
    "Metadata requests with parameters real clients do not send: forwarded, not stored"};
constexpr metrics::FamilySpec kUpstreamErrors{"inferllama_upstream_errors_total", "counter",
                                              "Upstream failures by kind"};
constexpr metrics::FamilySpec kRuleRefusals{"inferllama_repo_rule_refusals_total", "counter",
                                            "Requests refused by a repo rule, by the rule's text"};
}  // namespace

void HubService::render_metrics(std::string& out) const {
  using metrics::write_family;
  using metrics::write_header;
  using metrics::write_sample;
  auto value = [](const std::atomic<std::uint64_t>& n) { return static_cast<double>(n.load()); };
  write_header(out, kCacheRequests);
  write_sample(out, kCacheRequests, "result=\"hit\"", value(counters_.hits));
  write_sample(out, kCacheRequests, "result=\"miss\"", value(counters_.misses));
  write_family(out, kUpstreamRequests, value(counters_.upstream_requests));
  write_family(out, kMetadataEntries, static_cast<double>(metadata_.entries()));
  write_family(out, kMetadataBytes, static_cast<double>(metadata_.bytes()));
  write_family(out, kMetadataBudget, static_cast<double>(metadata_.budget()));
  write_family(out, kMetadataEvictions, static_cast<double>(metadata_.evictions()));
  write_family(out, kMetadataUnstored, value(counters_.metadata_unstored));
  const auto& downloads = downloads_.counters();
  write_header(out, kUpstreamErrors);
  write_sample(out, kUpstreamErrors, "kind=\"transport\"", value(counters_.upstream_transport_errors));
  write_sample(out, kUpstreamErrors, "kind=\"server\"", value(counters_.upstream_server_errors));
  write_sample(out, kUpstreamErrors, "kind=\"transfer_retry\"", value(downloads.retries));
  write_sample(out, kUpstreamErrors, "kind=\"download_failed\"", value(downloads.failed));
  write_header(out, kRuleRefusals);
  refusals_.each([&](const std::string& labels, const metrics::Counter& counter) {
    write_sample(out, kRuleRefusals, labels, static_cast<double>(counter.value()));
  });
  passes_.render_metrics(out);
}

}  // namespace inferllama::hub
