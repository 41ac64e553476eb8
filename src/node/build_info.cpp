#include "node/build_info.hpp"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <rocksdb/version.h>

#include <boost/version.hpp>
#include <chrono>
#include <libtorrent/version.hpp>

#include "inferllama/metrics.hpp"
#include "inferllama/version.hpp"

namespace inferllama::node {
namespace {

constexpr metrics::FamilySpec kBuildInfo{
    "inferllama_build_info", "gauge",
    "Always 1; its labels are the node's version, the compiler that built it and the versions of the libraries "
    "it runs with"};
constexpr metrics::FamilySpec kStartTime{"process_start_time_seconds", "gauge",
                                         "When the node's process started, in seconds since the Unix epoch"};

// Taken while the program's statics are initialised, before main() runs: the process's start, to the
// millisecond.
const double g_started_seconds =
    std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

std::string compiler() {
#if defined(__clang__)
  return "clang " + std::to_string(__clang_major__) + "." + std::to_string(__clang_minor__) + "." +
         std::to_string(__clang_patchlevel__);
#elif defined(__GNUC__)
  return "gcc " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
         std::to_string(__GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

// A label value in the exposition format: backslash, double quote and newline escaped.
void append_label(std::string& out, const char* name, const std::string& value) {
  if (!out.empty()) out += ',';
  out += name;
  out += "=\"";
  for (char ch : value) {
    if (ch == '\\' || ch == '"') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  out += '"';
}

std::string make_labels() {
  std::string labels;
  append_label(labels, "version", kVersion);
  append_label(labels, "compiler", compiler());
  // Boost's Asio and Beast are headers: the version built with. The others are shared libraries: the
  // version loaded, which a security update changes without a rebuild.
  append_label(labels, "boost",
               std::to_string(BOOST_VERSION / 100000) + "." + std::to_string(BOOST_VERSION / 100 % 1000) + "." +
                   std::to_string(BOOST_VERSION % 100));
  append_label(labels, "libtorrent", lt::version());
  append_label(labels, "openssl", OpenSSL_version(OPENSSL_VERSION_STRING));
  append_label(labels, "rocksdb", rocksdb::GetRocksVersionAsString(true));
  append_label(labels, "curl", curl_version_info(CURLVERSION_NOW)->version);
  return labels;
}

}  // namespace

const std::string& build_info_labels() {
  static const std::string labels = make_labels();
  return labels;
}

void render_build_info(std::string& out) {
  metrics::write_header(out, kBuildInfo);
  metrics::write_sample(out, kBuildInfo, build_info_labels(), 1);
  metrics::write_family(out, kStartTime, g_started_seconds);
}

}  // namespace inferllama::node
