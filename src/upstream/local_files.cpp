#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "upstream/curl_upstream.hpp"

namespace inferllama::upstream {
namespace {

// Byte ranges of files under one folder, for the ingest of files that arrived by other means (a
// mirror's BitTorrent download). A "URL" is a path; anything outside the folder is refused.
class LocalFileUpstream final : public Upstream {
 public:
  explicit LocalFileUpstream(std::filesystem::path root) : root_(std::filesystem::weakly_canonical(root)) {}

  UpstreamResponse fetch(const UpstreamRequest&) override {
    UpstreamResponse r;
    r.error = "local files answer byte ranges only";
    return r;
  }

  RangeResult fetch_range(const std::string& url, const HeaderList&, std::uint64_t first, std::uint64_t last,
                          const BodySink& sink) override {
    RangeResult result;
    const auto path = std::filesystem::weakly_canonical(url);
    const auto relative = path.lexically_relative(root_);
    if (relative.empty() || *relative.begin() == "..") {
      result.error = "outside the folder of local files: " + url;
      return result;
    }
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      result.error = "cannot open " + path.string() + ": " + std::generic_category().message(errno);
      return result;
    }
    result.status = 206;
    std::vector<char> buffer(1 << 20);
    for (std::uint64_t offset = first; offset <= last;) {
      const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), last - offset + 1));
      const ssize_t n = ::pread(fd, buffer.data(), want, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        result.error = n == 0 ? "unexpected end of " + path.string() : std::generic_category().message(errno);
        break;
      }
      const std::size_t taken = sink(std::span<const char>(buffer.data(), static_cast<std::size_t>(n)));
      result.received += taken;
      if (taken < static_cast<std::size_t>(n)) break;  // the sink has what it wanted
      offset += static_cast<std::uint64_t>(n);
    }
    ::close(fd);
    return result;
  }

 private:
  std::filesystem::path root_;
};

}  // namespace

std::unique_ptr<Upstream> make_local_file_upstream(const std::filesystem::path& root) {
  return std::make_unique<LocalFileUpstream>(root);
}

}  // namespace inferllama::upstream
