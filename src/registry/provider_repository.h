// ProviderRepository: durable storage of Provider rows.
//
// Thread-safe. Errors: kNotFound for an unknown id, kAlreadyExists when a slug
// (or id) is taken, kUnavailable when the database cannot be reached, with
// the database's own message.
#pragma once

#include <cstdint>
#include <string>

#include "core/result.h"
#include "registry/provider.h"

namespace dyad {

class ProviderRepository {
 public:
  virtual ~ProviderRepository() = default;
  virtual Status Insert(const Provider& p) = 0;
  virtual Result<Provider> Get(const std::string& id) = 0;
  // As Get, once a write of the row still running on another connection has
  // ended (committed or rolled back): what reads back a write whose answer
  // was lost, since its statement may still run on a connection that was
  // cut. Waits a bounded time for it (kUnavailable after). Get for an
  // engine whose writes end with their call (SQLite, in process).
  virtual Result<Provider> GetSettled(const std::string& id) { return Get(id); }
  // As Insert, for an insert whose first attempt's answer was lost (it may
  // still run on a connection that was cut): waits for that one on the id's
  // unique index, a bounded time (kUnavailable after): kAlreadyExists once it
  // committed, written here if it rolled back. Insert for an engine whose
  // writes end with their call (SQLite, in process).
  virtual Status InsertSettled(const Provider& p) { return Insert(p); }
  // Writes `p` only if the row's revision is still `p.revision` (the one
  // read), and moves the revision on: kConflict when another writer updated
  // the row meanwhile, kNotFound when it is gone.
  virtual Status Update(const Provider& p) = 0;
  virtual Status Delete(const std::string& id) = 0;
  // Providers in creation order.
  virtual Result<ProviderPage> List(int64_t offset, int64_t limit) = 0;
  // A cheap query that proves the database answers.
  virtual Status Ping() = 0;
  // Whether a read is answered in this process (an embedded database: no
  // round trip to another process that may be slow to be scheduled or
  // down). The server answers registry reads on its I/O threads only then;
  // otherwise (a network database) off them, so a slow round trip stalls
  // no other connection. A capability, not an identity: false unless known.
  virtual bool ReadsAreLocal() const { return false; }
};

// Calls f(provider) for every provider of `providers` (anything with
// List(offset, limit)), in creation order, `page_size` rows per List call;
// stops early when f returns false. List's first error is returned.
template <typename Lister, typename F>
Status ForEachProvider(Lister& providers, F&& f, int64_t page_size = 500) {
  for (int64_t offset = 0;; offset += page_size) {
    DYAD_ASSIGN_OR_RETURN(ProviderPage page, providers.List(offset, page_size));
    for (const Provider& p : page.items) {
      if (!f(p)) return OkStatus();
    }
    if (static_cast<int64_t>(page.items.size()) < page_size) return OkStatus();
  }
}

}  // namespace dyad
