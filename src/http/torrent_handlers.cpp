// The torrents of cached snapshots: GET .../torrent/{rev}[/{path}] (a .torrent) and .../magnet/...
#include "cache/hashing.hpp"
#include "http/connection.hpp"
#include "http/handlers.hpp"
#include "http/server_context.hpp"
#include "torrent/snapshot_torrents.hpp"
#include "usage/identities.hpp"
#include "util/offload.hpp"
#include "util/url.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;

Task<Answer> handle_torrent(Exchange& x, const ApiRoute& api) {
  auto* torrents = x.server.deps.torrents;
  const Request& req = x.request;
  Connection& c = x.connection;
  if (!is_read(req)) co_return method_not_allowed("use GET");
  if (!torrents) co_return hub::error_reply(404, "this node offers no torrents");
  torrent::SnapshotTorrents::Request request{api.repo, api.rev, api.path};
  for (const auto& [name, value] : url::parse_query(x.query)) {
    if (name == "format") {
      if (value == "hybrid") {
        request.format = torrent::Format::hybrid;
      } else if (value == "v2") {
        request.format = torrent::Format::v2;
      } else if (value != "v1") {
        co_return hub::error_reply(400, "format is v1 (default), hybrid or v2");
      }
    } else if (name == "wait") {
      request.wait = !(value == "false" || value == "0" || value == "no");
    }
  }
  const Config& config = x.server.config;
  torrent::NodeLinks links{x.server.public_base(c, req), "", ""};
  if ((config.tracker_private || config.require_auth) && c.account && !c.account->who.anonymous()) {
    if (auto user = x.server.deps.identities->user(c.account->who.str())) links.passkey = user->passkey;
  }
  if (const auto udp_port = x.server.deps.udp_announce_port; udp_port && links.passkey.empty()) {
    // The HTTP port is not the tracker's: the same host, the tracker's port.
    links.udp_announce =
        "udp://" + std::string(url::host_of(links.base)) + ":" + std::to_string(udp_port) + "/announce";
  }
  // Completing the snapshot waits on the upstream, not on the client; it, and bencoding and hashing a
  // torrent of maybe thousands of files, stay off the I/O thread.
  c.pause_deadline();
  const bool magnet = api.kind == ApiRoute::Kind::magnet;
  std::string document, etag;
  auto outcome = co_await offload(x.server.deps.blocking, [&] {
    auto got = torrents->get(request);
    if (const auto* built = std::get_if<torrent::SnapshotTorrent>(&got)) {
      if (magnet) {
        document = torrents->magnet(*built, links);
      } else {
        document = torrents->metainfo(*built, links);
        etag = "\"" + cache::sha256(document).hex() + "\"";
      }
    }
    return got;
  });
  c.touch();
  if (auto* reply = std::get_if<hub::Reply>(&outcome)) co_return std::move(*reply);
  const auto& built = std::get<torrent::SnapshotTorrent>(outcome);
  hub::Reply reply;
  if (built.torrent->info_hash_v1)
    reply.headers.emplace_back("X-InferLlama-Info-Hash", built.torrent->info_hash_v1->hex());
  if (built.torrent->info_hash_v2)
    reply.headers.emplace_back("X-InferLlama-Info-Hash-V2", built.torrent->info_hash_v2->hex());
  reply.headers.emplace_back("X-Repo-Commit", built.commit);
  if (!links.passkey.empty()) reply.headers.emplace_back("Cache-Control", "private, no-store");  // it names the passkey
  if (magnet) {
    reply.content_type = "text/plain; charset=utf-8";
    reply.body = std::move(document);
    co_return reply;
  }
  reply.content_type = "application/x-bittorrent";
  reply.headers.emplace_back("ETag", etag);
  reply.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + built.torrent->name + ".torrent\"");
  const auto if_none_match = req[bhttp::field::if_none_match];
  if (!if_none_match.empty() && if_none_match.find(etag) != std::string_view::npos) {
    reply.status = 304;
  } else {
    reply.body = std::move(document);
  }
  co_return reply;
}

}  // namespace inferllama::http
