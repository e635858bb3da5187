// INI text as AWS shared config and credentials files write it: "[section]"
// headers, "key = value" lines, '#' and ';' comments; indented lines belong
// to a nested block of the key above them and are skipped. Pure.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace dyad {

// The value of `key` in `section` (the last one wins); nullopt when absent.
std::optional<std::string> IniValue(std::string_view text, std::string_view section, std::string_view key);

}  // namespace dyad
