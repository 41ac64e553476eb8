#include "hosting/commit_payload.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <set>

#include "util/url.hpp"

namespace inferllama::hosting {
namespace {

using json = nlohmann::json;

constexpr std::array<int, 256> kBase64Values = [] {
  std::array<int, 256> values{};
  values.fill(-1);
  constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::size_t i = 0; i < kAlphabet.size(); ++i)
    values[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int>(i);
  return values;
}();

std::optional<std::string> string_field(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

}  // namespace

// Strict, where OpenSSL's EVP_DecodeBlock skips whitespace and counts the padding as zero bytes.
std::optional<std::string> decode_base64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int padding = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + static_cast<std::size_t>(k)];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++padding;
        continue;
      }
      if (padding > 0) return std::nullopt;  // data after '='
      v[k] = kBase64Values[static_cast<unsigned char>(c)];
      if (v[k] < 0) return std::nullopt;
    }
    const std::uint32_t word = static_cast<std::uint32_t>(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
    out += static_cast<char>(word >> 16 & 0xff);
    if (padding < 2) out += static_cast<char>(word >> 8 & 0xff);
    if (padding < 1) out += static_cast<char>(word & 0xff);
  }
  return out;
}

std::variant<CommitPayload, std::string> parse_commit_payload(std::string_view ndjson, const CommitLimits& limits) {
  CommitPayload payload;
  bool have_header = false;
  std::uint64_t inline_bytes = 0;
  std::set<std::string> paths;
  std::size_t number = 0;
  while (!ndjson.empty()) {
    const auto end = ndjson.find('\n');
    std::string_view line = ndjson.substr(0, end);
    ndjson = end == std::string_view::npos ? std::string_view() : ndjson.substr(end + 1);
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const std::string where = "line " + std::to_string(number) + ": ";
    const json entry = json::parse(line, nullptr, false);
    if (entry.is_discarded() || !entry.is_object()) return where + "not a JSON object";
    const auto key = string_field(entry, "key");
    const auto value_it = entry.find("value");
    if (!key || value_it == entry.end() || !value_it->is_object())
      return where + "needs \"key\" and an object \"value\"";
    const json& value = *value_it;
    if (*key == "header") {
      if (have_header) return where + "a second header";
      have_header = true;
      payload.header.summary = string_field(value, "summary").value_or("");
      payload.header.description = string_field(value, "description").value_or("");
      payload.header.parent_commit = string_field(value, "parentCommit");
      continue;
    }
    if (!have_header) return where + "the header must come first";
    if (payload.operations.size() >= limits.max_operations)
      return where + "more than " + std::to_string(limits.max_operations) + " operations in one commit";
    auto path = string_field(value, "path");
    if (!path) return where + "needs a \"path\"";
    if (*key == "deletedFolder" && path->ends_with('/')) path->pop_back();
    if (!url::is_safe_relative_path(*path)) return where + "invalid path \"" + *path + "\"";
    if (!paths.insert(*path).second) return where + "\"" + *path + "\" appears twice in the commit";
    if (*key == "file") {
      const auto content = string_field(value, "content");
      if (!content || string_field(value, "encoding").value_or("") != "base64")
        return where + "a file needs its \"content\" with \"encoding\": \"base64\"";
      auto decoded = decode_base64(*content);
      if (!decoded) return where + "the content of \"" + *path + "\" is not base64";
      inline_bytes += decoded->size();
      if (inline_bytes > limits.max_inline_bytes) return where + "too many bytes inline: upload large files with LFS";
      payload.operations.emplace_back(AddFile{std::move(*path), std::move(*decoded)});
    } else if (*key == "lfsFile") {
      const auto oid = Sha256::from_hex(string_field(value, "oid").value_or(""));
      if (string_field(value, "algo").value_or("sha256") != "sha256" || !oid)
        return where + "an LFS file needs a sha256 \"oid\" (64 hex digits)";
      std::optional<std::uint64_t> size;
      if (auto it = value.find("size"); it != value.end()) {
        if (!it->is_number_unsigned()) return where + "\"size\" must be a non-negative integer";
        size = it->get<std::uint64_t>();
      }
      payload.operations.emplace_back(AddLfsFile{std::move(*path), *oid, size});
    } else if (*key == "deletedFile") {
      payload.operations.emplace_back(DeleteFile{std::move(*path)});
    } else if (*key == "deletedFolder") {
      payload.operations.emplace_back(DeleteFolder{std::move(*path)});
    } else {
      return where + "unknown key \"" + *key + "\"";
    }
  }
  if (!have_header) return std::string("the commit has no header line");
  return payload;
}

}  // namespace inferllama::hosting
