// The UDP tracker's socket loop: one thread, a non-blocking socket, recvmmsg/sendmmsg in batches of 64.
//
// Bound to a wildcard address, the socket asks for IP_PKTINFO / IPV6_RECVPKTINFO so each request says
// which local address it reached: that address names the node's own seed in the reply (the address
// the client can evidently reach). Replies leave from the kernel's choice of source address.
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "inferllama/network.hpp"
#include "inferllama/tracker.hpp"

namespace inferllama::tracker {
namespace {

constexpr std::size_t kBatch = 64;
constexpr std::size_t kRequestCapacity = 2048;  // the largest BEP 15 request (a 74-hash scrape) is 1496 bytes
constexpr std::size_t kControlCapacity = 64;

Endpoint from_sockaddr(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(address);
    return Endpoint::v6_from(std::span<const std::uint8_t, 16>(a.sin6_addr.s6_addr, 16), ntohs(a.sin6_port));
  }
  const auto& a = reinterpret_cast<const sockaddr_in&>(address);
  return Endpoint::v4_from(std::span<const std::uint8_t, 4>(reinterpret_cast<const std::uint8_t*>(&a.sin_addr), 4),
                           ntohs(a.sin_port));
}

// The destination address of a datagram from its IP_PKTINFO / IPV6_PKTINFO control message.
std::optional<Endpoint> destination(msghdr& header, std::uint16_t port) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&header); c; c = CMSG_NXTHDR(&header, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      in_pktinfo info;
      std::memcpy(&info, CMSG_DATA(c), sizeof info);
      return Endpoint::v4_from(
          std::span<const std::uint8_t, 4>(reinterpret_cast<const std::uint8_t*>(&info.ipi_addr), 4), port);
    }
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      in6_pktinfo info;
      std::memcpy(&info, CMSG_DATA(c), sizeof info);
      return Endpoint::v6_from(std::span<const std::uint8_t, 16>(info.ipi6_addr.s6_addr, 16), port);
    }
  }
  return std::nullopt;
}

// The control message that makes a reply leave from the address its request reached: on a host with
// several addresses the kernel would otherwise pick one, and clients drop replies from another address.
// Returns the control length written into `control` (0 when the request carried no destination).
std::size_t reply_source(msghdr& request, std::uint8_t* control, std::size_t capacity) {
  msghdr reply{};
  reply.msg_control = control;
  reply.msg_controllen = capacity;
  cmsghdr* out = CMSG_FIRSTHDR(&reply);
  for (cmsghdr* c = CMSG_FIRSTHDR(&request); c && out; c = CMSG_NXTHDR(&request, c)) {
    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO && capacity >= CMSG_SPACE(sizeof(in_pktinfo))) {
      in_pktinfo info;
      std::memcpy(&info, CMSG_DATA(c), sizeof info);
      info.ipi_spec_dst = info.ipi_addr;
      info.ipi_ifindex = 0;  // any interface: the routing table picks the way back
      out->cmsg_level = IPPROTO_IP;
      out->cmsg_type = IP_PKTINFO;
      out->cmsg_len = CMSG_LEN(sizeof info);
      std::memcpy(CMSG_DATA(out), &info, sizeof info);
      return CMSG_SPACE(sizeof info);
    }
    if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO && capacity >= CMSG_SPACE(sizeof(in6_pktinfo))) {
      out->cmsg_level = IPPROTO_IPV6;
      out->cmsg_type = IPV6_PKTINFO;
      out->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
      std::memcpy(CMSG_DATA(out), CMSG_DATA(c), sizeof(in6_pktinfo));  // the address it reached, its interface
      return CMSG_SPACE(sizeof(in6_pktinfo));
    }
  }
  return 0;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("UDP tracker: " + what + ": " + std::strerror(errno));
}

}  // namespace

struct UdpServer::Impl {
  explicit Impl(Tracker& tracker) : tracker(tracker) {}

  void run();
  void process(std::size_t received);
  void send_all(std::size_t count);

  Tracker& tracker;
  int fd = -1;
  int wake = -1;
  bool wildcard = false;
  Endpoint bound;
  std::thread thread;

  // One slot per datagram of a batch: request bytes, its source, control data, the reply.
  struct Slot {
    std::uint8_t request[kRequestCapacity];
    alignas(cmsghdr) std::uint8_t control[kControlCapacity];
    alignas(cmsghdr) std::uint8_t reply_control[kControlCapacity];
    std::uint8_t reply[Tracker::kUdpReplyCapacity];
    sockaddr_storage source;
    iovec request_iov, reply_iov;
  };
  std::vector<Slot> slots{kBatch};
  mmsghdr incoming[kBatch]{};
  mmsghdr outgoing[kBatch]{};
};

UdpServer::UdpServer(Tracker& tracker) : impl_(std::make_unique<Impl>(tracker)) {}
UdpServer::~UdpServer() {
  stop();
}

std::uint16_t UdpServer::start(const std::string& host_port) {
  Impl& s = *impl_;
  const auto listen = HostPort::parse(host_port);
  if (!listen) throw std::runtime_error("UDP tracker: not HOST:PORT: " + host_port);
  auto endpoint = Endpoint::parse(listen->host, listen->port);
  if (!endpoint) throw std::runtime_error("UDP tracker: not an IP address: " + listen->host);

  sockaddr_storage address{};
  socklen_t length;
  if (endpoint->v6) {
    auto& a = reinterpret_cast<sockaddr_in6&>(address);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(endpoint->port);
    std::memcpy(a.sin6_addr.s6_addr, endpoint->ip.data(), 16);
    length = sizeof a;
  } else {
    auto& a = reinterpret_cast<sockaddr_in&>(address);
    a.sin_family = AF_INET;
    a.sin_port = htons(endpoint->port);
    std::memcpy(&a.sin_addr, endpoint->ip.data(), 4);
    length = sizeof a;
  }
  s.fd = ::socket(address.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s.fd < 0) fail("socket");
  int buffer = 4 << 20;  // bursts of announces wait in the kernel rather than being dropped
  ::setsockopt(s.fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  ::setsockopt(s.fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  if (::bind(s.fd, reinterpret_cast<sockaddr*>(&address), length) != 0) fail("bind " + host_port);
  if (::getsockname(s.fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) fail("getsockname");
  s.bound = from_sockaddr(address);
  s.wildcard = endpoint->is_unspecified();
  if (s.wildcard) {
    int on = 1;
    // A dual-stack IPv6 socket reports IPv4 destinations with IP_PKTINFO.
    ::setsockopt(s.fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
    if (endpoint->v6) ::setsockopt(s.fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on);
  }
  s.wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s.wake < 0) fail("eventfd");
  s.thread = std::thread([&s] { s.run(); });
  return s.bound.port;
}

void UdpServer::stop() {
  Impl& s = *impl_;
  if (s.thread.joinable()) {
    const std::uint64_t one = 1;
    if (::write(s.wake, &one, sizeof one) < 0) std::perror("UDP tracker: eventfd");
    s.thread.join();
  }
  if (s.fd >= 0) ::close(s.fd);
  if (s.wake >= 0) ::close(s.wake);
  s.fd = s.wake = -1;
}

void UdpServer::Impl::run() {
  for (;;) {
    pollfd waits[2] = {{fd, POLLIN, 0}, {wake, POLLIN, 0}};
    if (::poll(waits, 2, -1) < 0) {
      if (errno == EINTR) continue;
      std::perror("UDP tracker: poll");
      return;
    }
    if (waits[1].revents) return;
    // Drain what is queued, a batch at a time.
    for (;;) {
      for (std::size_t i = 0; i < kBatch; ++i) {
        Slot& slot = slots[i];
        slot.request_iov = {slot.request, sizeof slot.request};
        msghdr& h = incoming[i].msg_hdr;
        h = {};
        h.msg_name = &slot.source;
        h.msg_namelen = sizeof slot.source;
        h.msg_iov = &slot.request_iov;
        h.msg_iovlen = 1;
        if (wildcard) {
          h.msg_control = slot.control;
          h.msg_controllen = sizeof slot.control;
        }
      }
      const int received = ::recvmmsg(fd, incoming, kBatch, MSG_DONTWAIT, nullptr);
      if (received <= 0) break;
      process(static_cast<std::size_t>(received));
      if (static_cast<std::size_t>(received) < kBatch) break;
    }
  }
}

void UdpServer::Impl::process(std::size_t received) {
  std::size_t replies = 0;
  for (std::size_t i = 0; i < received; ++i) {
    Slot& slot = slots[i];
    msghdr& h = incoming[i].msg_hdr;
    const Endpoint client = from_sockaddr(slot.source);
    Endpoint local = bound;
    if (wildcard) local = destination(h, bound.port).value_or(bound);
    const std::size_t n = tracker.udp_datagram(std::span<const std::uint8_t>(slot.request, incoming[i].msg_len), client,
                                               local, slot.reply);
    if (n == 0) continue;
    slot.reply_iov = {slot.reply, n};
    msghdr& out = outgoing[replies++].msg_hdr;
    out = {};
    out.msg_name = &slot.source;
    out.msg_namelen = h.msg_namelen;
    out.msg_iov = &slot.reply_iov;
    out.msg_iovlen = 1;
    if (wildcard) {
      if (const std::size_t length = reply_source(h, slot.reply_control, sizeof slot.reply_control); length > 0) {
        out.msg_control = slot.reply_control;
        out.msg_controllen = length;
      }
    }
  }
  send_all(replies);
}

void UdpServer::Impl::send_all(std::size_t count) {
  std::size_t done = 0;
  int full_waits = 0;
  while (done < count) {
    const int sent = ::sendmmsg(fd, outgoing + done, static_cast<unsigned>(count - done), MSG_DONTWAIT);
    if (sent > 0) {
      done += static_cast<std::size_t>(sent);
      continue;
    }
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && full_waits++ < 3) {
      pollfd w{fd, POLLOUT, 0};
      ::poll(&w, 1, 10);
      continue;
    }
    ++done;  // this destination cannot be sent to (or the buffer stays full): UDP may lose it
  }
}

}  // namespace inferllama::tracker
