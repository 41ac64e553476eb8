// Hosted repos: every route of a repo whose namespace the node owns is answered here and never passed
// upstream; the Hub's repo-level routes (create, delete, whoami) are answered here when they name the
// node's namespaces or users; and the signed LFS upload URLs stream their bytes into the chunk store.
#include <array>
#include <charconv>
#include <functional>
#include <nlohmann/json.hpp>
#include <system_error>
#include <vector>

#include "hosting/hosting.hpp"
#include "http/admission.hpp"
#include "http/connection.hpp"
#include "http/handlers.hpp"
#include "http/server_context.hpp"
#include "torrent/snapshot_torrents.hpp"
#include "util/offload.hpp"
#include "util/url.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;
namespace {

constexpr std::size_t kUploadSlice = 1 << 20;

hosting::Requester requester(const Exchange& x) {
  return {x.connection.user,
          x.server.gate.is_admin(x.request, Origin{x.connection.listener, x.connection.client, x.connection.network})};
}

// hf_xet (Python client 1.20 and later) asks for a Xet token before any upload and shows the user only the
// status and URL of a failed request, never its body. So the token it gets points its storage calls at a
// path that names the fix, and each of them is refused there (router.cpp): the client stops at once with
// "set-HF_HUB_DISABLE_XET=1" in its error. An error here instead would say nothing, and a 200 without a
// storage URL would make it retry for minutes.
hub::Reply xet_refusal(const std::string& base, std::int64_t now) {
  const nlohmann::json token{{"casUrl", base + std::string(kXetRefusedPath) + "set-HF_HUB_DISABLE_XET=1"},
                             {"exp", now + 3600},
                             {"accessToken", "refused"}};
  hub::Reply reply{200, {}, "application/json", token.dump()};
  reply.headers.emplace_back("X-Error-Message", std::string(kXetRefusal));
  return reply;
}

// The decoded path segments of a request target (after its leading '/'; the router refused malformed ones).
std::vector<std::string> segments(std::string_view target) {
  return url::decoded_segments(url::split_target(target).first.substr(1)).value_or(std::vector<std::string>{});
}

std::string join(const std::vector<std::string>& segs, std::size_t from) {
  std::string out;
  for (std::size_t i = from; i < segs.size(); ++i) {
    if (i > from) out += '/';
    out += segs[i];
  }
  return out;
}

bool query_flag(std::string_view query, std::string_view name) {
  for (const auto& [key, value] : url::parse_query(query))
    if (key == name) return hosting::is_true(value);
  return false;
}

// `work` captures by reference only: GCC 12 destroys a co_await expression's temporaries twice, which only
// a trivially destructible callable survives.
template <class Work>
Task<Answer> on_blocking(Exchange& x, Work work) {
  hub::Reply reply = co_await offload(x.server.deps.blocking, [&work]() -> hub::Reply {
    try {
      return work();
    } catch (const nlohmann::json::exception& e) {
      // A field of the wrong type in a client's JSON is the client's error, never a 500 it would retry.
      return hub::error_reply(400, std::string("malformed JSON: ") + e.what());
    }
  });
  co_return reply;
}

// The work on one upload slice (its write, its digest) on the blocking pool, awaited when the next slice is read.
class SliceWriter {
 public:
  using Work = std::function<std::optional<hub::Reply>()>;
  explicit SliceWriter(const asio::any_io_executor& executor) : timer_(executor) {}

  void start(ElasticThreads& pool, Work work) {
    ++in_flight_;
    pool.post([this, work = std::move(work)] {
      std::optional<hub::Reply> result;
      std::exception_ptr error;
      try {
        result = work();
      } catch (...) {
        error = std::current_exception();
      }
      // Back on the connection's executor, where wait() looks.
      asio::post(timer_.get_executor(), [this, result = std::move(result), error] {
        if (!result_) result_ = result;
        if (!error_) error_ = error;
        if (--in_flight_ == 0) timer_.cancel();
      });
    });
  }

  // The outcome of the work in flight (nullopt: none, or it went well); an exception, rethrown.
  Task<std::optional<hub::Reply>> wait() {
    while (in_flight_ > 0) {
      timer_.expires_after(std::chrono::hours(1));
      boost::system::error_code ec;
      co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    co_return std::exchange(result_, std::nullopt);
  }

 private:
  asio::steady_timer timer_;
  int in_flight_ = 0;
  std::optional<hub::Reply> result_;
  std::exception_ptr error_;
};

// A hosted repo's Hub routes beyond the metadata API: /api/{type}s/{ns}/{name}/{action}/...
Task<Answer> repo_action(Exchange& x, hosting::Hosting& hosting, const RepoId& repo, const std::string& action) {
  const Request& req = x.request;
  const auto segs = segments(req.target());
  // segs: api, {type}s, ns, name, action, rest...
  const std::string rest = segs.size() > 5 ? join(segs, 5) : std::string();
  const hosting::Requester who = requester(x);
  const std::string base = x.server.public_base(x.connection, req);
  const std::string query(x.query);
  const auto method = req.method();
  if (action == "preupload" && method == bhttp::verb::post && !rest.empty())
    co_return co_await on_blocking(x, [&] { return hosting.preupload(who, repo, rest, req.body()); });
  if (action == "commit" && method == bhttp::verb::post && !rest.empty()) {
    const bool create_pr = query_flag(query, "create_pr");
    co_return co_await on_blocking(x, [&] { return hosting.commit(who, repo, rest, create_pr, req.body(), base); });
  }
  if (action == "commits" && is_read(req) && !rest.empty())
    co_return co_await on_blocking(x, [&] { return hosting.commits(who, repo, rest, query, base); });
  if (action == "settings" && method == bhttp::verb::put && rest.empty()) {
    co_return co_await on_blocking(x, [&] {
      hub::Reply reply = hosting.settings(who, repo, req.body());
      // A repo made private stops being seeded now, not at the next visibility check.
      if (reply.status == 200 && x.server.deps.torrents) x.server.deps.torrents->recheck_visibility();
      return reply;
    });
  }
  if (action == "discussions") {
    if (method == bhttp::verb::post && rest.empty())
      co_return co_await on_blocking(x, [&] { return hosting.create_discussion(who, repo, req.body(), base); });
    unsigned number = 0;
    if (is_read(req) &&
        std::from_chars(rest.data(), rest.data() + rest.size(), number).ptr == rest.data() + rest.size())
      co_return co_await on_blocking(x, [&] { return hosting.discussion(who, repo, number, base); });
  }
  if (action == "branch" && !rest.empty()) {
    if (method == bhttp::verb::post)
      co_return co_await on_blocking(x, [&] { return hosting.create_branch(who, repo, rest, req.body()); });
    if (method == bhttp::verb::delete_)
      co_return co_await on_blocking(x, [&] { return hosting.delete_branch(who, repo, rest); });
  }
  if (action == "super-squash" && method == bhttp::verb::post && !rest.empty())
    co_return co_await on_blocking(x, [&] { return hosting.super_squash(who, repo, rest, req.body()); });
  if (action == "xet-write-token" || action == "xet-read-token") {
    const auto now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    co_return xet_refusal(base, now);
  }
  // Anything else of a hosted repo stays here: a private repo's existence included.
  co_return co_await on_blocking(x, [&]() -> hub::Reply {
    if (auto refused = hosting.read_refusal(who, repo)) return *refused;
    return hub::error_reply(404, "this node does not offer " + action + " for hosted repos");
  });
}

}  // namespace

bool hosts(const Exchange& x, const RepoId& repo) {
  return x.server.deps.hosting && x.server.deps.hosting->owns(repo);
}

bool streams_body(const Route& route, const bhttp::request_header<>& req) {
  const auto* upload = std::get_if<UploadRoute>(&route);
  return upload && req.method() == bhttp::verb::put &&
         (upload->kind == UploadRoute::Kind::object || upload->kind == UploadRoute::Kind::part);
}

Task<std::optional<Answer>> hosted(Exchange& x, const ResolveRoute& route) {
  auto* hosting = x.server.deps.hosting;
  if (!hosting || !hosting->owns(route.repo)) co_return std::nullopt;
  if (!is_read(x.request)) co_return method_not_allowed("use GET or HEAD");
  const hosting::Requester who = requester(x);
  auto& hub = x.server.deps.hub;
  auto outcome = co_await offload(x.server.deps.blocking, [&]() -> std::variant<hub::FileAnswer, hub::Reply> {
    if (auto refused = hosting->read_refusal(who, route.repo)) return *refused;
    return hub.resolve(route.repo, route.rev, route.path, hub::Caller{}, true);
  });
  if (auto* reply = std::get_if<hub::Reply>(&outcome)) co_return Answer{std::move(*reply)};
  co_return Answer{FileBody{std::move(std::get<hub::FileAnswer>(outcome)), ""}};
}

Task<std::optional<Answer>> hosted(Exchange& x, const ApiRoute& api) {
  auto* hosting = x.server.deps.hosting;
  if (!hosting || !hosting->owns(api.repo)) co_return std::nullopt;
  const Request& req = x.request;
  const hosting::Requester who = requester(x);
  const std::string query(x.query);
  switch (api.kind) {
    case ApiRoute::Kind::webseed: {
      if (api.path.starts_with(".pad/")) break;                            // zeros, whoever asks
      const ResolveRoute route{api.repo, api.rev, api.path, api.passkey};  // named: see on_blocking
      auto file = co_await hosted(x, route);
      co_return file;
    }
    case ApiRoute::Kind::torrent:
    case ApiRoute::Kind::magnet: {
      hub::Reply refused = co_await offload(x.server.deps.blocking, [&] {
        return hosting->read_refusal(who, api.repo).value_or(hub::Reply{0, {}, "", ""});
      });
      if (refused.status != 0) co_return Answer{std::move(refused)};
      break;  // the torrent route, which offers public repos only
    }
    case ApiRoute::Kind::info:
    case ApiRoute::Kind::revision: {
      if (!is_read(req)) co_return Answer{method_not_allowed("use GET")};
      std::optional<std::string> rev;
      if (api.kind == ApiRoute::Kind::revision) rev = api.rev;
      co_return co_await on_blocking(x, [&] { return hosting->info(who, api.repo, rev, query); });
    }
    case ApiRoute::Kind::tree: {
      if (!is_read(req)) co_return Answer{method_not_allowed("use GET")};
      const std::string base = x.server.public_base(x.connection, req);
      co_return co_await on_blocking(x, [&] { return hosting->tree(who, api.repo, api.rev, api.path, query, base); });
    }
    case ApiRoute::Kind::paths_info: {
      if (req.method() != bhttp::verb::post) co_return Answer{method_not_allowed("use POST")};
      const std::string content_type(req[bhttp::field::content_type]);
      co_return co_await on_blocking(
          x, [&] { return hosting->paths_info(who, api.repo, api.rev, content_type, req.body()); });
    }
    case ApiRoute::Kind::refs:
      if (!is_read(req)) co_return Answer{method_not_allowed("use GET")};
      co_return co_await on_blocking(x, [&] { return hosting->refs(who, api.repo, query); });
  }
  co_return std::nullopt;
}

Task<std::optional<Answer>> hosted(Exchange& x, const UpstreamRoute& route) {
  auto* hosting = x.server.deps.hosting;
  if (!hosting) co_return std::nullopt;
  const Request& req = x.request;
  const hosting::Requester who = requester(x);
  const std::string base = x.server.public_base(x.connection, req);
  if (route.repo) {
    RepoId repo = *route.repo;
    // {prefix}{ns}/{name}.git/info/lfs/objects/batch: the Git LFS endpoint of the repo.
    const bool lfs = repo.name.ends_with(".git") && route.action == "info";
    if (lfs) repo.name.resize(repo.name.size() - 4);
    if (!hosting->owns(repo)) co_return std::nullopt;
    const auto segs = segments(req.target());
    if (lfs) {
      if (req.method() != bhttp::verb::post || segs.empty() || segs.back() != "batch" || segs.size() < 4 ||
          segs[segs.size() - 2] != "objects")
        co_return Answer{hub::error_reply(404, "this node's LFS endpoint answers objects/batch only")};
      co_return co_await on_blocking(x, [&] { return hosting->lfs_batch(who, repo, req.body(), base); });
    }
    if (!segs.empty() && segs[0] == "api") co_return co_await repo_action(x, *hosting, repo, route.action);
    co_return co_await on_blocking(x, [&]() -> hub::Reply {
      if (auto refused = hosting->read_refusal(who, repo)) return *refused;
      return hub::error_reply(404, "this node serves hosted files at /resolve/ only");
    });
  }
  const std::string_view path = url::split_target(req.target()).first;
  if (path == "/api/repos/create" && req.method() == bhttp::verb::post) {
    auto reply = co_await offload(x.server.deps.blocking, [&] { return hosting->create_repo(who, req.body(), base); });
    if (reply) co_return Answer{std::move(*reply)};
    co_return std::nullopt;
  }
  if (path == "/api/repos/delete" && req.method() == bhttp::verb::delete_) {
    auto reply = co_await offload(x.server.deps.blocking, [&] {
      auto deleted = hosting->delete_repo(who, req.body());
      // Its torrents stop now, shared files and all, not at the next visibility check.
      if (deleted && deleted->status == 200 && x.server.deps.torrents) x.server.deps.torrents->recheck_visibility();
      return deleted;
    });
    if (reply) co_return Answer{std::move(*reply)};
    co_return std::nullopt;
  }
  if (path == "/api/repos/move" && req.method() == bhttp::verb::post) {
    // Moving would rewrite every key of the repo: not offered for hosted repos.
    const bool mine = req.body().find("\"fromRepo\"") != std::string::npos && [&] {
      auto json = nlohmann::json::parse(req.body(), nullptr, false);
      const std::string from = json.is_object() ? json.value("fromRepo", "") : "";
      return hosting->owns_namespace(std::string_view(from).substr(0, from.find('/')));
    }();
    if (mine)
      co_return Answer{hub::error_reply(501, "hosted repos cannot be moved: create the new repo and upload to it")};
    co_return std::nullopt;
  }
  // Any other page of a hosted namespace (/{ns}, /{ns}/{name}, /datasets/{ns}/{name}, /api/models/{ns}/...)
  // stays here too: the upstream hears nothing of the node's names.
  if (const auto segs = segments(req.target()); !segs.empty()) {
    std::size_t at = 0;
    if (segs[0] == "datasets" || segs[0] == "spaces") at = 1;
    if (segs[0] == "api") at = segs.size() > 1 && parse_repo_type(segs[1]) ? 2 : segs.size();
    if (at < segs.size() && hosting->owns_namespace(segs[at]))
      co_return Answer{hub::error_reply(404, "Repository not found", "RepoNotFound")};
  }
  // A node user's own identity; anyone else's whoami is the Hub's.
  if (!who.user.empty() && (path == "/api/whoami-v2" || path == "/api/whoami"))
    co_return co_await on_blocking(x, [&] { return hosting->whoami(who); });
  if (!who.user.empty() && path == "/api/validate-yaml" && req.method() == bhttp::verb::post)
    co_return Answer{hub::Reply{200, {}, "application/json", R"({"errors":[],"warnings":[]})"}};
  if (is_read(req) && (path == "/api/models" || path == "/api/datasets" || path == "/api/spaces")) {
    for (const auto& [name, value] : url::parse_query(x.query)) {
      if (name != "author" || !hosting->owns_namespace(value)) continue;
      const RepoType type = *parse_repo_type(path.substr(5));
      const std::string author = value;
      co_return co_await on_blocking(x, [&] { return hosting->list_repos(who, type, author); });
    }
  }
  co_return std::nullopt;
}

Task<Answer> handle(Exchange& x, const UploadRoute& route) {
  auto* hosting = x.server.deps.hosting;
  if (!hosting) co_return hub::error_reply(404, "this node hosts no repos");
  auto checked = hosting->check_ticket(route.ticket);
  if (auto* refused = std::get_if<hub::Reply>(&checked)) co_return std::move(*refused);
  const auto& ticket = std::get<hosting::UploadTicket>(checked);
  const Request& req = x.request;
  auto& blocking = x.server.deps.blocking;
  if (route.kind == UploadRoute::Kind::complete || route.kind == UploadRoute::Kind::verify) {
    if (req.method() != bhttp::verb::post) co_return method_not_allowed("use POST");
    const bool complete = route.kind == UploadRoute::Kind::complete;
    co_return co_await on_blocking(x, [&] {
      return complete ? hosting->complete_multipart(ticket, req.body()) : hosting->verify(ticket, req.body());
    });
  }
  if (req.method() != bhttp::verb::put || !x.body) co_return method_not_allowed("use PUT");
  std::optional<std::uint64_t> content_length;
  if (auto field = req.find(bhttp::field::content_length); field != req.end()) {
    std::uint64_t n = 0;
    const auto text = field->value();
    if (std::from_chars(text.data(), text.data() + text.size(), n).ptr == text.data() + text.size()) content_length = n;
  }
  const unsigned part = route.kind == UploadRoute::Kind::part ? route.part : 0;
  auto begun = co_await offload(blocking, [&] { return hosting->begin_upload(ticket, part, content_length); });
  if (auto* refused = std::get_if<hub::Reply>(&begun)) co_return std::move(*refused);
  auto upload = std::move(std::get<std::unique_ptr<hosting::Hosting::Upload>>(begun));
  // Two slices: the connection fills one while the blocking pool writes and hashes the other.
  std::array<std::vector<std::uint8_t>, 2> slices{std::vector<std::uint8_t>(kUploadSlice),
                                                  std::vector<std::uint8_t>(kUploadSlice)};
  SliceWriter writer(co_await asio::this_coro::executor);
  for (std::size_t current = 0;; current ^= 1) {
    auto& slice = slices[current];
    std::size_t filled = 0;
    std::exception_ptr cut;
    try {
      while (filled < slice.size()) {
        const std::size_t n = co_await x.body->read(std::span(slice).subspan(filled));
        if (n == 0) break;
        filled += n;
      }
    } catch (...) {
      cut = std::current_exception();
    }
    // The slice in flight is written before anything else happens, the connection's failure included.
    std::optional<hub::Reply> failed = co_await writer.wait();
    if (cut) std::rethrow_exception(cut);
    if (failed) co_return std::move(*failed);
    if (filled == 0) break;
    // The object's digest on one thread while its chunks are written and hashed on another.
    writer.start(blocking, [&upload, &slice, filled]() -> std::optional<hub::Reply> {
      upload->hash(std::span<const std::uint8_t>(slice.data(), filled));
      return std::nullopt;
    });
    writer.start(blocking, [&upload, &slice, filled]() -> std::optional<hub::Reply> {
      try {
        upload->write(std::span<const std::uint8_t>(slice.data(), filled));
      } catch (const std::length_error&) {
        return hub::error_reply(400, "the body is longer than the object's announced size");
      } catch (const std::system_error& e) {
        if (e.code() == std::errc::no_space_on_device)
          return hub::error_reply(507, "the node's disk is full; nothing of this upload was kept");
        throw;
      }
      return std::nullopt;
    });
    if (filled < slice.size()) break;
  }
  std::optional<hub::Reply> failed = co_await writer.wait();
  if (failed) co_return std::move(*failed);
  co_return co_await on_blocking(x, [&] { return upload->finish(); });
}

}  // namespace inferllama::http
