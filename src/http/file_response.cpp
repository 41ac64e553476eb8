#include "http/file_response.hpp"

#include <algorithm>
#include <array>
#include <charconv>

#include "cache/download.hpp"
#include "http/range.hpp"
#include "inferllama/cluster.hpp"
#include "inferllama/scan.hpp"
#include "inferllama/version.hpp"

namespace inferllama::http {
namespace bhttp = boost::beast::http;
namespace {

// A Content-Range value, built on the stack: every Range request's answer has one.
class ContentRange {
 public:
  // "bytes */size": no range of the file is satisfiable.
  void unsatisfiable(std::uint64_t size) {
    size_ = 0;
    put("bytes */");
    put(size);
  }
  // "bytes first-last/size".
  void partial(std::uint64_t first, std::uint64_t last, std::uint64_t size) {
    size_ = 0;
    put("bytes ");
    put(first);
    put("-");
    put(last);
    put("/");
    put(size);
  }
  std::string_view str() const { return {text_.data(), size_}; }

 private:
  void put(std::string_view text) {
    std::copy(text.begin(), text.end(), text_.data() + size_);
    size_ += text.size();
  }
  void put(std::uint64_t n) {
    const char* end = std::to_chars(text_.data() + size_, text_.data() + text_.size(), n).ptr;
    size_ = static_cast<std::size_t>(end - text_.data());
  }

  std::array<char, 6 + 3 * 20 + 2> text_{};  // "bytes " and three numbers of up to 20 digits, "-" and "/"
  std::size_t size_ = 0;
};

// Status, Content-Range and the body's bytes of a Range request on `size` bytes.
// `empty_file_rule`: a Range on an empty file answers the whole (empty) file (see below).
FilePlan plan_range(const Request& req, std::string_view header, std::uint64_t size, bool empty_file_rule,
                    ContentRange& content_range) {
  FilePlan plan;
  plan.length = size;
  const ByteRange range = parse_range(header, size);
  if (empty_file_rule && size == 0 && !header.empty()) {
    // No range of an empty file is satisfiable, but @huggingface/hub probes every file with
    // "bytes=0-0" and treats a 416 as fatal: answer the whole (empty) file, with its size.
    content_range.unsatisfiable(0);
  } else if (range.kind == ByteRange::Kind::unsatisfiable) {
    plan.status = 416;
    content_range.unsatisfiable(size);
    plan.length = 0;
  } else if (range.kind == ByteRange::Kind::partial) {
    plan.status = 206;
    content_range.partial(range.first, range.last, size);
    plan.first = range.first;
    plan.length = range.length();
  }
  plan.send_body = req.method() != bhttp::verb::head && plan.length > 0;
  return plan;
}

// Whether an If-None-Match value lists this etag, quoted.
bool lists_etag(std::string_view if_none_match, std::string_view etag) {
  for (auto at = if_none_match.find(etag); at != std::string_view::npos; at = if_none_match.find(etag, at + 1)) {
    const auto after = at + etag.size();
    if (at > 0 && if_none_match[at - 1] == '"' && after < if_none_match.size() && if_none_match[after] == '"')
      return true;
  }
  return false;
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
  const auto if_none_match = req[bhttp::field::if_none_match];
  const bool not_modified = !if_none_match.empty() && (if_none_match == "*" || lists_etag(if_none_match, file.etag));
  ContentRange content_range;
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
  head.quoted_field("ETag", file.etag);
  if (file.lfs) {
    head.quoted_field("X-Linked-Etag", file.etag);
    head.field("X-Linked-Size", file.size);
  }
  head.field("Accept-Ranges", "bytes");
  head.field("Content-Type", "application/octet-stream");
  if (!content_range.str().empty()) head.field("Content-Range", content_range.str());
  if (!not_modified) head.field("Content-Length", plan.length);
  head.finish(req.version(), keep_alive);
  return plan;
}

FilePlan write_pad_head(Connection& c, const Request& req, std::uint64_t size, bool keep_alive) {
  ContentRange content_range;
  FilePlan plan = plan_range(req, req[bhttp::field::range], size, false, content_range);
  HeadWriter head(c.head, plan.status, req.version());
  write_connection_fields(c, head);
  head.field("Content-Type", "application/octet-stream");
  head.field("Accept-Ranges", "bytes");
  if (!content_range.str().empty()) head.field("Content-Range", content_range.str());
  head.field("Content-Length", plan.length);
  head.finish(req.version(), keep_alive);
  return plan;
}

}  // namespace inferllama::http
