// Compiled only into builds with INFERLLAMA_SYNC_POINTS (see src/util/CMakeLists.txt).
#include "inferllama/sync_point.hpp"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>

namespace inferllama::sync_point {
namespace {

using Callback = std::function<void(void*)>;

struct Registry {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<const Callback>, std::less<>> callbacks;
  std::atomic<std::size_t> count{0};  // callbacks.size(), read without the lock on every point reached
};

Registry& registry() {
  static Registry instance;
  return instance;
}

}  // namespace

void reach(std::string_view name, void* arg) {
  Registry& r = registry();
  if (r.count.load(std::memory_order_acquire) == 0) return;
  std::shared_ptr<const Callback> callback;
  {
    std::lock_guard lock(r.mutex);
    auto it = r.callbacks.find(name);
    if (it == r.callbacks.end()) return;
    callback = it->second;  // kept alive while it runs, even if cleared meanwhile
  }
  (*callback)(arg);
}

void set_callback(const std::string& name, std::function<void(void* arg)> callback) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.callbacks[name] = std::make_shared<const Callback>(std::move(callback));
  r.count.store(r.callbacks.size(), std::memory_order_release);
}

void clear(const std::string& name) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.callbacks.erase(name);
  r.count.store(r.callbacks.size(), std::memory_order_release);
}

}  // namespace inferllama::sync_point
