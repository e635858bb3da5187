// The process environment as a value: a map of variable name to value.
//
// Configuration reads only from an EnvMap handed to it, never from getenv, so
// tests pass the variables they want. ReadProcessEnvironment() snapshots
// environ; ParseDotenv() reads a dotenv file (KEY=VALUE lines, '#' comments,
// optional `export `, single or double quotes, a quoted value followed by a
// `# comment`). Pure functions, thread-safe.
#pragma once

#include <map>
#include <string>

#include "core/result.h"

namespace dyad {

using EnvMap = std::map<std::string, std::string>;

EnvMap ReadProcessEnvironment();

// Parses dotenv text. Errors name the line number; values are never echoed.
Result<EnvMap> ParseDotenv(std::string_view text);

// Reads a dotenv file and adds its variables to `env` where `env` lacks them
// (the process environment wins, as in every dotenv loader).
Status MergeDotenvFile(const std::string& path, EnvMap& env);

// A whole (small) file: kNotFound when it cannot be opened, kInvalidArgument
// when it is larger than `max_bytes`.
Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes = 1 << 20);

}  // namespace dyad
