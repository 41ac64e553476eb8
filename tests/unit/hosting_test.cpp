// Hosted repos through the service the routes call: who may create, write and read, what the LFS batch
// hands out, an upload's bytes checked against its oid, commits that read back, the quota, and deletions
// that release what nothing holds.
#include "hosting/hosting.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "cache/hashing.hpp"
#include "test_support.hpp"

namespace inferllama::hosting {
namespace {

using Json = nlohmann::json;
constexpr std::string_view kBase = "http://node.test";

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                       static_cast<unsigned char>(bytes[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(v >> shift) & 63];
  }
  if (i < bytes.size()) {
    unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

class HostingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::fresh_test_dir("hosting");
    store_ = std::make_unique<ChunkStore>(dir_);
    index_ = open_rocksdb_index(dir_ / "index");
    make_hosting(0);
  }
  void TearDown() override {
    hosting_.reset();
    index_.reset();
    std::filesystem::remove_all(dir_);
  }
  void make_hosting(std::uint64_t quota) {
    hosting_.reset();
    Hosting::Deps deps{index_->records(),
                       *index_,
                       *store_,
                       clock_,
                       [](std::string_view name) { return name == "ada" || name == "bob"; },
                       [](std::string_view) { return std::string(); },
                       [this](const std::vector<std::string>& etags) {
                         released_.insert(etags.begin(), etags.end());
                         for (const auto& etag : etags) index_->remove_blob(etag);
                       },
                       [this](const std::string& etag) { stored_.insert(etag); }};
    hosting_ = std::make_unique<Hosting>(deps, HostingSettings{.chunk_size = 64 * 1024, .quota = quota});
  }

  Json create(const Requester& who, const std::string& name, bool is_private = false) {
    auto reply = hosting_->create_repo(who, Json{{"name", name}, {"private", is_private}}.dump(), std::string(kBase));
    EXPECT_TRUE(reply);
    return reply ? Json{{"status", reply->status}, {"body", Json::parse(reply->body)}} : Json{};
  }

  hub::Reply commit(const Requester& who, const RepoId& repo, const std::vector<Json>& lines, bool pr = false) {
    std::string ndjson = Json{{"key", "header"}, {"value", {{"summary", "s"}, {"description", ""}}}}.dump() + "\n";
    for (const auto& line : lines) ndjson += line.dump() + "\n";
    return hosting_->commit(who, repo, "main", pr, ndjson, std::string(kBase));
  }

  static Json add(const std::string& path, std::string_view content) {
    return {{"key", "file"}, {"value", {{"path", path}, {"content", base64(content)}, {"encoding", "base64"}}}};
  }

  // The LFS batch's upload action for `bytes`, or null when the object is stored already.
  Json batch(const Requester& who, const RepoId& repo, std::string_view bytes) {
    const std::string oid = cache::sha256(bytes).hex();
    const Json request{{"operation", "upload"},
                       {"transfers", {"basic"}},
                       {"hash_algo", "sha_256"},
                       {"objects", {{{"oid", oid}, {"size", bytes.size()}}}}};
    auto reply = hosting_->lfs_batch(who, repo, request.dump(), std::string(kBase));
    EXPECT_EQ(reply.status, 200u) << reply.body;
    const Json answer = Json::parse(reply.body);
    EXPECT_EQ(answer["transfer"], "basic");
    const Json& object = answer["objects"][0];
    return object.contains("actions") ? object["actions"]["upload"] : Json();
  }

  hub::Reply put(const Json& upload, std::string_view bytes) {
    const std::string href = upload["href"];
    const std::string prefix = std::string(kBase) + "/api/inferllama/lfs/";
    EXPECT_TRUE(href.starts_with(prefix));
    auto ticket = hosting_->check_ticket(href.substr(prefix.size()));
    if (auto* refused = std::get_if<hub::Reply>(&ticket)) return *refused;
    auto begun = hosting_->begin_upload(std::get<UploadTicket>(ticket), 0, bytes.size());
    if (auto* refused = std::get_if<hub::Reply>(&begun)) return *refused;
    auto& upload_sink = *std::get<std::unique_ptr<Hosting::Upload>>(begun);
    const std::span body(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    upload_sink.write(body);
    upload_sink.hash(body);
    return upload_sink.finish();
  }

  std::filesystem::path dir_;
  testing::ManualClock clock_;
  std::unique_ptr<ChunkStore> store_;
  std::unique_ptr<Index> index_;
  std::unique_ptr<Hosting> hosting_;
  std::set<std::string> released_;
  std::set<std::string> stored_;
  const Requester ada_{"ada", false};
  const Requester bob_{"bob", false};
  const RepoId repo_{RepoType::model, "ada/ft"};
};

TEST_F(HostingTest, NamespacesAreUsersAndOrganisations) {
  EXPECT_TRUE(hosting_->owns(repo_));
  EXPECT_FALSE(hosting_->owns({RepoType::model, "acme/tiny-model"}));
  EXPECT_EQ(hosting_->namespaces().add_org("acme"), Namespaces::Outcome::done);
  EXPECT_TRUE(hosting_->owns({RepoType::model, "acme/tiny-model"}));
  // A namespace the node does not own is not its to create: the caller passes it upstream.
  EXPECT_FALSE(hosting_->create_repo(ada_, R"({"name":"x","organization":"elsewhere"})", std::string(kBase)));
}

TEST_F(HostingTest, CreateIsForTheNamespacesWritersAndAnswersAConflictWithTheUrl) {
  const Json created = create(ada_, "ft");
  EXPECT_EQ(created["status"], 200);
  EXPECT_EQ(created["body"]["url"], "http://node.test/ada/ft");
  EXPECT_EQ(created["body"]["id"].get<std::string>().size(), 24u);
  // The Python client reads the url of the 409 with exist_ok=True.
  const Json again = create(ada_, "ft");
  EXPECT_EQ(again["status"], 409);
  EXPECT_EQ(again["body"]["url"], "http://node.test/ada/ft");
  auto refused = hosting_->create_repo(bob_, R"({"name":"other","organization":"ada"})", std::string(kBase));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 403u);
  auto anonymous = hosting_->create_repo({}, R"({"name":"other","organization":"ada"})", std::string(kBase));
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401u);
  // A new repo has the Hub's first commit: its .gitattributes.
  const auto head = hosting_->commit_of(repo_, "main");
  ASSERT_TRUE(head);
  const auto files = hosting_->files(repo_, *head);
  ASSERT_TRUE(files);
  ASSERT_EQ(files->size(), 1u);
  EXPECT_EQ(files->front().path, ".gitattributes");
}

TEST_F(HostingTest, APrivateRepoIsNotFoundForOthers) {
  create(ada_, "ft", /*is_private=*/true);
  EXPECT_FALSE(hosting_->read_refusal(ada_, repo_));
  EXPECT_FALSE(hosting_->read_refusal({"", true}, repo_));  // the node's admin
  for (const Requester& who : {bob_, Requester{}}) {
    auto refused = hosting_->read_refusal(who, repo_);
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 404u);
    EXPECT_NE(std::find(refused->headers.begin(), refused->headers.end(),
                        std::pair<std::string, std::string>{"X-Error-Code", "RepoNotFound"}),
              refused->headers.end());
    EXPECT_EQ(hosting_->info(who, repo_, std::nullopt, "").status, 404u);
  }
  EXPECT_EQ(hosting_->visibility(repo_), RepoVisibility::restricted);
  EXPECT_EQ(hosting_->settings(ada_, repo_, R"({"visibility":"public"})").status, 200u);
  EXPECT_FALSE(hosting_->read_refusal(bob_, repo_));
  // Others may read it now, not change it.
  EXPECT_EQ(commit(bob_, repo_, {add("x.txt", "x")}).status, 403u);
}

TEST_F(HostingTest, AnUploadIsStoredOnlyWhenItsBytesAreTheOid) {
  create(ada_, "ft");
  const std::string bytes(200 * 1024, 'w');
  const Json upload = batch(ada_, repo_, bytes);
  ASSERT_TRUE(upload.is_object());
  std::string wrong = bytes;
  wrong[1000] = 'x';
  EXPECT_EQ(put(upload, wrong).status, 400u);
  EXPECT_FALSE(index_->get_blob(cache::sha256(bytes).hex()));
  // A ticket changed by one digit is not the node's.
  Json tampered = upload;
  std::string href = tampered["href"];
  href[href.size() - 1] = href.back() == '0' ? '1' : '0';
  tampered["href"] = href;
  EXPECT_EQ(put(tampered, bytes).status, 403u);
  EXPECT_EQ(put(upload, bytes).status, 200u);
  EXPECT_TRUE(stored_.contains(cache::sha256(bytes).hex()));
  EXPECT_TRUE(batch(ada_, repo_, bytes).is_null());  // stored for this repo: nothing to send again
  // Bob's repo must receive the bytes again: knowing a hash is not holding the file.
  create(bob_, "other");
  EXPECT_TRUE(batch(bob_, {RepoType::model, "bob/other"}, bytes).is_object());

  const Json lfs{
      {"key", "lfsFile"},
      {"value", {{"path", "w.bin"}, {"algo", "sha256"}, {"oid", cache::sha256(bytes).hex()}, {"size", bytes.size()}}}};
  auto done = commit(ada_, repo_, {lfs, add("README.md", "hello\n")});
  ASSERT_EQ(done.status, 200u) << done.body;
  const Json answer = Json::parse(done.body);
  const auto files = hosting_->files(repo_, answer["commitOid"]);
  ASSERT_TRUE(files);
  std::map<std::string, FileEntry> by_path;
  for (const auto& f : *files) by_path[f.path] = f.file;
  EXPECT_EQ(by_path.at("w.bin").etag, cache::sha256(bytes).hex());
  EXPECT_TRUE(by_path.at("w.bin").lfs);
  EXPECT_FALSE(by_path.at("README.md").lfs);
  // Inline files are stored blobs too, under their git blob id.
  EXPECT_TRUE(index_->get_blob(by_path.at("README.md").etag));
}

TEST_F(HostingTest, StaleParentsAndMissingFilesAreTheHubsErrors) {
  create(ada_, "ft");
  const std::string head = *hosting_->commit_of(repo_, "main");
  ASSERT_EQ(commit(ada_, repo_, {add("a.txt", "a")}).status, 200u);
  std::string ndjson = Json{{"key", "header"}, {"value", {{"summary", "s"}, {"parentCommit", head}}}}.dump() + "\n" +
                       add("b.txt", "b").dump();
  auto stale = hosting_->commit(ada_, repo_, "main", false, ndjson, std::string(kBase));
  EXPECT_EQ(stale.status, 412u);
  auto missing = commit(ada_, repo_, {Json{{"key", "deletedFile"}, {"value", {{"path", "nope.txt"}}}}});
  EXPECT_EQ(missing.status, 404u);
}

TEST_F(HostingTest, APullRequestIsABranchOfItsOwn) {
  create(ada_, "ft");
  auto done = commit(ada_, repo_, {add("pr.txt", "p")}, /*pr=*/true);
  ASSERT_EQ(done.status, 200u) << done.body;
  const Json answer = Json::parse(done.body);
  EXPECT_EQ(answer["pullRequestUrl"], "http://node.test/ada/ft/discussions/1");
  EXPECT_EQ(hosting_->commit_of(repo_, "refs/pr/1"), answer["commitOid"].get<std::string>());
  const auto main_files = hosting_->files(repo_, *hosting_->commit_of(repo_, "main"));
  EXPECT_EQ(main_files->size(), 1u);  // .gitattributes only
  const Json refs = Json::parse(hosting_->refs(ada_, repo_, "include_prs=1").body);
  EXPECT_EQ(refs["pullRequests"][0]["name"], "refs/pr/1");
}

TEST_F(HostingTest, TheQuotaCountsWhatANamespaceHolds) {
  make_hosting(/*quota=*/4096);
  create(ada_, "ft");
  EXPECT_EQ(commit(ada_, repo_, {add("small.txt", std::string(1000, 's'))}).status, 200u);
  auto over = commit(ada_, repo_, {add("big.txt", std::string(5000, 'b'))});
  EXPECT_EQ(over.status, 413u);
  EXPECT_NE(over.body.find("hosted_quota"), std::string::npos);
  // Uploads no commit took up yet count too: they hold disk until they are collected.
  const std::string pending(1000, 'p');
  ASSERT_EQ(put(batch(ada_, repo_, pending), pending).status, 200u);
  const std::string more(1500, 'm');
  const Json ask{{"operation", "upload"}, {"objects", {{{"oid", cache::sha256(more).hex()}, {"size", more.size()}}}}};
  EXPECT_EQ(hosting_->lfs_batch(ada_, repo_, ask.dump(), std::string(kBase)).status, 413u);
  const std::string large(8000, 'l');
  const Json request{{"operation", "upload"},
                     {"objects", {{{"oid", cache::sha256(large).hex()}, {"size", large.size()}}}}};
  EXPECT_EQ(hosting_->lfs_batch(ada_, repo_, request.dump(), std::string(kBase)).status, 413u);
}

TEST_F(HostingTest, DeletingTheRepoReleasesWhatNothingElseHolds) {
  create(ada_, "ft");
  create(bob_, "keep");
  const RepoId bobs{RepoType::model, "bob/keep"};
  ASSERT_EQ(commit(ada_, repo_, {add("only-ada.txt", "ada's"), add("shared.txt", "both")}).status, 200u);
  ASSERT_EQ(commit(bob_, bobs, {add("shared.txt", "both")}).status, 200u);
  const std::string ada_only = make_git_object("blob", "ada's").id.hex();
  const std::string shared = make_git_object("blob", "both").id.hex();
  auto deleted = hosting_->delete_repo(ada_, R"({"name":"ft","organization":"ada"})");
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->status, 200u);
  EXPECT_TRUE(released_.contains(ada_only));
  EXPECT_FALSE(released_.contains(shared));
  EXPECT_FALSE(hosting_->visibility(repo_));
  auto again = hosting_->delete_repo(ada_, R"({"name":"ft","organization":"ada"})");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 404u);
  std::unordered_set<std::string> kept;
  hosting_->keep(kept);
  EXPECT_TRUE(kept.contains(shared));
  EXPECT_FALSE(kept.contains(ada_only));
}

TEST(TicketSigner, SignsWhatItOpensAndNothingElse) {
  testing::MemoryRecords records;
  TicketSigner signer(records);
  const UploadTicket ticket{{RepoType::dataset, "ada/d"}, cache::sha256("x"), 1, "ada", 1700000000, 16 << 20};
  const std::string token = signer.sign(ticket);
  EXPECT_TRUE(std::all_of(token.begin(), token.end(),
                          [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == '.'; }));
  auto opened = signer.open(token);
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->repo, ticket.repo);
  EXPECT_EQ(opened->oid, ticket.oid);
  EXPECT_EQ(opened->part_size, ticket.part_size);
  EXPECT_EQ(opened->user, "ada");
  // The key outlives the signer (a restart), and another node's key opens nothing.
  EXPECT_TRUE(TicketSigner(records).open(token));
  testing::MemoryRecords other;
  EXPECT_FALSE(TicketSigner(other).open(token));
  EXPECT_FALSE(signer.open(token.substr(0, token.size() - 1)));
  EXPECT_FALSE(signer.open("nodot"));
}

}  // namespace
}  // namespace inferllama::hosting
