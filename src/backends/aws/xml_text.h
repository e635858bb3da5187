// The text of the first <tag>…</tag> in a flat AWS XML answer (STS results,
// query-protocol errors): ASCII values without entities or attributes, so a
// find is enough; "" when absent. Pure.
#pragma once

#include <string>
#include <string_view>

namespace dyad {

inline std::string XmlElementText(std::string_view xml, std::string_view tag) {
  std::string open = "<" + std::string(tag) + ">", close = "</" + std::string(tag) + ">";
  auto start = xml.find(open);
  if (start == std::string_view::npos) return "";
  start += open.size();
  auto end = xml.find(close, start);
  return end == std::string_view::npos ? "" : std::string(xml.substr(start, end - start));
}

}  // namespace dyad
