#include <gtest/gtest.h>

#include <future>
#include <nlohmann/json.hpp>

#include "console/jwt.hpp"
#include "console/sessions.hpp"
#include "redis_server.hpp"
#include "test_support.hpp"

namespace inferllama::console {
namespace {

using testing::ManualClock;
using testing::MemoryRecords;

usage::SecretBox box() {
  std::array<unsigned char, 32> key{};
  key.fill(7);
  return usage::SecretBox(key);
}

JwtKey key_named(std::string id, unsigned char fill) {
  JwtKey key{std::move(id), {}};
  key.secret.fill(fill);
  return key;
}

TEST(Jwt, Base64UrlRoundTripsAndRefusesNonCanonicalText) {
  const std::vector<std::string> samples{"",     "f",     "fo",     "foo",
                                         "foob", "fooba", "foobar", std::string("\xff\xfe\x00", 3)};
  for (const auto& bytes : samples) {
    EXPECT_EQ(unbase64url(base64url(bytes)), bytes);
  }
  EXPECT_EQ(base64url("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64url("\xfb\xff"), "-_8");
  EXPECT_FALSE(unbase64url("Zm9vYmF=").has_value());  // padding is not JWS's
  EXPECT_FALSE(unbase64url("Zg+").has_value());
  EXPECT_FALSE(unbase64url("Zh").has_value());  // leftover bits set: a second spelling of "f"
  EXPECT_FALSE(unbase64url("Z").has_value());
}

TEST(Jwt, SignsAndVerifiesWithTheKeyItNames) {
  const JwtKey a = key_named("a", 1), b = key_named("b", 2);
  auto find = [&](std::string_view id) -> const JwtKey* { return id == "a" ? &a : id == "b" ? &b : nullptr; };
  const std::string token = sign_jwt(R"({"sub":"alice"})", b);
  EXPECT_EQ(verify_jwt(token, find), R"({"sub":"alice"})");
  // The header is the RFC's, with the key's id.
  const auto header = nlohmann::json::parse(*unbase64url(token.substr(0, token.find('.'))));
  EXPECT_EQ(header, (nlohmann::json{{"alg", "HS256"}, {"typ", "JWT"}, {"kid", "b"}}));
  // Another key's signature, a changed payload, an unknown kid: refused.
  auto only_a = [&](std::string_view id) -> const JwtKey* { return id == "b" ? &a : nullptr; };
  EXPECT_FALSE(verify_jwt(token, only_a).has_value());
  std::string altered = token;
  altered[token.find('.') + 2] ^= 1;
  EXPECT_FALSE(verify_jwt(altered, find).has_value());
  EXPECT_FALSE(verify_jwt(sign_jwt("{}", key_named("c", 3)), find).has_value());
}

TEST(Jwt, RefusesAlgNoneAndMalformedTokens) {
  const JwtKey a = key_named("a", 1);
  auto find = [&](std::string_view id) -> const JwtKey* { return id == "a" ? &a : nullptr; };
  const std::string none =
      base64url(R"({"alg":"none","typ":"JWT","kid":"a"})") + "." + base64url(R"({"sub":"admin"})") + ".";
  EXPECT_FALSE(verify_jwt(none, find).has_value());
  const std::string hs512 = base64url(R"({"alg":"HS512","typ":"JWT","kid":"a"})") + "." + base64url("{}") + ".AAAA";
  EXPECT_FALSE(verify_jwt(hs512, find).has_value());
  for (const std::string_view bad : {"", ".", "..", "a.b", "a.b.c.d", "!!.!!.!!"}) EXPECT_FALSE(verify_jwt(bad, find));
  EXPECT_FALSE(verify_jwt(std::string(5000, 'a'), find).has_value());
}

struct SessionsTest : ::testing::Test {
  ManualClock clock;
  MemoryRecords records;
  Sessions sessions{records, clock, box()};

  IssuedSession open(const std::string& user = "alice") { return sessions.open(user); }
  static Sessions::Csrf csrf_of(const IssuedSession& s) { return {s.csrf, s.csrf}; }
};

TEST_F(SessionsTest, AFreshJwtIsTheSessionForFifteenMinutes) {
  const auto s = open();
  EXPECT_EQ(s.max_age_s, 30 * 24 * 3600);
  auto who = sessions.check(s.jwt, std::nullopt);
  ASSERT_TRUE(who);
  EXPECT_EQ(who->user, "alice");
  EXPECT_EQ(who->sid, s.sid);
  clock.advance(std::chrono::minutes(15));
  EXPECT_FALSE(sessions.check(s.jwt, std::nullopt));
  EXPECT_TRUE(records.all_synced);
}

TEST_F(SessionsTest, StateChangesNeedTheSessionsCsrfTokenInBothHeaderAndCookie) {
  const auto s = open();
  const auto other = open("bob");
  EXPECT_TRUE(sessions.check(s.jwt, Sessions::Csrf{s.csrf, s.csrf}));
  EXPECT_FALSE(sessions.check(s.jwt, Sessions::Csrf{"", ""}));
  EXPECT_FALSE(sessions.check(s.jwt, Sessions::Csrf{s.csrf, "other"}));
  EXPECT_FALSE(sessions.check(s.jwt, Sessions::Csrf{other.csrf, other.csrf}));  // another session's token
}

TEST_F(SessionsTest, RefreshRotatesTheTokenAndAReusedOneClosesTheSession) {
  const auto first = open();
  clock.advance(std::chrono::minutes(20));  // the JWT has expired; its refresh token has not
  auto second = sessions.refresh(first.jwt, csrf_of(first));
  ASSERT_TRUE(std::holds_alternative<IssuedSession>(second));
  const auto& renewed = std::get<IssuedSession>(second);
  EXPECT_EQ(renewed.sid, first.sid);
  EXPECT_NE(renewed.jwt, first.jwt);
  EXPECT_TRUE(sessions.check(renewed.jwt, std::nullopt));
  // The first JWT's refresh token was traded in: presenting it again is a stolen copy.
  auto replay = sessions.refresh(first.jwt, csrf_of(first));
  ASSERT_TRUE(std::holds_alternative<std::string>(replay));
  EXPECT_NE(std::get<std::string>(replay).find("closed"), std::string::npos);
  EXPECT_FALSE(sessions.check(renewed.jwt, std::nullopt));  // the whole family is gone
  EXPECT_TRUE(sessions.of_user("alice").empty());
}

TEST_F(SessionsTest, RefreshNeedsTheCsrfTokenAndEndsWithTheSession) {
  const auto s = open();
  EXPECT_TRUE(std::holds_alternative<std::string>(sessions.refresh(s.jwt, {"", ""})));
  EXPECT_TRUE(std::holds_alternative<IssuedSession>(sessions.refresh(s.jwt, csrf_of(s))));
  const auto later = open();
  clock.advance(std::chrono::hours(24 * 30));
  EXPECT_TRUE(std::holds_alternative<std::string>(sessions.refresh(later.jwt, csrf_of(later))));
}

TEST_F(SessionsTest, SignOutAndCloseAllEndSessions) {
  const auto a = open(), b = open(), c = open("bob");
  EXPECT_TRUE(sessions.close(a.jwt));
  EXPECT_FALSE(sessions.check(a.jwt, std::nullopt));
  EXPECT_FALSE(sessions.close(a.jwt));
  const auto d = open();
  EXPECT_EQ(sessions.close_all("alice", d.sid), 1u);  // b; d stays (a password change keeps the changer in)
  EXPECT_FALSE(sessions.check(b.jwt, std::nullopt));
  EXPECT_TRUE(sessions.check(d.jwt, std::nullopt));
  EXPECT_TRUE(sessions.check(c.jwt, std::nullopt));
}

TEST_F(SessionsTest, SessionsSurviveARestartAndTheirKeysToo) {
  const auto s = open();
  Sessions reloaded(records, clock, box());
  EXPECT_TRUE(reloaded.check(s.jwt, std::nullopt));
  EXPECT_TRUE(std::holds_alternative<IssuedSession>(reloaded.refresh(s.jwt, csrf_of(s))));
  // Under another secret key file the signing keys do not open: the node says so instead of starting.
  std::array<unsigned char, 32> other{};
  EXPECT_THROW(Sessions(records, clock, usage::SecretBox(other)), std::runtime_error);
}

TEST_F(SessionsTest, ExpiryDropsEndedSessionsAndRotatesKeysWithoutSigningAnyoneOut) {
  const auto s = open();
  clock.advance(std::chrono::hours(24 * 8));
  EXPECT_EQ(sessions.expire(), 0u);  // a new key now signs; the old one still verifies
  auto renewed = sessions.refresh(s.jwt, csrf_of(s));
  ASSERT_TRUE(std::holds_alternative<IssuedSession>(renewed));
  EXPECT_NE(std::get<IssuedSession>(renewed).jwt.substr(0, 40), s.jwt.substr(0, 40));  // another kid
  clock.advance(std::chrono::hours(24 * 23));
  EXPECT_EQ(sessions.expire(), 1u);
  EXPECT_TRUE(sessions.of_user("alice").empty());
}

TEST_F(SessionsTest, EachUserHasABoundedNumberOfSessions) {
  std::vector<IssuedSession> all;
  for (int i = 0; i < 25; ++i) {
    all.push_back(open());
    clock.advance(std::chrono::seconds(1));
  }
  EXPECT_EQ(sessions.of_user("alice").size(), 20u);
  EXPECT_FALSE(sessions.check(all.front().jwt, std::nullopt));  // the oldest went first
  EXPECT_TRUE(sessions.check(all.back().jwt, std::nullopt));
}

TEST_F(SessionsTest, AFailedWriteChangesNothingAndSaysSo) {
  const auto s = open();
  records.fail = true;
  EXPECT_THROW(sessions.open("alice"), SessionsUnavailable);
  EXPECT_THROW(sessions.refresh(s.jwt, csrf_of(s)), SessionsUnavailable);
  EXPECT_THROW(sessions.close_all("alice"), SessionsUnavailable);
  records.fail = false;
  EXPECT_TRUE(sessions.check(s.jwt, std::nullopt));
  EXPECT_TRUE(std::holds_alternative<IssuedSession>(sessions.refresh(s.jwt, csrf_of(s))));
}

// Two nodes whose sessions live in one real redis-server: what a user does on one holds on the other.
class RedisSessionsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(server.start(testing::free_loopback_port()), ""); }

  usage::RedisSettings redis() const {
    usage::RedisSettings settings;
    settings.port = server.port();
    settings.timeout = std::chrono::seconds(1);
    settings.key_prefix = "inferllama:session:";
    return settings;
  }
  std::unique_ptr<Sessions> node(usage::SecretBox secret = box()) {
    return std::make_unique<Sessions>(make_redis_session_store(redis()), clock, secret);
  }
  static Sessions::Csrf csrf_of(const IssuedSession& s) { return {s.csrf, s.csrf}; }

  testing::RedisServer server;
  ManualClock clock;
};

TEST_F(RedisSessionsTest, ASignInOnOneNodeRefreshesOnTheOtherAndASignOutEndsItOnBoth) {
  auto a = node(), b = node();
  const auto s = a->open("alice");
  ASSERT_TRUE(b->check(s.jwt, std::nullopt));  // B verifies A's JWT: the signing key is in Redis
  EXPECT_TRUE(b->check(s.jwt, csrf_of(s)));
  auto renewed = b->refresh(s.jwt, csrf_of(s));
  ASSERT_TRUE(std::holds_alternative<IssuedSession>(renewed)) << std::get<std::string>(renewed);
  const auto& r = std::get<IssuedSession>(renewed);
  EXPECT_EQ(r.sid, s.sid);
  EXPECT_TRUE(a->check(r.jwt, std::nullopt));
  EXPECT_EQ(a->of_user("alice").size(), 1u);
  EXPECT_TRUE(b->close(r.jwt));
  EXPECT_FALSE(a->check(r.jwt, std::nullopt));
  EXPECT_FALSE(a->is_open("alice", s.sid));
  EXPECT_TRUE(a->of_user("alice").empty());
}

TEST_F(RedisSessionsTest, AReusedRefreshTokenOnOneNodeClosesTheFamilyOnTheOther) {
  auto a = node(), b = node();
  const auto first = a->open("dave");
  auto second = a->refresh(first.jwt, csrf_of(first));
  ASSERT_TRUE(std::holds_alternative<IssuedSession>(second));
  auto replay = b->refresh(first.jwt, csrf_of(first));
  ASSERT_TRUE(std::holds_alternative<std::string>(replay));
  EXPECT_NE(std::get<std::string>(replay).find("closed"), std::string::npos);
  EXPECT_FALSE(a->check(std::get<IssuedSession>(second).jwt, std::nullopt));
}

TEST_F(RedisSessionsTest, OneTokenPresentedOnTwoNodesAtOnceRotatesOnceAndClosesTheSession) {
  auto a = node(), b = node();
  for (int round = 0; round < 20; ++round) {
    const auto s = a->open("erin");
    auto on_a = std::async(std::launch::async, [&] { return a->refresh(s.jwt, csrf_of(s)); });
    auto on_b = std::async(std::launch::async, [&] { return b->refresh(s.jwt, csrf_of(s)); });
    const auto x = on_a.get(), y = on_b.get();
    // Never both: the second finds the token spent (reuse) and closes the session, or finds it closed.
    EXPECT_EQ(std::holds_alternative<IssuedSession>(x) + std::holds_alternative<IssuedSession>(y), 1);
    EXPECT_FALSE(a->is_open("erin", s.sid));
  }
}

TEST_F(RedisSessionsTest, ASessionLivesInRedisNoLongerThanItsThirtyDays) {
  auto a = node();
  const auto s = a->open("alice");
  testing::Inspector redis(server.port());
  constexpr long long kThirtyDaysMs = 30LL * 24 * 3600 * 1000;
  for (const std::string& key : {"inferllama:session:{alice}:" + s.sid, std::string("inferllama:session:{alice}")}) {
    const long long ttl = std::stoll(redis.command({"PTTL", key}));
    EXPECT_LE(ttl, kThirtyDaysMs) << key;
    EXPECT_GT(ttl, kThirtyDaysMs - 60'000) << key;
  }
  // Stored as hashes of the refresh token and the CSRF token: no token in clear.
  EXPECT_EQ(redis.command({"HGET", "inferllama:session:{alice}:" + s.sid, "refresh"}).size(), 64u);
  // A key's secret is sealed: what Redis holds opens with the secret key file only.
  const std::string sealed =
      redis.command({"HGET", "inferllama:session:signing-keys",
                     nlohmann::json::parse(*unbase64url(s.jwt.substr(0, s.jwt.find('.'))))["kid"]});
  EXPECT_NE(sealed.find(" v1:"), std::string::npos) << sealed;
}

TEST_F(RedisSessionsTest, KeysRotateOnOneNodeAndVerifyOnAllButNotUnderAnotherSecretKeyFile) {
  auto a = node(), b = node();
  const auto s = a->open("alice");
  clock.advance(std::chrono::hours(24 * 8));
  a->expire();  // a new key signs on A
  auto renewed = a->refresh(s.jwt, csrf_of(s));
  ASSERT_TRUE(std::holds_alternative<IssuedSession>(renewed));
  const auto& r = std::get<IssuedSession>(renewed);
  EXPECT_NE(r.jwt.substr(0, 40), s.jwt.substr(0, 40));
  EXPECT_TRUE(b->check(r.jwt, std::nullopt));  // B fetches the key it has not seen
  // A node whose secret key file differs opens no key: it signs nobody in with them, and says so in the log.
  std::array<unsigned char, 32> other{};
  auto stranger = node(usage::SecretBox(other));
  EXPECT_FALSE(stranger->check(r.jwt, std::nullopt));
}

TEST_F(RedisSessionsTest, EachUserHasABoundedNumberOfSessionsAcrossNodes) {
  auto a = node(), b = node();
  std::vector<IssuedSession> all;
  for (int i = 0; i < 25; ++i) {
    all.push_back((i % 2 ? a : b)->open("alice"));
    clock.advance(std::chrono::seconds(1));
  }
  EXPECT_EQ(a->of_user("alice").size(), 20u);
  EXPECT_FALSE(b->check(all.front().jwt, std::nullopt));  // the oldest went first
  EXPECT_TRUE(b->check(all.back().jwt, std::nullopt));
  EXPECT_EQ(b->close_all("alice", all.back().sid), 19u);
  EXPECT_EQ(a->of_user("alice").size(), 1u);
}

TEST_F(RedisSessionsTest, WhileRedisIsDownNobodyIsSignedInOrOut) {
  auto a = node();
  const auto s = a->open("alice");
  server.stop();
  EXPECT_THROW(a->open("alice"), SessionsUnavailable);
  EXPECT_THROW(a->check(s.jwt, std::nullopt), SessionsUnavailable);
  EXPECT_THROW(a->refresh(s.jwt, csrf_of(s)), SessionsUnavailable);
  EXPECT_EQ(a->health(), "unreachable");
  // A node started while Redis is down starts, and signs in once Redis is back.
  auto later = node();
  EXPECT_THROW(later->open("bob"), SessionsUnavailable);
  ASSERT_EQ(server.restart(), "");
  // Redis lost everything (no persistence): the session is gone, and a new one opens.
  EXPECT_TRUE(testing::eventually([&] {
    try {
      return !a->check(s.jwt, std::nullopt) && later->check(later->open("bob").jwt, std::nullopt).has_value();
    } catch (const SessionsUnavailable&) {
      return false;
    }
  }));
  EXPECT_EQ(a->health(), "connected");
}

}  // namespace
}  // namespace inferllama::console
