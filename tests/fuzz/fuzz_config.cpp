// libFuzzer target: load_config (config/config.cpp) on a TOML file holding the input. Only ConfigError
// may come out of load_config; any other exception (or a crash / sanitizer report) is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include "inferllama/config.hpp"

namespace {

const std::filesystem::path& config_path() {
  // One file per process (libFuzzer -jobs/-fork run several), overwritten for each input.
  static const std::filesystem::path path = [] {
    const char* dir = std::getenv("FUZZ_TMPDIR");
    return std::filesystem::path(dir && *dir ? dir : "/tmp") /
           ("inferllama-fuzz-config-" + std::to_string(::getpid()) + ".toml");
  }();
  static const bool cleanup = [] {
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove(path, ec);
    });
    return true;
  }();
  (void)cleanup;
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& path = config_path();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      std::abort();
    }
  }
  inferllama::ConfigSources sources;
  sources.file = path;
  try {
    const inferllama::Config config = inferllama::load_config(sources);
    (void)config;
  } catch (const inferllama::ConfigError&) {
    // Expected: invalid input is reported as ConfigError.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_config threw a non-ConfigError exception: %s\n", e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "load_config threw a non-std::exception\n");
    std::abort();
  }
  return 0;
}
