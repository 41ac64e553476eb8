// Load generator for BitTorrent trackers (bench/tracker.py builds it with g++ -O2).
//
//   tracker_load udp  HOST PORT HASHFILE SECONDS SOCKETS WINDOW NUMWANT
//   tracker_load http HOST PORT HASHFILE SECONDS CONNECTIONS keepalive|close NUMWANT
//   tracker_load fill HOST PORT HASHFILE PEERS     (UDP announces: PEERS distinct peers per swarm)
//
// HASHFILE holds one hex info-hash per line. udp: SOCKETS sockets (one source port each) keep WINDOW
// requests in flight each; every client cycle is connect, announce and, every 50th time, a scrape
// (connect:announce:scrape = 50:50:1), batched with sendmmsg/recvmmsg. http: CONNECTIONS concurrent
// clients send GET /announce, each on a new connection (close) or on one kept-alive connection.
// Prints one line of JSON: counts, seconds, and the mean peers per announce reply.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kProtocolId = 0x41727101980ULL;

std::vector<std::string> read_hashes(const char* path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() < 40) continue;
    std::string raw(20, '\0');
    for (int i = 0; i < 20; ++i) raw[i] = static_cast<char>(std::stoi(line.substr(2 * i, 2), nullptr, 16));
    out.push_back(raw);
  }
  if (out.empty()) {
    std::fprintf(stderr, "no hashes in %s\n", path);
    std::exit(2);
  }
  return out;
}

void put32(std::uint8_t* p, std::uint32_t v) {
  p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
}
void put64(std::uint8_t* p, std::uint64_t v) {
  put32(p, v >> 32), put32(p + 4, static_cast<std::uint32_t>(v));
}
std::uint32_t get32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | p[3];
}

sockaddr_in address(const char* host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, host, &a.sin_addr);
  return a;
}

struct Counts {
  std::uint64_t connects = 0, announces = 0, scrapes = 0, errors = 0, peers = 0;
};

void report(const Counts& c, double seconds) {
  std::printf(
      "{\"connects\": %llu, \"announces\": %llu, \"scrapes\": %llu, \"errors\": %llu, \"seconds\": %.3f, "
      "\"peers_per_announce\": %.2f}\n",
      (unsigned long long)c.connects, (unsigned long long)c.announces, (unsigned long long)c.scrapes,
      (unsigned long long)c.errors, seconds, c.announces ? double(c.peers) / double(c.announces) : 0.0);
}

// One UDP client slot: its next step after each reply.
enum class Step : std::uint8_t { connect, announce, scrape };
struct Slot {
  Step step = Step::connect;
  std::uint64_t connection = 0;
  std::uint32_t cycles = 0;
};

std::size_t build(std::uint8_t* out, const Slot& slot, std::uint32_t tid, const std::vector<std::string>& hashes,
                  std::mt19937_64& rng, int numwant, std::uint16_t peer_port, bool seeder) {
  if (slot.step == Step::connect) {
    put64(out, kProtocolId), put32(out + 8, 0), put32(out + 12, tid);
    return 16;
  }
  const std::string& h = hashes[rng() % hashes.size()];
  put64(out, slot.connection), put32(out + 12, tid);
  if (slot.step == Step::scrape) {
    put32(out + 8, 2);
    std::memcpy(out + 16, h.data(), 20);
    return 36;
  }
  put32(out + 8, 1);
  std::memcpy(out + 16, h.data(), 20);
  for (int i = 0; i < 20; ++i) out[36 + i] = static_cast<std::uint8_t>(rng());
  put64(out + 56, 0), put64(out + 64, seeder ? 0 : 1000), put64(out + 72, 0);
  put32(out + 80, 0), put32(out + 84, 0), put32(out + 88, 0), put32(out + 92, static_cast<std::uint32_t>(numwant));
  out[96] = peer_port >> 8, out[97] = peer_port & 0xff;
  return 98;
}

int run_udp(const char* host, int port, const std::vector<std::string>& hashes, double seconds, int sockets, int window,
            int numwant) {
  const sockaddr_in to = address(host, port);
  const int ep = epoll_create1(0);
  std::vector<int> fds;
  std::vector<std::vector<Slot>> slots(sockets, std::vector<Slot>(window));
  std::mt19937_64 rng(42);
  constexpr int kBatch = 64;
  std::vector<std::uint8_t> out_buf(kBatch * 128), in_buf(kBatch * 4096);
  mmsghdr out_msgs[kBatch], in_msgs[kBatch];
  iovec out_iov[kBatch], in_iov[kBatch];
  Counts counts;

  auto send_slots = [&](int s, const std::uint32_t* which, int n) {
    for (int i = 0; i < n; ++i) {
      const Slot& slot = slots[s][which[i]];
      const std::uint32_t tid = static_cast<std::uint32_t>(s) << 16 | which[i];
      const std::size_t len = build(&out_buf[i * 128], slot, tid, hashes, rng, numwant,
                                    static_cast<std::uint16_t>(1024 + rng() % 60000), rng() % 2 == 0);
      out_iov[i] = {&out_buf[i * 128], len};
      out_msgs[i] = {};
      out_msgs[i].msg_hdr.msg_iov = &out_iov[i];
      out_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int done = 0;
    while (done < n) {
      int r = sendmmsg(fds[s], out_msgs + done, n - done, 0);
      if (r <= 0) break;
      done += r;
    }
  };

  for (int s = 0; s < sockets; ++s) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int buf = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to);
    fds.push_back(fd);
    epoll_event ev{EPOLLIN, {.u32 = static_cast<std::uint32_t>(s)}};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  std::vector<std::uint32_t> all(window);
  for (int i = 0; i < window; ++i) all[i] = i;
  for (int s = 0; s < sockets; ++s) send_slots(s, all.data(), window);

  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  auto last_progress = start;
  epoll_event events[64];
  std::uint32_t next[kBatch];
  while (Clock::now() < end) {
    int n = epoll_wait(ep, events, 64, 50);
    if (n == 0 && Clock::now() - last_progress > std::chrono::milliseconds(200)) {
      // Lost datagrams: resend every slot's current step.
      for (int s = 0; s < sockets; ++s) send_slots(s, all.data(), window);
      last_progress = Clock::now();
      continue;
    }
    for (int e = 0; e < n; ++e) {
      const int s = static_cast<int>(events[e].data.u32);
      for (;;) {
        for (int i = 0; i < kBatch; ++i) {
          in_iov[i] = {&in_buf[i * 4096], 4096};
          in_msgs[i] = {};
          in_msgs[i].msg_hdr.msg_iov = &in_iov[i];
          in_msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(fds[s], in_msgs, kBatch, MSG_DONTWAIT, nullptr);
        if (got <= 0) break;
        last_progress = Clock::now();
        int follow = 0;
        for (int i = 0; i < got; ++i) {
          const std::uint8_t* p = &in_buf[i * 4096];
          const unsigned len = in_msgs[i].msg_len;
          if (len < 8) continue;
          const std::uint32_t action = get32(p), tid = get32(p + 4);
          const std::uint32_t index = tid & 0xffff;
          if ((tid >> 16) != static_cast<std::uint32_t>(s) || index >= static_cast<std::uint32_t>(window)) continue;
          Slot& slot = slots[s][index];
          if (action == 0 && len >= 16 && slot.step == Step::connect) {
            ++counts.connects;
            slot.connection = std::uint64_t(get32(p + 8)) << 32 | get32(p + 12);
            slot.step = Step::announce;
          } else if (action == 1 && len >= 20 && slot.step == Step::announce) {
            ++counts.announces;
            counts.peers += (len - 20) / 6;
            slot.step = ++slot.cycles % 50 == 0 ? Step::scrape : Step::connect;
          } else if (action == 2 && slot.step == Step::scrape) {
            ++counts.scrapes;
            slot.step = Step::connect;
          } else {
            ++counts.errors;
            slot.step = Step::connect;
          }
          next[follow++] = index;
        }
        send_slots(s, next, follow);
        if (got < kBatch) break;
      }
    }
  }
  report(counts, std::chrono::duration<double>(Clock::now() - start).count());
  return 0;
}

// Fills every swarm with `peers` distinct peers (announced ports), seeders and leechers alternating.
int run_fill(const char* host, int port, const std::vector<std::string>& hashes, int peers) {
  const sockaddr_in to = address(host, port);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  std::uint8_t out[128], in[4096];
  std::mt19937_64 rng(7);
  Counts counts;
  auto ask = [&](std::size_t len) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      send(fd, out, len, 0);
      ssize_t n = recv(fd, in, sizeof in, 0);
      if (n >= 8) return n;
    }
    return ssize_t(-1);
  };
  Slot slot;
  for (const auto& h : hashes) {
    for (int i = 0; i < peers; ++i) {
      slot.step = Step::connect;
      if (ask(build(out, slot, 1, hashes, rng, 0, 0, false)) < 16) return 1;
      slot.connection = std::uint64_t(get32(in + 8)) << 32 | get32(in + 12);
      slot.step = Step::announce;
      std::size_t len = build(out, slot, 2, hashes, rng, 0, static_cast<std::uint16_t>(2000 + i), i % 2 == 0);
      std::memcpy(out + 16, h.data(), 20);
      if (ask(len) < 20 || get32(in) != 1) ++counts.errors;
      ++counts.announces;
    }
  }
  report(counts, 0);
  return counts.errors ? 1 : 0;
}

std::string escape(const std::string& raw) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : raw) out += {'%', hex[c >> 4], hex[c & 15]};
  return out;
}

struct HttpClient {
  int fd = -1;
  std::string request;
  std::size_t sent = 0;
  std::string response;
};

int run_http(const char* host, int port, const std::vector<std::string>& hashes, double seconds, int connections,
             bool keep_alive, int numwant) {
  const sockaddr_in to = address(host, port);
  const int ep = epoll_create1(0);
  std::vector<HttpClient> clients(connections);
  std::mt19937_64 rng(42);
  Counts counts;
  auto new_request = [&](HttpClient& c) {
    const std::string& h = hashes[rng() % hashes.size()];
    char tail[160];
    std::snprintf(tail, sizeof tail, "&port=%u&uploaded=0&downloaded=0&left=%u&compact=1&numwant=%d",
                  unsigned(1024 + rng() % 60000), rng() % 2 ? 1000u : 0u, numwant);
    std::string peer_id(20, 'a');
    for (auto& ch : peer_id) ch = static_cast<char>('a' + rng() % 26);
    c.request = "GET /announce?info_hash=" + escape(h) + "&peer_id=" + peer_id + tail + " HTTP/1.1\r\nHost: " + host +
                "\r\n" + (keep_alive ? "" : "Connection: close\r\n") + "\r\n";
    c.sent = 0;
    c.response.clear();
  };
  auto open_connection = [&](int i) {
    HttpClient& c = clients[i];
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    connect(c.fd, reinterpret_cast<const sockaddr*>(&to), sizeof to);
    epoll_event ev{EPOLLOUT | EPOLLIN, {.u32 = static_cast<std::uint32_t>(i)}};
    epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
    new_request(c);
  };
  auto close_connection = [&](int i) {
    epoll_ctl(ep, EPOLL_CTL_DEL, clients[i].fd, nullptr);
    close(clients[i].fd);
  };
  // A complete response: headers plus Content-Length bytes (or, without one, the connection's end).
  auto complete = [](const std::string& r, bool eof) {
    auto head_end = r.find("\r\n\r\n");
    if (head_end == std::string::npos) return false;
    auto cl = r.find("Content-Length: ");
    if (cl == std::string::npos || cl > head_end) cl = r.find("Content-length: ");
    if (cl == std::string::npos || cl > head_end) return eof;
    return r.size() >= head_end + 4 + std::strtoul(r.c_str() + cl + 16, nullptr, 10);
  };
  auto count_reply = [&](const std::string& r) {
    auto head_end = r.find("\r\n\r\n");
    auto body = r.substr(head_end + 4);
    auto peers_at = body.find("5:peers");
    if (r.compare(0, 12, "HTTP/1.1 200") != 0 && r.compare(0, 12, "HTTP/1.0 200") != 0) return ++counts.errors, void();
    if (peers_at == std::string::npos) return ++counts.errors, void();
    ++counts.announces;
    counts.peers += std::strtoul(body.c_str() + peers_at + 7, nullptr, 10) / 6;
  };
  for (int i = 0; i < connections; ++i) open_connection(i);
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  epoll_event events[256];
  char buf[65536];
  while (Clock::now() < end) {
    int n = epoll_wait(ep, events, 256, 50);
    for (int e = 0; e < n; ++e) {
      const int i = static_cast<int>(events[e].data.u32);
      HttpClient& c = clients[i];
      if (c.sent < c.request.size() && (events[e].events & EPOLLOUT)) {
        ssize_t w = send(c.fd, c.request.data() + c.sent, c.request.size() - c.sent, MSG_NOSIGNAL);
        if (w > 0) c.sent += static_cast<std::size_t>(w);
        if (c.sent == c.request.size()) {
          epoll_event ev{EPOLLIN, {.u32 = static_cast<std::uint32_t>(i)}};
          epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
        }
      }
      if (!(events[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
      bool eof = false;
      for (;;) {
        ssize_t r = recv(c.fd, buf, sizeof buf, 0);
        if (r > 0) {
          c.response.append(buf, static_cast<std::size_t>(r));
          continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) eof = true;
        break;
      }
      if (complete(c.response, eof)) {
        count_reply(c.response);
        if (keep_alive && !eof) {
          new_request(c);
          epoll_event ev{EPOLLOUT | EPOLLIN, {.u32 = static_cast<std::uint32_t>(i)}};
          epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
        } else {
          close_connection(i);
          open_connection(i);
        }
      } else if (eof) {
        ++counts.errors;
        close_connection(i);
        open_connection(i);
      }
    }
  }
  report(counts, std::chrono::duration<double>(Clock::now() - start).count());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: see the comment at the top of tracker_load.cpp\n");
    return 2;
  }
  const std::string mode = argv[1];
  const char* host = argv[2];
  const int port = std::atoi(argv[3]);
  const auto hashes = read_hashes(argv[4]);
  if (mode == "fill") return run_fill(host, port, hashes, std::atoi(argv[5]));
  if (argc < 9) return 2;
  const double seconds = std::atof(argv[5]);
  if (mode == "udp")
    return run_udp(host, port, hashes, seconds, std::atoi(argv[6]), std::atoi(argv[7]), std::atoi(argv[8]));
  if (mode == "http")
    return run_http(host, port, hashes, seconds, std::atoi(argv[6]), std::string(argv[7]) == "keepalive",
                    std::atoi(argv[8]));
  return 2;
}
