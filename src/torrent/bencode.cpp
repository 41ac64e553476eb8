#include "bencode.hpp"

#include <charconv>
#include <limits>

namespace inferllama::torrent::bencode {

const Value* Value::find(std::string_view key) const {
  const Dict* d = dict();
  if (d == nullptr) return nullptr;
  auto it = d->find(key);
  return it == d->end() ? nullptr : &it->second;
}

namespace {

void append_number(std::string& out, std::int64_t n) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof digits, n);
  out.append(digits, end);
}

void append_string(std::string& out, std::string_view s) {
  append_number(out, static_cast<std::int64_t>(s.size()));
  out.push_back(':');
  out.append(s);
}

struct Encoder {
  std::string& out;
  void operator()(std::int64_t n) const {
    out.push_back('i');
    append_number(out, n);
    out.push_back('e');
  }
  void operator()(const std::string& s) const { append_string(out, s); }
  void operator()(const List& list) const {
    out.push_back('l');
    for (const auto& v : list) std::visit(*this, v.data);
    out.push_back('e');
  }
  void operator()(const Dict& dict) const {
    out.push_back('d');
    for (const auto& [key, v] : dict) {
      append_string(out, key);
      std::visit(*this, v.data);
    }
    out.push_back('e');
  }
};

class Decoder {
 public:
  Decoder(std::string_view input, const DecodeLimits& limits) : in_(input), limits_(limits) {}

  std::variant<Value, DecodeError> run() {
    Value v;
    if (!value(v, 0)) return error_;
    if (pos_ != in_.size()) return DecodeError{"trailing bytes after the value", pos_};
    return v;
  }

 private:
  bool fail(std::string message) {
    error_ = DecodeError{std::move(message), pos_};
    return false;
  }

  bool value(Value& out, std::size_t depth) {
    if (++items_ > limits_.max_items) return fail("too many values");
    if (pos_ >= in_.size()) return fail("unexpected end of input");
    const char c = in_[pos_];
    if (c == 'i') {
      ++pos_;
      std::int64_t n = 0;
      if (!number(n, 'e')) return false;
      out.data = n;
      return true;
    }
    if (c >= '0' && c <= '9') {
      std::string_view s;
      if (!string(s)) return false;
      out.data = std::string(s);
      return true;
    }
    if (c == 'l' || c == 'd') {
      if (depth >= limits_.max_depth) return fail("nested too deeply");
      ++pos_;
      return c == 'l' ? list(out, depth + 1) : dict(out, depth + 1);
    }
    return fail("not a bencoded value");
  }

  // Digits up to `terminator`, in canonical form: no leading zeros, no "-0", no "+".
  bool number(std::int64_t& out, char terminator) {
    const std::size_t end = in_.find(terminator, pos_);
    if (end == std::string_view::npos) return fail("unterminated number");
    const std::string_view digits = in_.substr(pos_, end - pos_);
    const bool negative = !digits.empty() && digits[0] == '-';
    const std::string_view magnitude = negative ? digits.substr(1) : digits;
    if (magnitude.empty() || (magnitude[0] == '0' && (magnitude.size() > 1 || negative))) {
      return fail("non-canonical number");
    }
    for (char d : magnitude) {
      if (d < '0' || d > '9') return fail("non-canonical number");
    }
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out);
    if (ec != std::errc() || ptr != digits.data() + digits.size()) return fail("number out of range");
    pos_ = end + 1;
    return true;
  }

  bool string(std::string_view& out) {
    std::int64_t length = 0;
    if (!number(length, ':')) return false;
    if (static_cast<std::uint64_t>(length) > in_.size() - pos_) return fail("string runs past the end of input");
    out = in_.substr(pos_, static_cast<std::size_t>(length));
    pos_ += static_cast<std::size_t>(length);
    return true;
  }

  bool list(Value& out, std::size_t depth) {
    List items;
    while (pos_ < in_.size() && in_[pos_] != 'e') {
      items.emplace_back();
      if (!value(items.back(), depth)) return false;
    }
    if (pos_ >= in_.size()) return fail("unterminated list");
    ++pos_;
    out.data = std::move(items);
    return true;
  }

  bool dict(Value& out, std::size_t depth) {
    Dict entries;
    std::string_view previous;
    bool first = true;
    while (pos_ < in_.size() && in_[pos_] != 'e') {
      if (in_[pos_] < '0' || in_[pos_] > '9') return fail("dictionary key is not a string");
      std::string_view key;
      if (!string(key)) return false;
      if (!first && !(previous < key)) return fail("dictionary keys not in ascending order");
      first = false;
      previous = key;
      auto it = entries.emplace_hint(entries.end(), std::string(key), Value{});
      if (!value(it->second, depth)) return false;
    }
    if (pos_ >= in_.size()) return fail("unterminated dictionary");
    ++pos_;
    out.data = std::move(entries);
    return true;
  }

  std::string_view in_;
  const DecodeLimits& limits_;
  std::size_t pos_ = 0;
  std::size_t items_ = 0;
  DecodeError error_;
};

}  // namespace

void encode_to(std::string& out, const Value& value) {
  std::visit(Encoder{out}, value.data);
}

std::string encode(const Value& value) {
  std::string out;
  encode_to(out, value);
  return out;
}

std::variant<Value, DecodeError> decode(std::string_view input, const DecodeLimits& limits) {
  return Decoder(input, limits).run();
}

}  // namespace inferllama::torrent::bencode
