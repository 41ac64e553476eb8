// The one clock seam: modules that expire, limit or record by time take a `const Clock&`, so tests move
// time by hand (see tests/unit/test_support.hpp) instead of sleeping.
#pragma once
#include <chrono>

namespace inferllama {

using SystemTime = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual SystemTime now() const = 0;
};

// The wall clock: usage days, key and record times.
class SystemClock final : public Clock {
 public:
  SystemTime now() const override { return std::chrono::system_clock::now(); }
};

// A clock that never steps back (its epoch is the boot, not 1970): rate limits, memo expiry and the
// tracker's peer lifetimes, which an NTP step of the wall clock would otherwise stretch or cut short.
class MonotonicClock final : public Clock {
 public:
  SystemTime now() const override {
    return SystemTime(
        std::chrono::duration_cast<SystemTime::duration>(std::chrono::steady_clock::now().time_since_epoch()));
  }
};

// Shared instances, for the defaults of constructors that take a clock.
inline const Clock& monotonic_clock() {
  static const MonotonicClock clock;
  return clock;
}
inline const Clock& system_clock() {
  static const SystemClock clock;
  return clock;
}

}  // namespace inferllama
