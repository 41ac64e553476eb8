#pragma once
#include <string_view>

namespace inferllama {

// A node user's name: 1..64 of [A-Za-z0-9._-], starting with a letter or a digit (never ':', which marks
// anonymous identities, nor anything a path or a CSV field would need quoted).
inline bool is_valid_user_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
  if (!alnum(name.front())) return false;
  for (char c : name)
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

}  // namespace inferllama
