#include "usage/redis_limiter.hpp"

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <cmath>
#include <deque>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "inferllama/metrics.hpp"
#include "usage/local_limiter.hpp"

namespace inferllama::usage {
namespace {

using namespace std::chrono_literals;
using asio::ip::tcp;
using SteadyTime = std::chrono::steady_clock::time_point;
using Reply = RedisReply;

// A download slot lives this long in Redis unless its node refreshes it, so the slots of a node that
// died holding them come free on their own.
constexpr auto kSlotLease = 10min;
constexpr auto kSlotRefreshEvery = 1min;
constexpr auto kFirstBackoff = 100ms;
constexpr auto kMaxBackoff = 5s;
constexpr auto kRetryWhileDown = 1s;
// Like the local limiter's: a download ends at no known time, so a refused one is told to try again soon.
constexpr auto kRetryConcurrent = 1s;

// Time is in microseconds of Redis's clock throughout the scripts. A theoretical arrival time (TAT) is
// stored as a decimal string of 17 significant digits, exact for a double; a key lives only as long as
// its state differs from a fresh one. Scripts read TIME and then write: Redis 5 and later replicate a
// script's effects, which allows that; on 3.2 and 4 the scripts ask for it with replicate_commands().
//
// The admit script mirrors Gcra::try_take: a limit lets a request of `cost` through while its state,
// moved on by it, stays within burst intervals of now (1 us of slack: a TAT near 1.7e15 us is a double
// good to a quarter of a microsecond), and the wait is until the same request would pass.
// KEYS: requests TAT, tokens TAT, download slots (sorted set: slot id -> lease expiry).
// ARGV: request interval, request burst, byte interval, burst bytes (interval 0: limit off),
//       concurrent downloads (0: off), slot id ("" when no slot is taken), slot lease.
// Answers {allowed, refused (bits 1 requests, 2 tokens, 4 concurrent), longest wait, now,
//          requests TAT, tokens TAT, slots held} with the state after the decision.
constexpr std::string_view kAdmitScript = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local function exact(x) return string.format('%.17g', x) end
local function ahead_of(key)
  local tat = tonumber(redis.call('GET', key)) or now
  return math.max(tat - now, 0)
end
local request_interval, request_burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local byte_interval, burst_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local concurrent, slot, lease = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local refused, wait = 0, 0
local request_ahead = 0
if request_interval > 0 then
  request_ahead = ahead_of(KEYS[1]) + request_interval
  local over = request_ahead - request_burst * request_interval
  if over > 1 then refused, wait = refused + 1, math.max(wait, over - 1) end
end
local token_ahead = 0
if byte_interval > 0 then
  token_ahead = ahead_of(KEYS[2])
  local over = token_ahead - burst_bytes * byte_interval
  if over > 1 then refused, wait = refused + 2, math.max(wait, over - 1) end
end
local held = 0
if concurrent > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', exact(now))
  held = redis.call('ZCARD', KEYS[3])
  if slot ~= '' and held >= concurrent then refused = refused + 4 end
end
local request_tat = now
if request_interval > 0 then
  if refused == 0 then
    redis.call('SET', KEYS[1], exact(now + request_ahead), 'PX', math.ceil(request_ahead / 1000))
    request_tat = now + request_ahead
  else
    request_tat = now + request_ahead - request_interval
  end
end
if refused == 0 and slot ~= '' then
  redis.call('ZADD', KEYS[3], exact(now + lease), slot)
  redis.call('PEXPIRE', KEYS[3], math.ceil(lease / 1000))
  held = held + 1
end
local allowed = 0
if refused == 0 then allowed = 1 end
return {allowed, refused, exact(wait), exact(now), exact(request_tat), exact(now + token_ahead), held}
)lua";

// Bytes sent: the tokens TAT moves on unconditionally (Gcra::take), so the limit may go into debt.
// KEYS: tokens TAT. ARGV: byte interval, bytes.
constexpr std::string_view kChargeScript = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
-- Never more than a century of debt, as locally: an absurd charge cannot overflow the state.
local ahead = math.min(math.max(tat - now, 0) + tonumber(ARGV[1]) * tonumber(ARGV[2]), 3153600000000000)
redis.call('SET', KEYS[1], string.format('%.17g', now + ahead), 'PX', math.ceil(ahead / 1000))
return 1
)lua";

// The node still holds these slots: their leases start again from now. A slot missing (Redis restarted,
// or its lease ran out while the node could not reach Redis) is put back, since its download still runs.
// KEYS: download slots. ARGV: lease, slot ids.
constexpr std::string_view kRefreshScript = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local expiry = string.format('%.17g', now + tonumber(ARGV[1]))
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) / 1000))
return #ARGV - 1
)lua";

// The shortest decimal that reads back as exactly `value`.
std::string exact(double value) {
  std::array<char, 32> text;
  const auto end = std::to_chars(text.data(), text.data() + text.size(), value).ptr;
  return std::string(text.data(), end);
}

template <class Number>
std::optional<Number> parse_number(std::string_view text) {
  Number value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

constexpr double kMicrosPerSecond = 1e6;

// The admit script's `refused` bits.
constexpr int kRefusedByRequests = 1;
constexpr int kRefusedByTokens = 2;
constexpr int kRefusedByConcurrent = 4;

double request_interval_us(const LimitPolicy& policy) {
  return policy.request_interval_seconds() * kMicrosPerSecond;
}
double byte_interval_us(const LimitPolicy& policy) {
  return policy.byte_interval_seconds() * kMicrosPerSecond;
}

std::int64_t nanos_from_micros(double micros) {
  return std::llround(micros * 1000);
}

std::chrono::seconds whole_seconds_from(std::int64_t ns) {
  return std::chrono::seconds(static_cast<std::int64_t>(std::ceil(static_cast<double>(ns) / 1e9)));
}

}  // namespace

struct RedisRateLimiter::Impl : std::enable_shared_from_this<Impl> {
  using Strand = asio::strand<asio::io_context::executor_type>;
  using Callback = std::function<void(Reply)>;

  // What the admit script answered, read on the strand.
  struct AdmitAnswer {
    bool allowed = false;
    int refused = 0;  // kRefusedBy* bits
    double wait_us = 0;
    double now_us = 0;
    double request_tat_us = 0;
    double token_tat_us = 0;
    long long slots_held = 0;
  };

  // One TCP connection to Redis. Replies come back in the order the commands were written, so each
  // waits in `waiting` for its turn; a reply later than the timeout breaks the connection.
  struct Connection {
    explicit Connection(const Strand& strand)
        : socket(strand), resolver(strand), connect_timer(strand), reply_timer(strand) {}
    struct Waiting {
      Callback on_reply;
      SteadyTime deadline;
    };
    tcp::socket socket;
    tcp::resolver resolver;
    asio::steady_timer connect_timer;
    asio::steady_timer reply_timer;
    bool reply_timer_armed = false;
    bool ready = false;   // handshake done: commands may be sent
    bool closed = false;  // failed; its handlers only return
    std::string outbox;   // written once the write in flight is done
    std::string in_write;
    bool writing = false;
    std::deque<Waiting> waiting;
    std::unique_ptr<redisReader, decltype(&redisReaderFree)> reader{redisReaderCreate(), &redisReaderFree};
    std::array<char, 16 * 1024> in;
  };

  // Charges of one identity not yet sent, summed.
  struct PendingCharge {
    UserId who;
    LimitPolicy policy;
    std::uint64_t bytes = 0;
  };

  Impl(asio::io_context& io, RedisSettings settings, LocalRateLimiter& fallback)
      : io(io),
        strand(asio::make_strand(io)),
        settings(std::move(settings)),
        fallback(fallback),
        reconnect_timer(strand),
        refresh_timer(strand),
        random(std::random_device{}()) {
    endpoint = this->settings.endpoint();
    // Slot ids of different nodes (and of this node's earlier runs) never meet.
    std::random_device entropy;
    slot_prefix = fmt::format("{:08x}{:08x}:", entropy(), entropy());
  }

  std::string key(const UserId& who, std::string_view limit) const {
    // The braces make one Redis Cluster hash slot of an identity's keys, as a script's keys must be.
    return settings.key_prefix + "{" + who.str() + "}:" + std::string(limit);
  }

  // ---- Everything below runs on the strand. ----

  void start() {
    asio::post(strand, [self = shared_from_this()] {
      self->connect();
      self->arm_refresh();
    });
  }

  void connect() {
    if (stopped) return;
    auto conn = std::make_shared<Connection>(strand);
    current = conn;
    conn->connect_timer.expires_after(settings.timeout);
    conn->connect_timer.async_wait([self = shared_from_this(), conn](boost::system::error_code ec) {
      if (!ec && !conn->ready)
        self->fail(conn, "not connected within " + std::to_string(self->settings.timeout.count()) + "ms");
    });
    conn->resolver.async_resolve(
        settings.host, std::to_string(settings.port),
        [self = shared_from_this(), conn](boost::system::error_code ec, tcp::resolver::results_type endpoints) {
          if (conn->closed) return;
          if (ec) return self->fail(conn, ec.message());
          asio::async_connect(conn->socket, endpoints,
                              [self, conn](boost::system::error_code ec, const tcp::endpoint&) {
                                if (conn->closed) return;
                                if (ec) return self->fail(conn, ec.message());
                                boost::system::error_code ignored;
                                conn->socket.set_option(tcp::no_delay(true), ignored);
                                self->read_more(conn);
                                self->handshake(conn);
                              });
        });
  }

  // AUTH, SELECT and the scripts, pipelined; the connection is ready once the last of them answers.
  void handshake(const std::shared_ptr<Connection>& conn) {
    auto step = [self = shared_from_this(), conn](std::string what, std::function<void(const Reply&)> then = {}) {
      return [self, conn, what = std::move(what), then = std::move(then)](Reply reply) {
        if (reply.failed()) return;
        if (reply.is_error()) return self->fail(conn, what + ": " + reply.text);
        if (then) then(reply);
      };
    };
    if (!settings.password.empty()) write(conn, encode_redis_command({"AUTH", settings.password}), step("AUTH"));
    if (settings.database != 0)
      write(conn, encode_redis_command({"SELECT", std::to_string(settings.database)}), step("SELECT"));
    auto load = [&](std::string_view body, std::string& sha, std::function<void(const Reply&)> then = {}) {
      write(conn, encode_redis_command({"SCRIPT", "LOAD", std::string(body)}),
            step("SCRIPT LOAD", [&sha, then = std::move(then)](const Reply& reply) {
              sha = reply.text;
              if (then) then(reply);
            }));
    };
    load(kAdmitScript, admit_sha);
    load(kChargeScript, charge_sha);
    load(kRefreshScript, refresh_sha, [self = shared_from_this(), conn](const Reply&) { self->on_ready(conn); });
  }

  void on_ready(const std::shared_ptr<Connection>& conn) {
    conn->ready = true;
    conn->connect_timer.cancel();
    backoff = kFirstBackoff;
    up = true;
    if (reported_down) {
      spdlog::info("rate limits: Redis at {} is back", endpoint);
    } else {
      spdlog::info("rate limits: connected to Redis at {}", endpoint);
    }
    reported_down = false;
    reported_error = false;
    // Slots released while Redis could not be told, and slots a restarted Redis may have lost.
    for (auto& [slots_key, slot] : releases_unsent)
      send(encode_redis_command({"ZREM", slots_key, slot}), check_reply("ZREM"));
    releases_unsent.clear();
    refresh_slots();
  }

  // The connection is done with: every command waiting on it gets no reply, Redis is down until a new
  // connection is ready.
  void fail(const std::shared_ptr<Connection>& conn, const std::string& why) {
    if (conn->closed) return;
    conn->closed = true;
    boost::system::error_code ignored;
    conn->socket.close(ignored);
    conn->resolver.cancel();
    conn->connect_timer.cancel();
    conn->reply_timer.cancel();
    errors.add();
    const bool was_current = conn == current;
    // Down before anyone waiting hears of it: a decision that fell back is never followed by connected().
    if (was_current) {
      current.reset();
      up = false;
      if (!reported_down && !stopped) {
        spdlog::warn("rate limits: Redis at {} unreachable ({}): {}", endpoint, why,
                     settings.refuse_when_down ? "refusing requests" : "deciding locally");
        reported_down = true;
      }
    }
    auto waiting = std::move(conn->waiting);
    for (auto& w : waiting) w.on_reply(Reply::failure(why));
    if (!was_current) return;
    auto charges = std::move(charges_unsent);
    for (auto& [charge_key, charge] : charges) fallback.charge(charge.who, charge.policy, charge.bytes);
    schedule_reconnect();
  }

  void schedule_reconnect() {
    if (stopped) return;
    // Jittered, so nodes that lost Redis together do not all come back in the same millisecond.
    std::uniform_int_distribution<long long> spread(backoff.count() / 2, backoff.count());
    reconnect_timer.expires_after(std::chrono::milliseconds(spread(random)));
    backoff = std::min(backoff * 2, std::chrono::duration_cast<std::chrono::milliseconds>(kMaxBackoff));
    reconnect_timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->connect();
    });
  }

  // Queues `command` on `conn`; `on_reply` gets its reply, or a failure.
  void write(const std::shared_ptr<Connection>& conn, std::string command, Callback on_reply) {
    conn->outbox += command;
    conn->waiting.push_back({std::move(on_reply), std::chrono::steady_clock::now() + settings.timeout});
    if (!conn->reply_timer_armed) arm_reply_timer(conn);
    if (!conn->writing) write_more(conn);
  }

  // On the ready connection, or failed at once when there is none.
  void send(std::string command, Callback on_reply) {
    if (!current || !current->ready) return on_reply(Reply::failure("not connected"));
    write(current, std::move(command), std::move(on_reply));
  }

  // EVALSHA, loading the script again when Redis has lost it (SCRIPT FLUSH, a restart behind a proxy).
  void eval(std::string_view body, const std::string& sha, std::vector<std::string> keys_and_args, std::size_t keys,
            Callback on_reply) {
    std::vector<std::string> args{"EVALSHA", sha, std::to_string(keys)};
    args.insert(args.end(), std::make_move_iterator(keys_and_args.begin()),
                std::make_move_iterator(keys_and_args.end()));
    std::string command = encode_redis_command(args);
    send(command, [self = shared_from_this(), body, command, on_reply = std::move(on_reply)](Reply reply) {
      if (!reply.is_error() || !reply.text.starts_with("NOSCRIPT")) return on_reply(std::move(reply));
      self->send(encode_redis_command({"SCRIPT", "LOAD", std::string(body)}), self->check_reply("SCRIPT LOAD"));
      self->send(command, on_reply);
    });
  }

  // For commands nobody waits on: an error is counted and logged (once until Redis answers well again).
  Callback check_reply(std::string what) {
    return [self = shared_from_this(), what = std::move(what)](Reply reply) {
      if (reply.is_error()) self->note_error(what, reply.text);
    };
  }

  void note_error(const std::string& what, const std::string& message) {
    errors.add();
    if (reported_error) return;
    spdlog::warn("rate limits: Redis at {} answered {} with an error: {}", endpoint, what, message);
    reported_error = true;
  }

  void write_more(const std::shared_ptr<Connection>& conn) {
    conn->writing = true;
    conn->in_write.swap(conn->outbox);
    conn->outbox.clear();
    asio::async_write(conn->socket, asio::buffer(conn->in_write),
                      [self = shared_from_this(), conn](boost::system::error_code ec, std::size_t) {
                        conn->writing = false;
                        if (conn->closed) return;
                        if (ec) return self->fail(conn, ec.message());
                        if (!conn->outbox.empty()) self->write_more(conn);
                      });
  }

  void read_more(const std::shared_ptr<Connection>& conn) {
    conn->socket.async_read_some(
        asio::buffer(conn->in), [self = shared_from_this(), conn](boost::system::error_code ec, std::size_t n) {
          if (conn->closed) return;
          if (ec) return self->fail(conn, ec == asio::error::eof ? "connection closed" : ec.message());
          if (redisReaderFeed(conn->reader.get(), conn->in.data(), n) != REDIS_OK) {
            return self->fail(conn, "malformed reply: " + std::string(conn->reader->errstr));
          }
          while (!conn->closed) {
            void* parsed = nullptr;
            if (redisReaderGetReply(conn->reader.get(), &parsed) != REDIS_OK) {
              return self->fail(conn, "malformed reply: " + std::string(conn->reader->errstr));
            }
            if (!parsed) break;
            Reply reply = Reply::from(*static_cast<redisReply*>(parsed));
            freeReplyObject(parsed);
            if (conn->waiting.empty()) return self->fail(conn, "a reply nothing asked for");
            Callback on_reply = std::move(conn->waiting.front().on_reply);
            conn->waiting.pop_front();
            on_reply(std::move(reply));
          }
          if (!conn->closed) self->read_more(conn);
        });
  }

  // Watches the oldest command waiting: past its deadline, the connection is given up.
  void arm_reply_timer(const std::shared_ptr<Connection>& conn) {
    conn->reply_timer_armed = true;
    conn->reply_timer.expires_at(conn->waiting.front().deadline);
    conn->reply_timer.async_wait([self = shared_from_this(), conn](boost::system::error_code) {
      conn->reply_timer_armed = false;
      if (conn->closed || conn->waiting.empty()) return;
      if (conn->waiting.front().deadline <= std::chrono::steady_clock::now()) {
        return self->fail(conn, "no reply within " + std::to_string(self->settings.timeout.count()) + "ms");
      }
      self->arm_reply_timer(conn);
    });
  }

  void admit_on_strand(const UserId& who, const LimitPolicy& policy, const std::string& slot,
                       std::function<void(std::optional<AdmitAnswer>)> done) {
    // Charges go first, so the decision sees the bytes this node sent before it.
    flush_charges();
    const bool requests = policy.requests > 0;
    const bool tokens = policy.tokens > 0;
    std::vector<std::string> args{key(who, "req"),
                                  key(who, "tok"),
                                  key(who, "dl"),
                                  requests ? exact(request_interval_us(policy)) : "0",
                                  std::to_string(policy.effective_request_burst()),
                                  tokens ? exact(byte_interval_us(policy)) : "0",
                                  exact(policy.burst_bytes()),
                                  std::to_string(policy.concurrent),
                                  slot,
                                  std::to_string(std::chrono::microseconds(kSlotLease).count())};
    std::string slots_key = args[2];
    eval(kAdmitScript, admit_sha, std::move(args), 3,
         [self = shared_from_this(), slots_key, slot, done = std::move(done)](Reply reply) {
           if (reply.failed()) return done(std::nullopt);
           auto answer = read_admit(reply);
           if (!answer) {
             self->note_error("the admit script", reply.is_error() ? reply.text : "an answer of the wrong shape");
             return done(std::nullopt);
           }
           self->reported_error = false;
           if (answer->allowed && !slot.empty()) self->held[slots_key].insert(slot);
           done(answer);
         });
  }

  static std::optional<AdmitAnswer> read_admit(const Reply& reply) {
    if (reply.kind != Reply::Kind::array || reply.elements.size() != 7) return std::nullopt;
    const auto& e = reply.elements;
    auto integer = [&](std::size_t i) {
      return e[i].kind == Reply::Kind::integer ? std::optional(e[i].integer) : std::nullopt;
    };
    auto real = [&](std::size_t i) {
      return e[i].kind == Reply::Kind::string ? parse_number<double>(e[i].text) : std::nullopt;
    };
    const auto allowed = integer(0), refused = integer(1), held = integer(6);
    const auto wait = real(2), now = real(3), request_tat = real(4), token_tat = real(5);
    if (!allowed || !refused || !held || !wait || !now || !request_tat || !token_tat) return std::nullopt;
    return AdmitAnswer{*allowed == 1, static_cast<int>(*refused), *wait, *now, *request_tat, *token_tat, *held};
  }

  void add_charge(const UserId& who, const LimitPolicy& policy, std::uint64_t bytes) {
    if (!current || !current->ready) return fallback.charge(who, policy, bytes);
    const bool first = charges_unsent.empty();
    PendingCharge& pending = charges_unsent.try_emplace(who.str(), PendingCharge{who, policy, 0}).first->second;
    pending.policy = policy;
    pending.bytes += bytes;
    // Charges that arrive while this one waits on the strand go out with it, one script per identity.
    if (first) asio::post(strand, [self = shared_from_this()] { self->flush_charges(); });
  }

  void flush_charges() {
    auto charges = std::move(charges_unsent);
    charges_unsent.clear();
    for (auto& [charge_key, charge] : charges) {
      if (!current || !current->ready) {
        fallback.charge(charge.who, charge.policy, charge.bytes);
        continue;
      }
      eval(kChargeScript, charge_sha,
           {key(charge.who, "tok"), exact(byte_interval_us(charge.policy)), std::to_string(charge.bytes)}, 1,
           check_reply("the charge script"));
    }
  }

  void release(const std::string& slots_key, const std::string& slot) {
    auto it = held.find(slots_key);
    if (it != held.end()) {
      it->second.erase(slot);
      if (it->second.empty()) held.erase(it);
    }
    if (current && current->ready) {
      send(encode_redis_command({"ZREM", slots_key, slot}), check_reply("ZREM"));
    } else {
      releases_unsent.emplace_back(slots_key, slot);
    }
  }

  void arm_refresh() {
    refresh_timer.expires_after(kSlotRefreshEvery);
    refresh_timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->stopped) return;
      self->refresh_slots();
      self->arm_refresh();
    });
  }

  void refresh_slots() {
    if (!current || !current->ready) return;
    for (const auto& [slots_key, slots] : held) {
      std::vector<std::string> args{slots_key, std::to_string(std::chrono::microseconds(kSlotLease).count())};
      args.insert(args.end(), slots.begin(), slots.end());
      eval(kRefreshScript, refresh_sha, std::move(args), 1, check_reply("the refresh script"));
    }
  }

  // Closes everything; callbacks still waiting are dropped without being called.
  void stop() {
    stopped = true;
    up = false;
    reconnect_timer.cancel();
    refresh_timer.cancel();
    if (current) {
      current->closed = true;
      boost::system::error_code ignored;
      current->socket.close(ignored);
      current->resolver.cancel();
      current->connect_timer.cancel();
      current->reply_timer.cancel();
      current->waiting.clear();
      current.reset();
    }
    charges_unsent.clear();
    held.clear();
  }

  // ---- Any thread. ----

  // Asks Redis for a decision; the awaiting coroutine resumes on its own executor, with nullopt when
  // Redis could not be asked or gave no usable answer.
  Task<std::optional<AdmitAnswer>> ask(const UserId& who, const LimitPolicy& policy, const std::string& slot) {
    auto executor = co_await asio::this_coro::executor;
    std::optional<AdmitAnswer> answer;
    co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
        [&](auto handler) {
          auto resume = std::make_shared<decltype(handler)>(std::move(handler));
          asio::post(strand, [self = shared_from_this(), &who, &policy, &slot, &answer, resume, executor] {
            self->admit_on_strand(who, policy, slot, [&answer, resume, executor](std::optional<AdmitAnswer> got) {
              answer = std::move(got);
              asio::post(executor, std::move(*resume));
            });
          });
        },
        asio::use_awaitable);
    co_return answer;
  }

  std::string next_slot_id() { return slot_prefix + std::to_string(slot_sequence.fetch_add(1)); }

  Decision decision_from(const AdmitAnswer& answer, const LimitPolicy& policy) const {
    Decision decision;
    decision.allowed = answer.allowed;
    // As locally: the first refusing limit is named, and the wait is the longest of them.
    if (answer.refused & kRefusedByRequests) {
      decision.refused_by = LimitKind::requests;
    } else if (answer.refused & kRefusedByTokens) {
      decision.refused_by = LimitKind::tokens;
    } else if (answer.refused & kRefusedByConcurrent) {
      decision.refused_by = LimitKind::concurrent;
    }
    if (!answer.allowed) {
      auto wait = std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(answer.wait_us / 1000)));
      if (answer.refused & kRefusedByConcurrent) wait = std::max<std::chrono::milliseconds>(wait, kRetryConcurrent);
      decision.retry_after = wait;
    }
    const std::int64_t now_ns = nanos_from_micros(answer.now_us);
    std::int64_t reset_ns = 0;
    if (policy.requests > 0) {
      const GcraState state{nanos_from_micros(answer.request_tat_us)};
      const double left = Gcra::remaining(state, now_ns, request_interval_us(policy) * 1000,
                                          static_cast<double>(policy.effective_request_burst()), reset_ns);
      decision.status.push_back({LimitKind::requests, policy.requests, policy.request_window,
                                 static_cast<std::uint64_t>(left), whole_seconds_from(reset_ns)});
    }
    if (policy.tokens > 0) {
      const GcraState state{nanos_from_micros(answer.token_tat_us)};
      const double left =
          Gcra::remaining(state, now_ns, byte_interval_us(policy) * 1000, policy.burst_bytes(), reset_ns);
      decision.status.push_back({LimitKind::tokens, policy.tokens * policy.token_bytes, policy.token_window,
                                 static_cast<std::uint64_t>(left), whole_seconds_from(reset_ns)});
    }
    if (policy.concurrent > 0) {
      const auto in_use = std::min<long long>(answer.slots_held, policy.concurrent);
      decision.status.push_back({LimitKind::concurrent,
                                 policy.concurrent,
                                 std::chrono::seconds(0),
                                 static_cast<std::uint64_t>(policy.concurrent - in_use),
                                 {}});
    }
    return decision;
  }

  // The slot of an allowed download: released in Redis when the decision's last copy goes.
  std::shared_ptr<void> slot_lease(const std::string& slots_key, const std::string& slot) {
    struct Lease {
      Lease(std::weak_ptr<Impl> owner, std::string slots_key, std::string slot)
          : owner(std::move(owner)), slots_key(std::move(slots_key)), slot(std::move(slot)) {}
      ~Lease() {
        // Once stopped (the limiter destroyed) nothing is posted: the I/O context may be shutting down.
        auto impl = owner.lock();
        if (!impl || impl->stopped) return;
        asio::post(impl->strand, [impl, slots_key = std::move(slots_key), slot = std::move(slot)] {
          if (!impl->stopped) impl->release(slots_key, slot);
        });
      }
      std::weak_ptr<Impl> owner;
      std::string slots_key, slot;
    };
    return std::make_shared<Lease>(weak_from_this(), slots_key, slot);
  }

  // A slot the script may have taken although its answer never came.
  void forget_slot(const std::string& slots_key, const std::string& slot) {
    asio::post(strand, [self = shared_from_this(), slots_key, slot] {
      if (!self->stopped) self->release(slots_key, slot);
    });
  }

  asio::io_context& io;
  Strand strand;
  const RedisSettings settings;
  LocalRateLimiter& fallback;
  std::string endpoint;  // host:port, for the log
  std::string slot_prefix;
  std::atomic<std::uint64_t> slot_sequence{0};
  std::atomic<bool> up{false};
  std::atomic<bool> stopped{false};  // set once, by the limiter's destructor
  metrics::Counter allowed, refused, fallback_decisions, errors;

  // Strand only.
  std::shared_ptr<Connection> current;
  asio::steady_timer reconnect_timer;
  asio::steady_timer refresh_timer;
  std::chrono::milliseconds backoff = kFirstBackoff;
  std::minstd_rand random;
  bool reported_down = false;
  bool reported_error = false;
  std::string admit_sha, charge_sha, refresh_sha;
  std::map<std::string, PendingCharge> charges_unsent;
  std::map<std::string, std::set<std::string>> held;  // slots key -> slot ids this node holds
  std::vector<std::pair<std::string, std::string>> releases_unsent;
};

RedisRateLimiter::RedisRateLimiter(asio::io_context& io, RedisSettings settings, LocalRateLimiter& fallback)
    : impl_(std::make_shared<Impl>(io, std::move(settings), fallback)) {
  impl_->start();
}

// The node destroys the limiter once its I/O threads have returned: then nothing else touches the
// strand's state and it is closed here. Otherwise the strand closes it. Handlers still queued hold the
// shared Impl, so none of them touches freed memory.
RedisRateLimiter::~RedisRateLimiter() {
  if (impl_->io.stopped()) {
    impl_->stop();
  } else {
    asio::post(impl_->strand, [impl = impl_] { impl->stop(); });
  }
}

bool RedisRateLimiter::connected() const {
  return impl_->up.load();
}

Task<Decision> RedisRateLimiter::admit(const UserId& who, const LimitPolicy& policy, bool download) {
  std::shared_ptr<Impl> impl = impl_;
  if (!policy.limits_anything()) {
    impl->allowed.add();
    co_return Decision{};
  }
  if (impl->up.load()) {
    const std::string slot = download && policy.concurrent > 0 ? impl->next_slot_id() : std::string();
    auto question = impl->ask(who, policy, slot);
    const std::optional<Impl::AdmitAnswer> answer = co_await std::move(question);
    if (answer) {
      Decision decision = impl->decision_from(*answer, policy);
      (decision.allowed ? impl->allowed : impl->refused).add();
      if (decision.allowed && !slot.empty()) decision.slot = impl->slot_lease(impl->key(who, "dl"), slot);
      co_return decision;
    }
    if (!slot.empty()) impl->forget_slot(impl->key(who, "dl"), slot);
  }
  impl->fallback_decisions.add();
  if (impl->settings.refuse_when_down) {
    Decision refused;
    refused.allowed = false;
    refused.retry_after = kRetryWhileDown;
    refused.fallback = true;
    co_return refused;
  }
  auto local = impl->fallback.admit(who, policy, download);
  Decision decision = co_await std::move(local);
  decision.fallback = true;
  co_return decision;
}

void RedisRateLimiter::charge(const UserId& who, const LimitPolicy& policy, std::uint64_t bytes) {
  if (policy.tokens == 0 || bytes == 0) return;
  if (!impl_->up.load()) return impl_->fallback.charge(who, policy, bytes);
  asio::post(impl_->strand, [impl = impl_, who, policy, bytes] { impl->add_charge(who, policy, bytes); });
}

namespace {
using metrics::FamilySpec;
constexpr FamilySpec kBackendUp{"inferllama_ratelimit_backend_up", "gauge",
                                "Whether the shared rate-limit backend answers (1) or not"};
constexpr FamilySpec kFallbackDecisions{
    "inferllama_ratelimit_fallback_decisions_total", "counter",
    "Decisions made without the shared backend (locally, or refused when refuse_when_down)"};
constexpr FamilySpec kBackendErrors{
    "inferllama_ratelimit_backend_errors_total", "counter",
    "Failed connections, replies later than the timeout and error replies of the shared backend"};
}  // namespace

void RedisRateLimiter::render_metrics(std::string& out) const {
  using metrics::write_header;
  using metrics::write_sample;
  const Impl& impl = *impl_;
  // The fallback's decisions come with these, under one header: the node registers only the limiter it uses.
  write_header(out, kDecisions);
  impl.fallback.render_decisions(out);
  write_sample(out, kDecisions, "backend=\"redis\",result=\"allowed\"", static_cast<double>(impl.allowed.value()));
  write_sample(out, kDecisions, "backend=\"redis\",result=\"refused\"", static_cast<double>(impl.refused.value()));
  write_header(out, kBackendUp);
  write_sample(out, kBackendUp, "backend=\"redis\"", impl.up.load() ? 1 : 0);
  write_header(out, kFallbackDecisions);
  write_sample(out, kFallbackDecisions, "backend=\"redis\"", static_cast<double>(impl.fallback_decisions.value()));
  write_header(out, kBackendErrors);
  write_sample(out, kBackendErrors, "backend=\"redis\"", static_cast<double>(impl.errors.value()));
}

}  // namespace inferllama::usage
