// libFuzzer: the /v1 request body's `model` (FindModel) never crashes, and
// what it accepts is what a JSON parser reads: one object whose `model` is
// the string found, at the offsets given, which ReplaceModel swaps alone.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "service/proxy_service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  auto field = dyad::FindModel(body);
  if (!field.ok()) return 0;
  if (field->end <= field->begin + 1 || field->end > body.size() || body[field->begin] != '"' ||
      body[field->end - 1] != '"') {
    std::abort();
  }
  // nlohmann refuses some bodies Boost.JSON takes (a number past a double's
  // range); any body both read must agree on the model.
  auto doc = nlohmann::json::parse(body, nullptr, false);
  if (!doc.is_discarded() && (!doc.is_object() || doc.value("model", std::string()) != field->value)) std::abort();
  std::string swapped = dyad::ReplaceModel(body, *field, "fuzz/\"model\"");
  auto again = dyad::FindModel(swapped);
  if (!again.ok() || again->value != "fuzz/\"model\"" || again->begin != field->begin) std::abort();
  return 0;
}
