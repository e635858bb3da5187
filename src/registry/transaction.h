// InTransaction: the BEGIN … COMMIT body both registry engines share.
//
// Runs `fn` on one connection that `db` leases (Db::With) inside `begin`
// … COMMIT, and rolls back when `fn` or the COMMIT fails; the error is
// theirs. Connection needs Status Exec(const std::string&).
#pragma once

#include <functional>
#include <string>

#include "core/result.h"

namespace dyad {

template <typename Connection, typename Db>
Status InTransaction(Db& db, const std::string& begin, const std::function<Status(Connection&)>& fn) {
  auto r = db.template With<bool>([&](Connection& c) -> Result<bool> {
    DYAD_RETURN_IF_ERROR(c.Exec(begin));
    Status s = fn(c);
    if (s.ok()) s = c.Exec("COMMIT");
    if (!s.ok()) {
      (void)c.Exec("ROLLBACK");
      return s.error();
    }
    return true;
  });
  if (!r.ok()) return r.error();
  return OkStatus();
}

}  // namespace dyad
