// A pickle stream read opcode by opcode as its bytes arrive (protocols 0 to 5), without running it: every
// import (GLOBAL, STACK_GLOBAL, INST, an EXT code) outside the allowlist is a finding, and so is a name the
// scanner cannot follow (STACK_GLOBAL of computed strings). The stack is modelled only as far as names need:
// the top kStackWindow values, which strings they are, the MARK positions, and the memo's strings, all
// bounded, so a hostile stream costs bounded memory however long or deep it is.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "scan/findings.hpp"

namespace inferllama::scan {

class PickleScanner {
 public:
  // Findings are added to `findings` as "<prefix><finding>" (a zip entry's name, say).
  explicit PickleScanner(Findings& findings, std::string prefix = {});

  void update(std::span<const std::uint8_t> bytes);
  // The stream ended: a first pickle cut before its STOP is an error.
  void finish();
  // Why the stream is not a pickle (set by update or finish), or "".
  const std::string& error() const { return error_; }
  // Nothing more of the stream is read: it failed, or what follows the pickles is not one.
  bool done() const { return state_ == State::ended || state_ == State::failed; }

  // Bounds (a legitimate pickle stays far inside them; past one the stream is an error).
  static constexpr std::size_t kStackWindow = 64;   // values kept of the top of the stack
  static constexpr std::size_t kMaxMarks = 4096;    // nesting: pickle's own writer stops near 1000
  static constexpr std::size_t kMaxName = 256;      // bytes kept of a string; longer ones are names of nothing allowed
  static constexpr std::size_t kMaxLine = 4096;     // bytes kept of a protocol 0 argument line
  static constexpr std::size_t kMaxMemo = 1 << 16;  // memo entries remembered (more are forgotten: unknown)
  static constexpr std::size_t kMaxMemoText = 1 << 20;  // bytes of remembered memo strings

 private:
  struct Value {
    enum class Kind : std::uint8_t { unknown, other, text, global };
    Kind kind = Kind::unknown;
    bool truncated = false;  // a string longer than kMaxName
    std::string text;        // a string's bytes, or a global's dotted name
  };
  enum class State : std::uint8_t { opcode, fixed, length, payload, line, ended, failed };

  void step(std::uint8_t byte);
  void begin_opcode(std::uint8_t op);
  void run_opcode();
  void fail(std::string why);
  void push(Value value);
  Value pop();
  // Pops back to the last MARK; returns the lowest value popped (OBJ's class) when it is still known.
  Value pop_mark();
  const Value& top() const;
  void memo_put(std::uint64_t index);
  Value memo_get(std::uint64_t index) const;
  // A finding: an import outside the allowlist (or a name the scanner cannot follow), once per name.
  void import(const std::string& dotted, const char* opcode);
  // `callable` is called by `opcode` (REDUCE, NEWOBJ, OBJ, INST): noted on its import's finding.
  void called(const Value& callable, const char* opcode);
  void report();
  std::uint64_t little_endian(std::size_t bytes) const;
  bool shape_of_two_lines() const;

  Findings& findings_;
  std::string prefix_;
  State state_ = State::opcode;
  std::string error_;
  std::uint64_t offset_ = 0;  // of the byte being read, in the stream
  std::uint64_t op_offset_ = 0;
  std::uint8_t op_ = 0;
  bool first_pickle_ = true;      // findings of the first pickle, errors of it too; later ones may be trailing data
  bool started_ = false;          // the current pickle has an opcode
  bool between_pickles_ = false;  // a STOP was the last opcode
  int pickles_ = 0;               // complete ones
  bool torch_legacy_ = false;     // the first pickle was torch's legacy magic number: five pickles, then data

  // The argument being read.
  std::uint8_t fixed_[8] = {};
  std::size_t fixed_need_ = 0;
  std::size_t fixed_have_ = 0;
  std::uint64_t payload_left_ = 0;
  std::string arg_;  // a payload's first kMaxName bytes, or a line's first kMaxLine
  bool arg_truncated_ = false;
  std::string first_line_;  // GLOBAL and INST take two lines
  bool first_line_truncated_ = false;
  bool second_line_ = false;

  struct Import {
    std::string name;
    const char* opcode;
    const char* called_by = nullptr;
  };
  std::vector<Import> imports_;     // the first kMaxFindings, reported by finish()
  std::uint32_t more_imports_ = 0;  // past those

  std::vector<Value> window_;  // the top of the stack, at most 2 * kStackWindow
  std::uint64_t depth_ = 0;    // values on the stack, known or not
  std::vector<std::uint64_t> marks_;
  std::unordered_map<std::uint64_t, Value> memo_;
  std::size_t memo_text_ = 0;
  std::uint64_t memo_next_ = 0;  // MEMOIZE's index: how many entries the memo has
};

}  // namespace inferllama::scan
