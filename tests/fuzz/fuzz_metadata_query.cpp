// libFuzzer target: the canonical forms of stored metadata requests (src/hub/metadata_query.cpp). The
// first input byte picks the request kind (info query, tree query, paths-info form or JSON body); the
// rest is the query or body. A canonical form must be a fixed point (normalising it again gives itself:
// equivalent requests share one entry) and carry no control character.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "hub/metadata_query.hpp"

namespace {

bool printable(std::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace inferllama::hub;
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      if (auto canonical = canonical_info_query(input)) {
        FUZZ_CHECK(printable(*canonical), "info query %s", canonical->c_str());
        FUZZ_CHECK(canonical_info_query(*canonical) == canonical, "info query %s is no fixed point",
                   canonical->c_str());
      }
      break;
    case 1:
      if (auto tree = canonical_tree_query(input)) {
        FUZZ_CHECK(printable(tree->canonical), "tree query %s", tree->canonical.c_str());
        auto again = canonical_tree_query(tree->canonical);
        FUZZ_CHECK(again && again->canonical == tree->canonical && again->has_cursor == tree->has_cursor,
                   "tree query %s is no fixed point", tree->canonical.c_str());
      }
      break;
    default: {
      const char* type = data[0] % 4 == 2 ? "application/x-www-form-urlencoded" : "application/json";
      if (auto paths = canonical_paths_query(type, input)) {
        FUZZ_CHECK(printable(paths->body), "paths-info body %s", paths->body.c_str());
        auto again = canonical_paths_query("application/x-www-form-urlencoded", paths->body);
        FUZZ_CHECK(again && again->body == paths->body && again->paths == paths->paths,
                   "paths-info body %s is no fixed point", paths->body.c_str());
      }
      break;
    }
  }
  return 0;
}
