#include "http/file_response.hpp"

#include "cache/download.hpp"
#include "http/range.hpp"
#include "inferllama/cluster.hpp"
#include "inferllama/scan.hpp"
#include "inferllama/version.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;
namespace {

// Status, Content-Range and the body's bytes of a Range request on `size` bytes.
// `empty_file_rule`: a Range on an empty file answers the whole (empty) file (see below).
FilePlan plan_range(const Request& req, std::string_view header, std::uint64_t size, bool empty_file_rule,
                    std::string& content_range) {
  FilePlan plan;
  plan.length = size;
  const ByteRange range = parse_range(header, size);
  if (empty_file_rule && size == 0 && !header.empty()) {
    // No range of an empty file is satisfiable, but @huggingface/hub probes every file with
    // "bytes=0-0" and treats a 416 as fatal: answer the whole (empty) file, with its size.
    content_range = "bytes */0";
  } else if (range.kind == ByteRange::Kind::unsatisfiable) {
    plan.status = 416;
    content_range = "bytes */" + std::to_string(size);
    plan.length = 0;
  } else if (range.kind == ByteRange::Kind::partial) {
    plan.status = 206;
    content_range =
        "bytes " + std::to_string(range.first) + "-" + std::to_string(range.last) + "/" + std::to_string(size);
    plan.first = range.first;
    plan.length = range.length();
  }
  plan.send_body = req.method() != bhttp::verb::head && plan.length > 0;
  return plan;
}

}  // namespace

void write_connection_fields(const Connection& c, HeadWriter& head) {
  for (const auto& [name, value] : kSecurityHeaders) head.field(name, value);
  head.field(cluster::kNodeHeader, kVersion);
  if (c.tls()) head.field(kTlsHeader.first, kTlsHeader.second);
  for (const auto& [name, value] : c.limit_headers) head.field(name, value);
}

CacheStatus cache_status(const hub::FileAnswer& answer) {
  if (answer.blob) return CacheStatus::hit;
  if (answer.pass) return CacheStatus::pass;
  if (answer.download && !answer.started_download) return CacheStatus::stream;
  return CacheStatus::miss;  // this request's download, or a HEAD the Hub described
}

FilePlan write_file_head(Connection& c, const Request& req, const hub::FileAnswer& answer, std::string_view range,
                         bool keep_alive) {
  c.cache = cache_status(answer);
  const auto& file = answer.file;
  const std::string quoted_etag = "\"" + file.etag + "\"";
  const auto if_none_match = req[bhttp::field::if_none_match];
  const bool not_modified =
      !if_none_match.empty() && (if_none_match == "*" || if_none_match.find(quoted_etag) != std::string_view::npos);
  std::string content_range;
  FilePlan plan;
  if (not_modified) {
    plan.status = 304;
  } else {
    plan = plan_range(req, range.empty() ? req[bhttp::field::range] : range, file.size, true, content_range);
  }
  HeadWriter head(c.head, plan.status, req.version());
  write_connection_fields(c, head);
  head.field("X-Repo-Commit", answer.commit);
  if (!answer.stale.empty()) head.field(hub::kStaleHeader, answer.stale);
  if (!answer.scan.empty()) head.field(kScanHeader, answer.scan);
  // How much of a file on its way the node holds, over all its connections (`inferllama pull` shows it).
  if (answer.download && !answer.download->verified()) head.field(kFetchedHeader, answer.download->fetched());
  head.field("ETag", quoted_etag);
  if (file.lfs) {
    head.field("X-Linked-Etag", quoted_etag);
    head.field("X-Linked-Size", file.size);
  }
  head.field("Accept-Ranges", "bytes");
  head.field("Content-Type", "application/octet-stream");
  if (!content_range.empty()) head.field("Content-Range", content_range);
  if (!not_modified) head.field("Content-Length", plan.length);
  head.finish(req.version(), keep_alive);
  return plan;
}

FilePlan write_pad_head(Connection& c, const Request& req, std::uint64_t size, bool keep_alive) {
  std::string content_range;
  FilePlan plan = plan_range(req, req[bhttp::field::range], size, false, content_range);
  HeadWriter head(c.head, plan.status, req.version());
  write_connection_fields(c, head);
  head.field("Content-Type", "application/octet-stream");
  head.field("Accept-Ranges", "bytes");
  if (!content_range.empty()) head.field("Content-Range", content_range);
  head.field("Content-Length", plan.length);
  head.finish(req.version(), keep_alive);
  return plan;
}

}  // namespace inferllama::http
