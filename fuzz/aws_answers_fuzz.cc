// libFuzzer: what the AWS backend and the cloud client read from outside —
// error answers (JSON, XML or anything), shared config files, ISO 8601
// expirations and HTTP-dates (Date, Retry-After) — never crashes, and the
// error mapping always names the action and keeps its message bounded.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "backends/aws/aws_json_client.h"
#include "backends/aws/xml_text.h"
#include "cloud/json_client.h"
#include "core/ini.h"
#include "core/time_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  dyad::HttpReply reply{400 + data[0] % 200, {{"x-amzn-errortype", std::string(in.substr(0, 40))}}, std::string(in)};
  bool skew = false;
  dyad::Error e = dyad::AwsErrorFromReply("Action", reply, &skew);
  if (e.message.rfind("Action: ", 0) != 0) std::abort();
  reply.headers.clear();
  dyad::AwsErrorFromReply("Action", reply, &skew);
  if (dyad::DecodeHttpStatus("Action", reply).error.message.rfind("Action: HTTP ", 0) != 0) std::abort();
  (void)dyad::XmlElementText(in, "Code");
  for (const char* section : {"default", "profile x"}) (void)dyad::IniValue(in, section, "region");
  if (auto t = dyad::ParseIso8601(in)) {
    // Whatever parsed formats back to a time that parses to the same instant.
    auto again = dyad::ParseIso8601(dyad::FormatIso8601(*t));
    if (!again || *again != *t) std::abort();
  }
  if (auto t = dyad::ParseHttpDate(in)) {
    auto again = dyad::ParseHttpDate(dyad::FormatHttpDate(*t));
    if (!again || *again != *t) std::abort();
  }
  return 0;
}
