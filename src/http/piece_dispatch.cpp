#include "http/piece_dispatch.hpp"

namespace inferllama::http {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<PieceDispatch::Want> PieceDispatch::parse(std::string_view value, std::size_t pieces) {
  Want want;
  if (const auto semicolon = value.find(';'); semicolon != std::string_view::npos) {
    if (value.substr(semicolon + 1) != "any") return std::nullopt;
    want.any = true;
    value = value.substr(0, semicolon);
  }
  if (pieces == 0 || value.size() != (pieces + 7) / 8 * 2) return std::nullopt;
  want.pieces.assign(pieces, false);
  for (std::size_t i = 0; i < value.size(); ++i) {
    const int nibble = hex_value(value[i]);
    if (nibble < 0) return std::nullopt;
    for (int bit = 0; bit < 4; ++bit) {
      const std::size_t piece = i * 4 + static_cast<std::size_t>(bit);
      const bool set = (nibble >> (3 - bit)) & 1;
      if (piece < pieces) {
        want.pieces[piece] = set;
      } else if (set) {
        return std::nullopt;  // bits past the last piece
      }
    }
  }
  return want;
}

std::optional<std::size_t> PieceDispatch::pick(const std::string& etag, const Want& want, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto it = files_.find(etag);
  if (it == files_.end()) {
    while (!recency_.empty() && pieces_ + want.pieces.size() > kMaxPieces) {
      auto oldest = files_.find(recency_.back());
      pieces_ -= oldest->second.sent.size();
      files_.erase(oldest);
      recency_.pop_back();
    }
    recency_.push_front(etag);
    it = files_.emplace(etag, File{std::vector<Clock::time_point>(want.pieces.size()), recency_.begin()}).first;
    pieces_ += want.pieces.size();
  } else {
    recency_.splice(recency_.begin(), recency_, it->second.recency);
  }
  auto& sent = it->second.sent;
  if (sent.size() != want.pieces.size()) return std::nullopt;
  // The wanted piece sent longest ago (never is longest); among equals, the one after the last pick.
  std::optional<std::size_t> best;
  const std::size_t start = static_cast<std::size_t>(turn_++ % sent.size());
  for (std::size_t k = 0; k < sent.size(); ++k) {
    const std::size_t piece = (start + k) % sent.size();
    if (!want.pieces[piece]) continue;
    if (!best || sent[piece] < sent[*best]) best = piece;
  }
  if (!best) return std::nullopt;
  const bool lately = sent[*best] != Clock::time_point{} && now - sent[*best] < kInFlight;
  if (lately && !want.any) return std::nullopt;
  sent[*best] = now;
  return best;
}

}  // namespace inferllama::http
