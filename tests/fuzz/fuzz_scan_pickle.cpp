// libFuzzer target: the pickle scanner (src/scan/pickle_scanner.cpp), and through a .bin name PyTorch's zip
// reader too when the bytes start with a zip header. See scan_invariants.hpp for the input and the checks.
#include "scan_invariants.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  scan_fuzz::check_file("data.pkl", data, size);
  scan_fuzz::check_file("pytorch_model.bin", data, size);
  return 0;
}
