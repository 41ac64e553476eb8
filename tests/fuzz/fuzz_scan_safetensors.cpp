// libFuzzer target: the safetensors header reader (src/scan/header_scanners.cpp), and the GGUF one on the same
// bytes. See scan_invariants.hpp for the input and the checks.
#include "scan_invariants.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  scan_fuzz::check_file("model.safetensors", data, size);
  scan_fuzz::check_file("model.gguf", data, size);
  return 0;
}
