#include "core/ini.h"

#include <cctype>

#include "core/encoding.h"

namespace dyad {

std::optional<std::string> IniValue(std::string_view text, std::string_view section, std::string_view key) {
  bool in_section = false;
  std::optional<std::string> found;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view raw = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    bool indented = !raw.empty() && (raw.front() == ' ' || raw.front() == '\t');
    std::string_view line = TrimSpace(raw);
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.front() == '[') {
      if (line.back() == ']') in_section = TrimSpace(line.substr(1, line.size() - 2)) == section;
      continue;
    }
    if (!in_section || indented) continue;
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    if (TrimSpace(line.substr(0, eq)) == key) found = std::string(TrimSpace(line.substr(eq + 1)));
  }
  return found;
}

}  // namespace dyad
