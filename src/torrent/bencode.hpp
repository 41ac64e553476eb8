#pragma once
// Bencoding (BEP 3): the encoder writes dictionary keys sorted as raw bytes, so equal values always
// encode to equal bytes; the decoder accepts only that canonical form, so a decoded info dict encodes
// back to the very bytes its info-hash was computed over.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace inferllama::torrent::bencode {

struct Value;
using List = std::vector<Value>;
// std::string's ordering compares bytes as unsigned char: the order BEP 3 asks for.
using Dict = std::map<std::string, Value, std::less<>>;

struct Value {
  std::variant<std::int64_t, std::string, List, Dict> data;

  Value() : data(std::int64_t{0}) {}
  Value(std::int64_t number) : data(number) {}
  Value(std::string text) : data(std::move(text)) {}
  Value(std::string_view text) : data(std::string(text)) {}
  Value(const char* text) : data(std::string(text)) {}
  Value(List list) : data(std::move(list)) {}
  Value(Dict dict) : data(std::move(dict)) {}

  const std::int64_t* integer() const { return std::get_if<std::int64_t>(&data); }
  const std::string* string() const { return std::get_if<std::string>(&data); }
  const List* list() const { return std::get_if<List>(&data); }
  const Dict* dict() const { return std::get_if<Dict>(&data); }
  // The value under `key` when this is a dictionary that has it.
  const Value* find(std::string_view key) const;
};

void encode_to(std::string& out, const Value& value);
std::string encode(const Value& value);

struct DecodeError {
  std::string message;
  std::size_t offset = 0;  // where in the input it went wrong
};

struct DecodeLimits {
  std::size_t max_depth = 32;        // nested lists and dictionaries
  std::size_t max_items = 1u << 20;  // values in the whole document
};

// Decodes exactly one canonical value spanning all of `input`: integers without leading zeros or "-0",
// dictionary keys strictly ascending, no trailing bytes. Never throws on malformed input.
std::variant<Value, DecodeError> decode(std::string_view input, const DecodeLimits& limits = {});

}  // namespace inferllama::torrent::bencode
