// Named sync points (RocksDB's TEST_SYNC_POINT idea): a place in the code where a unit test can run its
// own code, on the thread that reaches it, to force an interleaving a race needs (take a lease between
// an eviction's choice and its deletion, block a thread until the test lets it go).
//
// INFERLLAMA_SYNC_POINT("Class::method:where") compiles to nothing unless the target defines
// INFERLLAMA_SYNC_POINTS: CMake's inferllama_sync_points(target) does when the option of that name is on,
// which it is by default only where the tests are built (scripts/serve.sh and the Dockerfile build
// without them). Compiled out, the argument of INFERLLAMA_SYNC_POINT_ARG is not evaluated either: pass
// only what is there anyway. A module that places points calls inferllama_sync_points() for its target;
// a test asserts that its callback ran, so a point compiled out by mistake fails the test. Tests that
// set callbacks are inside #ifdef INFERLLAMA_SYNC_POINTS.
#pragma once

#ifdef INFERLLAMA_SYNC_POINTS
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace inferllama::sync_point {

// Runs the callback set for `name`, if any, on the calling thread. Costs one atomic load while no callback
// is set. The callback runs without the registry's lock: it may block, reach other points, or clear itself.
void reach(std::string_view name, void* arg);

// `callback` runs whenever `name` is reached (with the point's argument, or null), until cleared.
void set_callback(const std::string& name, std::function<void(void* arg)> callback);
void clear(const std::string& name);

// Sets a callback for the life of a test's scope, so a failing assertion does not leave it behind.
class Scoped {
 public:
  Scoped(std::string name, std::function<void(void* arg)> callback) : name_(std::move(name)) {
    set_callback(name_, std::move(callback));
  }
  ~Scoped() { clear(name_); }
  Scoped(const Scoped&) = delete;
  Scoped& operator=(const Scoped&) = delete;

 private:
  std::string name_;
};

}  // namespace inferllama::sync_point

#define INFERLLAMA_SYNC_POINT(name) ::inferllama::sync_point::reach(name, nullptr)
#define INFERLLAMA_SYNC_POINT_ARG(name, arg) ::inferllama::sync_point::reach(name, arg)

#else

#define INFERLLAMA_SYNC_POINT(name) static_cast<void>(0)
#define INFERLLAMA_SYNC_POINT_ARG(name, arg) static_cast<void>(0)

#endif
