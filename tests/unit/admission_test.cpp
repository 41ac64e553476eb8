// Admission decides what a request may ask for before any handler runs: hostile targets, routes a
// listener does not serve, the admin API, credentials, and limits. Driven with requests, no sockets.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>

#include "http/admission.hpp"
#include "http/credentials.hpp"
#include "inferllama/index.hpp"
#include "test_support.hpp"
#include "usage/identities.hpp"
#include "usage/local_limiter.hpp"

namespace inferllama::http {
namespace {

namespace bhttp = boost::beast::http;
using testing::ManualClock;

class AdmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("admission");
    index_ = open_rocksdb_index(dir_ / "index");
    identities_ = std::make_unique<usage::Identities>(index_->records(), clock_,
                                                      usage::SecretBox::from_file(dir_ / "secret.key"));
    config_.admin_key = "admin-key-for-admission-tests-0123456789";
    config_.auth_failure_limit = LimitPolicy{};
    config_.auth_failure_limit.requests = 3;  // three refused credentials a minute, all at once at most
    config_.auth_failure_limit.request_window = std::chrono::minutes(1);
  }
  void TearDown() override {
    gate_.reset();
    identities_.reset();
    index_.reset();
    std::filesystem::remove_all(dir_);
  }

  // The gate of a node that keeps users (or not).
  Gate& gate(bool users = true) {
    failed_ = std::make_unique<usage::FailedAttempts>(clock_, config_.auth_failure_limit);
    gate_ = std::make_unique<Gate>(config_, *failed_, stats_, users ? identities_.get() : nullptr,
                                   users ? &limiter_ : nullptr);
    return *gate_;
  }

  Admission admit(Gate& g, const std::string& target, Listener listener = Listener::plain,
                  const std::string& authorization = "", bhttp::verb method = bhttp::verb::get) {
    Request req{method, target, 11};
    if (!authorization.empty()) req.set(bhttp::field::authorization, authorization);
    const asio::ip::address client =
        listener == Listener::admin_socket ? asio::ip::address() : asio::ip::make_address("203.0.113.7");
    const std::string network = client_network(client);
    const Origin origin{listener, client, network};
    std::optional<Admission> out;
    asio::io_context io;
    asio::co_spawn(
        io, [&]() -> Task<void> { out = co_await g.admit(req, origin); }, asio::detached);
    io.run();
    return std::move(*out);
  }

  static unsigned refusal_status(const Admission& a) {
    const auto* refusal = std::get_if<Refusal>(&a.verdict);
    return refusal ? refusal->reply.status : 0;
  }

  std::filesystem::path dir_;
  ManualClock clock_;
  Config config_;
  HttpStats stats_;
  std::unique_ptr<Index> index_;
  std::unique_ptr<usage::Identities> identities_;
  usage::LocalRateLimiter limiter_{clock_};
  std::unique_ptr<usage::FailedAttempts> failed_;
  std::unique_ptr<Gate> gate_;
};

TEST_F(AdmissionTest, HostileTargetsAreA400BeforeAnythingElse) {
  Gate& g = gate();
  for (const char* target : {"/acme/m/resolve/main/..%2fetc/passwd", "/acme/m/resolve/main%0d%0aX:1/config.json",
                             "/api/models/acme/m?expand=%0a"}) {
    const auto a = admit(g, target, Listener::plain, "Bearer il_guess");
    EXPECT_EQ(refusal_status(a), 400u) << target;
    EXPECT_EQ(a.route, RouteId::bad_request);
  }
  EXPECT_EQ(failed_->failures(), 0u);  // a 400 counts no credential against the address
}

TEST_F(AdmissionTest, ListenersServeOnlyTheirRoutes) {
  Gate& g = gate();
  EXPECT_EQ(refusal_status(admit(g, "/acme/m/resolve/main/config.json", Listener::metrics)), 404u);
  EXPECT_EQ(refusal_status(admit(g, "/announce?info_hash=x", Listener::metrics)), 404u);
  EXPECT_TRUE(std::holds_alternative<Admitted>(admit(g, "/metrics", Listener::metrics).verdict));
  EXPECT_TRUE(std::holds_alternative<Admitted>(admit(g, "/healthz", Listener::metrics).verdict));
  EXPECT_EQ(refusal_status(admit(g, "/acme/m/resolve/main/config.json", Listener::admin_socket)), 404u);
  EXPECT_TRUE(std::holds_alternative<Admitted>(admit(g, "/api/inferllama/pin", Listener::admin_socket).verdict));
  EXPECT_EQ(refusal_status(admit(g, "/api/inferllama/no-such-route")), 404u);
  // Another route of the Hub's is passed upstream from the Hub's listener only.
  EXPECT_TRUE(std::holds_alternative<Admitted>(admit(g, "/api/whoami-v2").verdict));
  EXPECT_EQ(refusal_status(admit(g, "/api/whoami-v2", Listener::metrics)), 404u);
  EXPECT_EQ(refusal_status(admit(g, "/api/whoami-v2", Listener::admin_socket)), 404u);
}

TEST_F(AdmissionTest, TheAdminApiOverTcpNeedsTheAdminKey) {
  Gate& g = gate();
  const auto anonymous = admit(g, "/api/inferllama/gc");
  EXPECT_EQ(refusal_status(anonymous), 401u);
  bool asks_for_bearer = false;
  for (const auto& [name, value] : anonymous.limit_headers) asks_for_bearer |= name == "WWW-Authenticate";
  EXPECT_TRUE(asks_for_bearer);
  EXPECT_EQ(refusal_status(admit(g, "/api/inferllama/gc", Listener::plain, "Bearer wrong")), 401u);
  EXPECT_TRUE(std::holds_alternative<Admitted>(
      admit(g, "/api/inferllama/gc", Listener::plain, "Bearer " + config_.admin_key).verdict));
  // /metrics on the main listener: with the admin key only.
  EXPECT_EQ(refusal_status(admit(g, "/metrics")), 404u);
  EXPECT_TRUE(
      std::holds_alternative<Admitted>(admit(g, "/metrics", Listener::plain, "Bearer " + config_.admin_key).verdict));

  config_.admin_key.clear();
  Gate& keyless = gate();
  EXPECT_EQ(refusal_status(admit(keyless, "/api/inferllama/gc")), 403u);
  EXPECT_TRUE(std::holds_alternative<Admitted>(admit(keyless, "/api/inferllama/gc", Listener::admin_socket).verdict));
}

TEST_F(AdmissionTest, RefusedCredentialsAreCountedAndBlockTheAddress) {
  Gate& g = gate();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(refusal_status(admit(g, "/acme/m/resolve/main/config.json", Listener::plain, "Bearer il_wrong")), 401u);
  }
  EXPECT_EQ(failed_->failures(), 3u);
  EXPECT_EQ(stats_.unauthorized.value(), 3u);
  const auto blocked = admit(g, "/acme/m/resolve/main/config.json", Listener::plain, "Bearer il_wrong");
  EXPECT_EQ(refusal_status(blocked), 429u);
  bool retry_after = false;
  for (const auto& [name, value] : std::get<Refusal>(blocked.verdict).reply.headers)
    retry_after |= name == "Retry-After";
  EXPECT_TRUE(retry_after);
  // A request without credentials from the same address is not blocked.
  EXPECT_TRUE(std::holds_alternative<Admitted>(admit(g, "/acme/m/resolve/main/config.json").verdict));
}

TEST_F(AdmissionTest, ANodeKeyIsTheUserAndNeverReachesTheHub) {
  ASSERT_TRUE(std::holds_alternative<usage::User>(identities_->add_user("alice", "alice@example.org")));
  auto created = identities_->create_key("alice", "laptop");
  ASSERT_TRUE(std::holds_alternative<usage::CreatedKey>(created));
  const std::string secret = std::get<usage::CreatedKey>(created).secret;
  Gate& g = gate();
  const auto a = admit(g, "/acme/m/resolve/main/config.json", Listener::plain, "Bearer " + secret);
  ASSERT_TRUE(std::holds_alternative<Admitted>(a.verdict));
  EXPECT_EQ(std::get<Admitted>(a.verdict).caller.authorization, "");  // alice has no Hub token
  ASSERT_TRUE(a.account);
  EXPECT_EQ(a.account->who.str(), UserId::user("alice").str());
  EXPECT_EQ(a.account->repo, "model/acme/m");
  // A Hub token passes through for an anonymous node user.
  const auto hub_token = admit(g, "/acme/m/resolve/main/config.json", Listener::plain, "Bearer hf_abc");
  ASSERT_TRUE(std::holds_alternative<Admitted>(hub_token.verdict));
  EXPECT_EQ(std::get<Admitted>(hub_token.verdict).caller.authorization, "Bearer hf_abc");
  EXPECT_TRUE(hub_token.account->who.anonymous());
  // A node key in another form is refused, not passed on.
  EXPECT_EQ(refusal_status(admit(g, "/acme/m/resolve/main/config.json", Listener::plain, "Basic " + secret)), 401u);
}

TEST_F(AdmissionTest, RequireAuthRefusesAnonymousHubRequestsButNotHealth) {
  config_.require_auth = true;
  Gate& g = gate();
  EXPECT_EQ(refusal_status(admit(g, "/acme/m/resolve/main/config.json")), 401u);
  EXPECT_EQ(refusal_status(admit(g, "/api/models/acme/m")), 401u);
  EXPECT_TRUE(std::holds_alternative<Admitted>(admit(g, "/healthz").verdict));
}

TEST_F(AdmissionTest, ALimitedCallerGets429WithRateLimitFields) {
  config_.limit_anonymous.requests = 2;
  config_.limit_anonymous.request_window = std::chrono::minutes(1);
  Gate& g = gate();
  for (int i = 0; i < 2; ++i) {
    const auto a = admit(g, "/acme/m/resolve/main/config.json");
    ASSERT_TRUE(std::holds_alternative<Admitted>(a.verdict)) << i;
    EXPECT_FALSE(a.limit_headers.empty());
  }
  const auto refused = admit(g, "/acme/m/resolve/main/config.json");
  EXPECT_EQ(refusal_status(refused), 429u);
  ASSERT_TRUE(refused.account);  // the refused request is still recorded against its caller
  EXPECT_FALSE(refused.account->decision.allowed);
  EXPECT_EQ(stats_.limited.value(), 1u);
  // Without users and limits, nobody is accounted.
  Gate& open = gate(false);
  EXPECT_FALSE(admit(open, "/acme/m/resolve/main/config.json").account);
}

}  // namespace
}  // namespace inferllama::http
