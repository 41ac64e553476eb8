// libFuzzer target: the tracker's BEP 15 side (Tracker::udp_datagram). Input byte 0 picks the client
// (IPv4 or IPv6) and whether the datagram's first 8 bytes are replaced by a valid connection id (so the
// announce and scrape parsers are reached); the rest is the datagram. A reply never exceeds its buffer,
// an answered datagram had at least 16 bytes, every reply starts with a known action and the
// request's transaction id, and without a valid connection id no reply is larger than its request
// (no amplification towards a forged source).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_check.hpp"
#include "inferllama/tracker.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace inferllama::tracker;
  if (size == 0) return 0;
  static Tracker tracker([] {
    Settings s = Settings::from(inferllama::Config{});
    s.open = true;
    return s;
  }());
  const std::uint8_t mode = data[0];
  std::vector<std::uint8_t> datagram(data + 1, data + size);
  const Endpoint client = *Endpoint::parse(mode & 1 ? "2001:db8::7" : "10.0.0.7", 5000);
  const Endpoint local = *Endpoint::parse(mode & 1 ? "::1" : "127.0.0.1", 6969);
  std::vector<std::uint8_t> reply(Tracker::kUdpReplyCapacity);
  if ((mode & 2) && datagram.size() >= 8) {
    std::uint8_t connect[16] = {0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4};
    FUZZ_CHECK(tracker.udp_datagram(connect, client, local, reply) == 16, "connect not answered");
    std::memcpy(datagram.data(), reply.data() + 8, 8);
  }
  const std::size_t n = tracker.udp_datagram(datagram, client, local, reply);
  FUZZ_CHECK(n <= reply.size(), "reply of %zu bytes", n);
  if (n == 0) return 0;
  FUZZ_CHECK(datagram.size() >= 16, "a %zu-byte datagram was answered", datagram.size());
  FUZZ_CHECK((mode & 2) || n <= datagram.size(), "%zu bytes answer %zu from an unproven source", n,
             datagram.size());
  FUZZ_CHECK(n >= 8 && reply[0] == 0 && reply[1] == 0 && reply[2] == 0 && reply[3] <= 3, "unknown reply action");
  FUZZ_CHECK(std::memcmp(reply.data() + 4, datagram.data() + 12, 4) == 0, "transaction id not echoed");
  if (mode & 4) tracker.sweep();
  return 0;
}
