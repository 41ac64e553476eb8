#include "scan/pickle_scanner.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>

#include "scan/allowlist.hpp"

namespace inferllama::scan {
namespace {

// Opcodes (Python's pickletools names them).
enum Op : std::uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  FLOAT = 'F',
  INT = 'I',
  BININT = 'J',
  BININT1 = 'K',
  LONG = 'L',
  BININT2 = 'M',
  NONE = 'N',
  PERSID = 'P',
  BINPERSID = 'Q',
  REDUCE = 'R',
  STRING = 'S',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  UNICODE = 'V',
  BINUNICODE = 'X',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  GET = 'g',
  BINGET = 'h',
  INST = 'i',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  OBJ = 'o',
  PUT = 'p',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  BINFLOAT = 'G',
  PROTO = 0x80,
  NEWOBJ = 0x81,
  EXT1 = 0x82,
  EXT2 = 0x83,
  EXT4 = 0x84,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  LONG4 = 0x8b,
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  EMPTY_SET = 0x8f,
  ADDITEMS = 0x90,
  FROZENSET = 0x91,
  NEWOBJ_EX = 0x92,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
  BYTEARRAY8 = 0x96,
  NEXT_BUFFER = 0x97,
  READONLY_BUFFER = 0x98,
};

// `invalid` first: an opcode the table does not name is zero, whatever initialises the rest.
enum class Arg : std::uint8_t { invalid, none, fixed, counted, line, two_lines };
struct Shape {
  Arg arg = Arg::invalid;
  std::uint8_t bytes = 0;  // of a fixed argument, or of a counted one's length
};

constexpr std::array<Shape, 256> kShapes = [] {
  std::array<Shape, 256> s{};
  s.fill(Shape{Arg::invalid, 0});
  for (std::uint8_t op : {MARK,       STOP,      POP,          POP_MARK, DUP,         NONE,           BINPERSID,
                          REDUCE,     APPEND,    BUILD,        DICT,     EMPTY_DICT,  APPENDS,        LIST,
                          EMPTY_LIST, OBJ,       SETITEM,      TUPLE,    EMPTY_TUPLE, SETITEMS,       NEWOBJ,
                          TUPLE1,     TUPLE2,    TUPLE3,       NEWTRUE,  NEWFALSE,    EMPTY_SET,      ADDITEMS,
                          FROZENSET,  NEWOBJ_EX, STACK_GLOBAL, MEMOIZE,  NEXT_BUFFER, READONLY_BUFFER}) {
    s[op] = {Arg::none, 0};
  }
  for (auto [op, n] : {std::pair<std::uint8_t, std::uint8_t>{BININT, 4},
                       {BININT1, 1},
                       {BININT2, 2},
                       {BINGET, 1},
                       {LONG_BINGET, 4},
                       {BINPUT, 1},
                       {LONG_BINPUT, 4},
                       {BINFLOAT, 8},
                       {PROTO, 1},
                       {EXT1, 1},
                       {EXT2, 2},
                       {EXT4, 4},
                       {FRAME, 8}}) {
    s[op] = {Arg::fixed, n};
  }
  for (auto [op, n] : {std::pair<std::uint8_t, std::uint8_t>{BINSTRING, 4},
                       {SHORT_BINSTRING, 1},
                       {BINUNICODE, 4},
                       {SHORT_BINUNICODE, 1},
                       {BINUNICODE8, 8},
                       {BINBYTES, 4},
                       {SHORT_BINBYTES, 1},
                       {BINBYTES8, 8},
                       {BYTEARRAY8, 8},
                       {LONG1, 1},
                       {LONG4, 4}}) {
    s[op] = {Arg::counted, n};
  }
  for (std::uint8_t op : {FLOAT, INT, LONG, PERSID, STRING, UNICODE, GET, PUT}) s[op] = {Arg::line, 0};
  for (std::uint8_t op : {GLOBAL, INST}) s[op] = {Arg::two_lines, 0};
  return s;
}();

const char* op_name(std::uint8_t op) {
  switch (op) {
    case GLOBAL:
      return "GLOBAL";
    case STACK_GLOBAL:
      return "STACK_GLOBAL";
    case INST:
      return "INST";
    case OBJ:
      return "OBJ";
    case REDUCE:
      return "REDUCE";
    case NEWOBJ:
      return "NEWOBJ";
    case NEWOBJ_EX:
      return "NEWOBJ_EX";
    case EXT1:
      return "EXT1";
    case EXT2:
      return "EXT2";
    case EXT4:
      return "EXT4";
    default:
      return "?";
  }
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | ((cp >> 18) & 0x07));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// STRING's argument: a quoted Python bytes literal ('os' or "os"), its escapes decoded as
// codecs.escape_decode does; nullopt when it is not quoted (Python refuses it too).
std::optional<std::string> unquote_string(std::string_view line) {
  if (line.size() < 2 || (line.front() != '\'' && line.front() != '"') || line.back() != line.front()) {
    return std::nullopt;
  }
  line = line.substr(1, line.size() - 2);
  std::string out;
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] != '\\' || i + 1 == line.size()) {
      out += line[i];
      continue;
    }
    const char e = line[++i];
    switch (e) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'v':
        out += '\v';
        break;
      case '\\':
      case '\'':
      case '"':
        out += e;
        break;
      case 'x':
        if (i + 2 < line.size() && hex_digit(line[i + 1]) >= 0 && hex_digit(line[i + 2]) >= 0) {
          out += static_cast<char>(hex_digit(line[i + 1]) * 16 + hex_digit(line[i + 2]));
          i += 2;
        } else {
          return std::nullopt;  // Python: invalid \x escape
        }
        break;
      default:
        if (e >= '0' && e <= '7') {
          int value = e - '0';
          for (int k = 0; k < 2 && i + 1 < line.size() && line[i + 1] >= '0' && line[i + 1] <= '7'; ++k) {
            value = value * 8 + (line[++i] - '0');
          }
          out += static_cast<char>(value & 0xff);
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

// UNICODE's argument: raw-unicode-escape, in which only \uXXXX and \UXXXXXXXX are escapes and every other
// byte is a Latin-1 character; returned as UTF-8.
std::string raw_unicode_unescape(std::string_view line) {
  std::string out;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const std::size_t digits = i + 1 < line.size() && line[i] == '\\' ? (line[i + 1] == 'u'   ? 4
                                                                         : line[i + 1] == 'U' ? 8
                                                                                              : 0)
                                                                      : 0;
    if (digits > 0 && i + 2 + digits <= line.size()) {
      std::uint32_t cp = 0;
      bool ok = true;
      for (std::size_t k = 0; k < digits; ++k) {
        const int d = hex_digit(line[i + 2 + k]);
        ok = ok && d >= 0;
        cp = cp * 16 + static_cast<std::uint32_t>(std::max(d, 0));
      }
      if (ok && cp <= 0x10ffff) {
        append_utf8(out, cp);
        i += 1 + digits;
        continue;
      }
    }
    append_utf8(out, static_cast<unsigned char>(line[i]));
  }
  return out;
}

std::optional<std::uint64_t> decimal(std::string_view text) {
  if (text.empty() || text.size() > 19) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return value;
}

// torch.save's legacy format (before 1.6) starts with a pickle of this number (LONG1's little-endian bytes);
// four more pickles follow, then raw tensor data.
constexpr std::uint8_t kTorchLegacyMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr int kTorchLegacyPickles = 5;

}  // namespace

PickleScanner::PickleScanner(Findings& findings, std::string prefix) : findings_(findings), prefix_(std::move(prefix)) {
  window_.reserve(2 * kStackWindow);
}

void PickleScanner::update(std::span<const std::uint8_t> bytes) {
  std::size_t i = 0;
  while (i < bytes.size() && !done()) {
    const std::size_t left = bytes.size() - i;
    if (state_ == State::payload) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(payload_left_, left));
      if (arg_.size() < kMaxName) {
        arg_.append(reinterpret_cast<const char*>(bytes.data() + i), std::min(n, kMaxName - arg_.size()));
      }
      payload_left_ -= n;
      i += n;
      offset_ += n;
      if (payload_left_ == 0) run_opcode();
      continue;
    }
    if (state_ == State::line) {
      const auto* start = bytes.data() + i;
      const auto* newline = static_cast<const std::uint8_t*>(std::memchr(start, '\n', left));
      const std::size_t n = newline ? static_cast<std::size_t>(newline - start) : left;
      const std::size_t room = kMaxLine - std::min(kMaxLine, arg_.size());
      arg_.append(reinterpret_cast<const char*>(start), std::min(n, room));
      if (n > room) arg_truncated_ = true;
      i += n;
      offset_ += n;
      if (newline) {
        ++i;
        ++offset_;
        if (shape_of_two_lines() && !second_line_) {
          first_line_ = std::move(arg_);
          first_line_truncated_ = arg_truncated_;
          arg_.clear();
          arg_truncated_ = false;
          second_line_ = true;
        } else {
          run_opcode();
        }
      }
      continue;
    }
    step(bytes[i]);
    ++i;
    ++offset_;
  }
  offset_ += bytes.size() - i;
}

bool PickleScanner::shape_of_two_lines() const {
  return kShapes[op_].arg == Arg::two_lines;
}

void PickleScanner::step(std::uint8_t byte) {
  switch (state_) {
    case State::opcode:
      if (between_pickles_) {
        // What follows a pickle is another only if it starts like one (PROTO); anything else is data the
        // pickles do not describe (a legacy torch file's tensors), or trailing bytes no unpickler reads.
        between_pickles_ = false;
        if (byte != PROTO || (torch_legacy_ && pickles_ >= kTorchLegacyPickles)) {
          state_ = State::ended;
          return;
        }
        first_pickle_ = false;
        started_ = false;
        window_.clear();
        depth_ = 0;
        marks_.clear();
        memo_.clear();
        memo_text_ = 0;
        memo_next_ = 0;
      }
      op_offset_ = offset_;
      started_ = true;
      begin_opcode(byte);
      return;
    case State::fixed:
      fixed_[fixed_have_++] = byte;
      if (fixed_have_ < fixed_need_) return;
      if (kShapes[op_].arg == Arg::counted) {
        payload_left_ = little_endian(fixed_need_);
        arg_truncated_ = payload_left_ > kMaxName;
        if (payload_left_ == 0) {
          run_opcode();
        } else {
          state_ = State::payload;
        }
        return;
      }
      run_opcode();
      return;
    default:
      return;
  }
}

void PickleScanner::begin_opcode(std::uint8_t op) {
  op_ = op;
  arg_.clear();
  arg_truncated_ = false;
  second_line_ = false;
  const Shape shape = kShapes[op];
  switch (shape.arg) {
    case Arg::none:
      run_opcode();
      return;
    case Arg::fixed:
    case Arg::counted:
      fixed_need_ = shape.bytes;
      fixed_have_ = 0;
      state_ = State::fixed;
      return;
    case Arg::line:
    case Arg::two_lines:
      state_ = State::line;
      return;
    case Arg::invalid:
      fail("unknown opcode 0x" + std::string(1, "0123456789abcdef"[op >> 4]) + "0123456789abcdef"[op & 0xf]);
      return;
  }
}

std::uint64_t PickleScanner::little_endian(std::size_t bytes) const {
  std::uint64_t value = 0;
  for (std::size_t k = bytes; k-- > 0;) value = (value << 8) | fixed_[k];
  return value;
}

void PickleScanner::fail(std::string why) {
  if (state_ == State::failed || state_ == State::ended) return;
  if (!first_pickle_) {
    state_ = State::ended;  // a later "pickle" that is not one: bytes past the pickles
    return;
  }
  error_ = "not a pickle: " + why + " at byte " + std::to_string(op_offset_);
  state_ = State::failed;
}

void PickleScanner::push(Value value) {
  ++depth_;
  window_.push_back(std::move(value));
  if (window_.size() > 2 * kStackWindow) window_.erase(window_.begin(), window_.begin() + kStackWindow);
}

PickleScanner::Value PickleScanner::pop() {
  // Values below the last MARK are out of reach (Python's "unpickling stack underflow").
  const std::uint64_t fence = marks_.empty() ? 0 : marks_.back();
  if (depth_ <= fence) {
    fail("the stack is empty");
    return {};
  }
  --depth_;
  if (window_.empty()) return {};
  Value value = std::move(window_.back());
  window_.pop_back();
  return value;
}

PickleScanner::Value PickleScanner::pop_mark() {
  if (marks_.empty()) {
    fail("no MARK to pop back to");
    return {};
  }
  const std::uint64_t mark = marks_.back();
  marks_.pop_back();
  const std::uint64_t count = depth_ - mark;
  Value lowest;
  if (count > 0 && count <= window_.size()) lowest = window_[window_.size() - count];
  window_.resize(window_.size() - static_cast<std::size_t>(std::min<std::uint64_t>(count, window_.size())));
  depth_ = mark;
  return lowest;
}

const PickleScanner::Value& PickleScanner::top() const {
  static const Value kUnknown;
  return window_.empty() ? kUnknown : window_.back();
}

void PickleScanner::memo_put(std::uint64_t index) {
  const std::uint64_t fence = marks_.empty() ? 0 : marks_.back();
  if (depth_ <= fence) {
    fail("nothing on the stack to memoize");
    return;
  }
  const Value& value = top();
  auto found = memo_.find(index);
  if (found != memo_.end()) {
    memo_text_ -= found->second.text.size();
    memo_.erase(found);
  }
  // Past the bounds an entry is forgotten: getting it back yields an unknown value, never a wrong one.
  if (memo_.size() >= kMaxMemo || memo_text_ + value.text.size() > kMaxMemoText) return;
  memo_text_ += value.text.size();
  memo_.emplace(index, value);
}

PickleScanner::Value PickleScanner::memo_get(std::uint64_t index) const {
  auto found = memo_.find(index);
  return found == memo_.end() ? Value{} : found->second;
}

void PickleScanner::import(const std::string& dotted, const char* opcode) {
  for (const auto& known : imports_) {
    if (known.name == dotted) return;
  }
  if (imports_.size() < kMaxFindings) {
    imports_.push_back({dotted, opcode});
  } else if (more_imports_ < UINT32_MAX) {
    ++more_imports_;
  }
}

void PickleScanner::called(const Value& callable, const char* opcode) {
  if (callable.kind != Value::Kind::global) return;
  for (auto& known : imports_) {
    if (known.name == callable.text && !known.called_by) known.called_by = opcode;
  }
}

void PickleScanner::report() {
  for (const auto& found : imports_) {
    std::string text = prefix_ + found.name + " (" + found.opcode;
    if (found.called_by) text += std::string(", called by ") + found.called_by;
    findings_.add(text + ")");
  }
  findings_.count_more(more_imports_);
  imports_.clear();
  more_imports_ = 0;
}

void PickleScanner::run_opcode() {
  state_ = State::opcode;
  auto text_value = [&](std::string text, bool truncated) {
    Value v{Value::Kind::text, truncated || text.size() > kMaxName, std::move(text)};
    if (v.text.size() > kMaxName) v.text.resize(kMaxName);
    return v;
  };
  auto import_of = [&](const std::string& module, const std::string& name, bool truncated) {
    std::string dotted = global_name(module, name);
    if (truncated || !allowed_global(dotted)) import(truncated ? dotted + "..." : dotted, op_name(op_));
    return Value{Value::Kind::global, truncated, std::move(dotted)};
  };
  switch (op_) {
    case MARK:
      if (marks_.size() >= kMaxMarks) {
        fail("nesting deeper than " + std::to_string(kMaxMarks) + " MARKs");
        return;
      }
      marks_.push_back(depth_);
      return;
    case STOP:
      pop();
      if (state_ != State::opcode) return;
      ++pickles_;
      between_pickles_ = true;
      return;
    case POP:
      if (depth_ > (marks_.empty() ? 0 : marks_.back())) {
        pop();
      } else {
        pop_mark();
      }
      return;
    case POP_MARK:
      pop_mark();
      return;
    case DUP: {
      if (depth_ <= (marks_.empty() ? 0 : marks_.back())) {
        fail("nothing on the stack to DUP");
        return;
      }
      Value copy = top();
      push(std::move(copy));
      return;
    }
    case FLOAT:
    case INT:
    case LONG:
    case BININT:
    case BININT1:
    case BININT2:
    case BINFLOAT:
    case LONG4:
    case NONE:
    case NEWTRUE:
    case NEWFALSE:
    case BINBYTES:
    case SHORT_BINBYTES:
    case BINBYTES8:
    case BYTEARRAY8:
    case EMPTY_DICT:
    case EMPTY_LIST:
    case EMPTY_TUPLE:
    case EMPTY_SET:
      push({Value::Kind::other});
      return;
    case LONG1:
      if (first_pickle_ && pickles_ == 0 && depth_ == 0 && arg_.size() == sizeof kTorchLegacyMagic &&
          std::memcmp(arg_.data(), kTorchLegacyMagic, sizeof kTorchLegacyMagic) == 0) {
        torch_legacy_ = true;
      }
      push({Value::Kind::other});
      return;
    case PERSID:
    case NEXT_BUFFER:
      push({});
      return;
    case BINPERSID:
    case READONLY_BUFFER:
      pop();
      push({});
      return;
    case REDUCE: {
      pop();  // arguments
      const Value callable = pop();
      called(callable, "REDUCE");
      push({});
      return;
    }
    case NEWOBJ: {
      pop();
      const Value cls = pop();
      called(cls, "NEWOBJ");
      push({});
      return;
    }
    case NEWOBJ_EX: {
      pop();
      pop();
      const Value cls = pop();
      called(cls, "NEWOBJ_EX");
      push({});
      return;
    }
    case STRING: {
      auto text = unquote_string(arg_);
      if (!text && !arg_truncated_) {
        fail("a STRING argument that is not quoted");
        return;
      }
      push(text_value(text.value_or(arg_), arg_truncated_));
      return;
    }
    case UNICODE:
      push(text_value(raw_unicode_unescape(arg_), arg_truncated_));
      return;
    case BINSTRING:
    case SHORT_BINSTRING:
    case BINUNICODE:
    case SHORT_BINUNICODE:
    case BINUNICODE8:
      push(text_value(arg_, arg_truncated_));
      return;
    case APPEND:
    case BUILD:
      pop();
      return;
    case SETITEM:
      pop();
      pop();
      return;
    case APPENDS:
    case SETITEMS:
    case ADDITEMS:
      pop_mark();
      return;
    case DICT:
    case LIST:
    case TUPLE:
    case FROZENSET:
      pop_mark();
      push({Value::Kind::other});
      return;
    case TUPLE1:
    case TUPLE2:
    case TUPLE3:
      for (int k = 0; k < op_ - TUPLE1 + 1; ++k) pop();
      push({Value::Kind::other});
      return;
    case GLOBAL:
      push(import_of(
          first_line_, arg_,
          first_line_truncated_ || arg_truncated_ || first_line_.size() > kMaxName || arg_.size() > kMaxName));
      return;
    case INST:
      // Imports and calls at once: the finding's opcode says both.
      import_of(first_line_, arg_,
                first_line_truncated_ || arg_truncated_ || first_line_.size() > kMaxName || arg_.size() > kMaxName);
      pop_mark();
      push({});
      return;
    case OBJ: {
      const Value cls = pop_mark();
      called(cls, "OBJ");
      push({});
      return;
    }
    case STACK_GLOBAL: {
      const Value name = pop();
      const Value module = pop();
      if (state_ != State::opcode) return;
      if (name.kind == Value::Kind::other || module.kind == Value::Kind::other) {
        fail("STACK_GLOBAL of values that are not strings");
        return;
      }
      if (name.kind != Value::Kind::text || module.kind != Value::Kind::text) {
        import("a name computed by the pickle", "STACK_GLOBAL");
        push({Value::Kind::global, false, "?"});
        return;
      }
      push(import_of(module.text, name.text, module.truncated || name.truncated));
      return;
    }
    case EXT1:
    case EXT2:
    case EXT4: {
      // An import through copyreg's extension registry: the code names no module the scanner can see.
      const std::string what = "extension code " + std::to_string(little_endian(fixed_need_));
      import(what, op_name(op_));
      push({Value::Kind::global, false, what});
      return;
    }
    case GET:
    case BINGET:
    case LONG_BINGET: {
      const auto index = op_ == GET ? decimal(arg_) : std::optional<std::uint64_t>(little_endian(fixed_need_));
      push(index ? memo_get(*index) : Value{});
      return;
    }
    case PUT:
    case BINPUT:
    case LONG_BINPUT: {
      const auto index = op_ == PUT ? decimal(arg_) : std::optional<std::uint64_t>(little_endian(fixed_need_));
      if (index) memo_put(*index);
      return;
    }
    case MEMOIZE:
      memo_put(memo_next_++);
      return;
    case PROTO:
      if (fixed_[0] > 5) fail("protocol " + std::to_string(fixed_[0]) + " is newer than 5");
      return;
    case FRAME:
      return;  // framing only: the opcodes inside are read as they come
    default:
      fail("unknown opcode");
      return;
  }
}

void PickleScanner::finish() {
  if (!done()) {
    if (state_ == State::opcode && between_pickles_) {
      state_ = State::ended;
    } else {
      op_offset_ = offset_;
      fail(started_ ? "the stream ends before its STOP opcode" : "the stream is empty");
    }
  }
  report();
}

}  // namespace inferllama::scan
