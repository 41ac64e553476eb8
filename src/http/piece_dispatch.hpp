// A parent node sends each piece of a file its children share about once: a child asks with the pieces
// it wants (those it lacks and none of its peers has), and the parent picks one no child was sent lately;
// the children trade it among themselves.
#pragma once
#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferllama::http {

class PieceDispatch {
 public:
  using Clock = std::chrono::steady_clock;
  // A piece sent within this long is taken to be on its way to a child, which will share it.
  static constexpr std::chrono::seconds kInFlight{10};
  // Pieces remembered over all files; the least recently asked files go first.
  static constexpr std::size_t kMaxPieces = 1u << 20;

  struct Want {
    std::vector<bool> pieces;
    bool any = false;
  };
  // cluster::kWantPiecesHeader's value for a file of `pieces` pieces; nullopt when it does not parse or has another size.
  static std::optional<Want> parse(std::string_view value, std::size_t pieces);

  // The piece to send for `want` of the file `etag`, marked as sent at `now`; nullopt when every wanted
  // piece was sent lately (and `want.any` is false) or none is wanted.
  std::optional<std::size_t> pick(const std::string& etag, const Want& want, Clock::time_point now);

 private:
  struct File {
    std::vector<Clock::time_point> sent;  // time_point{} = never
    std::list<std::string>::iterator recency;
  };
  std::mutex mutex_;
  std::map<std::string, File> files_;
  std::list<std::string> recency_;  // most recently asked first
  std::size_t pieces_ = 0;
  std::uint64_t turn_ = 0;  // spreads the picks among equally good pieces
};

}  // namespace inferllama::http
