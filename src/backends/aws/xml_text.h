// The text of the first <tag>…</tag> in a flat AWS XML answer (STS results,
// query-protocol errors): ASCII values without entities or attributes, so a
// find is enough; "" when absent. Pure.
#pragma once

#include <string>
#include <string_view>

namespace dyad {

inline std::string XmlElementText(std::string_view xml, std::string_view tag) {
  // Appended, not "<" + std::string(tag): GCC 12 warns falsely (-Wrestrict) where that is inlined.
  std::string open = "<", close = "</";
  open.append(tag) += '>';
  close.append(tag) += '>';
  auto start = xml.find(open);
  if (start == std::string_view::npos) return "";
  start += open.size();
  auto end = xml.find(close, start);
  return end == std::string_view::npos ? "" : std::string(xml.substr(start, end - start));
}

}  // namespace dyad
