#include "hosting/upload_ticket.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <charconv>
#include <stdexcept>
#include <vector>

namespace inferllama::hosting {
namespace {

constexpr std::string_view kKeyRecord = "key|upload-tickets";
constexpr char kDigits[] = "0123456789abcdef";

std::string hex(const unsigned char* data, std::size_t size) {
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 15];
  }
  return out;
}

std::string hex(std::string_view text) {
  return hex(reinterpret_cast<const unsigned char*>(text.data()), text.size());
}

std::optional<std::string> unhex(std::string_view text) {
  if (text.size() % 2) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 2);
  for (std::size_t i = 0; i < text.size(); i += 2) {
    unsigned value = 0;
    if (std::from_chars(text.data() + i, text.data() + i + 2, value, 16).ptr != text.data() + i + 2)
      return std::nullopt;
    out += static_cast<char>(value);
  }
  return out;
}

template <class T>
bool parse_number(std::string_view text, T& out) {
  return !text.empty() && std::from_chars(text.data(), text.data() + text.size(), out).ptr == text.data() + text.size();
}

}  // namespace

TicketSigner::TicketSigner(RecordStore& records) {
  if (auto stored = records.get(RecordTable::hosting, std::string(kKeyRecord));
      stored && stored->size() == key_.size()) {
    std::copy(stored->begin(), stored->end(), key_.begin());
    return;
  }
  if (RAND_bytes(key_.data(), static_cast<int>(key_.size())) != 1)
    throw std::runtime_error("no random bytes for the upload URL key");
  records.write(RecordTable::hosting,
                {{std::string(kKeyRecord), std::string(reinterpret_cast<const char*>(key_.data()), key_.size())}},
                /*sync=*/true);
}

// "{fields, '|'-separated, hex-encoded}.{HMAC-SHA256 of them, hex}": only hex digits and one dot.
std::string TicketSigner::sign(const UploadTicket& t) const {
  const std::string fields = t.repo.key() + '|' + t.oid.hex() + '|' + std::to_string(t.size) + '|' + t.user + '|' +
                             std::to_string(t.expires) + '|' + std::to_string(t.part_size);
  const std::string body = hex(fields);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned mac_size = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()), reinterpret_cast<const unsigned char*>(body.data()),
       body.size(), mac, &mac_size);
  return body + '.' + hex(mac, mac_size);
}

std::optional<UploadTicket> TicketSigner::open(std::string_view token) const {
  const auto dot = token.find('.');
  if (dot == std::string_view::npos || token.size() > 4096) return std::nullopt;
  const std::string_view body = token.substr(0, dot);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned mac_size = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()), reinterpret_cast<const unsigned char*>(body.data()),
       body.size(), mac, &mac_size);
  const std::string expected = hex(mac, mac_size);
  const std::string_view given = token.substr(dot + 1);
  if (given.size() != expected.size() || CRYPTO_memcmp(given.data(), expected.data(), expected.size()) != 0)
    return std::nullopt;
  const auto fields = unhex(body);
  if (!fields) return std::nullopt;
  std::vector<std::string_view> parts;
  std::string_view rest = *fields;
  for (auto bar = rest.find('|'); bar != std::string_view::npos; bar = rest.find('|')) {
    parts.push_back(rest.substr(0, bar));
    rest.remove_prefix(bar + 1);
  }
  parts.push_back(rest);
  if (parts.size() != 6) return std::nullopt;
  UploadTicket t;
  auto repo = parse_repo_key(parts[0]);
  auto oid = Sha256::from_hex(parts[1]);
  if (!repo || !oid || !parse_number(parts[2], t.size) || !parse_number(parts[4], t.expires) ||
      !parse_number(parts[5], t.part_size))
    return std::nullopt;
  t.repo = std::move(*repo);
  t.oid = *oid;
  t.user = std::string(parts[3]);
  return t;
}

}  // namespace inferllama::hosting
