// What a client sends to commit to a hosted repo (POST /api/{type}s/{repo}/commit/{rev}): NDJSON lines,
// a header first, then files added inline (base64), LFS files by their sha256, deleted files and folders.
// Parsed and checked whole before anything is written: a commit applies all of it or none.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "inferllama/digest.hpp"

namespace inferllama::hosting {

struct CommitHeader {
  std::string summary;
  std::string description;
  std::optional<std::string> parent_commit;  // the commit the client saw: a stale one is a 412
};
struct AddFile {
  std::string path;
  std::string content;  // decoded
};
struct AddLfsFile {
  std::string path;
  Sha256 oid;
  std::optional<std::uint64_t> size;  // copies may leave it out: the stored object's size then
};
struct DeleteFile {
  std::string path;
};
struct DeleteFolder {
  std::string path;  // without a trailing '/'
};
using CommitOperation = std::variant<AddFile, AddLfsFile, DeleteFile, DeleteFolder>;

struct CommitPayload {
  CommitHeader header;
  std::vector<CommitOperation> operations;
};

// Bounds on one payload: operations, and decoded inline bytes (larger files go through LFS).
struct CommitLimits {
  std::size_t max_operations = 100'000;
  std::uint64_t max_inline_bytes = 1ull << 30;
};

// The payload, or why it is refused (a message for a 400), naming the line at fault.
std::variant<CommitPayload, std::string> parse_commit_payload(std::string_view ndjson, const CommitLimits& limits = {});

// Strict base64 (RFC 4648, with padding); nullopt when `text` is not.
std::optional<std::string> decode_base64(std::string_view text);

}  // namespace inferllama::hosting
